"""``harness run CONFIG --find-capacity --predict --from SRC [--confirm]``: the capacity search on
the simulator (harness.predict.capacity: seconds, no run per probe), then, with ``--confirm``, one
real run at the predicted capacity to check it.

Writes ``<results-dir>/capacity.json`` (``predicted: true``, every simulated probe, and the
confirming run's verdict when there is one); the confirming run lands in ``<results-dir>/confirm``.
Exit: 0 a capacity was found (and, with --confirm, the real run at it met every SLO); 1 none was
found, or the confirming run missed an SLO; 3 the confirming run failed; 2 bad input.
"""

from __future__ import annotations

import sys

from harness.commands.run_exit import verdict_exit_code
from harness.commands.run_options import RunOptions
from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_PASS


def find_capacity_predicted(spec, options: RunOptions, entry) -> int:
    """The search on the simulator; with ``--confirm``, one run of ``entry`` (the spec's engine) at
    the predicted capacity."""
    from harness.commands.run_capacity import result_of_run
    from harness.commands.run_exit import exit_code
    from harness.predict.capacity import predicted_capacity
    from harness.predict.closure import calibrated
    from harness.results.atomic import atomic_write_json
    from harness.results.writer import check_new_run_dir, default_run_dir, read_summary_file
    from harness.spec.spec import load_spec

    launch, cap = options.launch, options.capacity
    model = calibrated(cap.predict_from, spec)
    root = check_new_run_dir(launch.results_dir or default_run_dir(spec.name + "-capacity"))
    found = predicted_capacity(
        spec, model, lambda extra: load_spec(launch.config, [*launch.overrides, *extra])
    )
    found["from"] = str(cap.predict_from)
    atomic_write_json(root / "capacity.json", {**found, "done": not cap.confirm})
    field, best = found["field"], found["capacity"]
    print(f"{'probe':>5} {field:>22}  simulated verdict")
    for p in found["probes"]:
        print(f"{p['probe']:>5} {p[field]:>22}  {p['verdict']}")
    print(
        f"predicted capacity: {field} = "
        f"{best if best is not None else 'none of the probes met every SLO'} "
        f"({len(found['probes'])} simulated probes, "
        f"{sum(p['sim_wall_s'] for p in found['probes']):.1f} s)"
    )
    if best is None:
        return EXIT_FAIL
    if not cap.confirm:
        return EXIT_PASS
    value = int(best) if field == "workload.concurrency" else best
    probe_dir = root / "confirm"
    probe_launch = launch.for_run(probe_dir, f"{field}={value}")
    probe_spec = load_spec(probe_launch.config, list(probe_launch.overrides))
    rc = exit_code(probe_dir, entry.serve(probe_spec, probe_launch))
    summary = read_summary_file(probe_dir) or {}
    result = result_of_run(probe_dir, rc, summary)
    confirm = {
        field: value,
        "run_dir": str(probe_dir),
        "exit_code": rc,
        "verdict": "INCOMPLETE" if result.failed else result.verdict,
        "request_throughput": result.metrics.get("request_throughput"),
    }
    atomic_write_json(root / "capacity.json", {**found, "confirm": confirm, "done": True})
    print(f"confirming run at {field} = {value}: {confirm['verdict']} ({probe_dir})")
    if result.failed:
        print(
            f"harness run: --confirm: the run at {field}={value} failed (exit {rc})",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return verdict_exit_code(confirm["verdict"])
