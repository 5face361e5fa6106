"""The Python body of launch/gpu_check.sh (run from the repo root with PYTHONPATH=.).

  gpu_check.py versions FILE          GPU, driver, CUDA, torch, NCCL, transformers versions -> FILE
  (JSON) gpu_check.py peaks FILE             copy bandwidth and bf16 matmul peak on cuda:0 -> FILE
  (JSON) gpu_check.py summarize WORK OUTDIR  step logs and results in WORK ->
  OUTDIR/gpu_check.{json,md,log}

Each is one step of the shell script, under its own timeout. ``summarize`` never raises for a
missing or broken input: a step that failed reads as failed, a number not measured reads
"not measured", and the short table is printed last."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

NOT_MEASURED = "not measured"
GOALS = {"decode_b1_copy_frac": 0.85, "prefill_2048_peak_frac": 0.60}
RANK_FILES = ("first", "middle", "last")
COMMAND = "bash launch/gpu_check.sh OUTDIR"


def _note(note) -> str:
    return f"; {note}" if note else ""


def versions(path: str) -> int:
    from harness.results.atomic import atomic_write_json
    from harness.results.environment import environment

    env = environment()
    import torch

    env["cuda_available"] = torch.cuda.is_available()
    atomic_write_json(path, env)
    gpu = ", ".join(env["gpu_names"]) or "none (no CUDA device visible)"
    for k, v in (
        ("GPU", gpu),
        ("driver", env["driver"]),
        ("CUDA", env["cuda"]),
        ("torch", env["torch"]),
        ("NCCL", env["nccl"]),
        ("transformers", env["transformers"]),
        ("python", env["python"]),
    ):
        print(f"{k:13} {v}")
    return 0


def peaks(path: str) -> int:
    import torch

    from harness.emulate import measure_peaks
    from harness.results.atomic import atomic_write_json

    p = measure_peaks(torch.device("cuda", 0), torch.bfloat16, iters=20)
    atomic_write_json(path, p.__dict__)
    print(
        f"copy {p.copy_gbps:.0f} GB/s (read+write of {p.copy_bytes / 2**30:.0f} GiB), bf16 matmul "
        f"{p.matmul_tflops:.0f} TFLOP/s ({p.matmul_n}^3), each the fastest of {p.iters}"
    )
    return 0


# ---------------------------------------------------------------- summary


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(work: Path) -> list[dict]:
    out = []
    tsv = work / "steps.tsv"
    for line in tsv.read_text().splitlines() if tsv.exists() else []:
        name, rc, wall, limit = (line.split("\t") + ["", "", "", ""])[:4]
        status = (
            "ok"
            if rc == "0"
            else "skipped"
            if rc == "skipped"
            else "timeout"
            if rc in ("124", "137")
            else "failed"
        )
        log = work / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        out.append(
            {
                "name": name,
                "status": status,
                "rc": None if rc == "skipped" else int(rc),
                "wall_s": float(wall) if wall else None,
                "timeout_s": limit,
                "log_tail": tail,
            }
        )
    return out


def _junit(path: Path) -> dict | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = []
    for c in root.iter("testcase"):
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            e = c.find(tag)
            if e is not None:
                outcome, msg = tag, (e.get("message") or "")[:300]
        cases.append(
            {
                "name": c.get("name"),
                "outcome": outcome,
                "message": msg,
                "time_s": float(c.get("time", 0)),
            }
        )
    count = {
        k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")
    }
    return {**count, "cases": cases}


def _goals(ranks: list[dict]) -> dict:
    """Per rank: decode at batch 1 (each context) / copy bandwidth, prefill 2048 / bf16 peak."""
    out: dict = {"targets": GOALS, "per_rank": {}}
    for rk in ranks:
        dec = {str(p["context"]): p["copy_frac"] for p in rk["decode"] if p["batch"] == 1}
        pre = next((p["peak_frac"] for p in rk["prefill"] if p["tokens"] == 2048), None)
        out["per_rank"][str(rk["rank"])] = {
            "kind": rk["kind"],
            "decode_b1_copy_frac": dec,
            "prefill_2048_peak_frac": pre,
        }
    dec_all = [v for r in out["per_rank"].values() for v in r["decode_b1_copy_frac"].values()]
    pre_all = [r["prefill_2048_peak_frac"] for r in out["per_rank"].values()]
    out["decode_met"] = bool(dec_all) and all(
        v is not None and v >= GOALS["decode_b1_copy_frac"] for v in dec_all
    )
    out["prefill_met"] = bool(pre_all) and all(
        v is not None and v >= GOALS["prefill_2048_peak_frac"] for v in pre_all
    )
    return out


def _combined_projection(reports: dict) -> dict | None:
    """One projection from the three ranks measured in separate processes (each alone scales the
    stage types it did not measure)."""
    got = [r for r in reports.values() if r]
    if not got:
        return None
    from harness.emulate import RankResult, catalog_gpu_for, project
    from harness.spec.spec import load_spec

    spec = load_spec(got[0]["spec"]["source"])
    ranks = [RankResult.from_dict(rk) for r in got for rk in r["ranks"]]
    name = got[0]["device"]["name"]
    return project(spec, ranks, name, catalog_gpu_for(name))


def _run_summary(run_dir: Path) -> dict | str:
    """The one-GPU end-to-end run's verdict and headline metrics (or why there are none)."""
    s = _load(run_dir / "summary.json")
    if not s:
        return "not measured: the run-1gpu step did not write a summary"
    m = s.get("metrics") or {}
    keys = (
        "completed",
        "request_throughput",
        "output_throughput",
        "p50_ttft_ms",
        "p99_ttft_ms",
        "p50_tpot_ms",
        "p99_tpot_ms",
    )
    return {
        "complete": s.get("complete"),
        "verdict": s.get("verdict"),
        "gpu_name": (s.get("hardware") or {}).get("gpu_name"),
        **{k: m.get(k) for k in keys},
        "slo": s.get("slo"),
        "failed_cross_checks": [c["name"] for c in s.get("cross_checks") or [] if not c.get("ok")],
    }


