"""Stand-in for ``harness run`` (inside torchrun) in the Slurm tests: "produces" a run in no time.

``torchrun ... -m fake_run CONFIG --results-dir DIR`` with ``FAKE_RUN_COPY_FROM=RUN_DIR``:
rank 0 copies that (real, possibly edited) run directory to DIR; every rank exits 0.
The batch scripts then judge DIR exactly as after a real run, so the nightly
compare/history path and the SLO-miss exit code are tested in seconds, with results
whose numbers the test chose. ``FAKE_RUN_RECORD=FILE``: each process appends its RANK and
WORLD_SIZE (None outside torchrun) to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fake_run")
    ap.add_argument("config")
    ap.add_argument("--results-dir", required=True)
    args, _ = ap.parse_known_args(argv)
    if os.environ.get("FAKE_RUN_RECORD"):  # where it ran: one line per process
        with open(os.environ["FAKE_RUN_RECORD"], "a") as f:
            f.write(json.dumps({k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}) + "\n")
    if os.environ.get("RANK", "0") == "0":
        shutil.copytree(os.environ["FAKE_RUN_COPY_FROM"], args.results_dir, dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
