"""The contents of ``summary.json``: the skeleton a run writes at its start, its ``hardware`` and
``layout`` header, the ``slo`` rows and the overall verdict rule.

No torch import: ``report``, ``compare`` and ``history`` read runs without it.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Mapping

from harness import SCHEMA_VERSION


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_summary(name: str, hardware: Mapping[str, Any], layout: Mapping[str, Any],
                predicted: Mapping[str, Any] | None = None, started_utc: str | None = None) -> dict:
    """The summary a run writes at its start: every key present, ``complete: false``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "incomplete_reason": "run in progress (or killed before it finished)",
        "name": name,
        "started_utc": started_utc or utc_now(),
        "finished_utc": None,
        "wall_s": None,
        "warmup_s": None,
        "hardware": dict(hardware),
        "layout": dict(layout),
        "metrics": {},
        "slo": [],
        "verdict": "INCOMPLETE",
        "measured": {},
        "predicted": dict(predicted or {}),
        "stage_stats": [],
        "cross_checks": [],
        "notes": [],
    }


def slo_rows(verdicts: Iterable[Any]) -> list[dict]:
    """``harness.slo.SloVerdict`` list → the summary's ``slo`` rows."""
    return [{"target": v.target.text, "measured": v.measured, "passed": v.passed, "margin_pct": v.margin_pct}
            for v in verdicts]


def overall_verdict(slo: list[dict], complete: bool) -> str:
    """INCOMPLETE for an unfinished run; FAIL when any target missed; PASS when every target
    was measured and met; UNMEASURED otherwise (including a run with no targets)."""
    if not complete:
        return "INCOMPLETE"
    if any(r.get("passed") is False for r in slo):
        return "FAIL"
    if slo and all(r.get("passed") is True for r in slo):
        return "PASS"
    return "UNMEASURED"


def summary_header(spec: Any, env: Mapping[str, Any] | None = None) -> dict:
    """``hardware`` and ``layout`` of a summary from a validated ``harness.spec.Spec``."""
    env = env or {}
    names = env.get("gpu_names") or []
    lay = spec.layout
    return {
        "hardware": {"gpu": spec.cluster.gpu, "gpu_name": names[0] if names else "cpu",
                     "total_gpus": lay.world_size, "nodes": spec.cluster.nodes,
                     "backend": env.get("backend") or ("nccl" if names else "gloo")},
        "layout": {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
    }
