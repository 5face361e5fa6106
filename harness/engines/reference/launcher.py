"""The reference engine's outside face: start the torchrun world that runs ``harness run`` as each
rank (``python -m harness run CONFIG``), forward stop signals to it, and wait.

The world's rank 0 writes the run directory; the caller judges the run from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from harness.errors import UsageError


def torchrun_command(spec, args, run_dir: Path) -> list[str]:
    """The torchrun command line for the spec's world (``--nnodes``/``--node-rank``/``--rdzv-endpoint``
    of ``args`` for several nodes)."""
    world = spec.world_size
    nnodes = args.nnodes or (spec.cluster.nodes if args.rdzv_endpoint else 1)
    if nnodes < 1 or world % nnodes:
        raise UsageError(f"--nnodes: {nnodes} does not divide the spec's {world} processes")
    nproc = args.nproc_per_node or world // nnodes
    if nproc * nnodes != world:
        raise UsageError(f"--nproc-per-node: {nproc} x {nnodes} nodes != {world} processes the spec needs "
                         f"(parallel.tp*pp*dp)")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           "--max-restarts=0", "--monitor-interval=0.5"]
    if args.rdzv_endpoint:
        rdzv_id = args.rdzv_id or os.environ.get("SLURM_JOB_ID") or spec.name
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
        if args.node_rank is not None:
            cmd.append(f"--node-rank={args.node_rank}")
    elif nnodes == 1:
        cmd.append("--standalone")
    else:
        raise UsageError("--rdzv-endpoint: needed when --nnodes > 1 (HOST:PORT of the first node)")
    cmd += ["-m", "harness", "run", str(Path(args.config).resolve()), "--results-dir", str(run_dir)]
    for o in args.overrides:
        cmd += ["--set", o]
    return cmd


def run_world(spec, args, run_dir: Path) -> int:
    """Start torchrun for the spec, forward SIGTERM/SIGINT to it, and return its exit code."""
    cmd = torchrun_command(spec, args, run_dir)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")   # 8 ranks on a few cores: no thread oversubscription
    print(f"harness run: {spec.name}: {spec.world_size} ranks (tp={spec.parallel.tp} pp={spec.parallel.pp} "
          f"dp={spec.parallel.dp}) -> {run_dir}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum, _frame):  # Slurm pre-emption / Ctrl-C reach torchrun, which tells the ranks
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
