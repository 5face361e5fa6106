"""A named SLO preset is its latency limits only: the summary, the SLO table and the report say what
it is not (no MLPerf minimum duration or query count, no accuracy run, random prompts) and warn when
the run is shorter than MLPerf's 600 s minimum."""

from __future__ import annotations

import json

from harness.engines.base import EngineResult
from harness.report.render import write_report
from harness.report.slo_table import slo_table
from harness.results.summary import final_summary
from harness.spec.slo import preset_caveat
from harness.spec.spec import spec_from_dict
from run_fixtures import SynthRun, build_synthetic_run, make_requests

SERVER = "mlperf-llama2-70b-server"


def test_the_caveat_says_what_the_preset_is_not():
    c = preset_caveat(SERVER, 45.0)
    assert c["min_duration_s"] == 600.0 and c["duration_s"] == 45.0
    for words in (
        "latency limits only (ttft_p99_ms <= 2000, tpot_p99_ms <= 200)",
        "not an MLPerf run",
        "no minimum duration (MLPerf: 600 s)",
        "query count",
        "no accuracy run",
        "random prompts",
    ):
        assert words in c["note"], words
    assert "45 s, shorter than MLPerf's minimum 600 s" in c["warning"]
    assert preset_caveat(SERVER, 600.0)["warning"] is None
    assert preset_caveat("mlperf-llama2-70b-interactive", 10.0)["warning"] is not None
    assert preset_caveat(None, 10.0) is None


def test_a_short_run_under_a_preset_warns_in_summary_table_and_report(tmp_path):
    spec = spec_from_dict(
        {
            "name": "p",
            "model": {"preset": "tiny", "dtype": "fp32"},
            "cluster": {"gpu": "cpu", "nodes": 1, "gpus_per_node": 1},
            "slo": {"preset": SERVER},
            "workload": {"num_requests": 8},
        }
    )
    records = make_requests(SynthRun(tp=1, pp=1))
    summary, _ = final_summary(spec, {}, EngineResult(records=records, complete=True))
    c = summary["slo_preset"]
    assert c["preset"] == SERVER and c["duration_s"] == summary["metrics"]["duration_s"] < 600
    assert c["warning"] in summary["notes"] and c["note"] in summary["notes"]
    table = slo_table(summary)
    assert f"preset {SERVER}: MLPerf Inference Llama2-70B latency limits only" in table
    assert (
        "WARNING: the run measured" in table and max(len(line) for line in table.splitlines()) < 100
    )
    # without a preset: no caveat anywhere
    plain = spec_from_dict(
        {
            "name": "q",
            "model": {"preset": "tiny", "dtype": "fp32"},
            "cluster": {"gpu": "cpu", "nodes": 1, "gpus_per_node": 1},
        }
    )
    s2, _ = final_summary(plain, {}, EngineResult(records=records, complete=True))
    assert "slo_preset" not in s2 and "preset" not in slo_table(s2)
    # the report of a run whose summary holds the caveat shows it beside the SLO table
    run = build_synthetic_run(tmp_path / "run", SynthRun(steps=12, with_nvml=False))
    data = json.loads((run / "summary.json").read_text())
    data["slo_preset"] = c
    (run / "summary.json").write_text(json.dumps(data))
    write_report(run)
    md = (run / "report.md").read_text()
    assert f"> Preset {SERVER}: MLPerf Inference Llama2-70B latency limits only" in md
    assert "Warning: the run measured" in md
