"""``harness run CONFIG``: the main job.

Outside a torchrun world it validates the spec and the trace, then starts the reference engine's
torchrun world with the process count the spec needs (``--nnodes``/``--node-rank``/
``--rdzv-endpoint`` for several nodes), waits and turns the run's summary into the exit code.
Inside a torchrun world (``torchrun ... -m harness run CONFIG``, as Slurm jobs start it) it is one
rank of the run: it builds the trace, opens the writer on rank 0 and calls the engine seam
(``harness.engines.base.Engine.serve``); rank 0 writes the summary from the engine's result.

An external engine (``engine.kind: vllm | openai``) runs in this process instead:
``harness.commands.run_external``.

``vllm bench serve``'s flags map onto the spec (``harness.commands.run_flags``); at the end the run
directory gets its report and, with ``--save-result``, vLLM's result file
(``harness.commands.run_outputs``), without changing the exit code.

Exit codes: 0 run complete and every SLO met; 1 run complete and some SLO missed; 2 bad input;
3 run failed or interrupted (results on disk marked incomplete); 4 run complete, no SLO missed, but
some SLO undecided at the confidence level (INCONCLUSIVE)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_INCONCLUSIVE, EXIT_PASS, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML (e.g. configs/tiny-tp2-pp4-cpu.yaml)")
    p.add_argument(
        "--results-dir", help="the run directory to write (default: results/<UTC time>_<name>)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set run.max_batch=4 (repeatable)",
    )
    p.add_argument(
        "--nnodes",
        type=int,
        default=None,
        help="torchrun nodes (default: the spec's cluster.nodes "
        "when --rdzv-endpoint is given, else 1)",
    )
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="processes per node (default: world/nnodes)",
    )
    p.add_argument(
        "--node-rank", type=int, default=None, help="this node's rank (static rendezvous)"
    )
    p.add_argument(
        "--rdzv-endpoint", default=None, help="HOST:PORT of the c10d rendezvous (multi-node)"
    )
    p.add_argument(
        "--rdzv-id", default=None, help="rendezvous id shared by all nodes (default: SLURM_JOB_ID)"
    )
    p.add_argument(
        "--find-capacity",
        action="store_true",
        help="search the highest request rate (closed loop: concurrency) meeting every SLO: "
        "doubling, "
        "then bisection; each probe is a run in <results-dir>/probe-NN",
    )
    p.add_argument(
        "--probes", type=int, default=8, help="with --find-capacity: most runs to make (default 8)"
    )
    p.add_argument(
        "--predict",
        action="store_true",
        help="with --find-capacity: search on the simulator calibrated "
        "by --from (harness predict), seconds instead of a run per probe",
    )
    p.add_argument(
        "--from",
        dest="predict_from",
        metavar="RUN_DIR|EMULATE_JSON",
        default=None,
        help="with --predict: the calibration (a reference-engine run or `harness emulate --out` "
        "JSON)",
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="with --find-capacity --predict: one real run at the predicted capacity",
    )
    from harness.commands.run_flags import add_bench_arguments

    add_bench_arguments(p)


def main(args: argparse.Namespace) -> int:
    from harness.commands.run_flags import with_bench_overrides

    # vLLM bench flags -> --set strings (also inside a Slurm world)
    args = with_bench_overrides(args)
    from harness.engines.reference.dist import launch_env
    from harness.spec.spec import load_spec

    env = launch_env()
    if env.in_torchrun:
        from harness.engines.reference.lifetime import die_with_parent
        from harness.engines.reference.stop import StopGuard, block_stop_signals

        block_stop_signals()
        die_with_parent()
        guard = StopGuard()  # from here on, a signal or a dead agent/launcher stops this rank
        spec = load_spec(args.config, args.overrides)
        if args.find_capacity:
            raise UsageError(
                "--find-capacity: start it outside torchrun (it launches one run per probe)"
            )
        from harness.engines.reference.engine import ReferenceEngine
        from harness.results.writer import default_run_dir

        run_dir = Path(args.results_dir) if args.results_dir else default_run_dir(spec.name)
        rc = serve(ReferenceEngine(run_dir, guard), spec, run_dir, reports=env.rank == 0)
        if (
            env.rank == 0 and not launched_by_harness()
        ):  # a world Slurm started: no launcher writes them
            from harness.commands.run_outputs import write_outputs

            write_outputs(run_dir, args)
        return rc
    spec = load_spec(args.config, args.overrides)
    if spec.engine.kind != "reference":  # a server, driven from this process
        from harness.commands.run_external import main_external

        # this verb's steps, without an import cycle
        return main_external(spec, args, sys.modules[__name__])
    check_launch(spec, args)
    if (args.predict or args.confirm or args.predict_from) and not (
        args.find_capacity and args.predict
    ):
        raise UsageError("--predict, --from and --confirm go with --find-capacity --predict")
    if args.find_capacity and args.predict:
        from harness.commands.run_predict import find_capacity_predicted

        return find_capacity_predicted(spec, args, launch)
    if args.find_capacity:
        return find_capacity(spec, args)
    return launch(spec, args, outputs=True)


def launched_by_harness() -> bool:
    """This rank's world was started by ``harness run``'s launcher (which writes the outputs after
    it)."""
    import os

    from harness.engines.reference.lifetime import LAUNCHER_ENV

    return bool(os.environ.get(LAUNCHER_ENV))


def check_launch(spec, args: argparse.Namespace) -> None:
    """Everything that needs no process group, before any rank starts (exit 2, nothing written):
    the trace, the checkpoint's headers, the torchrun flags."""
    from harness.engines.reference.launcher import world_shape
    from harness.spec.inputs import check_inputs

    check_inputs(spec)
    world_shape(spec, args)


