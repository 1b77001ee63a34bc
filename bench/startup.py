"""Time from `zantara serve` to ready: a first start (builds the demo base and adapter) and later starts.

Each start runs `python -m zantara serve` on its embedded defaults with a fresh `ZANTARA_VAR_DIR`
(SQLite, models and adapters all under it) and polls `/readyz` every 0.2 s. The first start of a fresh
directory builds the demo models; the `--later` starts reuse them. Run: `python bench/startup.py`
(about 1.5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from server import running_server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--later", type=int, default=3, help="later starts to time after the first")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="zantara-startup-"))
    env = {"ZANTARA_VAR_DIR": str(var_dir)}
    try:
        with running_server(env) as first:
            print(f"first start (builds the demo base and adapter): ready in {first.ready_s:.1f} s")
        later = []
        for i in range(args.later):
            with running_server(env) as server:
                later.append(server.ready_s)
                print(f"later start {i + 1}: ready in {server.ready_s:.1f} s")
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    if later:
        print(f"first start {first.ready_s:.1f} s; later starts median {statistics.median(later):.1f} s")


if __name__ == "__main__":
    main()
