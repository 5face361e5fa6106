"""How ``harness run`` was asked to start an engine: a typed record built once from the command line
(``harness.commands.run_options``) and handed to the engine registry; nothing below ``commands/``
sees argparse.

``overrides`` are the ``--set FIELD=VALUE`` strings in order, the ``vllm bench serve`` flags already
folded in (the torchrun world re-reads the spec file with them, so every rank loads the same spec);
``results_dir`` is the run directory (set by the caller before an engine serves). The node fields
are torchrun's (the reference engine's world across nodes). ``loadgen``/``mlperf_rules``:
``--loadgen server|offline`` and ``--mlperf-rules`` (``harness.engines.loadgen.launch`` turns them
into LoadGen's options; the torchrun world gets the same flags).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class LaunchOptions:
    config: Path
    overrides: tuple[str, ...] = ()
    results_dir: Path | None = None
    nnodes: int | None = None
    nproc_per_node: int | None = None
    node_rank: int | None = None
    rdzv_endpoint: str | None = None  # HOST:PORT of the c10d rendezvous
    rdzv_id: str | None = None
    loadgen: str | None = None  # "server" | "offline": MLPerf LoadGen issues the queries
    mlperf_rules: bool = False  # with loadgen: enforce MLPerf's 600 s minimum duration

    def for_run(self, results_dir: Path, *overrides: str) -> LaunchOptions:
        """The same launch into ``results_dir`` with ``overrides`` after this one's (a capacity
        probe, a confirming run)."""
        return replace(self, results_dir=Path(results_dir), overrides=(*self.overrides, *overrides))
