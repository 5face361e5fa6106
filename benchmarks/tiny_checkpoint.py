"""Write a tiny Llama checkpoint with a word-level tokenizer, for vLLM and the reference engine
alike (no model hub is called):

    .venv/bin/python benchmarks/tiny_checkpoint.py results/tiny-llama

Model: 4 layers, hidden 256, 4 heads of 64 (vLLM's CPU attention needs head_dim >= 32), 2 KV heads,
MLP 512, vocabulary 512, 512 positions, fp32, untied embeddings, seeded. Every matrix is scaled by
5 after transformers' init (std 0.02 gives nearly flat logits, where greedy decoding of two fp32
implementations could split on a near-tie). Tokenizer (``tokenizers`` WordLevel): ``<unk>`` 0,
``<s>`` 1, ``</s>`` 2, then the words ``w0``… as ids 3…; the harness sends token ids, vLLM only
needs the tokenizer to start."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>")


def fixed_length_sets(
    checkpoint: str | Path, requests: int, input_len: int, output_len: int
) -> list[str]:
    """The ``--set`` strings a benchmark on this checkpoint shares: the checkpoint (written here
    when it is not there yet), the request count and fixed input/output lengths."""
    ckpt = Path(checkpoint)
    if not (ckpt / "config.json").exists():
        write_tiny_checkpoint(ckpt)
    return [
        f"model.checkpoint={ckpt}",
        f"workload.num_requests={requests}",
        f"workload.input_len={{dist: fixed, value: {input_len}}}",
        f"workload.output_len={{dist: fixed, value: {output_len}}}",
    ]


def write_tiny_checkpoint(
    out: str | Path,
    seed: int = 0,
    hidden: int = 256,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 4,
    intermediate: int = 512,
    vocab: int = 512,
    max_positions: int = 512,
    scale: float = 5.0,
) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    words = {tok: i for i, tok in enumerate(SPECIALS)}
    words.update({f"w{i}": len(SPECIALS) + i for i in range(vocab - len(SPECIALS))})
    tk = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        model_max_length=max_positions,
    ).save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    model.save_pretrained(out, safe_serialization=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args()
    print(
        write_tiny_checkpoint(a.out, seed=a.seed, hidden=a.hidden, heads=a.heads, layers=a.layers)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
