"""How the ``openai`` engine serves for ``harness run`` (its registry entry): in this process, under
one ``StopSignals`` for the whole run or search, one engine per run against the given server."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from harness.engines.loadgen.launch import loadgen_options
from harness.engines.openai_server.engine import OpenAIServerEngine
from harness.engines.openai_server.stopping import StopSignals
from harness.engines.options import LaunchOptions
from harness.engines.serving import serve_trace


def serve(spec, options: LaunchOptions) -> int:
    with probes(spec, options) as one:
        return one(spec, options)


@contextmanager
def probes(spec, options: LaunchOptions) -> Iterator:
    with StopSignals() as signals:

        def one(run_spec, run_options: LaunchOptions) -> int:
            run_dir = run_options.results_dir
            engine = OpenAIServerEngine(
                run_dir, signals, loadgen=loadgen_options(run_spec, run_options)
            )
            return serve_trace(engine, run_spec, run_dir, True)

        yield one
