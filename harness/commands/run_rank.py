"""``harness run`` inside a torchrun world (``torchrun ... -m harness run CONFIG``, as the reference
engine's launcher and Slurm jobs start it): this process is one rank of the run. It builds the
trace, opens the writer on rank 0 and calls the seam through the engine its registry entry builds
for a rank (``world_engine``: the reference engine); rank 0 writes the summary from the engine's
result.

An engine that serves from the ``harness run`` process (``engine.kind: vllm | openai``: no
``world_engine``) is refused with one line, exit 2, before the rank serves anything.
"""

from __future__ import annotations

import os

from harness.commands.run_options import RunOptions
from harness.errors import UsageError


def main_in_world(options: RunOptions) -> int:
    from harness.engines.reference.lifetime import die_with_parent
    from harness.engines.reference.stop import StopGuard, block_stop_signals

    block_stop_signals()
    die_with_parent()
    guard = StopGuard()  # from here on, a signal or a dead agent/launcher stops this rank
    from harness.engines.reference.dist import launch_env
    from harness.engines.registry import engine_entry
    from harness.engines.serving import serve_trace
    from harness.spec.spec import load_spec

    launch = options.launch
    spec = load_spec(launch.config, list(launch.overrides))
    if options.capacity is not None:
        raise UsageError(
            "--find-capacity: start it outside torchrun (it launches one run per probe)"
        )
    entry = engine_entry(spec.engine.kind)
    if entry.world_engine is None:
        raise UsageError(
            f"engine.kind: {spec.engine.kind} serves from the harness run process, not from a "
            f"torchrun world; start `harness run {launch.config}` without torchrun"
        )
    from harness.results.writer import default_run_dir

    run_dir = launch.results_dir or default_run_dir(spec.name)
    rank = launch_env().rank
    from harness.engines.loadgen.launch import loadgen_options

    engine = entry.world_engine(run_dir, guard, loadgen=loadgen_options(spec, launch))
    rc = serve_trace(engine, spec, run_dir, reports=rank == 0)
    if rank == 0 and not launched_by_harness():  # a world Slurm started: no launcher writes them
        from harness.commands.run_outputs import write_outputs

        write_outputs(run_dir, options.outputs)
    return rc


def launched_by_harness() -> bool:
    """This rank's world was started by ``harness run``'s launcher (which writes the outputs after
    it)."""
    from harness.engines.reference.lifetime import LAUNCHER_ENV

    return bool(os.environ.get(LAUNCHER_ENV))
