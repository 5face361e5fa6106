"""The typed spec and everything it names: validated once, at the start of the flow.

Place in the flow: **spec** → plan → engines → measure → results → verdicts → report.

- ``spec``: the YAML spec as a typed tree (``load_spec``), validated once; ``yaml_text``: reading
its
  YAML and the ``--set`` overrides; ``bounds``: every number's range.
- ``catalog``: model presets, HF ``config.json`` reading, the GPU catalogue.
- ``layout``: the rank grid (TP innermost), the pipeline layer split.
- ``workload``: arrivals, lengths, prompts; ``trace_file``: JSONL traces; ``traces``:
Mooncake/AIPerf traces.
- ``checkpoint``: a Hugging Face checkpoint checked by its safetensors headers.
- ``inputs``: every input a spec names, checked before a run starts (``plan`` and ``run``).
- ``slo``: SLO targets and presets (vLLM's key names), judging measured values against them.
- ``bench_flags``: ``vllm bench serve``'s flags as spec overrides, and the fields they need.

May import: ``harness.errors`` only.
"""
