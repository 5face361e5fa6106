"""Bad spec input is refused before any rank starts, by `plan` and `run` alike: one line naming the
field and the fix, exit 2, nothing written (issue 14: non-finite and huge numbers, YAML 1.1
booleans, enums as typed, duplicate keys, alias bombs, --set 1e12, torchrun flags, prefixes)."""

from __future__ import annotations

import json
import time

import pytest

from demo_run import DEMO_CONFIG
from harness import cli
from harness.spec.bounds import LIMITS, numeric_fields, numeric_paths
from harness.spec.spec import Spec, load_spec


def _both(capsys, tmp_path, *argv):
    """`harness plan` and `harness run` on the same arguments: (exit codes, stderr lines) of
    each."""
    out = []
    for verb, extra in (("plan", []), ("run", ["--results-dir", str(tmp_path / "run")])):
        rc = cli.main([verb, *argv, *extra])
        cap = capsys.readouterr()
        out.append((rc, cap.err.strip().splitlines()))
    assert not (tmp_path / "run").exists()  # run refused it before writing anything
    return out


BAD_SETS = [
    ("run.timeout_s=.inf", "run.timeout_s: must be a finite number, got inf"),
    ("run.timeout_s=.nan", "run.timeout_s: must be a finite number, got nan"),
    ("run.comm_timeout_s=.inf", "run.comm_timeout_s: must be a finite number"),
    (
        "run.comm_timeout_s=1e7",
        "run.comm_timeout_s: 10,000,000 is beyond the limit of 86,400 s (1 day)",
    ),
    ("run.max_batch=1e29", "run.max_batch: 1e+29 is beyond the limit of 65,536"),
    ("run.nvml_interval_s=.nan", "run.nvml_interval_s: must be a finite number, got nan"),
    (
        "workload.num_requests=300000000",
        "workload.num_requests: 300,000,000 is beyond the limit of 1,000,000",
    ),
    ("workload.duration_s=.inf", "workload.duration_s: must be a finite number, got inf"),
    ("workload.rate_rps=.nan", "workload.rate_rps: must be a finite number, got nan"),
    (
        "workload.rate_rps=1e12",
        "workload.rate_rps: 1,000,000,000,000 is beyond the limit of 1,000,000",
    ),
    ("workload.seed=-1", "workload.seed: must be >= 0, got -1"),
    ("run.kv_cache_fraction=0", "run.kv_cache_fraction: must be > 0, got 0"),
    (
        "cluster.overrides={hbm_gbps: .nan}",
        "cluster.overrides.hbm_gbps: must be a positive finite number",
    ),
    (
        "slo.targets=['ttft_p99_ms <= 1e999']",
        "slo.targets[0]: 'ttft_p99_ms <= 1e999' has no finite target",
    ),
    ("name=" + "x" * 150, "must be at most 100 letters, digits"),
    (
        "run.instrument=sometimes",
        "run.instrument: 'sometimes' is not allowed; use one of off, counts, timing",
    ),
]


