"""Stand-in for ``harness.run`` (one torchrun worker) and for the ``compare``/``history``
verbs, so the Slurm scripts can be exercised without the model.

Worker: ``torchrun ... -m fake_run CONFIG --results-dir DIR``. Joins a gloo group
(so a broken rendezvous fails the job), gathers every rank's Slurm node name,
sleeps ``FAKE_RUN_SECONDS``, and rank 0 writes ``DIR/summary.json`` with
``complete: true`` (``ranks`` appears once every rank has joined). On SIGTERM every
rank stops; rank 0 writes ``complete: false`` with ``incomplete_reason`` and all exit
3, as the real run does. ``FAKE_RUN_SLO_PASS=0`` makes the verdict FAIL;
``FAKE_RUN_TPS`` is the output_throughput written (for regression tests).

CLI: ``python -m fake_run compare BASE NEW [--threshold PCT]`` exits 1 when NEW's
output_throughput is more than PCT % below BASE's; ``python -m fake_run history DIR``
writes DIR/history.csv (one line per run dir).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def worker(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--results-dir", required=True)
    args = ap.parse_args(argv)
    run_dir = Path(args.results_dir)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    summary = {"complete": False, "world_size": world, "config": args.config,
               "verdict": "PASS" if os.environ.get("FAKE_RUN_SLO_PASS", "1") == "1" else "FAIL",
               "metrics": {"output_throughput": float(os.environ.get("FAKE_RUN_TPS", "100"))}}

    def on_term(signum, frame):  # may arrive twice (srun and torchrun both forward it)
        if rank == 0:
            summary["complete"] = False
            summary["incomplete_reason"] = "received SIGTERM"
            _write_json(run_dir / "summary.json", summary)
        os._exit(3)

    if rank == 0:  # like the real run: an incomplete summary from the start
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "summary.json", summary)
    signal.signal(signal.SIGTERM, on_term)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    me = {"rank": rank, "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
          "local_rank": int(os.environ["LOCAL_RANK"])}
    everyone: list = [None] * world
    dist.all_gather_object(everyone, me)
    if rank == 0:
        summary["ranks"] = everyone
        _write_json(run_dir / "summary.json", summary)
    deadline = time.monotonic() + float(os.environ.get("FAKE_RUN_SECONDS", "1"))
    while time.monotonic() < deadline:
        time.sleep(0.1)
    dist.barrier()
    if rank == 0:
        summary["complete"] = True
        _write_json(run_dir / "summary.json", summary)
    dist.destroy_process_group()
    return 0


def _tps(run_dir: str) -> float:
    return json.loads((Path(run_dir) / "summary.json").read_text())["metrics"]["output_throughput"]


def cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fake_run")
    sub = ap.add_subparsers(dest="verb", required=True)
    c = sub.add_parser("compare")
    c.add_argument("base")
    c.add_argument("new")
    c.add_argument("--threshold", type=float, default=5.0)
    h = sub.add_parser("history")
    h.add_argument("dir")
    args = ap.parse_args(argv)
    if args.verb == "compare":
        base, new = _tps(args.base), _tps(args.new)
        drop = (base - new) / base * 100
        print(f"output_throughput {base} -> {new} ({-drop:+.1f}%)")
        return 1 if drop > args.threshold else 0
    rows = []
    for d in sorted(Path(args.dir).iterdir()):
        if (d / "summary.json").is_file() and not d.is_symlink():
            rows.append(f"{d.name},{_tps(str(d))}\n")
    (Path(args.dir) / "history.csv").write_text("run,output_throughput\n" + "".join(rows))
    return 0


if __name__ == "__main__":
    if "RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:
        sys.exit(worker(sys.argv[1:]))
    sys.exit(cli(sys.argv[1:]))
