"""``harness run``'s command line → one typed ``RunOptions``, built once here; everything below
``commands/`` gets its parts (the engines ``LaunchOptions``), never argparse's namespace.

Every check of the flags themselves runs here, before any rank or server starts (one line, exit 2):
the ``vllm bench serve`` flags (``harness.commands.run_flags``, folded into the overrides), the
result-file flags, the search flags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.engines.options import LaunchOptions
from harness.errors import UsageError


@dataclass(frozen=True)
class OutputOptions:
    """What the run writes after it ends (``harness.commands.run_outputs``)."""

    report: bool = True
    save_result: bool = False
    save_detailed: bool = False
    result_dir: Path | None = None
    result_filename: str | None = None


@dataclass(frozen=True)
class CapacityOptions:
    """``--find-capacity``: the search's budget, and the simulator in place of runs."""

    probes: int = 8
    predict: bool = False
    predict_from: str | None = None
    confirm: bool = False


@dataclass(frozen=True)
class RunOptions:
    launch: LaunchOptions
    outputs: OutputOptions
    capacity: CapacityOptions | None = None  # None: one run
    repeats: int | None = None  # --repeats N: N runs under one parent (None: one run)


def run_options(args: argparse.Namespace) -> RunOptions:
    from harness.commands.run_flags import bench_set_strings, check_output_flags

    check_output_flags(args)
    overrides = (*args.overrides, *bench_set_strings(args), *until_decided_strings(args))
    launch = LaunchOptions(
        config=Path(args.config),
        overrides=tuple(overrides),
        results_dir=Path(args.results_dir) if args.results_dir else None,
        nnodes=args.nnodes,
        nproc_per_node=args.nproc_per_node,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
        loadgen=args.loadgen,
        mlperf_rules=args.mlperf_rules,
    )
    outputs = OutputOptions(
        report=not args.no_report,
        save_result=args.save_result,
        save_detailed=args.save_detailed,
        result_dir=Path(args.result_dir) if args.result_dir else None,
        result_filename=args.result_filename,
    )
    capacity = _capacity(args)
    _check_loadgen(args, capacity)
    return RunOptions(launch, outputs, capacity, _repeats(args))


def _check_loadgen(args: argparse.Namespace, capacity: CapacityOptions | None) -> None:
    if args.mlperf_rules and not args.loadgen:
        raise UsageError("--mlperf-rules: goes with --loadgen server|offline")
    if args.loadgen and capacity is not None:
        raise UsageError(
            "--loadgen: not with --find-capacity (LoadGen runs one test); drop one of them"
        )
    if args.loadgen and getattr(args, "until_decided", False):
        raise UsageError(
            "--loadgen: not with --until-decided (LoadGen decides the run's length itself, with "
            "its own early stopping); drop one of them"
        )
    if args.loadgen and getattr(args, "repeats", None):
        raise UsageError("--loadgen: not with --repeats (one LoadGen test per run); drop one")
    if args.loadgen == "offline" and args.request_rate is not None and not args.mlperf_rules:
        # (with --mlperf-rules the rate is LoadGen's expected throughput: it sizes the run)
        raise UsageError(
            "--loadgen offline: issues every query at once, so --request-rate has no effect; "
            "drop it, or use --loadgen server for a rate"
        )


def until_decided_strings(args: argparse.Namespace) -> list[str]:
    """``--until-decided``, ``--max-requests``, ``--max-seconds`` as ``--set`` strings (the spec
    validates them: a budget without ``--until-decided`` is refused there)."""
    out = ["slo.until_decided=true"] if getattr(args, "until_decided", False) else []
    for flag, field in (("max_requests", "slo.max_requests"), ("max_seconds", "slo.max_seconds")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{field}={value!r}")
    return out


def _repeats(args: argparse.Namespace) -> int | None:
    n = getattr(args, "repeats", None)
    if n is None:
        return None
    if n < 2:
        raise UsageError(f"--repeats: must be >= 2 (one run: leave it out), got {n}")
    if args.find_capacity:
        raise UsageError("--repeats: not with --find-capacity; repeat a run, not a search")
    if args.result_dir or args.result_filename:
        raise UsageError(
            "--repeats: each run's --save-result file goes into its own run directory; drop "
            "--result-dir/--result-filename"
        )
    return n


def _capacity(args: argparse.Namespace) -> CapacityOptions | None:
    if (args.predict or args.confirm or args.predict_from) and not (
        args.find_capacity and args.predict
    ):
        raise UsageError("--predict, --from and --confirm go with --find-capacity --predict")
    if not args.find_capacity:
        return None
    if args.probes < 1:
        raise UsageError(f"--probes: must be >= 1, got {args.probes}")
    if args.predict and not args.predict_from:
        raise UsageError("--predict: give the calibration with --from RUN_DIR|EMULATE_JSON")
    return CapacityOptions(args.probes, args.predict, args.predict_from, args.confirm)
