"""The OpenAI-compatible server engine: the trace streamed to a server that speaks the OpenAI
completions API (``kind: openai``, a server someone else runs; ``harness.engines.vllm`` launches a
vLLM one first), the same request records back.

- ``engine``: the engine behind the seam; ``preflight``: the given server answers before the run;
- ``readiness``: waiting for a server; ``client``/``driver``: the streaming client, open and closed
  loop (``priority``: its loop thread at real-time priority); ``stopping``: signals → one stop;
- ``scrape``: the server's Prometheus ``/metrics`` (vLLM's names); ``telemetry``: NVML of this
  node; ``result``: the common result.

Nothing here imports at package import time.
"""
