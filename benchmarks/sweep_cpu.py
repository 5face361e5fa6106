"""The whole layout sweep of the CPU twin (harness sweep, issue #31).

    .venv/bin/python benchmarks/sweep_cpu.py [--config configs/tiny-tp2-pp4-cpu.yaml]
        [--loads 2,4,8] [--top 2] [--out DIR] [--chart docs/sweep_cpu.png]

Runs ``harness sweep CONFIG --layouts auto --loads LOADS --top K`` (the tiny model's 8-rank
layouts: tp ∈ {1, 2} since it has 2 KV heads, every pp·dp that makes 8: seven layouts), each
layout's calibration run at the lowest load, the top K and the spec's layout through every load,
then prints what docs/performance.md quotes: per layout the measured points, the forecast error at
the loads it was not calibrated on, the best layout under the SLOs and its advantage over the spec's
layout (with its interval), and the wall time. ``--chart`` copies the sweep's Pareto chart there.
Writes ``sweep_cpu.json`` (that digest) beside ``sweep.json`` in ``--out`` (default: a temporary
folder; the sweep resumes there when run again with the same arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pct(v) -> str:
    return "–" if v is None else f"{v * 100:+.1f} %"


def digest(doc: dict, wall_s: float, load: tuple) -> dict:
    layouts = []
    for e in doc["layouts"]:
        fe = e.get("forecast_error") or {}
        layouts.append(
            {
                "layout": e["name"],
                "selected": e.get("selected"),
                "runs": [
                    {
                        "load": r["load"],
                        "verdict": r["verdict"],
                        "phase": r["phase"],
                        "per_gpu": (r.get("point") or {}).get("per_gpu"),
                        "per_user": (r.get("point") or {}).get("per_user"),
                        "goodput_per_gpu": (r.get("point") or {}).get("goodput_per_gpu"),
                    }
                    for r in e["runs"]
                ],
                "closure_factor": ((e.get("predicted") or {}).get("closure") or {}).get("factor"),
                "forecast_error_out_of_sample": fe.get("mean_abs_out_of_sample"),
                "forecast_error_loads": fe.get("loads"),
                "n_out_of_sample": fe.get("n_out_of_sample"),
            }
        )
    return {
        "complete": doc.get("complete"),
        "wall_s": wall_s,
        "loadavg_before_after": load,
        "ranking": doc.get("ranking"),
        "layouts": layouts,
        "best": doc.get("best"),
        "baseline": doc.get("baseline"),
        "advantage": doc.get("advantage"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"))
    ap.add_argument("--loads", default="2,4,8")
    ap.add_argument("--top", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--chart", default=None, help="copy the Pareto chart here")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-cpu-"))
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "sweep",
        args.config,
        "--layouts",
        "auto",
        "--loads",
        args.loads,
        "--top",
        str(args.top),
        "--results-dir",
        str(out),
    ]
    load0, t0 = os.getloadavg()[0], time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, text=True)
    wall = time.monotonic() - t0
    doc = json.loads((out / "sweep.json").read_text())
    d = digest(doc, wall, (load0, os.getloadavg()[0]))
    (out / "sweep_cpu.json").write_text(json.dumps(d, indent=1) + "\n")
    if args.chart and (out / "pareto.png").is_file():
        shutil.copyfile(out / "pareto.png", args.chart)
    print(f"\nsweep exit {p.returncode}, {wall:.0f} s wall; {out}")
    print(
        f"{'layout':<13} {'ladder':<6} {'closure':>7}  out-of-sample |error|: out tok/s, TPOT, E2E"
    )
    for e in d["layouts"]:
        m = e["forecast_error_out_of_sample"] or {}
        print(
            f"{e['layout']:<13} {'yes' if e['selected'] else 'no':<6} "
            f"{e['closure_factor'] or 0:>7.3f}  {pct(m.get('output_throughput'))} "
            f"{pct(m.get('mean_tpot_ms'))} {pct(m.get('median_e2el_ms'))} "
            f"(n={e['n_out_of_sample']})"
        )
    adv = d["advantage"]
    if adv:
        print(
            f"best {adv['best']['layout']} @ {adv['best']['load']:g} vs spec "
            f"{adv['base']['layout']} @ {adv['base']['load']:g}: goodput/GPU "
            f"{adv['pct']:+.1f} % [{adv['low_pct']}, {adv['high_pct']}]"
        )
    return p.returncode


if __name__ == "__main__":
    raise SystemExit(main())
