"""External engines: a vLLM server the harness launches with the spec's layout (``kind: vllm``),
or an OpenAI-compatible server someone else runs (``kind: openai``); the same trace is streamed to
it and the same request records come back.

- ``command``: the server's command line from the spec; ``server``/``reaper``/``tree``: launching
  it and making sure its whole process tree ends with the run (even when ``harness run`` is killed);
- ``readiness``: waiting for it; ``client``/``driver``: the streaming client, open and closed loop;
- ``scrape``: its Prometheus ``/metrics``; ``telemetry``: NVML or its process tree;
- ``result``: the common result; ``engine``: the two engines behind the seam.

Nothing here imports at package import time: the reaper runs ``python -m
harness.engines.vllm.reaper`` and must start fast.
"""
