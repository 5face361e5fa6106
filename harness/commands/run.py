"""``harness run CONFIG``: the main job. This module is its command line only: the flags, and one
``RunOptions`` built from them (``harness.commands.run_options``), then one of two roles:

- outside a torchrun world, the launch (``harness.commands.run_launch``): check everything, let the
  spec's engine serve through its registry entry (the reference engine starts its torchrun world
  with the process count the spec needs; an external engine serves from this process), and turn
  the run directory into the exit code;
- inside a torchrun world (``torchrun ... -m harness run CONFIG``, as the launcher and Slurm jobs
  start it), one rank of the run (``harness.commands.run_rank``).

``vllm bench serve``'s flags set spec fields like ``--set`` (``harness.commands.run_flags``); at the
end the run directory gets its report and, with ``--save-result``, vLLM's result file
(``harness.commands.run_outputs``), without changing the exit code.

Exit codes: 0 run complete and every SLO met; 1 run complete and some SLO missed; 2 bad input;
3 run failed or interrupted (results on disk marked incomplete)."""

from __future__ import annotations

import argparse


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
    p.add_argument(
        "--loadgen",
        choices=("server", "offline"),
        type=str.lower,
        default=None,
        help="MLPerf LoadGen issues the queries and judges the run (Server: its Poisson schedule "
        "at workload.rate_rps; Offline: all at once); its logs land in the run directory and its "
        "verdict in summary.json (pip install 'harness[loadgen]')",
    )
    p.add_argument(
        "--mlperf-rules",
        action="store_true",
        help="with --loadgen: enforce MLPerf's rules (600 s minimum duration; LoadGen then issues "
        "more queries than the trace holds, reusing its prompts); default: not enforced",
    )
    p.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        default=None,
        help="run the spec N times into <results-dir>/run-NN, then repeats.json and report.md "
        "across them (mean and interval over runs, SLO verdicts across runs); "
        "`harness compare` takes the folder",
    )
    g = p.add_argument_group(
        "run until decided",
        "keep the arrivals going until every SLO is PASS or FAIL at a look (errors stay at "
        "slo.confidence under the repeated looks: docs/performance.md) or a budget runs out",
    )
    g.add_argument(
        "--until-decided", action="store_true", help="-> slo.until_decided: true (stop early)"
    )
    g.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="request budget -> slo.max_requests (default: the workload's requests)",
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        metavar="S",
        help="time budget of the measured phase -> slo.max_seconds (default: none)",
    )
    from harness.commands.run_flags import add_bench_arguments

    add_bench_arguments(p)


def main(args: argparse.Namespace) -> int:
    from harness.commands.run_options import run_options
    from harness.engines.reference.dist import launch_env

    options = run_options(args)
    if launch_env().in_torchrun:
        from harness.commands.run_rank import main_in_world

        return main_in_world(options)
    from harness.commands.run_launch import main_outside

    return main_outside(options)