def summarize(work_dir: str, out_dir: str) -> int:
    from harness.results.atomic import atomic_write_json, atomic_write_text
    from harness.results.summary import utc_now

    work, out = Path(work_dir), Path(out_dir)
    ver = _load(work / "versions.json") or {}
    gpu = bool(ver.get("cuda_available"))
    steps = _steps(work)
    pk = _load(work / "peaks.json") if gpu else None
    if gpu:
        emul = {k: _load(work / f"emulate-{k}.json") for k in RANK_FILES}
    else:
        emul = {"tiny": _load(work / "emulate-tiny.json")}
    ranks = [rk for r in emul.values() if r for rk in r["ranks"]]
    proj = None
    if gpu:
        try:
            proj = _combined_projection(emul)
        except Exception as e:  # the summary must still be written
            proj = {"error": f"{type(e).__name__}: {e}"}
    elif emul["tiny"]:
        proj = {k: emul["tiny"][k] for k in ("projection", "analytic", "stage_sources")}
    data = {
        "schema": "harness.gpu_check/1",
        "created_utc": utc_now(),
        "command": COMMAND,
        "gpu": gpu,
        "message": "" if gpu else "no GPU present: GPU fields not measured; CPU-side checks only",
        "versions": ver,
        "deps": _load(work / "deps.json"),
        "peaks": {
            "copy_gbps": pk["copy_gbps"] if pk else NOT_MEASURED,
            "matmul_tflops": pk["matmul_tflops"] if pk else NOT_MEASURED,
            "detail": pk,
        },
        "steps": steps,
        "tests": _junit(work / "pytest.xml") if gpu else NOT_MEASURED,
        "emulation": emul,
        "goals": _goals(ranks) if gpu else NOT_MEASURED,
        "projection": proj,
        "run_1gpu": _run_summary(out / "run-1gpu") if gpu else NOT_MEASURED,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_check.json", data)
    atomic_write_text(out / "gpu_check.md", render(data))
    logs = "".join(
        f"===== {s['name']} ({s['status']})\n"
        + (
            (work / f"{s['name']}.log").read_text(errors="replace")
            if (work / f"{s['name']}.log").exists()
            else ""
        )
        for s in steps
    )
    atomic_write_text(out / "gpu_check.log", logs)
    print(render_short(data), end="")
    return 0 if all(s["status"] in ("ok", "skipped") for s in steps) else 1


def _pct(v) -> str:
    return f"{v:.0%}" if isinstance(v, (int, float)) else NOT_MEASURED


def _num(v, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return format(v * scale, fmt) + unit if isinstance(v, (int, float)) else NOT_MEASURED


def render(d: dict) -> str:
    v = d["versions"]
    lines = ["# GPU check", "", f"Command: `{d['command']}` ({d['created_utc']})", ""]
    if not d["gpu"]:
        lines += [f"**{d['message']}.**", ""]
    lines += [
        f"- GPU: {', '.join(v.get('gpu_names') or []) or 'none (no GPU)'}; driver "
        f"{v.get('driver')}; "
        f"CUDA {v.get('cuda')}; torch {v.get('torch')}; NCCL {v.get('nccl')}; "
        f"transformers {v.get('transformers')}; python {v.get('python')}",
        f"- copy bandwidth: {_num(d['peaks']['copy_gbps'], '.0f', unit=' GB/s')}; bf16 matmul "
        f"peak: "
        f"{_num(d['peaks']['matmul_tflops'], '.0f', unit=' TFLOP/s')}",
        "",
    ]
    t = d["tests"]
    if isinstance(t, dict):
        lines += (
            [
                f"GPU tests: {t['passed']} passed, {t['failure']} failed, {t['error']} errors, "
                f"{t['skipped']} skipped"
            ]
            + [
                f"- {c['name']}: {c['outcome']} {c['message']}"
                for c in t["cases"]
                if c["outcome"] != "passed"
            ]
            + [""]
        )
    g = d["goals"]
    if isinstance(g, dict):
        lines += [
            "| rank | kind | decode B=1 / copy BW (by context) | prefill 2048 / bf16 peak |",
            "|---|---|---|---|",
        ]
        for rank, r in g["per_rank"].items():
            dec = (
                ", ".join(f"{c}: {_pct(x)}" for c, x in r["decode_b1_copy_frac"].items())
                or NOT_MEASURED
            )
            lines.append(f"| {rank} | {r['kind']} | {dec} | {_pct(r['prefill_2048_peak_frac'])} |")
        lines += [
            "",
            f"Goals: decode >= 85 % of copy bandwidth: {'met' if g['decode_met'] else 'NOT met'}; "
            f"prefill >= 60 % of bf16 peak: {'met' if g['prefill_met'] else 'NOT met'}",
            "",
        ]
    for key, rep in d["emulation"].items():
        if not rep:
            lines += [f"Emulation {key}: no result (see the step's log)", ""]
            continue
        lines += [
            f"Emulation {key} ({rep['device']['name']}{_note(rep['device']['note'])}):",
            "",
            "| rank | phase | B | T | ctx | ms | GB/s | % copy | TFLOP/s | % peak | mode | check |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for rk in rep["ranks"]:
            for pt in rk["decode"] + rk["prefill"]:
                lines.append(
                    f"| {rk['rank']} {rk['kind']} | {pt['phase']} | {pt['batch']} | {pt['tokens']} "
                    f"| "
                    f"{pt['context']} | {_num(pt['step_s'], '.3f', 1e3)} | "
                    f"{_num(pt['gbps'], '.3g')} | "
                    f"{_pct(pt['copy_frac'])} | {_num(pt['tflops'], '.3g')} | "
                    f"{_pct(pt['peak_frac'])} | "
                    f"{pt['mode'] or '-'} | {pt['check'] or pt['note'] or '-'} |"
                )
        lines.append("")
    p = d.get("projection") or {}
    if "projection" in p:
        a, q = p["analytic"], p["projection"]
        lines += [
            f"Projection ({q['basis']}):",
            "",
            "| | projection | analytic floor |",
            "|---|---|---|",
        ]
        from harness.emulate.projection import PROJECTION_ROWS

        for key, label, scale, fmt in PROJECTION_ROWS:
            lines.append(f"| {label} | {_num(q[key], fmt, scale)} | {_num(a[key], fmt, scale)} |")
        lines.append("")
    elif p.get("error"):
        lines += [f"Projection failed: {p['error']}", ""]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {_num(s['wall_s'], '.1f')} |" for s in d["steps"]]
    return "\n".join(lines) + "\n"


def render_short(d: dict) -> str:
    """The table printed last: what a reader needs from one glance."""
    v, rows = d["versions"], []
    rows.append(
        (
            "GPU",
            ", ".join(v.get("gpu_names") or []) or "NONE: no GPU present, GPU fields not measured",
        )
    )
    rows.append(
        (
            "driver / CUDA / torch / NCCL",
            f"{v.get('driver')} / {v.get('cuda')} / {v.get('torch')} / {v.get('nccl')}",
        )
    )
    deps = d.get("deps") or {}
    missing = [*deps.get("missing", {}), *deps.get("optional_missing", {})]
    rows.append(("missing modules", ", ".join(missing) or "none"))
    rows.append(("copy bandwidth", _num(d["peaks"]["copy_gbps"], ".0f", unit=" GB/s")))
    rows.append(("bf16 matmul peak", _num(d["peaks"]["matmul_tflops"], ".0f", unit=" TFLOP/s")))
    t = d["tests"]
    rows.append(
        (
            "pytest -m gpu",
            f"{t['passed']} passed, {t['failure'] + t['error']} failed"
            if isinstance(t, dict)
            else NOT_MEASURED,
        )
    )
    g = d["goals"]
    if isinstance(g, dict):
        for rank, r in g["per_rank"].items():
            dec = (
                ", ".join(f"ctx {c} {_pct(x)}" for c, x in r["decode_b1_copy_frac"].items())
                or NOT_MEASURED
            )
            rows.append(
                (
                    f"rank {rank} ({r['kind']})",
                    f"decode B=1 {dec} of copy BW (goal 85%); prefill 2048 "
                    f"{_pct(r['prefill_2048_peak_frac'])} of bf16 peak (goal 60%)",
                )
            )
    else:
        rows.append(("goals (decode 85% copy BW, prefill 60% peak)", NOT_MEASURED))
    p = (d.get("projection") or {}).get("projection")
    a = (d.get("projection") or {}).get("analytic")
    if p and a:
        rows.append(
            (
                "projection / analytic TPOT 1 row",
                f"{_num(p['tpot_floor_s'], '.2f', 1e3)} / {_num(a['tpot_floor_s'], '.2f', 1e3)} ms",
            )
        )
        rows.append(
            (
                "projection / analytic TTFT",
                f"{_num(p['ttft_floor_s'], '.1f', 1e3)} / {_num(a['ttft_floor_s'], '.1f', 1e3)} ms",
            )
        )
        rows.append(
            (
                "projection / analytic max RPS in SLOs",
                f"{_num(p['rps_slo'], '.2f')} / {_num(a['rps_slo'], '.2f')}",
            )
        )
    rows.append(("steps", ", ".join(f"{s['name']} {s['status']}" for s in d["steps"])))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {val}" for k, val in rows) + "\n"


def main(argv: list[str]) -> int:
    cmds = {"versions": (versions, 1), "peaks": (peaks, 1), "summarize": (summarize, 2)}
    if not argv or argv[0] not in cmds or len(argv) != cmds[argv[0]][1] + 1:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = cmds[argv[0]]
    return fn(*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
