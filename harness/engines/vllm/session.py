"""How the ``vllm`` engine serves for ``harness run`` (its registry entry): in this process, under
one ``StopSignals`` for the whole run or search.

One run launches its own server (its log in the run directory) and stops it at the end. A search
(``probes``) starts one server at its first run, in the search's folder (the parent of the probes'
run directories), runs every probe against it (the probes differ only in the offered load) and
stops it when the search ends; a server that fails to come up makes that probe fail (exit 3).
Sharing is safe because the prefix cache is off (each probe's summary proves it: its cross-check
"no prompt token served from the prefix cache" reads vLLM's hit counter over the probe); with
``engine.prefix_caching: true`` every probe launches its own server instead, so no probe is served
from the prompts of the probes before it.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.engines.loadgen.launch import loadgen_options
from harness.engines.openai_server.readiness import ServerFailed
from harness.engines.openai_server.stopping import StopSignals
from harness.engines.options import LaunchOptions
from harness.engines.serving import serve_trace
from harness.engines.vllm.engine import VllmEngine, bring_up, launch_server, stop_and_record
from harness.errors import EXIT_INCOMPLETE


def serve(spec, options: LaunchOptions) -> int:
    run_dir = options.results_dir
    with StopSignals() as signals:
        engine = VllmEngine(run_dir, signals, loadgen=loadgen_options(spec, options))
        return serve_trace(engine, spec, run_dir, True)


@contextmanager
def probes(spec, options: LaunchOptions) -> Iterator:
    if spec.engine.prefix_caching:  # a shared server would serve later probes from its cache
        yield serve
        return
    shared: dict = {}
    with StopSignals() as signals:

        def server_for(root: Path):
            """The one server, started (and waited for) on first use."""
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

        def one(run_spec, run_options: LaunchOptions) -> int:
            run_dir = Path(run_options.results_dir).resolve()
            try:
                server, info = server_for(run_dir.parent)
            except ServerFailed as e:
                print(
                    f"harness run: --find-capacity: {signals.reason or e}",
                    file=sys.stderr,
                    flush=True,
                )
                return EXIT_INCOMPLETE  # recorded as a failed probe; the search ends
            engine = VllmEngine(
                run_dir, signals, server, info, loadgen_options(run_spec, run_options)
            )
            return serve_trace(engine, run_spec, run_dir, True)

        try:
            yield one
        finally:
            if "server" in shared:
                stop_and_record(shared["server"], shared["root"])