@pytest.mark.parametrize("override, needle", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_bad_numbers_are_refused_by_plan_and_run_alike(capsys, tmp_path, override, needle):
    (plan_rc, plan_err), (run_rc, run_err) = _both(
        capsys, tmp_path, str(DEMO_CONFIG), "--set", override
    )
    assert plan_rc == run_rc == 2
    assert (
        len(plan_err) == 1
        and plan_err[0].startswith("harness plan: error: ")
        and needle in plan_err[0]
    ), plan_err
    assert run_err == [plan_err[0].replace("harness plan:", "harness run:")]


def test_every_numeric_field_has_a_limit():
    paths = set(numeric_paths(Spec))
    assert {
        "run.timeout_s",
        "workload.num_requests",
        "parallel.layer_split[]",
        "workload.input_len.sigma",
    } <= paths
    assert paths <= set(LIMITS), sorted(paths - set(LIMITS))
    spec = load_spec(DEMO_CONFIG, ["parallel.layer_split=[2,2,2,2]"])
    assert {p for p, _ in numeric_fields(spec)} <= paths


def test_what_a_person_types_is_read_as_meant():
    spec = load_spec(
        DEMO_CONFIG,
        [
            "run.instrument=off",
            "run.record_tokens=off",
            "workload.arrival=Poisson",
            "model.dtype=FP32",
            "run.device=CPU",
            "workload.rate_rps=1e3",
            "workload.num_requests=1e3",
        ],
    )
    assert spec.run.instrument == "off" and spec.run.record_tokens is False
    assert (spec.workload.arrival, spec.model.dtype, spec.run.device) == ("poisson", "fp32", "cpu")
    assert spec.workload.rate_rps == 1000.0 and spec.workload.num_requests == 1000
    assert load_spec(DEMO_CONFIG, ["run.record_tokens=yes"]).run.record_tokens is True
    assert load_spec(DEMO_CONFIG, ["run.instrument=false"]).run.instrument == "off"


def test_yaml_1_1_words_in_the_file(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(
        DEMO_CONFIG.read_text().replace(
            "  comm_timeout_s: 30\n",
            "  comm_timeout_s: 3e1\n  instrument: off\n  record_tokens: on\n",
        )
    )
    spec = load_spec(p)
    assert (spec.run.instrument, spec.run.record_tokens, spec.run.comm_timeout_s) == (
        "off",
        True,
        30.0,
    )


def test_duplicate_keys_are_refused_with_both_lines(tmp_path, capsys):
    p = tmp_path / "dup.yaml"
    p.write_text(DEMO_CONFIG.read_text().replace("  tp: 2\n", "  tp: 2\n  tp: 4\n"))
    assert cli.main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "key 'tp' appears twice in one mapping (first on line 11); keep one" in err
    )


def _bomb(levels: int = 9) -> str:
    """One YAML flow list defining its own anchors: the last element expands to 9**levels
    strings."""
    parts = ["&a0 [" + ",".join(["lol"] * 9) + "]"]
    for k in range(1, levels):
        parts.append(f"&a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]")
    return "[" + ", ".join(parts) + "]"


def test_an_alias_bomb_gives_a_short_message_at_once(tmp_path, capsys):
    p = tmp_path / "bomb.yaml"
    p.write_text(DEMO_CONFIG.read_text().replace("name: tiny-tp2-pp4-cpu", f"name: {_bomb()}"))
    t0 = time.monotonic()
    assert cli.main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("harness plan: error: name: expected text, got [[") and err.count("\n") == 1
    )
    assert len(err) < 200 and time.monotonic() - t0 < 10
    p.write_text(DEMO_CONFIG.read_text().replace("  max_batch: 8", f"  max_batch: {_bomb()}"))
    assert cli.main(["run", str(p), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("harness run: error: run.max_batch: expected a whole number, got [[")
        and len(err) < 200
    )


def test_torchrun_flags_and_prefixes(capsys, tmp_path):
    assert (
        cli.main(["run", str(DEMO_CONFIG), "--nnodes", "0", "--results-dir", str(tmp_path / "r")])
        == 2
    )
    assert "--nnodes: must be >= 1, got 0" in capsys.readouterr().err
    assert (
        cli.main(
            ["run", str(DEMO_CONFIG), "--nproc-per-node", "3", "--results-dir", str(tmp_path / "r")]
        )
        == 2
    )
    assert "--nproc-per-node: 3 x 1 nodes != 8 processes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        cli.main(["no-such-verb"])
    err = capsys.readouterr().err
    assert (
        err.startswith("harness: error: argument VERB: invalid choice")
        and "harness harness" not in err
    )


def test_a_model_without_layers_is_worded_sanely(tmp_path, capsys):
    cfg = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": -3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 256,
        "max_position_embeddings": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    p = tmp_path / "spec.yaml"
    p.write_text(
        DEMO_CONFIG.read_text().replace(
            "  preset: tiny\n", f"  config: {tmp_path / 'config.json'}\n"
        )
    )
    assert cli.main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layers" in err and "-3" in err and "pp <= -" not in err, err
