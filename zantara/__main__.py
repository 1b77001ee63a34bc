"""`python -m zantara` runs the `zantara` command."""

from zantara.cli import app

app(prog_name="zantara")
