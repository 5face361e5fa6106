"""``harness import-bench``: real ``vllm bench serve --save-result --save-detailed`` files (vLLM
0.32, CPU build, against a TP2-PP4 vLLM server of a tiny Llama; random dataset 32 in / 16 out, 24
prompts):

* poisson.json: --request-rate 4; closed.json: --max-concurrency 4 --request-rate inf;
* goodput.json: --request-rate 4 --goodput ttft:500 tpot:100 --percentile-metrics ttft,tpot,itl,e2el
  --metric-percentiles 50,90,99.

The summary recomputed by harness.measure.metrics.summarize must give the file's own numbers, key by
key; the run directory reads like any run (report, compare, history, verify-claims --results)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from harness.cli import main as cli
from harness.results.bench_file import bench_result_of_run
from harness.results.reader import load_run

FIXTURES = Path(__file__).parent / "fixtures" / "vllm_bench"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml"
CASES = {"poisson": [], "closed": [], "goodput": ["--goodput", "ttft:500", "tpot:100"]}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    for name, extra in CASES.items():
        assert (
            cli(
                [
                    "import-bench",
                    str(FIXTURES / f"{name}.json"),
                    str(root / name),
                    "--config",
                    str(CONFIG),
                    *extra,
                ]
            )
            == 0
        )
    return root


def _close(a, b) -> bool:
    return (
        a == b
        if a is None or b is None
        else math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    )


@pytest.mark.parametrize("name", list(CASES))
def test_summary_reproduces_the_files_numbers(imported, name):
    vllm = json.loads((FIXTURES / f"{name}.json").read_text())
    run = load_run(imported / name)
    m = run.summary["metrics"]
    keys = [
        "completed",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "request_goodput",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
    ] + [k for k in vllm if k.endswith("_ms")]
    for key in keys:
        assert _close(m[key], vllm[key]), (key, m[key], vllm[key])
    assert len(keys) >= 22 + (8 if name == "goodput" else 0)
    assert m["duration_s"] == vllm["duration"] and run.summary["engine"]["latency_origin"] == "send"
    assert name != "goodput" or m["request_goodput"] == pytest.approx(3 / vllm["duration"])
    eng = run.summary["engine"]
    assert eng["kind"] == "openai" and eng["backend"] == "vllm" and eng["unreproduced"] == []
    assert run.engine_kind() == "openai" and run.complete
    assert run.absent == {"steps", "comm", "stages", "nvml", "memory", "server_metrics"}
    assert run.absent_note("comm") == "not traced (external engine openai: no comm table)"


def test_requests_table_and_spec_say_what_the_file_says(imported):
    vllm = json.loads((FIXTURES / "closed.json").read_text())
    run = load_run(imported / "closed")
    w = run.spec["workload"]
    assert (w["arrival"], w["concurrency"], w["num_requests"]) == ("closed", 4, 24)
    assert w["input_len"] == {"dist": "fixed", "value": 32} and w["output_len"] == {
        "dist": "fixed",
        "value": 16,
    }
    assert (run.summary["layout"]["tp"], run.summary["layout"]["pp"]) == (2, 4)  # from --config
    req = run.requests.sort_values("request_id")
    t0 = min(vllm["start_times"])
    assert list(req["sent_s"]) == pytest.approx([s - t0 for s in vllm["start_times"]], abs=1e-12)
    # rate inf: a closed loop releases at the send
    assert list(req["arrival_s"]) == list(req["sent_s"])
    row = req.iloc[5]
    assert len(row["token_times_s"]) == len(vllm["itls"][5]) + 1 == 16
    assert row["first_token_s"] - row["sent_s"] == pytest.approx(vllm["ttfts"][5])
    assert row["finish_s"] - row["sent_s"] == pytest.approx(vllm["latencies"][5])
    p = load_run(imported / "poisson").spec["workload"]
    assert (p["arrival"], p["rate_rps"]) == ("poisson", 4.0)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_file_run_file(imported, name):
    """vLLM's file → run directory → our vLLM-keyed file: the same numbers and per-request lists."""
    vllm = json.loads((FIXTURES / f"{name}.json").read_text())
    ours = bench_result_of_run(load_run(imported / name))
    skip = {"generated_texts", "start_times", "queue_times"}
    for key, want in vllm.items():
        if key in skip:
            continue
        got = ours[key]
        if key == "itls":
            assert all(g == pytest.approx(w, abs=1e-12) for g, w in zip(got, want)) and len(
                got
            ) == len(want)
        elif isinstance(want, list) and want and isinstance(want[0], float):
            assert got == pytest.approx(want, rel=1e-12), key
        elif isinstance(want, float):
            assert _close(got, want), (key, got, want)
        else:
            assert got == want, (key, got, want)
    # vLLM's clock is perf_counter; ours starts at the first request's due time
    t0 = min(vllm["start_times"])
    first_due = (
        min(s - q for s, q in zip(vllm["start_times"], vllm["queue_times"]))
        if name != "closed"
        else t0
    )
    assert ours["start_times"] == pytest.approx(
        [s - first_due for s in vllm["start_times"]], abs=1e-12
    )


