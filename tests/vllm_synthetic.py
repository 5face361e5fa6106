"""Small synthetic vLLM worker traces for the parser's tests, one builder per backend, with the op
names vLLM 0.32's source gives each (harness/measure/vllm_trace_names.py):

- ``gloo``: the torch.distributed path vLLM-CPU takes when its shm communicator is off (as the
  issue describes an earlier real trace of this machine);
- ``shm``: vLLM's CPU shared-memory communicator: ``_C::shm_allreduce``, ``_C::shm_all_gather``,
  ``_C::shm_send_tensor_list`` / ``_C::shm_recv_tensor_list`` — the same argument layout as the
  real traces in tests/data/vllm-trace;
- ``cuda``: ``vllm::all_reduce`` with custom all-reduce kernels, PP ``c10d::send`` /
  ``c10d::recv_`` with ``ncclDevKernel_SendRecv`` — NOT checked against a real trace.

Every step has T tokens; hidden h; fp32 (gloo, shm) or bf16 (cuda). Times in µs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

TYPES = {
    "float32": "float",
    "bfloat16": "c10::BFloat16",
    "int64": "long int",
    "uint8": "unsigned char",
}


UNNAMED_LISTS = False  # p2p tensor lists typed "TensorList" (no dtype in the trace)


class Rank:
    def __init__(self, rank: int):
        self.rank, self.events, self.t = rank, [], 0.0

    def ev(self, name, dur, tid=1, dims=None, types=None, cat="cpu_op", at=None):
        ts = self.t if at is None else at
        e = {
            "ph": "X",
            "cat": cat,
            "name": name,
            "pid": 100 + self.rank,
            "tid": tid,
            "ts": ts,
            "dur": dur,
        }
        if dims is not None:
            e["args"] = {"Input Dims": dims, "Input type": types}
        self.events.append(e)
        if at is None:
            self.t += dur + 1.0
        return e


def _p2p(r: Rank, backend: str, op: str, tensors, meta_bytes=185):
    """One PP hop of one rank: metadata (int64 size, uint8 pickle), then the float tensors."""
    if backend == "shm":
        name = "_C::shm_send_tensor_list" if op == "send" else "_C::shm_recv_tensor_list"
        if op == "send":
            dims = [[], [list(s) for s, _ in tensors] + [[meta_bytes]], []]
            r.ev(name, 30.0, dims=dims, types=["int", "TensorList", "int"])
        else:
            r.ev(name, 30.0, dims=[[], []], types=["int", "int"])
        return
    shape_op = "c10d::send" if op == "send" else "c10d::recv_"
    timer = {"gloo": f"gloo:{op}", "cuda": "ncclDevKernel_SendRecv"}[backend]
    for shape, dt in [((1,), "int64"), ((meta_bytes,), "uint8")] + list(tensors):
        if backend == "cuda" and dt != tensors[0][1]:
            # metadata goes over the CPU group (gloo) even on CUDA
            e = r.ev(shape_op, 5.0, dims=[[list(shape)], [], []], types=["TensorList", "", ""])
            e["args"]["Input type"] = [TYPES[dt], "", ""]
            r.ev(f"gloo:{op}", 4.0, tid=2, at=e["ts"] + 1.0)
            continue
        typ = "TensorList" if UNNAMED_LISTS else TYPES[dt]
        e = r.ev(shape_op, 5.0, dims=[[list(shape)], [], []], types=[typ, "", ""])
        r.ev(
            timer,
            4.0,
            tid=2 if backend == "gloo" else 7,
            at=e["ts"] + 1.0,
            cat="cpu_op" if backend == "gloo" else "kernel",
        )


def _all_reduce(r: Rank, backend: str, tokens: int, hidden: int, dt: str):
    dims = [[tokens, hidden]]
    if backend == "gloo":
        e = r.ev(
            "c10d::allreduce_",
            20.0,
            dims=[dims, [], [], [], []],
            types=["TensorList", "", "", "", ""],
        )
        e["args"]["Input type"] = [TYPES[dt], "", "", "", ""]
        e["args"]["Input Dims"] = [[tokens, hidden], [], [], [], []]
        r.ev("gloo:all_reduce", 15.0, tid=2, at=e["ts"] + 2.0)
    elif backend == "shm":
        r.ev("_C::shm_allreduce", 20.0, dims=[[], [tokens, hidden]], types=["int", TYPES[dt]])
    else:
        e = r.ev("vllm::all_reduce", 20.0, dims=[[tokens, hidden], []], types=[TYPES[dt], "str"])
        r.ev(
            "_C_custom_ar::all_reduce",
            10.0,
            at=e["ts"] + 2.0,
            dims=[[tokens, hidden]],
            types=[TYPES[dt]],
        )
        r.ev("vllm::cross_device_reduce_1stage", 8.0, tid=7, at=e["ts"] + 3.0, cat="kernel")


def _logits_gather(r: Rank, backend: str, rows: int, part: int, tp: int, dt: str):
    """The last stage's all-gather of each sampled row's vocab-parallel logits."""
    if backend == "shm":
        dims = [[], [rows, part], [rows * tp, part]]
        r.ev("_C::shm_all_gather", 6.0, dims=dims, types=["Scalar", TYPES[dt], TYPES[dt]])
        return
    e = r.ev(
        "c10d::_allgather_base_",
        10.0,
        dims=[[rows * part * tp], [rows * part], []],
        types=[TYPES[dt], TYPES[dt], ""],
    )
    timer = "gloo:all_gather" if backend == "gloo" else "ncclDevKernel_AllGather_RING"
    r.ev(timer, 8.0, tid=2, at=e["ts"] + 1.0)


def rank_trace(
    backend: str,
    rank: int,
    tp: int,
    pp: int,
    layers: list[int],
    steps: int,
    tokens: int,
    hidden: int,
    dt: str = "float32",
    vocab: int = 0,
) -> list[dict]:
    """The events of one worker serving ``steps`` steps of ``tokens`` tokens each."""
    stage = rank // tp
    r = Rank(rank)
    r.t = 1000.0 * stage
    part = tokens * hidden // tp if (backend != "shm" and tp > 1) else tokens * hidden
    for _ in range(steps):
        r.ev("execute_context_0(0)_generation_0(0)", 5.0)  # an empty step
        if stage > 0:
            _p2p(r, backend, "recv", [((part,), dt), ((part,), dt)])
            if backend != "shm" and tp > 1:
                for _ in range(2):
                    e = r.ev(
                        "c10d::_allgather_base_",
                        10.0,
                        dims=[[tokens * hidden], [part], []],
                        types=[TYPES[dt], TYPES[dt], ""],
                    )
                    timer = (
                        "gloo:all_gather" if backend == "gloo" else "ncclDevKernel_AllGather_RING"
                    )
                    r.ev(timer, 8.0, tid=2, at=e["ts"] + 1.0)
        step = r.ev(f"execute_context_1({tokens})_generation_0(0)", 0.0, cat="user_annotation")
        start = r.t
        if tp > 1:
            for _ in range(2 * layers[stage] + (1 if stage == 0 else 0)):
                _all_reduce(r, backend, tokens, hidden, dt)
        if stage == pp - 1 and tp > 1 and vocab:
            _logits_gather(r, backend, 1, -(-vocab // 64) * 64 // tp, tp, dt)
        r.t += 50.0
        step["ts"], step["dur"] = start - 0.5, r.t - start + 0.5
        if stage < pp - 1:
            _p2p(r, backend, "send", [((part,), dt), ((part,), dt)])
        r.t += 100.0
    r.ev("ProfilerStep#0", 1.0)
    r.ev("gloo:barrier_like_unknown", 1.0)  # a comm-looking name in no table
    return r.events


def write_trace(path: Path, events: list[dict]) -> Path:
    doc = {"schemaVersion": 1, "traceEvents": events, "traceName": str(path)}
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


def write_world(
    folder: Path,
    backend: str,
    tp: int = 2,
    pp: int = 2,
    layers=(2, 2),
    steps=2,
    tokens=8,
    hidden=16,
    dt="float32",
    prefix="syn",
    vocab=0,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_trace(
            folder / f"{prefix}_rank{r}.{1000 + r}.pt.trace.json.gz",
            rank_trace(backend, r, tp, pp, list(layers), steps, tokens, hidden, dt, vocab),
        )
        for r in range(tp * pp)
    ]
