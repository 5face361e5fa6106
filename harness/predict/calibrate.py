"""Calibration: a ``PipelineModel`` (one fitted ``StageCost`` per stage, the pipeline hops, the
coordinator's own time per step) from a run directory's tables or from a ``harness emulate`` JSON.

From a run (``from_run``), every measured (non-warm-up) step gives, per stage s:
- service time: stage 0 (the coordinator runs it inside ``submit``) t_send_end − t_recv_start of
  the coordinator's row (TP broadcast + compute + send); a later stage s max_tp t_send_end(s) −
  max(max_tp t_recv_start(s), max_tp t_send_end(s−1)): from when it was free and the activations
  were sent to when its last TP rank has sent on, so the receive (the PP hop) is part of it;
  features from the steps table (tokens, rows, attn_pairs) and the step's in-flight depth;
- the return hop: t_done of the step − max(t_send_end of the last stage's TP rank 0, when the
  coordinator was last busy before it): the tokens' way back and the collect; its mean and its
  samples (the simulator draws from them);
- coordinator time per step (``loop_s``): over the steps submitted while another was in flight
  (so the loop was not idling for an arrival; a run that never had two in flight: the lower decile
  of its gaps), the mean gap from the coordinator's last event (end of its stage-0 work, or the last
  collected step) to the next submit: scheduling, packing, applying tokens — the serving loop's own
  Python.

From an emulate JSON (``from_emulate``): each emulated rank's decode (B rows at context c: tokens
B, rows B, attn_pairs B·(c+1)) and prefill (T tokens, 1 row, attn_pairs T(T+1)/2) points; a stage
not emulated takes the fit of the nearest emulated stage of its kind (first, middle, last); each
stage's service time adds the planner's link-model communication floor of its ops
(``planner.Timing.comm``), hops are 0 (the planner counts the send in the sender's comm), and
``loop_s`` is 0: nothing measured the coordinator.

Bad input raises ``UsageError``: a missing run dir, one without steps/stages tables, of another
model or layout; an emulate JSON that is not one, or of another model, dtype, TP or PP.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.predict.fit import StageCost, fit_stage
from harness.spec.json_file import read_json_file

EMULATE_SCHEMA = "harness.emulate/1"


@dataclass
class PipelineModel:
    stages: list[StageCost]
    hop_s: list[float]  # hop_s[s]: a hop into stage s outside its cost (0 when calibrated)
    return_s: float  # mean hop, last stage -> coordinator
    loop_s: float  # the coordinator's own time per step
    source: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    return_samples: list[float] = field(default_factory=list)
    closure: dict = field(default_factory=dict)  # harness.predict.closure: the factor on every time
    # per stage, the fitted samples (step, features, seconds) before any closure: what
    # harness.predict.draws resamples (a run source only; not serialized)
    samples: list[list[tuple[int, dict, float]]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "stages": [s.to_dict() for s in self.stages],
            "hop_s": list(self.hop_s),
            "return_s": self.return_s,
            "loop_s": self.loop_s,
            "source": dict(self.source),
            "return_samples": len(self.return_samples),
            "closure": dict(self.closure),
            "notes": list(self.notes),
        }


def in_flight_depth(by_step: dict[int, dict]) -> dict[int, int]:
    """Per step: micro-batches in the pipeline once it entered, itself included (1 + earlier steps
    submitted before it and collected after it) — what ``SimStage.submit`` sees as 1 + pending."""
    order = sorted(by_step)
    out = {}
    for i, k in enumerate(order):
        t = float(by_step[k]["t_submit_s"])
        out[k] = 1 + sum(
            1 for j in order[max(0, i - 64) : i] if float(by_step[j]["t_done_s"] or 0.0) > t
        )
    return out


def step_features(row: dict) -> dict[str, float]:
    """Features of one steps-table row; attn_pairs 0 when the run predates the column."""
    ap = row.get("attn_pairs")
    return {
        "tokens": float(row["n_tokens"]),
        "rows": float(row["n_rows"]),
        "attn_pairs": 0.0 if ap is None or ap != ap else float(ap),
    }


def _check_run_matches(run, spec) -> None:
    rs = run.spec if isinstance(run.spec, dict) else {}
    model = rs.get("model") or {}
    want = {
        "model.preset": (model.get("preset"), getattr(spec.model, "preset", None)),
        "model.dtype": (model.get("dtype"), spec.model.dtype),
    }
    for name, (have, need) in want.items():
        if have is not None and need is not None and have != need:
            raise UsageError(
                f"--from {run.path}: the run's {name} is {have!r}, CONFIG's is {need!r}; "
                "calibrate from a run of the same model"
            )
    lay = run.layout()
    if (lay.tp, lay.pp) != (spec.layout.tp, spec.layout.pp):
        raise UsageError(
            f"--from {run.path}: the run is TP{lay.tp}-PP{lay.pp}, CONFIG is TP{spec.layout.tp}-"
            f"PP{spec.layout.pp}; a run calibrates its own layout (use an emulate JSON for another)"
        )


def _keyed(df):
    """(index tuples, value rows) of a grouped frame, for dict building."""
    return [tuple(int(i) for i in k) for k in df.index], df.to_numpy().tolist()


def from_run(run_dir: str | Path, spec) -> PipelineModel:
    from harness.results.reader import load_run

    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(
            f"--from {run_dir}: no such run directory or emulate JSON; give a run directory "
            "written by `harness run` or the JSON of `harness emulate --out`"
        )
    run = load_run(path)
    if run.engine_kind() != "reference":
        # a vLLM run's steps/stages are its profiled window's (harness.measure.vllm_steps), not
        # the serving loop the simulator replays
        raise UsageError(
            f"--from {run_dir}: the run's engine is {run.engine_kind()}, whose tables hold no "
            "steps of the serving loop the simulator replays; calibrate from a reference-engine run"
        )
    missing = sorted({"steps", "stages"} & set(run.absent))
    if missing:
        raise UsageError(
            f"--from {run_dir}: the run has no {' or '.join(missing)} table ({run.engine_kind()} "
            "engine); calibrate from a reference-engine run, which writes them"
        )
    _check_run_matches(run, spec)
    steps = run.steps
    steps = steps[~steps["warmup"].fillna(False).astype(bool)]
    if not len(steps) or not len(run.stages):
        raise UsageError(f"--from {run_dir}: the run has no measured steps; rerun it to completion")
    by_step = {int(r["step"]): r for r in steps.to_dict("records")}
    pp = run.layout().pp
    st = run.stages[run.stages["dp"] == 0]
    cols = ["t_recv_start_s", "t_recv_end_s", "t_send_end_s"]
    # plain dicts: a pandas lookup per step and stage is what would make calibration slow
    agg = {
        k: dict(zip(cols, v)) for k, v in zip(*_keyed(st.groupby(["stage", "step"])[cols].max()))
    }
    coord = {int(r["step"]): r for r in st[(st["stage"] == 0) & (st["tp"] == 0)].to_dict("records")}
    last0 = {
        int(r["step"]): r for r in st[(st["stage"] == pp - 1) & (st["tp"] == 0)].to_dict("records")
    }
    samples: list[list] = [[] for _ in range(pp)]
    back, loop_gaps, idle_gaps = [], [], []
    done_times = sorted(
        float(r["t_done_s"]) for r in by_step.values() if r.get("t_done_s") is not None
    )
    coord_ends = sorted(
        (float(c["t_recv_start_s"]), float(c["t_send_end_s"]))
        for k, c in coord.items()
        if k in by_step
    )
    coord_begins = [b for b, _ in coord_ends]

    def busy_until(t: float) -> float:
        """When the coordinator last finished something before ``t``: its stage-0 work or a
        collect."""
        i, j = bisect_left(coord_begins, t), bisect_left(done_times, t)
        return max(coord_ends[i - 1][1] if i else 0.0, done_times[j - 1] if j else 0.0)

    depth = in_flight_depth(by_step)
    for step, row in by_step.items():
        feats = {**step_features(row), "depth": float(depth[step])}
        if step in coord:
            c = coord[step]
            samples[0].append((step, feats, float(c["t_send_end_s"] - c["t_recv_start_s"])))
        for s in range(1, pp):
            if (s, step) in agg and (s - 1, step) in agg:
                a, prev = agg[(s, step)], agg[(s - 1, step)]
                ready = max(a["t_recv_start_s"], prev["t_send_end_s"])  # free, and the data sent
                samples[s].append((step, feats, float(a["t_send_end_s"] - ready)))
        t_done = row.get("t_done_s")
        if step in last0 and t_done is not None:
            sent = float(last0[step]["t_send_end_s"])
            back.append(float(t_done) - max(sent, busy_until(float(t_done))))
    # the coordinator's own time: from its last event before a submit to the submit
    for step, row in by_step.items():
        nxt = by_step.get(step + 1)
        if nxt is None or step not in coord:
            continue
        t_next = float(nxt["t_submit_s"])
        j = bisect_right(done_times, t_next)
        last = max(float(coord[step]["t_send_end_s"]), done_times[j - 1] if j else 0.0)
        if (
            t_next >= last
        ):  # busy: another step still in flight (else the loop may have idled for an arrival)
            (loop_gaps if depth.get(step + 1, 1) >= 2 else idle_gaps).append(t_next - last)
    stages = []
    for s in range(pp):
        if not samples[s]:
            raise UsageError(
                f"--from {run_dir}: stage {s} has no timed steps in the stages table; rerun it"
            )
        stages.append(fit_stage(s, [(f, t) for _, f, t in samples[s]]))
    mean = lambda xs: max(0.0, float(np.mean(xs))) if xs else 0.0  # noqa: E731
    notes = []
    if "attn_pairs" not in steps or steps["attn_pairs"].isna().all():
        notes.append("the run's steps table predates attn_pairs: the context term is not fitted")
    return PipelineModel(
        stages=stages,
        hop_s=[0.0] * pp,
        return_s=mean(back),
        loop_s=mean(loop_gaps)
        if loop_gaps
        else (float(np.quantile(idle_gaps, 0.1)) if idle_gaps else 0.0),
        return_samples=[max(0.0, v) for v in back],
        source={
            "kind": "run",
            "path": str(path),
            "name": run.summary.get("name"),
            "steps": len(by_step),
            "hardware": run.summary.get("hardware"),
        },
        notes=notes,
        samples=samples,
    )


def _emulate_points(rank: dict) -> list[tuple[dict[str, float], float]]:
    out = []
    for p in rank.get("decode") or []:
        if p.get("step_s"):
            b, c = p["batch"], p["context"]
            out.append(
                ({"tokens": b, "rows": b, "attn_pairs": b * (c + 1), "depth": 1}, p["step_s"])
            )
    for p in rank.get("prefill") or []:
        if p.get("step_s"):
            t, b = p["tokens"], p.get("batch", 1)
            out.append(
                (
                    {"tokens": b * t, "rows": b, "attn_pairs": b * t * (t + 1) / 2, "depth": 1},
                    p["step_s"],
                )
            )
    return out


def read_emulate(path: str | Path) -> dict:
    p = Path(path)
    data = read_json_file(p, "--from", "give `harness emulate --out` JSON or a run directory")
    if data.get("schema") != EMULATE_SCHEMA or not isinstance(data.get("ranks"), list):
        raise UsageError(
            f"--from {path}: not a `harness emulate` result (schema {EMULATE_SCHEMA}); rerun "
            "`harness emulate CONFIG --out FILE`"
        )
    return data


def _kind(pp: int, s: int) -> str:
    return "only" if pp == 1 else "first" if s == 0 else "last" if s == pp - 1 else "middle"


def from_emulate(path: str | Path, spec) -> PipelineModel:
    from harness.plan import planner

    data = read_emulate(path)
    es = data.get("spec") or {}
    checks = {
        "model": (es.get("model"), spec.shape.name),
        "dtype": (es.get("dtype"), spec.model.dtype),
        "tp": (es.get("tp"), spec.layout.tp),
        "pp": (es.get("pp"), spec.layout.pp),
    }
    for name, (have, need) in checks.items():
        if have != need:
            raise UsageError(
                f"--from {path}: the emulate JSON's {name} is {have!r}, CONFIG's is {need!r}; "
                f"emulate CONFIG itself (`harness emulate CONFIG --out FILE`)"
            )
    pp = spec.layout.pp
    fits = {}
    for rk in data["ranks"]:
        pts = _emulate_points(rk)
        if pts:
            fits[int(rk["stage"])] = fit_stage(int(rk["stage"]), pts, source="emulated")
    if not fits:
        raise UsageError(
            f"--from {path}: no timed point in the emulate JSON; rerun `harness emulate`"
        )
    tm = planner.Timing(
        spec.shape,
        spec.layout,
        spec.gpu,
        spec.dtype_bytes,
        spec.run.max_batch,
        planner.links(spec.layout, spec.gpu, spec.cluster.gpus_per_node),
    )
    stages = []
    for s in range(pp):
        same = [k for k in fits if _kind(pp, k) == _kind(pp, s)] or list(fits)
        ref = s if s in fits else min(same, key=lambda k: abs(k - s))
        f = fits[ref]
        # the per-step floor of the stage's ops at one row (scales with tokens below)
        comm = tm.comm(s, 1, 1)
        per_tok = tm.comm(s, 1, 2) - comm
        stages.append(
            StageCost(
                stage=s,
                intercept_s=f.intercept_s + comm - per_tok,
                coef={**f.coef, "tokens": f.coef["tokens"] + per_tok},
                residuals=f.residuals,
                # one device per stage in the deployment: its depth is no extrapolation
                range={k: v for k, v in f.range.items() if k != "depth"},
                unfitted=f.unfitted,
                source="emulated" if ref == s else f"emulated stage {ref} (same kind)",
            )
        )
    dev = data.get("device") or {}
    return PipelineModel(
        stages=stages,
        hop_s=[0.0] * pp,
        return_s=0.0,
        loop_s=0.0,
        source={
            "kind": "emulate",
            "path": str(path),
            "device": dev.get("name"),
            "device_type": dev.get("type"),
            "emulated_stages": sorted(fits),
        },
        notes=[
            "communication: the planner's link-model floor (emulate executes no collective)",
            "the coordinator's own time per step is not measured by emulate (0)",
        ],
    )


def calibrate(source: str | Path, spec) -> PipelineModel:
    """A run directory or an emulate JSON file → the model (``UsageError`` on bad input)."""
    p = Path(source)
    if p.is_dir():
        return from_run(p, spec)
    if p.is_file():
        return from_emulate(p, spec)
    raise UsageError(
        f"--from {source}: no such run directory or emulate JSON; give a run directory written by "
        "`harness run` or the JSON of `harness emulate --out`"
    )
