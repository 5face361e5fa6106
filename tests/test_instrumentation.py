"""No op bypasses harness.engines.reference.comm (every torch.distributed call is in the trace), and
the check can fail."""

import json

import pytest

from demo_run import REPO, torchrun


def _bench(tmp_path, *extra):
    out = tmp_path / "o.json"
    torchrun(
        4,
        REPO / "benchmarks" / "instrument_overhead.py",
        str(REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"),
        "--set",
        "parallel.pp=2",
        "--set",
        "cluster.gpus_per_node=4",
        "--rounds",
        "1",
        "--tokens",
        "4",
        "--out",
        str(out),
        *extra,
        timeout=180,
    )
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_distributed_call_is_traced_and_a_bypass_is_caught(tmp_path):
    clean = _bench(tmp_path)
    assert clean["coverage_ok"] is True and clean["uncovered"] == {}
    assert clean["tp_all_reduce"] == "shm"  # the default on CPU: its exchanges are counted too
    assert set(clean["median_round_s"]) == {"off", "counts", "timing"}
    dirty = _bench(tmp_path, "--inject-bypass")
    assert dirty["coverage_ok"] is False
    # each of the 4 ranks saw one call more than its trace, in every instrumented round
    assert sorted(dirty["uncovered"]) == ["0", "1", "2", "3"]
    assert all(
        u["dist_calls"] == u["trace_rows"] + 1 for rows in dirty["uncovered"].values() for u in rows
    )
