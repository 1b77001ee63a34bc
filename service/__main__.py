"""`python -m service` runs the `zantara` command."""

from service.cli import app

app(prog_name="zantara")
