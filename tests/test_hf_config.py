"""model.config: a Hugging Face config.json read by transformers' LlamaConfig (its defaults),
validated in full before any rank starts (``harness plan`` exits 2 with one line), and a vocabulary
tp does not divide padded (byte counts against the formula)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.plan.planner import plan
from harness.spec.hf_config import model_from_hf_config
from harness.spec.spec import load_spec

BASE = dict(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=256,
)


def _config(tmp_path: Path, name: str = "config.json", **over) -> Path:
    raw = {k: v for k, v in {**BASE, **over}.items() if v is not None}
    p = tmp_path / name
    p.write_text(json.dumps(raw))
    return p


def _spec(tmp_path: Path, config: Path, tp: int = 2, pp: int = 4) -> Path:
    raw = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml").read_text()
    )
    raw["model"] = {"config": str(config), "dtype": "fp32"}
    raw["parallel"] = {"tp": tp, "pp": pp, "dp": 1}
    raw["cluster"]["gpus_per_node"] = tp * pp
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_absent_fields_take_transformers_defaults(tmp_path):
    from transformers import LlamaConfig

    lib = LlamaConfig()
    shape = model_from_hf_config(_config(tmp_path))
    assert (shape.max_context, shape.rms_norm_eps, shape.rope_theta) == (2048, 1e-6, 10000.0)
    assert (
        shape.max_context == lib.max_position_embeddings and shape.rms_norm_eps == lib.rms_norm_eps
    )
    assert shape.head_dim == 16 and shape.num_kv_heads == 2 and not shape.tie_embeddings
    # num_key_value_heads absent: as many KV heads as query heads, as transformers does
    assert model_from_hf_config(_config(tmp_path, num_key_value_heads=None)).num_kv_heads == 4


def test_a_saved_checkpoint_config_round_trips(tmp_path, hf, tiny):
    hf.config(tiny).save_pretrained(tmp_path)
    shape = model_from_hf_config(tmp_path)
    assert dataclasses.replace(shape, name="tiny") == tiny
    l3 = dataclasses.replace(
        tiny,
        rope_theta=500000.0,
        max_context=131072,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    hf.config(l3).save_pretrained(tmp_path / "l3")
    assert dataclasses.replace(model_from_hf_config(tmp_path / "l3"), name="tiny") == l3


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.mark.parametrize(
    "over, needle",
    [
        (dict(num_attention_heads=0), "num_attention_heads = 0; it must be a whole number"),
        (dict(hidden_size="64"), "hidden_size = '64'; it must be a whole number"),
        (dict(vocab_size=-5), "vocab_size = -5"),
        (dict(head_dim=15), "head_dim 15 is odd"),
        (dict(hidden_size=66), "hidden_size 66 is not a multiple of num_attention_heads 4"),
        (
            dict(num_key_value_heads=3),
            "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
        ),
        (
            dict(attention_bias=True),
            "attention_bias = True: projections with biases are not implemented",
        ),
        (dict(mlp_bias=True), "mlp_bias = True"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu' is not implemented"),
        (
            dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
            "rope_type 'yarn' is not implemented",
        ),
        (
            dict(rope_scaling={"type": "linear", "factor": 2.0}),
            "rope_type 'linear' is not implemented",
        ),
        (
            dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
            "llama3 rope scaling lacks low_freq_factor, high_freq_factor, "
            "original_max_position_embeddings",
        ),
        (
            dict(rope_scaling={**LLAMA3, "low_freq_factor": 4.0}),
            "low_freq_factor 4.0 must be below high_freq_factor",
        ),
        (dict(rms_norm_eps=float("nan")), "rms_norm_eps = nan"),
        (dict(model_type="mistral"), "model_type 'mistral' is not supported"),
    ],
)
def test_bad_model_config_is_one_line_exit_2_before_any_rank(tmp_path, capsys, over, needle):
    spec = _spec(tmp_path, _config(tmp_path, **over))
    for verb in ("plan", "run"):
        rc = cli.main(
            [verb, str(spec), "--results-dir", str(tmp_path / "run")]
            if verb == "run"
            else [verb, str(spec)]
        )
        out, err = capsys.readouterr()
        assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (
            verb,
            err,
        )
    assert not (tmp_path / "run").exists()  # nothing written, no rank started


def test_unreadable_config_is_exit_2(tmp_path, capsys):
    p = tmp_path / "config.json"
    p.write_text('{"hidden_size": 64,')
    rc = cli.main(["plan", str(_spec(tmp_path, p))])
    assert rc == 2 and "is not valid JSON (line 1" in capsys.readouterr().err


def test_a_vocabulary_tp_does_not_divide_is_padded(tmp_path):
    spec = load_spec(_spec(tmp_path, _config(tmp_path, vocab_size=255)))
    assert spec.shape.vocab == 255 and spec.shape.vocab_shard(2) == 128
    ranks = plan(spec).ranks
    layer = (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) // 2 + 2 * 64  # per TP rank
    assert ranks[0].weight_bytes == 4 * (2 * layer + 128 * 64)  # 2 layers + 128 embedding rows
    assert ranks[-1].weight_bytes == 4 * (2 * layer + 128 * 64 + 64)  # + lm_head rows + final norm
