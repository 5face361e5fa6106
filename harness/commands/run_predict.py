"""``harness run CONFIG --find-capacity --predict --from SRC [--confirm]``: the capacity search on
the simulator (harness.predict.capacity: seconds, no run per probe), then, with ``--confirm``, one
real run at the predicted capacity to check it.

Writes ``<results-dir>/capacity.json`` (``predicted: true``, every simulated probe, and the
confirming run's verdict when there is one); the confirming run lands in ``<results-dir>/confirm``.
Exit: 0 a capacity was found (and, with --confirm, the real run at it met every SLO); 1 none was
found, or the confirming run missed an SLO; 3 the confirming run failed; 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_INCONCLUSIVE, EXIT_PASS, UsageError


def find_capacity_predicted(spec, args: argparse.Namespace, launch_probe) -> int:
    from harness.predict.capacity import predicted_capacity
    from harness.predict.closure import calibrated
    from harness.results.atomic import atomic_write_json
    from harness.results.writer import check_new_run_dir, default_run_dir, read_summary_file
    from harness.spec.spec import load_spec

    if not args.predict_from:
        raise UsageError("--predict: give the calibration with --from RUN_DIR|EMULATE_JSON")
    model = calibrated(args.predict_from, spec)
    root = check_new_run_dir(args.results_dir or default_run_dir(spec.name + "-capacity"))
    found = predicted_capacity(
        spec, model, lambda extra: load_spec(args.config, [*args.overrides, *extra])
    )
    found["from"] = str(args.predict_from)
    atomic_write_json(root / "capacity.json", {**found, "done": not args.confirm})
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
    if not args.confirm:
        return EXIT_PASS
    value = int(best) if field == "workload.concurrency" else best
    probe_dir = root / "confirm"
    probe_args = argparse.Namespace(
        **{
            **vars(args),
            "results_dir": str(probe_dir),
            "overrides": [*args.overrides, f"{field}={value}"],
        }
    )
    rc = launch_probe(load_spec(args.config, probe_args.overrides), probe_args)
    summary = read_summary_file(probe_dir) or {}
    confirm = {
        field: value,
        "run_dir": str(probe_dir),
        "exit_code": rc,
        "verdict": summary.get("verdict", "INCOMPLETE")
        if summary.get("complete")
        else "INCOMPLETE",
        "request_throughput": (summary.get("metrics") or {}).get("request_throughput"),
    }
    atomic_write_json(root / "capacity.json", {**found, "confirm": confirm, "done": True})
    print(f"confirming run at {field} = {value}: {confirm['verdict']} ({probe_dir})")
    if rc not in (EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE) or not summary.get("complete"):
        print(
            f"harness run: --confirm: the run at {field}={value} failed (exit {rc})",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return {"PASS": EXIT_PASS, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(confirm["verdict"], EXIT_FAIL)
