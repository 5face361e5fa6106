"""A Hugging Face checkpoint folder checked by its safetensors headers only, before any rank starts.

The headers (a few kB per file) say every tensor's name, dtype and shape, and safetensors refuses a
file whose header does not cover its bytes (a truncated copy). No tensor data is read and nothing
is unpickled: a ``.bin``/``.pt`` checkpoint is refused with "convert to safetensors", since loading
a pickle runs whatever code it holds.

``checkpoint_files`` (name → file, from the index or the single file) is shared with the reference
engine's loader (``harness.engines.reference.model.weights.CheckpointWeights``), which then reads
only its own slices. No torch import: ``safe_open(..., framework="np")`` reads headers.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UsageError, shown
from harness.spec.catalog import ModelShape

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
CONVERT_HINT = (
    "convert it to safetensors (transformers: model.save_pretrained(folder, "
    "safe_serialization=True)); "
    "harness never unpickles a checkpoint"
)


def hf_tensor_shapes(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    """Global (unsharded) shape of every tensor of a Hugging Face Llama checkpoint, by name."""
    h, q, kv, inter = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (shape.vocab, h)}
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        out.update(
            {
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (inter, h),
                p + "mlp.up_proj.weight": (inter, h),
                p + "mlp.down_proj.weight": (h, inter),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    out["model.norm.weight"] = (h,)
    if not shape.tie_embeddings:
        out["lm_head.weight"] = (shape.vocab, h)
    return out


def _refuse_pickles(folder: Path, field: str) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UsageError(
            f"{field}: {folder} holds {pickles[0]} (a pickle) and no safetensors; {CONVERT_HINT}"
        )


def checkpoint_files(folder: str | Path, field: str = "model.checkpoint") -> dict[str, Path]:
    """Tensor name → the ``.safetensors`` file that holds it: from ``model.safetensors.index.json``
    when the checkpoint is sharded, else from the single ``model.safetensors`` (its header)."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix in PICKLE_SUFFIXES:
        raise UsageError(f"{field}: {folder} is a pickle checkpoint; {CONVERT_HINT}")
    if not folder.is_dir():
        raise UsageError(
            f"{field}: checkpoint folder {folder} not found; give a Hugging Face model folder with "
            "config.json and *.safetensors"
        )
    if not (folder / "config.json").is_file():
        raise UsageError(f"{field}: {folder} has no config.json; give a Hugging Face model folder")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise UsageError(
                f"{field}: {index} is not a JSON object ({type(e).__name__}); rewrite it with "
                "save_pretrained"
            ) from None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise UsageError(
                f"{field}: {index.name}: weight_map must map tensor names to file names, got "
                f"{shown(weight_map)}; rewrite it with save_pretrained"
            )
        files = {}
        for name, fname in weight_map.items():
            f = folder / fname
            if Path(fname).name != fname or f.suffix != ".safetensors":
                raise UsageError(
                    f"{field}: {index.name} lists {shown(fname)} for {name}; each entry must be a "
                    ".safetensors file in the checkpoint folder"
                )
            files[name] = f
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise UsageError(
                    f"{field}: {f.name} is listed in {index.name} but missing from {folder}"
                )
        return files
    single = folder / SINGLE_FILE
    if not single.is_file():
        _refuse_pickles(folder, field)
        raise UsageError(
            f"{field}: {folder} has neither {SINGLE_FILE} nor {INDEX_FILE}; save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    return {name: single for name in read_header(single, field)}


def read_header(
    path: Path, field: str = "model.checkpoint"
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name → (dtype, shape) from one safetensors header; a bad or truncated file is a
    UsageError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {
                name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape()))
                for name in f.keys()
            }
    except OSError as e:
        raise UsageError(
            f"{field}: cannot read {path} ({e.strerror or type(e).__name__})"
        ) from None
    except (
        Exception
    ) as e:  # safetensors' own error type (SafetensorError) for a bad header or short file
        reason = " ".join(str(e).split())[:120]
        raise UsageError(
            f"{field}: {path.name} is not a complete safetensors file ({reason}); copy or "
            f"save it again"
        ) from None


def check_checkpoint(
    folder: str | Path, shape: ModelShape, field: str = "model.checkpoint"
) -> None:
    """Every tensor the model needs is in the checkpoint, in the file the index names, with its
    shape and a float dtype; every file's header is whole. One ``UsageError`` line for the first
    problem."""
    files = checkpoint_files(folder, field)
    headers = {f: read_header(f, field) for f in sorted(set(files.values()))}
    expected = hf_tensor_shapes(shape)
    missing = [n for n in expected if n not in files]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(
            f"{field}: tensor {missing[0]}{more} is missing from the checkpoint in {folder}; the "
            f"checkpoint must match the model config ({shape.name})"
        )
    for name, want in expected.items():
        f = files[name]
        if name not in headers[f]:
            raise UsageError(
                f"{field}: tensor {name} is missing from {f.name}, though {INDEX_FILE} lists it "
                f"there"
            )
        dtype, found = headers[f][name]
        if found != want:
            raise UsageError(
                f"{field}: tensor {name} in {f.name} has shape {list(found)}, the model config "
                f"needs "
                f"{list(want)}; the checkpoint does not match the config"
            )
        if dtype not in FLOAT_DTYPES:
            raise UsageError(
                f"{field}: tensor {name} in {f.name} is {dtype}; only unquantized float "
                f"checkpoints "
                f"({', '.join(FLOAT_DTYPES)}) are supported"
            )
