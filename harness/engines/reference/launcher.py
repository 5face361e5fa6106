"""The reference engine's outside face: start the torchrun world that runs ``harness run`` as each
rank (``python -m harness run CONFIG``), forward stop signals to it, wait until no process of it is
left, and leave ``summary.json`` saying what happened.

The agent is torch's torchrun inside ``harness.engines.reference.agent`` (it dies with this
launcher and records how each rank ended). The world's rank 0 writes the run directory; once the
world is over, the launcher names the root cause of a failure in ``summary.json`` (``failure`` and
``incomplete_reason``) and marks a run whose agent failed after rank 0 wrote ``complete: true``
incomplete, so the exit code (judged from the summary by the caller) always agrees with the disk.
See ``harness.engines.reference.lifetime`` for who watches whom."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

from harness.engines.options import LaunchOptions
from harness.engines.reference.failures import describe, read_reports, root_cause
from harness.engines.reference.lifetime import FAILURE_DIR_ENV, descendants, launcher_env, reap
from harness.engines.reference.stop import GRACE_S
from harness.errors import UsageError
from harness.results.writer import amend_summary, read_summary_file

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REAP_WAIT_S = GRACE_S + 15.0  # ranks stop themselves within GRACE_S of losing their agent


def world_shape(spec, options: LaunchOptions) -> tuple[int, int]:
    """(nnodes, nproc per node) from ``--nnodes``/``--nproc-per-node`` and the spec; UsageError when
    they cannot make the spec's world."""
    world = spec.world_size
    for flag, v in (("--nnodes", options.nnodes), ("--nproc-per-node", options.nproc_per_node)):
        if v is not None and v < 1:
            raise UsageError(f"{flag}: must be >= 1, got {v}")
    if options.node_rank is not None and options.node_rank < 0:
        raise UsageError(f"--node-rank: must be >= 0, got {options.node_rank}")
    nnodes = (
        options.nnodes
        if options.nnodes is not None
        else (spec.cluster.nodes if options.rdzv_endpoint else 1)
    )
    if world % nnodes:
        raise UsageError(f"--nnodes: {nnodes} does not divide the spec's {world} processes")
    nproc = options.nproc_per_node if options.nproc_per_node is not None else world // nnodes
    if nproc * nnodes != world:
        raise UsageError(
            f"--nproc-per-node: {nproc} x {nnodes} nodes != {world} processes the spec needs "
            f"(parallel.tp*pp*dp)"
        )
    if options.node_rank is not None and options.node_rank >= nnodes:
        raise UsageError(
            f"--node-rank: {options.node_rank} but there are {nnodes} nodes; use 0..{nnodes - 1}"
        )
    if nnodes > 1 and not options.rdzv_endpoint:
        raise UsageError("--rdzv-endpoint: needed when --nnodes > 1 (HOST:PORT of the first node)")
    return nnodes, nproc


def preflight(spec, options: LaunchOptions) -> None:
    """What the world needs before it starts: the torchrun flags make the spec's world."""
    world_shape(spec, options)


def torchrun_command(spec, options: LaunchOptions) -> list[str]:
    """The agent's command line for the spec's world (``--nnodes``/``--node-rank``/
    ``--rdzv-endpoint`` of ``options`` for several nodes): torchrun's arguments, run by
    ``harness.engines.reference.agent``; each rank runs ``harness run`` on the same spec file and
    overrides into ``options.results_dir``."""
    nnodes, nproc = world_shape(spec, options)
    cmd = [
        sys.executable,
        "-m",
        "harness.engines.reference.agent",
        f"--nproc-per-node={nproc}",
        f"--nnodes={nnodes}",
        "--max-restarts=0",
        "--monitor-interval=0.5",
    ]
    if options.rdzv_endpoint:
        rdzv_id = options.rdzv_id or os.environ.get("SLURM_JOB_ID") or spec.name
        cmd += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={options.rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
        if options.node_rank is not None:
            cmd.append(f"--node-rank={options.node_rank}")
    else:
        cmd.append("--standalone")
    run_dir = str(options.results_dir)
    cmd += ["-m", "harness", "run", str(Path(options.config).resolve()), "--results-dir", run_dir]
    for o in options.overrides:
        cmd += ["--set", o]
    if options.loadgen:
        cmd += ["--loadgen", options.loadgen] + (["--mlperf-rules"] if options.mlperf_rules else [])
    return cmd


def _wait(proc: subprocess.Popen) -> tuple[int, list]:
    """Wait for the agent, remembering its ranks (they must not outlive it); (exit code, ranks
    seen)."""
    seen: dict[int, object] = {}
    while True:
        for p in descendants(proc.pid):
            seen.setdefault(p.pid, p)
        try:
            return proc.wait(timeout=1.0), list(seen.values())
        except subprocess.TimeoutExpired:
            continue


def _ending(rc: int) -> str:
    if rc >= 0:
        return f"exited with code {rc}"
    try:
        return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"was killed by signal {-rc}"


def settle(spec, run_dir: Path, agent_rc: int, failures: Path) -> None:
    """After the world: the root cause of a failure into ``summary.json``; a run whose agent failed
    is never left ``complete: true``. Nothing to do without a summary (rank 0 on another node)."""
    summary = read_summary_file(run_dir)
    if summary is None:
        return
    reports, agent = read_reports(failures)
    cause = root_cause(spec.layout, reports, agent)
    if cause is not None:
        amend_summary(run_dir, complete=False, failure=cause, incomplete_reason=describe(cause))
    elif agent_rc < 0 or (agent_rc != 0 and summary.get("complete")):
        amend_summary(
            run_dir,
            complete=False,
            incomplete_reason=f"the torchrun agent {_ending(agent_rc)}"
            + (" after rank 0 wrote the results" if summary.get("complete") else ""),
        )
    elif agent_rc != 0:
        amend_summary(run_dir, complete=False)


def world_probes(spec, options: LaunchOptions) -> ContextManager:
    """A search's runs: one world each (nothing is shared between worlds)."""
    return nullcontext(run_world)


def run_world(spec, options: LaunchOptions) -> int:
    """Start the agent for the spec (its run directory ``options.results_dir``), forward
    SIGTERM/SIGINT/SIGHUP to it, wait until none of its processes is left, settle the summary and
    return the agent's exit code."""
    run_dir = Path(options.results_dir)
    cmd = torchrun_command(spec, options)
    failures = Path(tempfile.mkdtemp(prefix="harness-failures-"))
    env = dict(os.environ, **launcher_env(), **{FAILURE_DIR_ENV: str(failures)})
    env.setdefault("OMP_NUM_THREADS", "1")  # 8 ranks on a few cores: no thread oversubscription
    print(
        f"harness run: {spec.name}: {spec.world_size} ranks (tp={spec.parallel.tp} "
        f"pp={spec.parallel.pp} "
        f"dp={spec.parallel.dp}) -> {run_dir}",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum, _frame):  # Slurm pre-emption / Ctrl-C / a closed terminal reach the agent
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        rc, ranks = _wait(proc)
        t0 = time.monotonic()
        killed = reap(ranks, REAP_WAIT_S)
        if killed:
            print(
                f"harness run: killed {len(killed)} rank(s) left after the agent ended "
                f"({time.monotonic() - t0:.0f} s): pids {killed}",
                file=sys.stderr,
                flush=True,
            )
        settle(spec, run_dir, rc, failures)
        return rc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(failures, ignore_errors=True)
