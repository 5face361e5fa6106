"""``harness run`` outside a torchrun world: check everything, then let the spec's engine serve
(its registry entry, ``harness.engines.registry``) and turn the run directory into the exit code.

Before anything starts (one line, exit 2, nothing written): the spec, every input
(``harness.spec.inputs``: the trace, the checkpoint's headers), the engine's own preflight (the
torchrun flags; a python with vllm; a given server that answers), the results folder. Then one run
(the report and ``--save-result``'s file after it, never changing the exit code), or a capacity
search (``harness.commands.run_capacity``; on the simulator: ``harness.commands.run_predict``).
"""

from __future__ import annotations

from harness.commands.run_options import RunOptions


def main_outside(options: RunOptions) -> int:
    from harness.engines.registry import engine_entry
    from harness.spec.inputs import check_inputs
    from harness.spec.spec import load_spec

    launch = options.launch
    spec = load_spec(launch.config, list(launch.overrides))
    entry = engine_entry(spec.engine.kind)
    check_inputs(spec)
    entry.preflight(spec, launch)
    from harness.engines.loadgen.launch import preflight as loadgen_preflight

    loadgen_preflight(spec, launch)
    cap = options.capacity
    if cap is not None and cap.predict:
        from harness.commands.run_predict import find_capacity_predicted

        return find_capacity_predicted(spec, options, entry)
    if cap is not None:
        from harness.commands.run_capacity import find_capacity

        return find_capacity(spec, options, entry)
    if options.repeats is not None:
        from harness.commands.run_repeats import run_repeats

        return run_repeats(spec, options, entry)
    return run_once(spec, options, entry)


def run_once(spec, options: RunOptions, entry) -> int:
    """One run into ``--results-dir`` (default ``results/<UTC time>_<name>``), then its outputs."""
    from dataclasses import replace

    from harness.commands.run_exit import exit_code
    from harness.commands.run_outputs import write_outputs
    from harness.results.writer import check_new_run_dir, default_run_dir

    run_dir = check_new_run_dir(options.launch.results_dir or default_run_dir(spec.name))
    rc = exit_code(run_dir, entry.serve(spec, replace(options.launch, results_dir=run_dir)))
    write_outputs(run_dir, options.outputs)  # the report, --save-result's file: rc stays the run's
    return rc
