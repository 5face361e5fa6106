"""The vLLM engine (``kind: vllm``): a vLLM server the harness launches with the spec's layout and
then drives as an OpenAI-compatible server (``harness.engines.openai_server``).

- ``preflight``: ``engine.python`` has vllm, before anything starts;
- ``command``: the server's command line from the spec; ``server``/``reaper``/``tree``: launching
  it and making sure its whole process tree ends with the run (even when ``harness run`` is killed);
- ``telemetry``: NVML or the server's process tree; ``engine``: the launch, the wait, the stop and
  the engine behind the seam.

Nothing here imports at package import time: the reaper runs ``python -m
harness.engines.vllm.reaper`` and must start fast.
"""