def test_report_compare_history_and_claims_read_it(imported, tmp_path, capsys):
    assert cli(["report", str(imported / "goodput")]) == 0
    md = (imported / "goodput" / "report.md").read_text()
    assert "not traced (external engine openai: no comm table)" in md and "imported from" in md
    # the file's mean/median/p90/p99 TTFT, each with its interval (a p90/p99 of 24: open above)
    assert "| TTFT | 569 [458, 698] | 548 [481, 692] | 899 [692, open] | 1,235 [964, open] |" in md
    assert cli(["compare", str(imported / "poisson"), str(imported / "goodput")]) in (0, 1, 4)
    hist = tmp_path / "runs"
    for name in CASES:
        shutil.copytree(imported / name, hist / name)
    assert cli(["history", str(hist)]) == 0
    assert "| 2.184 |" in (hist / "history.md").read_text()  # closed.json's request_throughput
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "model: tiny\ndtype: fp32\nhardware: {gpu: cpu, nodes: 1, gpus_per_node: 8}\n"
        "strategy: TP2-PP4-DP1\nclaims:\n  throughput_rps: 3.0\n"
    )
    capsys.readouterr()
    assert cli(["verify-claims", str(claims), "--results", str(imported / "poisson")]) == 0
    assert "CONFIRMED   throughput_rps" in capsys.readouterr().out


def test_without_config_the_model_and_layout_come_from_the_file(tmp_path):
    from transformers import LlamaConfig

    ckpt = tmp_path / "ckpt"
    LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ).save_pretrained(ckpt)
    data = json.loads((FIXTURES / "poisson.json").read_text())
    data.update(model_id=str(ckpt), tp="2", pp="2")  # vllm bench serve --metadata tp=2 pp=2
    src = tmp_path / "poisson.json"
    src.write_text(json.dumps(data))
    assert cli(["import-bench", str(src), str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    assert run.summary["layout"] == {"tp": 2, "pp": 2, "dp": 1, "layer_split": [2, 2]}
    assert run.summary["verdict"] == "UNMEASURED" and run.summary["metrics"]["completed"] == 24
    assert run.summary["no_plan"] == "hardware unknown (give --config)"


def test_a_model_unknown_here_imports_as_a_metrics_only_run(imported, tmp_path, capsys):
    """The fixtures name a checkpoint folder of the machine that ran vLLM: without --config the
    run has no plan, says so in the summary, the report and compare, and still reproduces the
    file's numbers; --config adds the plan."""
    vllm = json.loads((FIXTURES / "poisson.json").read_text())
    assert not Path(vllm["model_id"]).exists()
    capsys.readouterr()
    assert cli(["import-bench", str(FIXTURES / "poisson.json"), str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "reproduces the tool's numbers" in err and err.endswith("; no plan: model unknown\n")
    run = load_run(tmp_path / "run")
    s = run.summary
    assert (
        s["no_plan"] == "model unknown"
        and s["predicted"] == {}
        and s["engine"]["unreproduced"] == []
    )
    for key in ("request_throughput", "output_throughput", "p99_ttft_ms", "mean_itl_ms"):
        assert _close(s["metrics"][key], vllm[key]), key
    assert run.spec["model"] == {"served_as": vllm["model_id"]}
    assert cli(["report", str(tmp_path / "run")]) == 0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "No plan: model unknown." in md and "No graph: the model's layers are unknown" in md
    capsys.readouterr()
    assert cli(["compare", str(tmp_path / "run"), str(imported / "goodput"), "--force"]) in (0, 1)
    assert f"> warning: BASE {tmp_path / 'run'}: no plan: model unknown" in capsys.readouterr().out
    with_plan = load_run(imported / "poisson").summary  # imported with --config
    assert "no_plan" not in with_plan and with_plan["predicted"]["bounds"]


def _bad(tmp_path, text: str) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(text)
    return p


def test_bad_files_are_one_line_and_exit_2(tmp_path, capsys):
    good = json.loads((FIXTURES / "poisson.json").read_text())
    brief = {
        k: v
        for k, v in good.items()
        if k
        not in (
            "input_lens",
            "output_lens",
            "start_times",
            "ttfts",
            "itls",
            "generated_texts",
            "errors",
        )
    }  # no --save-detailed
    short = dict(good, ttfts=good["ttfts"][:-1])
    cases = {
        "not JSON": ("{not json", "is not valid JSON"),
        "several": (
            json.dumps(good) + "\n" + json.dumps(good),
            "several results (--append-result)",
        ),
        "not a result": (json.dumps({"model": "x"}), "not a vllm bench serve result"),
        "not detailed": (
            json.dumps(brief),
            "rerun vllm bench serve with --save-result --save-detailed",
        ),
        "mismatched": (json.dumps(short), "ttfts has 23 entries but start_times has 24"),
    }
    for what, (text, message) in cases.items():
        capsys.readouterr()
        src = _bad(tmp_path, text)
        assert (
            cli(["import-bench", str(src), str(tmp_path / "out"), "--config", str(CONFIG)]) == 2
        ), what
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (what, err)
        assert not (tmp_path / "out").exists(), what
    assert cli(["import-bench", str(tmp_path / "missing.json"), str(tmp_path / "out")]) == 2
    assert (
        cli(
            [
                "import-bench",
                str(FIXTURES / "poisson.json"),
                str(tmp_path / "out"),
                "--config",
                str(CONFIG),
                "--goodput",
                "latency:5",
            ]
        )
        == 2
    )
    done = tmp_path / "done"
    assert (
        cli(["import-bench", str(FIXTURES / "poisson.json"), str(done), "--config", str(CONFIG)])
        == 0
    )
    before = (done / "summary.json").read_bytes()
    assert (
        cli(["import-bench", str(FIXTURES / "closed.json"), str(done), "--config", str(CONFIG)])
        == 2
    )
    assert (done / "summary.json").read_bytes() == before
