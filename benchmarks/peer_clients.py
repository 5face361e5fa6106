"""The peer tools as clients of a running OpenAI-compatible server, for the benchmarks that drive
one (benchmarks/client_vs_vllm_bench.py, benchmarks/peer_fixtures.py): AIPerf's command line, the
environment the tools run in, the tokenizer check, and AIPerf driven by a harness trace.

Each tool runs in its own venv (default /work/venvs/NAME) without ``HF_HUB_OFFLINE``: AIPerf 0.13.0
then takes a local tokenizer folder for a hub id and stops; nothing is downloaded either way, the
tokenizer being a local folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def tool_env() -> dict:
    drop = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def check_tokenizer(path: str | Path, flag: str = "--tokenizer") -> Path:
    """The tokenizer folder a peer tool counts tokens with, absolute; a missing one is one line and
    exit 2 before anything starts (AIPerf would otherwise try the model hub, unreachable here)."""
    p = Path(path).resolve()
    if not p.is_dir() or not any((p / f).is_file() for f in TOKENIZER_FILES):
        print(
            f"{Path(sys.argv[0]).name}: error: {flag} {path}: no tokenizer folder there (needs one "
            f"of {', '.join(TOKENIZER_FILES)}); give the checkpoint's folder",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return p


def aiperf_cmd(venv: Path, url: str, model: str, tokenizer: Path, out: Path, extra: list) -> list:
    """AIPerf's profile command: completions, streaming, ``ignore_eos``, a local tokenizer, no
    server-metrics scrape or GPU telemetry, no UI."""
    return [
        str(venv / "bin" / "aiperf"),
        "profile",
        "--model",
        model,
        "--url",
        url,
        "--endpoint-type",
        "completions",
        "--streaming",
        "--tokenizer",
        str(tokenizer),
        "--extra-inputs",
        "ignore_eos:true",
        "--no-server-metrics",
        "--no-gpu-telemetry",
        "--ui",
        "none",
        "--random-seed",
        "0",
        "--output-artifact-dir",
        str(out),
        *extra,
    ]


def words(ids: list[int], tokenizer: Path) -> str:
    """Token ids as the text the word-level tokenizer reads back into the same ids (its vocabulary's
    strings joined by spaces): the same prompt for a client that sends text."""
    vocab = json.loads((tokenizer / "tokenizer.json").read_text())["model"]["vocab"]
    inv = {i: w for w, i in vocab.items()}
    return " ".join(inv[i] for i in ids)


def aiperf_client(trace_path: str, out_path: str, venv: str, tokenizer: str) -> None:
    """AIPerf on a harness trace (benchmarks/client_vs_vllm_bench.py writes it): the same prompts as
    text, the same output lengths, the trace's arrival times as a fixed schedule (open loop) or
    ``--concurrency C`` (closed loop); ``--use-server-token-count`` so its per-token numbers count
    the server's tokens. Records read back by harness.results.imports.aiperf."""
    from harness.results.imports.aiperf import read

    t = json.loads(Path(trace_path).read_text())
    tok = Path(tokenizer)
    work = Path(tempfile.mkdtemp(prefix="aiperf-client-"))
    lines = []
    for r in t["requests"]:
        row = {"text": words(r["prompt"], tok), "output_length": r["output_len"]}
        if not t["closed"]:
            row["timestamp"] = r["arrival_s"] * 1e3
        lines.append(json.dumps(row))
    (work / "input.jsonl").write_text("\n".join(lines) + "\n")
    load = (
        ["--concurrency", str(t["concurrency"]), "--request-count", str(len(lines))]
        if t["closed"]
        else ["--fixed-schedule"]
    )
    extra = [
        "--input-file",
        str(work / "input.jsonl"),
        "--custom-dataset-type",
        "single_turn",
        "--use-server-token-count",
        "--extra-inputs",
        "temperature:0",
        *load,
    ]
    cmd = aiperf_cmd(Path(venv), t["url"], t["model"], tok, work / "out", extra)
    log = subprocess.run(cmd, capture_output=True, text=True, env=tool_env(), timeout=900)
    if log.returncode != 0:
        raise SystemExit(
            f"aiperf exit {log.returncode} ({work}):\n{(log.stdout + log.stderr)[-3000:]}"
        )
    imp = read(next((work / "out").rglob("profile_export.jsonl")))
    # AIPerf's clock 0 is its first credit; the trace's schedule starts at its first arrival (0)
    recs = sorted(imp.records, key=lambda r: r.arrival_s)
    sched = sorted(r["arrival_s"] for r in t["requests"])
    out = [
        {
            "sched": s if not t["closed"] else r.arrival_s,
            "sent": r.sent_s,
            "times": list(r.token_times_s),
            "ok": r.completed,
        }
        for r, s in zip(recs, sched)
    ]
    summ = json.loads(next((work / "out").rglob("profile_export_aiperf.json")).read_text())
    own = {
        "request_throughput": summ.get("request_throughput", {}).get("avg"),
        "p99_ttft_ms": summ.get("time_to_first_token", {}).get("p99"),
        "p99_itl_ms": summ.get("inter_chunk_latency", {}).get("p99"),
        "p99_tpot_ms": summ.get("inter_token_latency", {}).get("p99"),
    }
    Path(out_path).write_text(json.dumps({"records": out, "own": own, "dir": str(work)}))
