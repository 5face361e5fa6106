"""Wall time of the README's main command (the CPU demo), median of several runs.

    .venv/bin/python benchmarks/demo_wall.py --runs 5

Each run is the full command a user types: launcher, torchrun, 8 ranks importing torch, the
model build, warm-up, the workload, gathering and writing the run directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"))
    args = ap.parse_args()
    walls, serving = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            t0 = time.monotonic()
            p = subprocess.run(
                [
                    str(REPO / ".venv" / "bin" / "harness"),
                    "run",
                    args.config,
                    "--results-dir",
                    str(run_dir),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - t0
            s = json.loads((run_dir / "summary.json").read_text())
            walls.append(wall)
            serving.append(s["wall_s"])
            print(
                f"run {i + 1}: exit {p.returncode}, wall {wall:.1f} s, serving {s['wall_s']:.1f} "
                f"s, "
                f"warm-up {s['warmup_s']:.1f} s, {s['metrics']['request_throughput']:.2f} req/s, "
                f"TTFT p99 {s['metrics']['p99_ttft_ms']:.0f} ms, TPOT p99 "
                f"{s['metrics']['p99_tpot_ms']:.0f} ms"
            )
    print(
        f"median wall {statistics.median(walls):.1f} s (min {min(walls):.1f}, max "
        f"{max(walls):.1f}); "
        f"median serving {statistics.median(serving):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