def serve(engine, spec, run_dir: Path, reports: bool) -> int:
    """Serve the spec's trace through ``engine`` in this process. The reporting process opens the
    run directory, saves the trace (replay it with ``workload.trace``) and writes the summary from
    the engine's result. Exit 0 when the run completed (the verdict is the caller's), else 3."""
    from harness.plan.planner import plan as make_plan
    from harness.results.summary import final_summary
    from harness.results.writer import RunWriter
    from harness.spec.workload import build_trace, save_trace

    trace = build_trace(
        spec.workload, spec.shape.vocab, spec.run.max_seq_len or spec.shape.max_context
    )
    writer = RunWriter.create(run_dir, spec) if reports else None
    if writer is not None:
        save_trace(trace, run_dir / "trace.jsonl")
    failed = True
    try:
        result = engine.serve(spec, trace, writer)
        if writer is not None:
            summary, tables = final_summary(spec, make_plan(spec).to_dict(), result)
            writer.write_final(summary, tables, hostnames=result.hardware.get("hosts"))
            print(
                f"harness: {writer.summary['verdict']}: results in {run_dir}",
                file=sys.stderr,
                flush=True,
            )
        failed = False
    finally:
        engine.close(failed)
    stopped = writer is not None and not writer.summary.get("complete")
    return EXIT_PASS if result.complete and not stopped else EXIT_INCOMPLETE


