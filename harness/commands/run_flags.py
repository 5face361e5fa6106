"""``vllm bench serve``'s flags on ``harness run``: argparse for them, and their mapping onto the
spec's ``--set`` overrides (``harness.spec.bench_flags``), so ``spec.yaml`` records what they set.

Every check runs before any rank or server starts (one line, exit 2): a bad value, a flag and a
``--set`` that give one field different values (named both; over the spec file a flag wins, as
``--set`` does), an output flag without ``--save-result``.
The outputs (``--save-result`` and the report) are ``harness.commands.run_outputs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UsageError

# the flags that map onto the spec (dest names = harness.spec.bench_flags.BenchFlags fields)
SPEC_FLAGS = (
    "request_rate",
    "burstiness",
    "max_concurrency",
    "num_prompts",
    "random_input_len",
    "random_output_len",
    "random_range_ratio",
    "seed",
    "goodput",
    "percentile_metrics",
    "metric_percentiles",
)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "vllm bench serve flags",
        "the same names and meanings as `vllm bench serve`; each sets a spec field and "
        "overrides the spec file as --set does (recorded in spec.yaml); a flag and a --set "
        "that give one field different values are an error naming both",
    )
    g.add_argument(
        "--request-rate",
        type=float,
        metavar="R",
        help="requests/s, or inf (every request at "
        "once; with --max-concurrency: a closed loop) -> workload.rate_rps / arrival",
    )
    g.add_argument(
        "--burstiness",
        type=float,
        metavar="B",
        help="gamma shape of the arrival gaps: 1 Poisson, "
        "inf constant -> workload.arrival / burstiness",
    )
    g.add_argument(
        "--max-concurrency",
        type=int,
        metavar="C",
        help="at most C requests in flight; later "
        "arrivals wait at the client -> workload.max_concurrency (closed loop: concurrency)",
    )
    g.add_argument("--num-prompts", type=int, metavar="N", help="-> workload.num_requests")
    g.add_argument(
        "--random-input-len", type=int, metavar="L", help="prompt tokens -> workload.input_len"
    )
    g.add_argument(
        "--random-output-len", type=int, metavar="O", help="output tokens -> workload.output_len"
    )
    g.add_argument(
        "--random-range-ratio",
        metavar="r",
        help='lengths uniform on [L(1-r), L(1+r)]; a number or {"input": r1, "output": r2}',
    )
    g.add_argument("--seed", type=int, help="-> workload.seed")
    g.add_argument(
        "--goodput",
        nargs="+",
        metavar="KEY:MS",
        help="per-request thresholds of request_goodput, "
        "e.g. ttft:500 tpot:50 e2el:5000 -> slo.goodput",
    )
    g.add_argument(
        "--percentile-metrics",
        metavar="LIST",
        help="statistics of the result file, e.g. ttft,tpot,itl,e2el -> run.percentile_metrics",
    )
    g.add_argument(
        "--metric-percentiles", metavar="LIST", help="e.g. 50,90,99 -> run.metric_percentiles"
    )
    g.add_argument(
        "--save-result",
        action="store_true",
        help="write vLLM's flat result JSON at the end of a complete run",
    )
    g.add_argument(
        "--save-detailed",
        action="store_true",
        help="with --save-result: add the per-request "
        "lists (input_lens, ttfts, itls, latencies, start_times, errors, ...)",
    )
    g.add_argument(
        "--result-dir",
        metavar="DIR",
        help="with --save-result: the file's folder (default: the run directory)",
    )
    g.add_argument(
        "--result-filename",
        metavar="NAME",
        help="with --save-result: the file's name (default "
        "vLLM's: {label}-{rate}qps[-concurrency{C}]-{model}-{date}.json)",
    )
    p.add_argument(
        "--no-report", action="store_true", help="do not write report.md/report.html at the end"
    )


def bench_set_strings(args: argparse.Namespace) -> list[str]:
    """The spec flags given as ``--set`` strings (none when no flag is given), after checking every
    bench flag against the spec file and the ``--set`` overrides."""
    from harness.spec.bench_flags import BenchFlags, bench_overrides
    from harness.spec.yaml_text import read_yaml_file

    given = {name: getattr(args, name, None) for name in SPEC_FLAGS}
    if all(v is None for v in given.values()):
        return []
    raw = read_yaml_file(args.config)
    return bench_overrides(
        BenchFlags(**given),
        raw if isinstance(raw, dict) else None,
        str(args.config),
        args.overrides,
    )


def check_output_flags(args: argparse.Namespace) -> None:
    """The result-file flags: each needs --save-result; the folder and name must be usable."""
    save = getattr(args, "save_result", False)
    for flag, value in (
        ("--save-detailed", getattr(args, "save_detailed", False)),
        ("--result-dir", getattr(args, "result_dir", None)),
        ("--result-filename", getattr(args, "result_filename", None)),
    ):
        if value and not save:
            raise UsageError(
                f"{flag}: applies to the result file; add --save-result (or drop {flag})"
            )
    if not save:
        return
    if getattr(args, "find_capacity", False):
        raise UsageError(
            "--save-result: one file per run, and --find-capacity makes one run per probe "
            "(capacity.json records them); drop one of them"
        )
    name = args.result_filename
    if name is not None and (not name.strip() or name.endswith(("/", "\\")) or "\0" in name):
        raise UsageError(f"--result-filename: {name!r} is not a file name; give e.g. result.json")
    if args.result_dir is not None:
        folder = Path(args.result_dir)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--result-dir: {folder} is a file; give a folder")
