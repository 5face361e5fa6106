"""``harness run CONFIG --find-capacity``: the capacity search (``harness.verdicts.capacity``) with
the spec's engine as its probe: one run per probe under ``<results-dir>/probe-NN`` (a torchrun
world each, or runs against one server: the engine's ``probes``), ``capacity.json`` rewritten after
every probe.

A probe that fails or times out is recorded as failed and ends the search (exit 3), capacity.json
holding what the probes before it found. Exit 0 when some probe met every SLO, else 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands.run_options import RunOptions
from harness.errors import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_INCONCLUSIVE, EXIT_PASS, UsageError


def find_capacity(spec, options: RunOptions, entry) -> int:
    from harness.results.atomic import atomic_write_json
    from harness.results.writer import check_new_run_dir, default_run_dir
    from harness.verdicts.capacity import load_axis, search

    launch = options.launch
    root = check_new_run_dir(launch.results_dir or default_run_dir(spec.name + "-capacity"))
    field_name = load_axis(spec.workload)[0]

    def write(doc: dict) -> None:
        atomic_write_json(root / "capacity.json", doc)

    with entry.probes(spec, launch) as serve:
        doc = search(
            spec.workload,
            run_probe(launch, serve, root, field_name),
            options.capacity.probes,
            on_probe=write,
        )
    write(doc)
    if not doc["done"]:
        failed = doc["probes"][-1]
        print(
            f"harness run: --find-capacity: probe {field_name}={failed[field_name]} failed "
            f"({failed['reason']}); what the earlier probes found is in {root / 'capacity.json'}",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    best = doc["capacity"]
    print(f"{'probe':>5} {field_name:>22}  verdict")
    for p in doc["probes"]:
        print(f"{p['probe']:>5} {p[field_name]:>22}  {p['verdict']}")
    shown = best if best is not None else "none of the probes met every SLO"
    print(f"capacity: {field_name} = {shown}")
    return EXIT_PASS if best is not None else EXIT_FAIL


def run_probe(launch, serve, root: Path, field_name: str):
    """The probe function: the spec at ``field=value`` served into ``root/probe-NN``, its result
    read back from the run directory."""
    from harness.commands.run_exit import exit_code
    from harness.results.writer import read_summary_file
    from harness.spec.spec import load_spec
    from harness.verdicts.capacity import ProbeRefused, ProbeResult

    count = [0]

    def probe(value) -> ProbeResult:
        probe_dir = root / f"probe-{count[0]:02d}"
        probe_launch = launch.for_run(probe_dir, f"{field_name}={value}")
        try:
            probe_spec = load_spec(probe_launch.config, list(probe_launch.overrides))
        except UsageError as e:  # e.g. the doubling passed a field's limit
            raise ProbeRefused(str(e)) from None
        count[0] += 1
        rc = exit_code(probe_dir, serve(probe_spec, probe_launch))
        return result_of_run(probe_dir, rc, read_summary_file(probe_dir))

    return probe


def result_of_run(run_dir: Path, rc: int, summary: dict | None):
    """A probe's outcome from its run directory: failed unless the run completed (exit 0, 1 or 4;
    an INCONCLUSIVE probe completed, and does not count as meeting the SLOs)."""
    from harness.verdicts.capacity import ProbeResult

    summary = summary or {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    failed = (
        rc not in (EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE) or summary.get("complete") is not True
    )
    return ProbeResult(
        summary.get("verdict", "INCOMPLETE"),
        metrics,
        summary.get("slo") or [],
        failed=failed,
        reason=(summary.get("incomplete_reason") or f"exit {rc}, no summary") if failed else None,
        extra={"run_dir": str(run_dir), "exit_code": rc},
    )