def find_capacity(spec, args: argparse.Namespace, launch_probe=None) -> int:
    """One run per probe under <results-dir>/probe-NN; capacity.json records every probe. A probe
    that fails or times out is recorded as failed and ends the search (exit 3), capacity.json
    holding what the probes before it found. ``launch_probe(spec, args) -> exit code`` runs one
    probe (default: ``launch``, a torchrun world)."""
    from harness.results.atomic import atomic_write_json
    from harness.results.writer import check_new_run_dir, default_run_dir, read_summary_file
    from harness.spec.spec import load_spec
    from harness.verdicts.capacity import capacity, next_probe

    if args.probes < 1:
        raise UsageError(f"--probes: must be >= 1, got {args.probes}")
    closed = spec.workload.arrival == "closed"
    field = "workload.concurrency" if closed else "workload.rate_rps"
    x0 = float(spec.workload.concurrency if closed else spec.workload.rate_rps)
    root = check_new_run_dir(args.results_dir or default_run_dir(spec.name + "-capacity"))
    history: list[tuple[float, bool]] = []
    probes: list[dict] = []
    stopped: dict = {}

    def record(done: bool, **extra) -> None:
        atomic_write_json(
            root / "capacity.json",
            {
                "field": field,
                "start": x0,
                "probes": probes,
                "capacity": capacity(history),
                "done": done,
                **extra,
            },
        )

    while (x := next_probe(history, x0, integer=closed, max_probes=args.probes)) is not None:
        value = int(x) if closed else round(x, 6)
        probe_dir = root / f"probe-{len(history):02d}"
        probe_args = argparse.Namespace(
            **{
                **vars(args),
                "results_dir": str(probe_dir),
                "overrides": [*args.overrides, f"{field}={value}"],
            }
        )
        try:
            probe_spec = load_spec(args.config, probe_args.overrides)
        except UsageError as e:  # e.g. the doubling passed a field's limit: the search ends there
            stopped["stopped"] = f"probe {field}={value}: {e}"
            break
        rc = (launch_probe or launch)(probe_spec, probe_args)
        summary = read_summary_file(probe_dir) or {}
        metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
        row = {
            "probe": len(probes),
            field: value,
            "verdict": summary.get("verdict", "INCOMPLETE"),
            "run_dir": str(probe_dir),
            "exit_code": rc,
            "slo": summary.get("slo") or [],
            "request_throughput": metrics.get("request_throughput"),
            "request_goodput": metrics.get("request_goodput"),
        }
        if (
            rc not in (EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE)
            or summary.get("complete") is not True
        ):
            reason = summary.get("incomplete_reason") or f"exit {rc}, no summary"
            probes.append({**row, "verdict": "INCOMPLETE", "failed": True, "reason": reason})
            record(False, stopped=f"probe {field}={value} failed: {reason}")
            print(
                f"harness run: --find-capacity: probe {field}={value} failed ({reason}); "
                f"what the earlier probes found is in {root / 'capacity.json'}",
                file=sys.stderr,
            )
            return EXIT_INCOMPLETE
        history.append((x, rc == EXIT_PASS))  # an undecided probe does not count as meeting
        probes.append({**row, "failed": False})
        record(False)
    record(True, **stopped)
    best = capacity(history)
    print(f"{'probe':>5} {field:>22}  verdict")
    for p in probes:
        print(f"{p['probe']:>5} {p[field]:>22}  {p['verdict']}")
    print(f"capacity: {field} = {best if best is not None else 'none of the probes met every SLO'}")
    return EXIT_PASS if best is not None else EXIT_FAIL


def launch(spec, args: argparse.Namespace, outputs: bool = False) -> int:
    """One torchrun world; ``outputs``: then the report and the result file (not for capacity
    probes)."""
    from harness.engines.reference.launcher import run_world
    from harness.results.writer import check_new_run_dir, default_run_dir

    run_dir = check_new_run_dir(args.results_dir or default_run_dir(spec.name))
    rc = exit_code(run_dir, run_world(spec, args, run_dir))
    if outputs:
        from harness.commands.run_outputs import write_outputs

        write_outputs(run_dir, args)
    return rc


def exit_code(run_dir: Path, torchrun_rc: int) -> int:
    """The exit code from ``summary.json`` alone (the launcher settled it after the world ended)."""
    from harness.results.writer import read_summary_file

    summary = read_summary_file(run_dir)
    if summary is None:
        if torchrun_rc == 0:  # a multi-node run: rank 0 and its results live on another node
            return EXIT_PASS
        print(
            f"harness run: failed before writing results (torchrun exit {torchrun_rc})",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if not summary.get("complete"):
        print(
            f"harness run: INCOMPLETE: {summary.get('incomplete_reason')}; partial results in "
            f"{run_dir}",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if torchrun_rc != 0:
        return EXIT_INCOMPLETE
    from harness.report.slo_table import slo_table

    verdict = summary.get("verdict")
    print(slo_table(summary))
    print(f"harness run: {verdict}; results in {run_dir}", file=sys.stderr)
    return verdict_exit_code(verdict)


def verdict_exit_code(verdict: str | None) -> int:
    """A complete run's verdict → its exit code: PASS 0, INCONCLUSIVE 4, anything else (FAIL,
    UNMEASURED) 1."""
    return {"PASS": EXIT_PASS, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(str(verdict), EXIT_FAIL)
