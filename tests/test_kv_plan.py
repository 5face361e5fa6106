"""The KV cache a rank allocates is the one the planner counted, and the paged decision of the
two agree (issue 26): the runtime takes the planner's slot length; the paged kernel runs only
where the planner counted pages. And a rank's reported peak memory starts after its weights and
KV cache exist (not the weight-building spike)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from harness.engines.reference import worker
from harness.engines.reference.comm import single_process_comm
from harness.engines.reference.dist import DistContext, LaunchEnv
from harness.engines.reference.model import attention
from harness.engines.reference.model.llama import StageModel
from harness.plan import planner
from harness.plan.memory import kv_bytes_per_token
from harness.spec.spec import load_spec
from harness.spec.workload import build_trace

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny-tp2-pp4-cpu.yaml"
ONE_RANK = ["parallel.tp=1", "parallel.pp=1", "cluster.gpus_per_node=1"]


@pytest.mark.parametrize("torch_version", ["2.11", "2.12"])
def test_the_paged_kernel_runs_only_where_the_planner_counted_pages(monkeypatch, torch_version):
    """Every (cluster.gpu, dtype, run.device, device the rank got): the runtime's slot length is
    the planner's, and the kernel it then picks is paged only if the planner paged the KV."""
    from test_attention import _stub

    _stub(monkeypatch, torch_version)
    seen = set()
    for gpu in ("cpu", "H100-SXM-80GB"):
        for dtype in ("fp32", "bf16"):
            for run_device in ("auto", "cpu", "cuda"):
                spec = load_spec(
                    TINY,
                    [f"cluster.gpu={gpu}", f"model.dtype={dtype}", f"run.device={run_device}"]
                    + ONE_RANK,
                )
                plan = planner.plan(spec)
                slot = plan.run["slot_tokens"]
                assert slot == planner.slot_tokens(spec)
                for device in ("cpu", "cuda"):
                    if run_device != "auto" and device != run_device:
                        continue
                    if device == "cuda" and gpu == "cpu" and run_device == "auto":
                        continue  # device: auto keeps the CPU twin on the CPU (test_dist_init)
                    kernel = attention.choose_kernel(
                        torch.device(device),
                        torch.bfloat16 if dtype == "bf16" else torch.float32,
                        spec.shape.head_dim,
                        slot,
                    )
                    seen.add(kernel)
                    if kernel == "paged":
                        assert planner.paged_kv(spec), (gpu, dtype, run_device, device)
    assert "paged" in seen if torch_version == "2.12" else "paged" not in seen


def test_a_rank_allocates_the_planned_kv_and_resets_its_peak_after(monkeypatch):
    """One CPU rank serves two requests: its KV cache has the planner's slot length and bytes,
    and the peak-memory reset comes right after the KV allocation (before serving)."""
    spec = load_spec(
        TINY,
        ONE_RANK + ["workload.num_requests=2", "run.warmup_requests=0", "run.instrument=counts"],
    )
    plan = planner.plan(spec)
    events, real_alloc = [], StageModel.allocate_kv

    def allocate_kv(self, *a):
        events.append(("kv", a))
        return real_alloc(self, *a)

    monkeypatch.setattr(StageModel, "allocate_kv", allocate_kv)
    monkeypatch.setattr(worker, "reset_peak_memory", lambda dev: events.append(("reset", dev)))
    real_serve = worker.ServeLoop.run
    monkeypatch.setattr(
        worker.ServeLoop, "run", lambda *a, **k: (events.append(("serve",)), real_serve(*a, **k))[1]
    )
    ctx = DistContext(
        LaunchEnv(0, 1, 0, 1, None, False),
        spec.layout,
        spec.layout.place(0),
        torch.device("cpu"),
        "gloo",
        single_process_comm(0, "counts"),
    )
    trace = build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len)
    payload = worker.run_rank(ctx, spec, trace, threading.Event(), {"records": []}, None)
    assert [e[0] for e in events] == ["kv", "reset", "serve"]
    slots, max_seq, slot_len = events[0][1]
    assert max_seq == spec.run.max_seq_len and slot_len == plan.run["slot_tokens"]
    per_token = kv_bytes_per_token(spec.shape, spec.layout, 0, spec.dtype_bytes)
    assert payload.kv_bytes == slots * slot_len * per_token
    assert events[1][1] == torch.device("cpu") and payload.finished
