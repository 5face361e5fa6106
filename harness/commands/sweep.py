"""``harness sweep CONFIG``: which layout serves the most within the SLOs, predicted then measured.

Every candidate (tp, pp, dp) is predicted (the planner; with ``--calibrate per-layout``, the
default for the reference engine, a calibration run of each layout and the simulator on it), the
top K and the spec's own layout run a ladder of loads, each run a normal run directory under
``--results-dir`` (``<layout>/<axis>-<load>``), and ``sweep.json`` plus ``report.md`` with the
Pareto chart come out (``harness.sweep``; ``harness.report.sweep_section``).

Resumable: the same command again reuses every finished run. Ctrl-C stops the run in progress
(its world or server is stopped by its engine), leaves ``sweep.json`` with ``complete: false``
and exits 3. Exit codes: 0 a layout met every SLO; 1 none did at any load; 2 bad input (nothing
started); 3 a run failed or the sweep was interrupted.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.engines.options import LaunchOptions
from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_PASS, UsageError

CALIBRATE = ("per-layout", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML (e.g. configs/tiny-tp2-pp4-cpu.yaml)")
    p.add_argument(
        "--layouts",
        default="auto",
        help="auto (every tp*pp*dp = the cluster's GPUs the planner accepts) or a list: "
        "tp2-pp4,tp1-pp8,tp2-pp2-dp2",
    )
    p.add_argument(
        "--loads",
        default="auto",
        help="a ladder of request rates (closed loop: concurrencies), e.g. 2,4,8, or auto: the "
        "spec's load doubled until the knee (throughput stops rising, latency climbs)",
    )
    p.add_argument(
        "--engine",
        choices=("reference", "vllm"),
        default=None,
        help="the engine (default: the spec's engine.kind)",
    )
    p.add_argument(
        "--top",
        type=int,
        default=2,
        help="how many of the ranked layouts run every load, besides the spec's own (default 2)",
    )
    p.add_argument(
        "--calibrate",
        choices=CALIBRATE,
        default=None,
        help="per-layout: one calibration run per layout (its lowest load) and the simulator on "
        "it rank the layouts (default for the reference engine); none: the planner's bounds rank "
        "them (vLLM: always, it records no step tables)",
    )
    p.add_argument(
        "--results-dir", help="the sweep folder (default results/<UTC time>_<name>-sweep)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field (repeatable)",
    )


@dataclass(frozen=True)
class SweepOptions:
    config: Path
    layouts: str
    loads: str
    engine: str | None
    top: int
    calibrate: str | None
    results_dir: Path | None
    overrides: tuple[str, ...]

    def args(self) -> dict:
        """What must be the same for a sweep to resume (the folder aside), the config file's
        content included."""
        import hashlib

        try:  # an edited config is another sweep: its finished runs are not this one's
            digest = hashlib.sha256(self.config.read_bytes()).hexdigest()
        except OSError:
            digest = None
        return {
            "config": str(self.config.resolve()),
            "config_sha256": digest,
            "layouts": self.layouts,
            "loads": self.loads,
            "engine": self.engine,
            "top": self.top,
            "calibrate": self.calibrate,
            "overrides": list(self.overrides),
        }


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    if args.top < 0:
        raise UsageError(f"--top: must be >= 0, got {args.top}")
    engine = ("engine.kind=" + args.engine,) if args.engine else ()
    return SweepOptions(
        Path(args.config),
        args.layouts,
        args.loads,
        args.engine,
        args.top,
        args.calibrate,
        Path(args.results_dir) if args.results_dir else None,
        (*args.overrides, *engine),
    )


class Runner:
    """One layout's runs through the spec's engine (``entry.probes``: one server for every load of
    a vLLM layout, one world per run for the reference engine); a finished run is reused."""

    def __init__(self, spec, entry, launch: LaunchOptions, root: Path, ladder) -> None:
        self.spec, self.entry, self.launch, self.root, self.ladder = (
            spec,
            entry,
            launch,
            root,
            ladder,
        )

    def launch_for(self, key, load: float | None = None) -> LaunchOptions:
        extra = list(key.overrides(self.spec))
        if load is not None:
            extra.append(f"{self.ladder.field}={self.ladder.value(load)}")
            path = self.root / key.name / self.ladder.label(load)
        else:
            path = self.root / key.name
        return self.launch.for_run(path, *extra)

    @contextmanager
    def layout(self, key):
        from harness.commands.run_capacity import result_of_run
        from harness.commands.run_exit import exit_code
        from harness.results.writer import read_summary_file
        from harness.spec.spec import load_spec
        from harness.sweep.state import clear_unfinished, finished

        base = self.launch_for(key)
        layout_spec = load_spec(base.config, list(base.overrides))
        with self.entry.probes(layout_spec, base) as serve:

            def run(load: float):
                launch = self.launch_for(key, load)
                path = launch.results_dir
                summary = finished(path)
                if summary is not None:
                    print(
                        f"harness sweep: {key.name} {self.ladder.label(load)}: reusing {path}",
                        file=sys.stderr,
                    )
                    res = result_of_run(path, 0, summary)
                    res.extra["reused"] = True
                    return res
                clear_unfinished(self.root, path)
                run_spec = load_spec(launch.config, list(launch.overrides))
                rc = exit_code(path, serve(run_spec, launch))
                res = result_of_run(path, rc, read_summary_file(path))
                res.extra["reused"] = False
                return res

            yield run


def main(args: argparse.Namespace) -> int:
    from harness.engines.registry import engine_entry
    from harness.spec.inputs import check_inputs
    from harness.spec.spec import load_spec
    from harness.sweep.candidates import candidates
    from harness.sweep.driver import Plan, SweepStopped, new_doc, sweep
    from harness.sweep.ladder import ladder
    from harness.sweep.state import open_root, write

    opts = sweep_options(args)
    spec = load_spec(opts.config, list(opts.overrides))
    entry = engine_entry(spec.engine.kind)
    calibrate = opts.calibrate or ("per-layout" if spec.engine.kind == "reference" else "none")
    if calibrate == "per-layout" and spec.engine.kind != "reference":
        raise UsageError(
            f"--calibrate per-layout: the {spec.engine.kind} engine records no step tables of its "
            "serving loop to calibrate on; use --calibrate none (the planner ranks the layouts)"
        )
    plan = Plan(
        candidates(spec, opts.layouts),
        ladder(spec, opts.loads),
        opts.top,
        calibrate,
        spec.slo.confidence,
    )
    check_inputs(spec)
    from harness.results.writer import default_run_dir

    root = (opts.results_dir or default_run_dir(spec.name + "-sweep")).expanduser()
    launch = LaunchOptions(config=opts.config, overrides=opts.overrides)
    runner = Runner(spec, entry, launch, root, plan.ladder)
    for key in plan.cands.keys:  # every layout's spec loads and its engine can start it
        layout_launch = runner.launch_for(key)
        entry.preflight(
            load_spec(layout_launch.config, list(layout_launch.overrides)), layout_launch
        )
    open_root(root, opts.args())
    doc = {**new_doc(plan, opts.args(), spec), "root": str(root.resolve())}

    def load_at(key, load):
        launch_x = runner.launch_for(key, load)
        return load_spec(launch_x.config, list(launch_x.overrides))

    save = lambda d: write(root, d)  # noqa: E731
    save(doc)
    rc = None
    try:
        sweep(plan, doc, runner, load_at, save)
    except SweepStopped as e:
        print(
            f"harness sweep: stopped: {e}; finished runs are reused when the same command runs "
            f"again ({root})",
            file=sys.stderr,
        )
        rc = EXIT_INCOMPLETE
    except KeyboardInterrupt:
        doc["complete"], doc["stopped"] = False, "interrupted (Ctrl-C)"
        save(doc)
        print(
            f"harness sweep: interrupted; {root / 'sweep.json'} marked incomplete", file=sys.stderr
        )
        rc = EXIT_INCOMPLETE
    save(doc)
    _outputs(root, doc)
    if rc is not None:
        return rc
    return EXIT_PASS if doc.get("best") else EXIT_FAIL


def _outputs(root: Path, doc: dict) -> None:
    """The report (never changing the exit code) and the summary lines."""
    from harness.report.sweep_section import print_summary, write_sweep_report

    try:
        path = write_sweep_report(root, doc)
        print(f"harness sweep: report {path}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - the report never changes the verdict
        print(f"harness sweep: report not written ({type(e).__name__}: {e})", file=sys.stderr)
    print(print_summary(doc))
