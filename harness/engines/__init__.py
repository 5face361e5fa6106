"""The system under test, behind one small interface (``harness.engines.base.Engine``).

Place in the flow: spec → plan → **engines** → measure → results. An engine serves a trace and
hands back the common request records plus telemetry; ``harness run`` turns that into the run
directory.

- ``base``: the seam (``Engine``, ``EngineResult``); ``serving``: one serve through it.
- ``registry``: one entry per ``engine.kind`` (preflight, serve, probes, tables); ``options``: the
  typed launch options ``harness run`` builds from its command line.
- ``reference/``: our own TP×PP×DP Llama on a torchrun world (gloo on CPU, NCCL on GPU).
- ``openai_server/``: the trace streamed to a server that speaks the OpenAI API (``kind: openai``,
  a server someone else runs).
- ``vllm/``: a vLLM server the harness launches with the spec's layout, then drives through
  ``openai_server/`` (``kind: vllm``).

May import: ``harness.spec``, ``harness.plan``, ``harness.measure``, ``harness.results``,
``harness.errors``."""
