"""The reference engine: our own TP×PP×DP Llama on a torchrun world, continuous batching.

- ``launcher``: the outside face: starts ``torchrun ... -m harness run CONFIG`` (in ``agent``,
torch's
  torchrun), waits until none of its processes is left and settles ``summary.json``.
- ``lifetime``: no rank outlives its agent or launcher; ``failures``: which rank failed, and how.
- ``engine``: the seam's implementation, one per rank: init, serve, gather to rank 0.
- ``worker``: one rank's work (build stage, serve or follow the pipeline, pack its records).
- ``dist``, ``comm``: process groups; the one comm layer every collective goes through (traced).
- ``scheduler``, ``loop``: continuous batching and the coordinator's serving loop.
- ``model/``, ``parallel/``: single-device Llama; TP and PP applied from outside as plans.
- ``summary``: rank payloads → the engine's result; ``stop``: signals, the run timeout, a lost
parent.
- ``generate``: plain greedy generation through the pipeline (tests, benchmarks).

May import: ``harness.spec``, ``harness.plan``, ``harness.measure``, ``harness.results``,
``harness.engines.base``, ``harness.errors``."""
