"""vLLM's CPU build on the machine at hand: the environment values a user would otherwise have to
know to set (``cluster.gpu: cpu`` only; a value in ``engine.env`` always wins).

- ``VLLM_CPU_OMP_THREADS_BIND=nobind`` when the node has fewer NUMA nodes, or fewer usable cores,
  than local workers: vLLM's automatic binding gives each local worker a NUMA node of its own and
  fails at start-up otherwise ("Not enough allowed NUMA nodes to bind threads of 8 local
  CPUWorkers", vllm/utils/ompmultiprocessing.py).
- ``OMP_NUM_THREADS=1`` when the workers are at least as many as the cores: more threads per
  worker than cores only adds contention.
- ``VLLM_CPU_KVCACHE_SPACE`` (whole GiB per worker) from the plan's formula: the KV cache of the
  sequences the reference engine holds in flight (micro-batches × max_batch) at the slot length,
  on the stage with the most layers, rounded up, at least 1 GiB (vLLM's default takes a share of
  the host's memory per worker, which eight workers on a small machine cannot all have).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from harness.plan.memory import kv_bytes_per_token
from harness.plan.planner import seq_len

NODE_DIR = Path("/sys/devices/system/node")


def numa_nodes(node_dir: Path = NODE_DIR) -> int:
    """NUMA nodes the kernel shows (1 where it shows none: not Linux, or no NUMA)."""
    try:
        n = sum(1 for p in node_dir.iterdir() if re.fullmatch(r"node\d+", p.name))
    except OSError:
        return 1
    return max(1, n)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def kv_cache_gib(spec) -> int:
    """Whole GiB of KV cache per worker: every sequence in flight at full slot length."""
    lay = spec.layout
    per_token = max(kv_bytes_per_token(spec.shape, lay, s, spec.dtype_bytes) for s in range(lay.pp))
    sequences = spec.micro_batches * spec.run.max_batch
    return max(1, math.ceil(per_token * sequences * seq_len(spec) / 2**30))


def choose_cpu_env(spec, cores: int | None = None, nodes: int | None = None) -> dict[str, dict]:
    """``{variable: {"value": text, "why": text}}`` for each value the harness sets: only on the
    CPU, only where ``engine.env`` does not set it."""
    if spec.cluster.gpu != "cpu":
        return {}
    cores = usable_cores() if cores is None else cores
    nodes = numa_nodes() if nodes is None else nodes
    workers = spec.layout.world_size  # one node: every worker is local
    chosen: dict[str, dict] = {}
    if nodes < workers or cores < workers:
        chosen["VLLM_CPU_OMP_THREADS_BIND"] = {
            "value": "nobind",
            "why": f"{workers} workers on {nodes} NUMA node(s) and {cores} core(s): vLLM's "
            f"automatic binding needs a NUMA node per worker",
        }
    if workers >= cores:
        chosen["OMP_NUM_THREADS"] = {
            "value": "1",
            "why": f"{workers} workers on {cores} core(s): one OpenMP thread each",
        }
    gib = kv_cache_gib(spec)
    chosen["VLLM_CPU_KVCACHE_SPACE"] = {
        "value": str(gib),
        "why": f"{spec.micro_batches * spec.run.max_batch} sequences × {seq_len(spec)} tokens "
        f"of KV per worker, rounded up to whole GiB (at least 1)",
    }
    return {k: v for k, v in chosen.items() if k not in spec.engine.env}
