"""What the claims are checked against: the spec (from --config, or from the model, strategy and
GPUs the report names) and, with ``--results``, the run's summary.json and why it may not stand
for the claims (other hardware, model, layout, or an incomplete run)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError
from harness.spec.catalog import MODEL_PRESETS, catalog_key_for_device, gpu_spec, model_preset
from harness.spec.json_file import read_json_file
from harness.spec.spec import load_spec, spec_from_dict
from harness.verdicts.claims.parse import ClaimsDoc


@dataclass
class RunResults:
    path: str
    complete: bool
    hardware: dict
    measured: dict
    model: str | None = None
    dtype: str | None = None
    layout: dict | None = None
    offered_rps: float | None = None
    slo: list = field(default_factory=list)
    engine: str = "reference"  # summary.engine.kind: vllm/openai runs have no comm or stage trace


def _preset(name: str):
    base = name.lower().replace("-instruct", "").replace("-chat", "")
    # 3.1 / 3.3 70B and 3.1 8B: the shapes of 3.0
    same_shape = re.sub(r"^llama3\.\d-", "llama3-", base)
    for cand in (name, base, same_shape, base.replace("llama3-", "llama3.1-")):
        try:
            return model_preset(cand)
        except UsageError:
            continue
    raise UsageError(
        f"report: model {name!r} is not a known preset ({', '.join(MODEL_PRESETS)}); "
        "give --config CONFIG with model.config"
    )


def _nodes(doc: ClaimsDoc, world: int) -> tuple[int, int]:
    if doc.nodes and doc.gpus_per_node and doc.nodes * doc.gpus_per_node == world:
        return doc.nodes, doc.gpus_per_node
    if doc.nodes and world % doc.nodes == 0:
        return doc.nodes, world // doc.nodes
    if world <= 8 or world % 8:
        return 1, world
    return world // 8, 8  # HGX/DGX nodes hold 8 GPUs


def context_spec(doc: ClaimsDoc, config: str | None) -> tuple[Any, list[str], bool]:
    """The spec the claims are checked against, notes, and whether a workload is stated.
    ``config`` (or the claims YAML's own ``config``) overrides what the report names."""
    notes: list[str] = []
    config = config or doc.config
    if config:
        spec = load_spec(config)
        s = doc.strategy
        if s and (s["tp"], s["pp"], s["dp"]) != (spec.layout.tp, spec.layout.pp, spec.layout.dp):
            notes.append(
                f"the report names TP{s['tp']}-PP{s['pp']}-DP{s['dp']}; checked against the "
                f"config's "
                f"TP{spec.layout.tp}-PP{spec.layout.pp}-DP{spec.layout.dp}"
            )
        if doc.model and _preset_or_none(doc.model) not in (None, spec.shape.name):
            notes.append(
                f"the report names {doc.model}; checked against the config's {spec.shape.name}"
            )
        if doc.gpu and doc.gpu != spec.gpu.name:
            notes.append(
                f"the report names {doc.gpu}; checked against the config's {spec.gpu.name}"
            )
        return spec, notes, True
    missing = [
        what
        for what, v in (
            ("model (e.g. Llama3-70B)", doc.model),
            ("strategy (e.g. TP2-PP4-DP1)", doc.strategy),
            ("GPU (e.g. 8x H100)", doc.gpu),
        )
        if not v
    ]
    if missing:
        raise UsageError(f"report: {doc.path} names no {missing[0]}; give --config CONFIG")
    shape = _preset(doc.model)
    s = doc.strategy
    world = s["tp"] * s["pp"] * s["dp"]
    nodes, per_node = _nodes(doc, world)
    if doc.total_gpus and doc.total_gpus != world:
        notes.append(
            f"the report's hardware has {doc.total_gpus} GPUs; TP{s['tp']}-PP{s['pp']}-DP{s['dp']} "
            f"uses {world}"
        )
    raw = {
        "name": "report",
        "model": {"preset": shape.name, "dtype": doc.dtype or "bf16"},
        "cluster": {"gpu": doc.gpu, "nodes": nodes, "gpus_per_node": per_node},
        "parallel": dict(s),
    }
    try:
        spec = spec_from_dict(raw)
    except UsageError as e:
        raise UsageError(
            f"report: {doc.path}: its strategy TP{s['tp']}-PP{s['pp']}-DP{s['dp']}-EP{s['ep']} "
            f"cannot run {shape.name}: {e}"
        ) from None
    return spec, notes, False


def _preset_or_none(name: str) -> str | None:
    try:
        return _preset(name).name
    except UsageError:
        return None


def load_results(run_dir: str) -> RunResults:
    """RUN_DIR/summary.json (schema_version 1): complete, hardware, measured (and, when there, the
    run's layout, its plan's model and dtype, SLO rows). Anything else is a UsageError."""
    p = Path(run_dir) / "summary.json"
    data = read_json_file(p, "--results", "give a run directory written by 'harness run'")
    if data.get("schema_version") != 1:
        got = data.get("schema_version")
        raise UsageError(f"--results: {p}: schema_version {got!r} unknown; this harness reads 1")
    hw, measured = data.get("hardware"), data.get("measured")
    if (
        not isinstance(hw, dict)
        or not isinstance(measured, dict)
        or not isinstance(data.get("complete"), bool)
    ):
        raise UsageError(
            f"--results: {p} lacks complete/hardware/measured; is it a harness run summary?"
        )
    pred = data.get("predicted") if isinstance(data.get("predicted"), dict) else {}
    model, dtype = (pred.get("model") or {}).get("name"), pred.get("dtype")
    spec_p = Path(run_dir) / "spec.yaml"
    if model is None and spec_p.is_file():
        try:
            m = (yaml.safe_load(spec_p.read_text()) or {}).get("model") or {}
            model, dtype = (
                (_preset_or_none(m["preset"]) if m.get("preset") else None),
                m.get("dtype", dtype),
            )
        except (yaml.YAMLError, AttributeError, OSError):
            pass
    rate = (
        (data.get("workload") or {}).get("rate_rps")
        if isinstance(data.get("workload"), dict)
        else None
    )
    engine = data.get("engine") if isinstance(data.get("engine"), dict) else {}
    return RunResults(
        str(run_dir),
        data["complete"],
        hw,
        measured,
        model,
        dtype,
        data.get("layout") if isinstance(data.get("layout"), dict) else None,
        data.get("offered_rps", rate),
        data.get("slo") if isinstance(data.get("slo"), list) else [],
        str(engine.get("kind") or "reference"),
    )


def _gpu_name(name: str) -> str:
    try:
        return gpu_spec(name).name
    except UsageError:
        return name


def run_mismatch(res: RunResults, spec) -> dict[str, str | None]:
    """Why a run's measurement cannot stand for the claims, per kind (None: it can)."""
    hw = res.hardware
    lay = spec.layout
    run_gpu = _gpu_name(str(hw.get("gpu", "?")))
    device = str(hw.get("gpu_name") or "")
    if device and device.lower() not in ("cpu", "cuda"):
        # the device the run reported is the evidence (summaries written before hardware.gpu came
        # from the device carry the spec's GPU there)
        run_gpu = catalog_key_for_device(device) or device
    out: dict[str, str | None] = {"hardware": None, "model": None, "layout": None, "complete": None}
    if run_gpu != spec.gpu.name or hw.get("total_gpus", lay.world_size) != lay.world_size:
        out["hardware"] = (
            f"run on {run_gpu} ({hw.get('total_gpus', '?')} ranks); claims are for "
            f"{lay.world_size}x {spec.gpu.name}"
        )
    same_bytes = {res.dtype, spec.model.dtype} == {
        "bf16",
        "fp16",
    }  # 2-byte types: same bytes, same memory
    other_dtype = bool(res.dtype) and res.dtype != spec.model.dtype and not same_bytes
    if res.model is not None and (res.model != spec.shape.name or other_dtype):
        out["model"] = (
            f"run used {res.model} {res.dtype or ''}".rstrip()
            + f"; claims are about {spec.shape.name}"
        )
    rl = res.layout
    if rl and (rl.get("tp"), rl.get("pp"), rl.get("dp")) != (lay.tp, lay.pp, lay.dp):
        out["layout"] = (
            f"run layout TP{rl.get('tp')}-PP{rl.get('pp')}-DP{rl.get('dp')}; claims are for "
            f"TP{lay.tp}-PP{lay.pp}-DP{lay.dp}"
        )
    if not res.complete:
        out["complete"] = "the run did not complete"
    return out
