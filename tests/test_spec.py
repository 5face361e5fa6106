"""Every bad-input case of issue 2 through the real CLI: ``harness plan BADCONFIG`` exits 2 with one
line naming the field, and no traceback. A strategy that does not fit is not one of them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml").read_text())


def _cfg(tmp_path: Path, edit) -> Path:
    raw = copy.deepcopy(BASE)
    edit(raw)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _set(path: str, value):
    def edit(raw):
        node = raw
        *parents, last = path.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value

    return edit


CASES = [
    # (id, edit of the base config, text the one-line error must hold)
    ("unknown field", _set("parallel.sp", 2), "parallel.sp: unknown field"),
    ("unknown section field", _set("cluster.gpu_type", "H100"), "cluster.gpu_type: unknown field"),
    (
        "unknown preset",
        _set("model.preset", "llama9-1t"),
        "model.preset: unknown model preset 'llama9-1t'",
    ),
    ("unknown gpu", _set("cluster.gpu", "B300"), "cluster.gpu: unknown GPU 'B300'"),
    (
        "tp*pp*dp != gpus",
        _set("parallel.dp", 2),
        "parallel: tp*pp*dp = 2*4*2 = 16 but the cluster has 8",
    ),
    (
        "tp does not divide heads",
        lambda r: (
            _set("parallel.tp", 3)(r),
            _set("parallel.pp", 1)(r),
            _set("cluster.gpus_per_node", 3)(r),
            _set("parallel.layer_split", None)(r),
        ),
        "parallel.tp: 3 does not divide the model's num_heads=64",
    ),
    (
        "tp does not divide kv heads",
        lambda r: (
            _set("parallel.tp", 16)(r),
            _set("parallel.pp", 1)(r),
            _set("cluster.gpus_per_node", 16)(r),
            _set("parallel.layer_split", None)(r),
        ),
        "parallel.tp: 16 does not divide the model's num_kv_heads=8",
    ),
    (
        "fewer layers than stages",
        lambda r: (
            _set("model.preset", "tiny")(r),
            _set("parallel.tp", 1)(r),
            _set("parallel.pp", 16)(r),
            _set("cluster.gpus_per_node", 16)(r),
            _set("parallel.layer_split", None)(r),
            _set("workload.input_len", {"dist": "fixed", "value": 16})(r),
            _set("workload.output_len", {"dist": "fixed", "value": 16})(r),
        ),
        "parallel.pp: 16 stages but the model has only 8 layers",
    ),
    (
        "layer split does not sum",
        _set("parallel.layer_split", [20, 20, 20, 19]),
        "parallel.layer_split: sums to 79 but the model has 80 layers",
    ),
    (
        "layer split wrong length",
        _set("parallel.layer_split", [40, 40]),
        "parallel.layer_split: 2 entries for pp=4",
    ),
    (
        "ep for a dense model",
        _set("parallel.ep", 2),
        "parallel.ep: 2 given but Llama is a dense model",
    ),
    ("negative rate", _set("workload.rate_rps", -1), "workload.rate_rps: must be > 0"),
    (
        "negative length",
        _set("workload.input_len", {"dist": "fixed", "value": -5}),
        "workload.input_len.value: lengths must be > 0",
    ),
    (
        "negative output max",
        _set("workload.output_len", {"dist": "uniform", "min": 1, "max": -3}),
        "workload.output_len.max: lengths must be > 0",
    ),
    # no preset here: with one, slo.py numbers the user's targets after the preset's (reported to
    # the lead)
    (
        "slo unknown metric",
        _set("slo", {"targets": ["latency_p99_ms <= 100"]}),
        "slo.targets[0]: unknown metric 'latency_p99_ms'",
    ),
    (
        "slo unknown unit",
        _set("slo", {"targets": ["throughput_rps >= 1", "ttft_p99_us <= 100"]}),
        "slo.targets[1]: unknown unit 'us'",
    ),
    (
        "slo bad operator",
        _set("slo", {"targets": ["ttft_p99_ms >= 100"]}),
        "ttft_p99_ms is a latency",
    ),
    (
        "slo unknown preset",
        _set("slo.preset", "mlperf-gpt5"),
        "slo.preset: unknown preset 'mlperf-gpt5'",
    ),
    ("wrong type", _set("run.max_batch", "many"), "run.max_batch: expected a whole number"),
    (
        "token budget below max_batch",
        _set("run.max_num_batched_tokens", 32),
        "run.max_num_batched_tokens: 32 < run.max_batch 64; every decode row must fit",
    ),
]


@pytest.mark.parametrize("name, edit, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_config_one_line_exit_2(tmp_path, capsys, name, edit, needle):
    rc = cli.main(["plan", str(_cfg(tmp_path, edit))])
    cap = capsys.readouterr()
    assert rc == 2, cap.out
    assert cap.out == ""
    assert cap.err.startswith("harness plan: error: ")
    assert needle in cap.err, cap.err
    assert cap.err.count("\n") == 1 and "Traceback" not in cap.err


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("model:\n  preset: llama3-70b\nparallel:\n  tp: 2\n   pp: 4\n")
    assert cli.main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert "is not valid YAML" in err and "line 5" in err and err.count("\n") == 1


def test_missing_config_and_bad_override(tmp_path, capsys):
    assert cli.main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "config: " in capsys.readouterr().err
    assert (
        cli.main(
            ["plan", str(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml"), "--set", "parallel.tp"]
        )
        == 2
    )
    assert "--set 'parallel.tp': write FIELD.PATH=VALUE" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "plan",
                str(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml"),
                "--set",
                "parallel.tp=3",
            ]
        )
        == 2
    )
    assert "parallel: tp*pp*dp = 3*4*1 = 12" in capsys.readouterr().err


def test_not_fitting_is_not_a_usage_error(tmp_path, capsys):
    # TP1-PP1 of a 141 GB model on one 80 GB GPU: exit 0, the plan says why, with numbers
    p = _cfg(
        tmp_path,
        lambda r: (
            _set("parallel.tp", 1)(r),
            _set("parallel.pp", 1)(r),
            _set("cluster.gpus_per_node", 1)(r),
            _set("parallel.layer_split", None)(r),
        ),
    )
    assert cli.main(["plan", str(p)]) == 0
    out = capsys.readouterr().out
    assert "problem: stage 0 does not fit: weights 141.1 GB" in out and "NO" in out


def test_bad_config_as_subprocess_has_no_traceback(tmp_path):
    p = _cfg(tmp_path, _set("parallel.layer_split", [20, 20, 20, 19]))
    exe = Path(sys.executable).parent / "harness"
    r = subprocess.run([str(exe), "plan", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "harness plan: error: parallel.layer_split: sums to 79 but the model has 80 layers; make "
        "it sum to 80"
    ]
