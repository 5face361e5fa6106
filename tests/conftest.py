"""Shared fixtures. Keep this small: one fixture per shared need.

``hf``: Hugging Face's ``LlamaForCausalLM`` as the reference model for a ModelShape, built from a
``LlamaConfig`` in a way that works with transformers 4.5x and 5.x (``rope_theta`` and
``rope_scaling`` are accepted by both; 5.x folds them into ``rope_parameters``).
"""

from __future__ import annotations

import pytest


class HFReference:
    """Reference computations with transformers (each prompt alone: no padding, no cache)."""

    @staticmethod
    def config(shape):
        from transformers import LlamaConfig

        kw = dict(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.num_layers,
            num_attention_heads=shape.num_heads,
            num_key_value_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
            max_position_embeddings=shape.max_context,
            rms_norm_eps=shape.rms_norm_eps,
            rope_theta=shape.rope_theta,
            tie_word_embeddings=shape.tie_embeddings,
            attention_bias=False,
            mlp_bias=False,
            attn_implementation="eager",
        )
        if shape.rope_scaling:
            kw["rope_scaling"] = dict(shape.rope_scaling)
        return LlamaConfig(**kw)

    def model(self, shape, state_dict=None, seed: int | None = None):
        """The reference model holding ``state_dict`` (or transformers' own init under ``seed``)."""
        import torch
        from transformers import LlamaForCausalLM

        if seed is not None:
            torch.manual_seed(seed)
        m = LlamaForCausalLM(self.config(shape)).float().eval()
        if state_dict is not None:
            m.load_state_dict(state_dict, strict=True)
        return m

    @staticmethod
    def all_logits(model, prompt):
        import torch

        with torch.no_grad():
            return model(torch.tensor([prompt]), use_cache=False).logits[0].float()  # [T, vocab]

    def last_logits(self, model, prompts):
        import torch

        return torch.stack([self.all_logits(model, p)[-1] for p in prompts])  # [B, vocab]

    def greedy(self, model, prompts, n: int) -> list[list[int]]:
        out = []
        for p in prompts:
            seq = list(p)
            for _ in range(n):
                seq.append(int(self.all_logits(model, seq)[-1].argmax()))
            out.append(seq[len(p) :])
        return out


@pytest.fixture(scope="session")
def hf():
    return HFReference()


@pytest.fixture(scope="session")
def tiny():
    from harness.spec.catalog import MODEL_PRESETS

    return MODEL_PRESETS["tiny"]


# Prompts of different lengths over the tiny vocabulary (256), shared by the model tests.
PROMPTS = [
    [17, 3, 250, 99, 41],
    [8, 8, 120, 7, 33, 201, 5, 64, 12],
    [200, 1, 77],
    [i * 37 % 256 for i in range(14)],
]


@pytest.fixture(scope="session")
def prompts():
    return [list(p) for p in PROMPTS]


# The real CPU demo run (one per session), for every test that needs a run directory.
from demo_run import demo_run  # noqa: E402,F401


@pytest.fixture(scope="session")
def vllm_ckpt(tmp_path_factory):
    """The tiny Llama checkpoint the shared vLLM server serves (tests/vllm_server.py)."""
    from vllm_server import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("vllm-ckpt") / "tiny-llama")


@pytest.fixture(scope="session")
def vllm_server(vllm_ckpt, tmp_path_factory):
    """One real vLLM server (TP2-PP4, CPU) for every test of the session that needs one: {url,
    model, info, tree}; drive it with ``engine: {kind: openai, url, model}``."""
    from vllm_server import shared_server

    yield from shared_server(vllm_ckpt, tmp_path_factory.mktemp("server"))


def pytest_collection_modifyitems(items):
    """The tests on the shared vLLM server run last, test_vllm_serve's first (its reference run
    needs the memory before the server takes it): the server starts once, and no other server or
    world of the suite runs beside it."""

    def key(item):
        shared = "vllm_server" in getattr(item, "fixturenames", ())
        return (shared, shared and item.module.__name__ != "test_vllm_serve")

    items.sort(key=key)
