"""The engine registry: one entry per ``engine.kind``, the only place that says what an engine needs
before launch, how it serves and which tables it produces. ``harness run`` looks the spec's kind up
here and calls the entry; no verb asks which engine it has. Adding an engine is one package plus one
entry (and its kind in ``harness.spec.engine.KINDS``).

An entry's functions take the validated spec and the ``LaunchOptions``:
- ``preflight``: every check that needs no process (one line, exit 2, nothing written or started);
- ``serve``: one run into ``options.results_dir``; returns 0 when the run ended by itself (the
  verdict is read from the run directory), non-zero when it failed or was stopped;
- ``probes``: a context manager around several runs of one search (``--find-capacity``) that
  yields a ``serve``; the runs may share what is costly to start (one vLLM server for every probe).

``world_engine``: for an engine whose every rank of a torchrun world serves (``serve`` starts that
world, and ``harness run`` inside it is one rank: ``harness.commands.run_rank``), the engine each
rank builds, ``(run_dir, stop guard, loadgen=LoadGenOptions | None) -> Engine`` (``--loadgen``:
LoadGen's arrivals, ``harness.engines.loadgen.launch``); None when the ``harness run`` process
itself serves (such a spec is refused inside a torchrun world). Entries import their package only
when called: ``harness run --help`` and the registry itself load no torch and no aiohttp.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from harness.engines.options import LaunchOptions
from harness.errors import UsageError

Serve = Callable[[Any, LaunchOptions], int]


def _at(module: str, name: str) -> Callable:
    """``module.name``, imported at the first call."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


@dataclass(frozen=True)
class EngineEntry:
    kind: str
    what: str  # one line for --help and the docs
    tables: tuple[str, ...]  # the run directory's tables it writes (harness.results.schema.TABLES)
    preflight: Callable[[Any, LaunchOptions], None]
    serve: Serve
    probes: Callable[[Any, LaunchOptions], ContextManager[Serve]]
    world_engine: Callable[..., Any] | None = None


_SERVER_TABLES = ("requests", "server_metrics", "nvml")

ENGINES: dict[str, EngineEntry] = {
    "reference": EngineEntry(
        kind="reference",
        what="our TP×PP×DP Llama, one torchrun process per rank",
        tables=("requests", "steps", "comm", "stages", "nvml", "memory"),
        preflight=_at("harness.engines.reference.launcher", "preflight"),
        serve=_at("harness.engines.reference.launcher", "run_world"),
        probes=_at("harness.engines.reference.launcher", "world_probes"),
        world_engine=_at("harness.engines.reference.engine", "ReferenceEngine"),
    ),
    "vllm": EngineEntry(
        kind="vllm",
        what="a vLLM server launched with the spec's layout, driven as an OpenAI server",
        # comm, stages and steps from vLLM's own profiler (run.instrument timing/counts)
        tables=(*_SERVER_TABLES, "comm", "stages", "steps"),
        preflight=_at("harness.engines.vllm.preflight", "preflight"),
        serve=_at("harness.engines.vllm.session", "serve"),
        probes=_at("harness.engines.vllm.session", "probes"),
    ),
    "openai": EngineEntry(
        kind="openai",
        what="an OpenAI-compatible server someone else runs (engine.url)",
        tables=("requests", "server_metrics"),  # no nvml: its GPUs are not known here
        preflight=_at("harness.engines.openai_server.preflight", "preflight"),
        serve=_at("harness.engines.openai_server.session", "serve"),
        probes=_at("harness.engines.openai_server.session", "probes"),
    ),
}


def engine_entry(kind: str) -> EngineEntry:
    try:
        return ENGINES[kind]
    except KeyError:
        raise UsageError(
            f"engine.kind: {kind!r} is not an engine; use one of {', '.join(ENGINES)}"
        ) from None
