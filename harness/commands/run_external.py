"""``harness run`` for an external engine (``engine.kind: vllm | openai``): the run happens in this
process (no torchrun world): checks, then ``harness.commands.run.serve`` with the engine, then the
exit code from the run directory, as for the reference engine.

Checks before anything starts (exit 2, nothing written): every input (``harness.spec.inputs``: the
trace, the checkpoint's headers), the results folder, that ``engine.python`` has a ``vllm`` package
(found without importing it), that an ``openai`` server answers at ``engine.url``.
``--find-capacity`` starts one vLLM server (at the first probe, in the capacity folder) and runs
every probe against it (the probes differ only in the offered load), then stops it. ``run_verb`` is
``harness.commands.run`` (its ``serve``, ``exit_code``, ``find_capacity``), handed in by it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_INCOMPLETE


def preflight(spec) -> None:
    if spec.engine.kind == "vllm":
        from harness.engines.vllm.preflight import preflight as vllm_preflight

        vllm_preflight(spec)
    elif spec.engine.kind == "openai":
        from harness.engines.openai_server.preflight import preflight as openai_preflight

        openai_preflight(spec)


def main_external(spec, args: argparse.Namespace, run_verb) -> int:
    from harness.engines.openai_server.stopping import StopSignals
    from harness.results.writer import check_new_run_dir, default_run_dir
    from harness.spec.inputs import check_inputs

    check_inputs(spec)
    preflight(spec)
    if args.find_capacity:
        with StopSignals() as signals:
            return _capacity(spec, args, signals, run_verb)
    run_dir = check_new_run_dir(args.results_dir or default_run_dir(spec.name))
    with StopSignals() as signals:
        rc = run_verb.serve(_engine(spec, run_dir, signals), spec, run_dir, reports=True)
        rc = run_verb.exit_code(run_dir, rc)
    from harness.commands.run_outputs import write_outputs

    write_outputs(run_dir, args)  # the report, --save-result's file: the exit code stays the run's
    return rc


def _engine(spec, run_dir: Path, signals, server=None, info=None):
    if spec.engine.kind == "vllm":
        from harness.engines.vllm.engine import VllmEngine

        return VllmEngine(run_dir, signals, server=server, info=info)
    from harness.engines.openai_server.engine import OpenAIServerEngine

    return OpenAIServerEngine(run_dir, signals, info=info)


def _capacity(spec, args: argparse.Namespace, signals, run_verb) -> int:
    """--find-capacity with one server for every probe (kind vllm: launched at the first probe)."""
    import asyncio

    from harness.engines.openai_server.readiness import ServerFailed
    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record

    shared: dict = {}

    def server_for(root: Path):
        """The one server, started (and waited for) on first use; None for a server someone else
        runs."""
        if spec.engine.kind != "vllm":
            return None, None
        if "server" not in shared:
            shared["root"] = root
            shared["server"] = launch_server(spec, root)

            async def up():
                stop = signals.attach()
                try:
                    return await bring_up(spec, shared["server"], stop)
                finally:
                    signals.detach()

            shared["info"] = asyncio.run(up())
        return shared["server"], shared["info"]

    def probe(probe_spec, probe_args) -> int:
        run_dir = Path(probe_args.results_dir).resolve()
        try:
            server, info = server_for(run_dir.parent)
        except ServerFailed as e:
            print(
                f"harness run: --find-capacity: {signals.reason or e}", file=sys.stderr, flush=True
            )
            return EXIT_INCOMPLETE  # recorded as a failed probe; the search ends
        engine = _engine(probe_spec, run_dir, signals, server, info)
        return run_verb.exit_code(
            run_dir, run_verb.serve(engine, probe_spec, run_dir, reports=True)
        )

    try:
        return run_verb.find_capacity(spec, args, launch_probe=probe)
    finally:
        if "server" in shared:
            stop_and_record(shared["server"], shared["root"])
