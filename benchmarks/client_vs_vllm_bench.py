"""The harness's client against the peers' clients (vLLM's own benchmark client, NVIDIA AIPerf) on
ONE vLLM server, the same trace, alternating, in one invocation: does our client measure what theirs
measure on the same server (ratios ours/theirs, with the spread over rounds), or do all see the same
(then it is the machine)?

    flock /tmp/harness-heavy.lock .venv/bin/python benchmarks/client_vs_vllm_bench.py \
        [--config configs/tiny-tp2-pp4-vllm-cpu.yaml] [--tp 2 --pp 4] [--rounds 2] \
        [--clients harness,harness-nocap,vllm,vllm-rt,aiperf] [--workloads closed,poisson]
        [--requests 48] [--aiperf-venv /work/venvs/aiperf] [--tokenizer CKPT] [--out DIR]

Clients (each a fresh process, given the same trace: arrival times, lengths, prompt token ids):
- ``harness``: ``harness run --set engine={kind: openai, ...}``, the product path (its driver,
  /metrics scrape, flushes), records from its requests.parquet;
- ``vllm``: ``vllm.benchmarks.serve.benchmark`` (what ``vllm bench serve`` runs: its aiohttp
  session, request function, dispatch) in the vLLM venv, the trace's times as ``self_timed``
  timestamps (open loop) or ``--request-rate inf --max-concurrency C`` (closed loop);
- ``bare``: the harness's request function
  (``harness.engines.openai_server.client.stream_request``) alone, dispatched like vLLM's, no
  driver around it;
- ``aiperf``: AIPerf 0.13.0 in its own venv (benchmarks/peer_clients.py): the trace's prompts as the
  text the word-level tokenizer reads back into the same ids, the trace's times as a fixed schedule
  (open loop) or ``--concurrency C`` (closed loop), ``--use-server-token-count``; its records read
  back by harness.results.imports.aiperf (its chunk times, from its own clock). Its process tree
  (AIPerf runs several service processes) is not in the /proc columns: only the wrapper is.
A suffix runs a client's process differently: ``-rt`` under ``chrt -f 1`` (SCHED_FIFO, every
thread), ``-nocap`` without CAP_SYS_NICE (``setpriv``), so the harness's loop thread cannot take
SCHED_FIFO (harness.engines.openai_server.priority) and runs as it did before that: normal priority.
No warm-up requests in any client: one unmeasured pass warms the server first.

Same formulas for every client (times from each client's own clock): lag = sent − scheduled (open
loop) or sent − the finish that freed the slot (closed loop: the i-th send after the first C is
released by the (i−C)-th finish); TTFT = first token − sent; ITL = gaps between token chunks,
pooled; TPOT = (last − first)/(n − 1); E2E = last − sent; throughput = completed / (last token −
first scheduled). Server side per phase: vLLM's /metrics histograms, scrape before → after.
Machine side per phase: CPU seconds and run-queue wait seconds (/proc/PID/schedstat, summed over
threads) of the client and of each server role, /proc/stat (busy, steal), load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- clients (run as child processes)


def _trace(path: str) -> dict:
    return json.loads(Path(path).read_text())


def vllm_client(trace_path: str, out_path: str) -> None:
    """vLLM's own client on the trace (run with the vLLM venv's python)."""
    from vllm.benchmarks import serve
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.utils.gc_utils import freeze_gc_heap

    t = _trace(trace_path)
    reqs = [
        SampleRequest(
            prompt=r["prompt"],
            prompt_len=r["input_len"],
            expected_output_len=r["output_len"],
            timestamp=r["arrival_s"],
            request_id=str(r["id"]),
        )
        for r in t["requests"]
    ]
    mark = {}
    original = serve.get_request

    async def get_request(*a, **k):  # its schedule starts at the first step of this generator
        mark["t0"] = time.perf_counter()
        async for x in original(*a, **k):
            yield x

    serve.get_request = get_request
    freeze_gc_heap()  # as serve.main does
    closed = t["closed"]
    res = asyncio.run(
        serve.benchmark(
            task_type=serve.TaskType.GENERATION,
            endpoint_type="vllm",
            api_url=t["url"] + "/v1/completions",
            base_url=t["url"],
            model_id=t["model"],
            model_name=None,
            tokenizer=None,
            input_requests=reqs,
            logprobs=None,
            request_rate=float("inf") if closed else 1.0,
            burstiness=1.0,
            disable_tqdm=True,
            num_warmups=0,
            profile=False,
            selected_percentile_metrics=["ttft", "tpot", "itl", "e2el"],
            selected_percentiles=[50.0, 99.0],
            ignore_eos=True,
            goodput_config_dict={},
            max_concurrency=t["concurrency"] if closed else None,
            lora_modules=None,
            extra_headers=None,
            extra_body={"temperature": 0.0},
            ready_check_timeout_sec=0,
            self_timed=not closed,
        )
    )
    t0 = mark["t0"]
    out = []
    for r, st, ttft, itl, err in zip(
        t["requests"], res["start_times"], res["ttfts"], res["itls"], res["errors"]
    ):
        times, now = [], st + (ttft or 0.0)
        if ttft:
            times.append(now)
            for g in itl:
                now += g
                times.append(now)
        out.append(
            {
                "sched": r["arrival_s"],
                "sent": st - t0,
                "times": [x - t0 for x in times],
                "ok": not err,
            }
        )
    Path(out_path).write_text(
        json.dumps(
            {
                "records": out,
                "own": {
                    k: res.get(k)
                    for k in ("request_throughput", "p99_ttft_ms", "p99_itl_ms", "p99_tpot_ms")
                },
            }
        )
    )


def bare_client(trace_path: str, out_path: str) -> None:
    """The harness's request function alone, dispatched like vLLM's client."""
    import aiohttp

    from harness.engines.openai_server.client import stream_request
    from harness.measure.metrics import RequestRecord

    t = _trace(trace_path)

    async def go() -> list:
        t0 = time.monotonic()
        clock = lambda: time.monotonic() - t0  # noqa: E731
        sem = asyncio.Semaphore(t["concurrency"] if t["closed"] else 10**6)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=None)
        ) as s:

            async def one(r):
                rec = RequestRecord(
                    request_id=r["id"],
                    replica=0,
                    arrival_s=r["arrival_s"],
                    admitted_s=None,
                    first_token_s=None,
                    input_len=r["input_len"],
                    output_len=r["output_len"],
                )
                async with sem:
                    await stream_request(s, t["url"], t["model"], r["prompt"], rec, clock)
                return rec

            tasks = []
            for r in t["requests"]:
                if not t["closed"] and (d := r["arrival_s"] - clock()) > 0:
                    await asyncio.sleep(d)
                tasks.append(asyncio.create_task(one(r)))
            return await asyncio.gather(*tasks)

    recs = asyncio.run(go())
    Path(out_path).write_text(
        json.dumps(
            {
                "records": [
                    {
                        "sched": r.arrival_s,
                        "sent": r.sent_s,
                        "times": r.token_times_s,
                        "ok": r.completed,
                    }
                    for r in recs
                ]
            }
        )
    )


# ---------------------------------------------------------------- the machine: /proc


def _proc_times(pid: int) -> tuple[float, float, float] | None:
    """(CPU s, run-queue wait s) of a process, summed over its threads (/proc/PID/task/*/schedstat),
    and the run-queue wait of its main thread alone."""
    run = wait = main = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                a, b, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            run, wait = run + int(a), wait + int(b)
            main = int(b) if tid == str(pid) else main
    except OSError:
        return None
    return run / 1e9, wait / 1e9, main / 1e9


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "Worker" in cmd:
        return "workers"
    if "EngineCore" in cmd:
        return "engine_core"
    return "api_server" if "api_server" in cmd or " serve " in cmd else "other_server"


def _cpu_stat() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


class ProcWatch:
    """Polls /proc every 0.1 s while a phase runs: (CPU, wait) per pid, /proc/stat. The phase's
    window is the serving one, the same for every client: from the sample before the EngineCore
    first ran steps (> 10 ms of CPU in 0.1 s) to the last sample where it did."""

    def __init__(self, server_sid: int, client_pid: int):
        from harness.engines.vllm.tree import session_members

        self.members = lambda: [p for p, _ in session_members(server_sid)]
        self.client_pid = client_pid
        self.series: list[tuple[float, list[int], dict[int, tuple]]] = []
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        now: dict[int, tuple] = {}
        for pid in [self.client_pid, *self.members()]:
            got = _proc_times(pid)
            if got is None:
                continue
            now[pid] = got
            if pid not in self.roles:
                self.roles[pid] = "client" if pid == self.client_pid else _role(pid)
        self.series.append((time.monotonic(), _cpu_stat(), now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(0.1)

    def finish(self) -> dict:
        self._stop.set()
        self._thread.join()
        core = [p for p, r in self.roles.items() if r == "engine_core"]

        def core_cpu(i):
            return sum(self.series[i][2].get(p, (0.0, 0.0, 0.0))[0] for p in core)

        active = [i for i in range(1, len(self.series)) if core_cpu(i) - core_cpu(i - 1) > 0.01]
        if not active:
            return {"window_s": 0.0}
        (ta, sa, pa), (tb, sb, pb) = self.series[active[0] - 1], self.series[active[-1]]
        d = [b - a for a, b in zip(sa, sb)]
        hz = os.sysconf("SC_CLK_TCK")
        total = sum(d[:8]) or 1
        out = {
            "window_s": tb - ta,
            "busy_pct": 100.0 * (total - d[3] - d[4]) / total,
            "steal_pct": 100.0 * d[7] / total,
            "machine_busy_cpu_s": (total - d[3] - d[4]) / hz,
            "load1_end": os.getloadavg()[0],
        }
        for pid, role in self.roles.items():
            if pid not in pb:
                continue
            a, b = pa.get(pid, pb[pid]), pb[pid]
            r = out.setdefault(
                role, {"cpu_s": 0.0, "runq_wait_s": 0.0, "main_thread_wait_s": 0.0, "procs": 0}
            )
            r["cpu_s"] += b[0] - a[0]
            r["runq_wait_s"] += b[1] - a[1]
            r["main_thread_wait_s"] += b[2] - a[2]
            r["procs"] += 1
        ours = sum(v["cpu_s"] for k, v in out.items() if isinstance(v, dict))
        out["others_cpu_s"] = out["machine_busy_cpu_s"] - ours
        return out


# ---------------------------------------------------------------- metrics


def client_metrics(recs: list[dict], closed: bool, conc: int) -> dict:
    from harness.measure.percentiles import percentile

    ok = [r for r in recs if r["ok"] and r["times"]]
    if closed:  # the i-th send after the first C is released by the (i−C)-th finish
        sends, fins = sorted(r["sent"] for r in ok), sorted(r["times"][-1] for r in ok)
        lags = [s - fins[i - conc] for i, s in enumerate(sends) if i >= conc]
    else:
        lags = [r["sent"] - r["sched"] for r in ok]
    ttft = [r["times"][0] - r["sent"] for r in ok]
    itl = [b - a for r in ok for a, b in zip(r["times"], r["times"][1:])]
    tpot = [
        (r["times"][-1] - r["times"][0]) / (len(r["times"]) - 1) for r in ok if len(r["times"]) > 1
    ]
    e2e = [r["times"][-1] - r["sent"] for r in ok]
    span = max(r["times"][-1] for r in ok) - min(
        r["sched"] if not closed else r["sent"] for r in ok
    )
    ms = lambda xs, q: None if not xs else 1e3 * percentile(xs, q)  # noqa: E731
    return {
        "completed": len(ok),
        "throughput_rps": len(ok) / span,
        "lag_p50_ms": ms(lags, 50),
        "lag_p99_ms": ms(lags, 99),
        "lag_max_ms": 1e3 * max(lags, default=0.0),
        "ttft_p50_ms": ms(ttft, 50),
        "ttft_p99_ms": ms(ttft, 99),
        "itl_p50_ms": ms(itl, 50),
        "itl_p99_ms": ms(itl, 99),
        "tpot_p50_ms": ms(tpot, 50),
        "tpot_p99_ms": ms(tpot, 99),
        "e2e_p99_ms": ms(e2e, 99),
    }


def scrape(url: str) -> str:
    from harness.engines.openai_server.scrape import kept_lines

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:  # noqa: S310 (our server)
        return kept_lines(r.read().decode())


def server_side(before: str, after: str) -> dict:
    from harness.engines.openai_server.scrape import parse_metrics, server_view, snapshot

    v = server_view(snapshot(parse_metrics(before)), snapshot(parse_metrics(after)), [])
    return {
        k: {s: v[k][s] for s in ("count", "mean_ms", "p50_ms", "p99_ms")}
        for k in ("ttft", "itl", "e2el")
    }


# ---------------------------------------------------------------- phases


def run_phase(kind: str, wl: dict, trace_file: Path, server, out: Path, args) -> dict:
    url = server.launch.url
    res_file = out / "records.json"
    kind, _, how = kind.partition("-")
    if kind == "harness":
        target = f"engine={{kind: openai, url: '{url}', model: '{server.launch.model}'}}"
        cmd = [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            args.config,
            "--results-dir",
            str(out / "run"),
            "--set",
            target,
            "--set",
            "run.warmup_requests=0",
            *sum((["--set", s] for s in wl["sets"]), []),
        ]
    else:
        py = str(REPO / ".venv-vllm" / "bin" / "python") if kind == "vllm" else sys.executable
        cmd = [py, __file__, f"--client-mode={kind}", str(trace_file), str(res_file)]
        if kind == "aiperf":
            cmd += [args.aiperf_venv, str(args.tokenizer)]
    prefix = {
        "rt": ["chrt", "-f", "1"],
        "nocap": ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"],
    }
    cmd = prefix.get(how, []) + cmd
    before = scrape(url)
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = ProcWatch(server.pid, p.pid)
    log = p.communicate()[0]
    machine = watch.finish()
    after = scrape(url)
    (out / "client.log").write_text(log)
    if kind == "harness":
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "run" / "requests.parquet").to_pylist()
        recs = [
            {
                "sched": r["arrival_s"],
                "sent": r["sent_s"] if r["sent_s"] is not None else r["arrival_s"],
                "times": list(r["token_times_s"]),
                "ok": r["completed"],
            }
            for r in rows
            if not r["warmup"]
        ]
    elif res_file.exists():
        recs = json.loads(res_file.read_text())["records"]
    else:
        recs = []
    if p.returncode not in (0, 1, 4) or not recs:  # 4: INCONCLUSIVE
        raise SystemExit(f"{kind} client failed (exit {p.returncode}):\n{log[-3000:]}")
    return {
        "client": client_metrics(recs, wl["closed"], args.concurrency),
        "server": server_side(before, after),
        "machine": machine,
    }


def write_trace(spec, url: str, model: str, path: Path) -> None:
    from harness.spec.workload import build_trace

    tr = build_trace(
        spec.workload, spec.shape.vocab, spec.run.max_seq_len or spec.shape.max_context
    )
    path.write_text(
        json.dumps(
            {
                "url": url,
                "model": model,
                "closed": tr.closed_loop,
                "concurrency": tr.concurrency,
                "requests": [
                    {
                        "id": r.request_id,
                        "arrival_s": r.arrival_s,
                        "input_len": r.input_len,
                        "output_len": r.output_len,
                        "prompt": tr.prompt_ids(r),
                    }
                    for r in tr.requests
                ],
            }
        )
    )


KEYS = [
    "throughput_rps",
    "lag_p50_ms",
    "lag_p99_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "tpot_p50_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
]


def ratio_spread(phases: list[tuple[str, int, dict]], clients: list[str]) -> list[str]:
    """ours/theirs (ours: the first client) per round, each round's own pair of phases (the server
    in the same state): the median over rounds and [min, max], the run-to-run spread."""
    from statistics import median

    by = {(k, r): p["client"] for k, r, p in phases}
    rounds = sorted({r for _, r, _ in phases})
    ours = clients[0]
    lines = [
        f"  {ours}/theirs, per round: median [min, max]",
        f"  {'metric':<16}" + "".join(f"{ours + '/' + c:>30}" for c in clients[1:]),
    ]
    for k in KEYS:
        cells = []
        for c in clients[1:]:
            rs = [
                by[(ours, r)][k] / by[(c, r)][k]
                for r in rounds
                if (ours, r) in by
                and (c, r) in by
                and by[(ours, r)][k] is not None
                and by[(c, r)][k]
            ]
            cell = f"{median(rs):.3f} [{min(rs):.3f}, {max(rs):.3f}]" if rs else "—"
            cells.append(f"{cell:>30}")
        lines.append(f"  {k:<16}" + "".join(cells))
    return lines


def report(name: str, phases: list[tuple[str, int, dict]], clients: list[str]) -> str:
    from statistics import median

    f = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
    lines = [
        f"== {name} (median over rounds; per-round values in results.json)",
        f"  {'metric':<16}"
        + "".join(f"{c:>11}" for c in clients)
        + "".join(f"{c + '/' + clients[0]:>14}" for c in clients[1:]),
    ]
    med = {
        c: {
            k: median(
                [p["client"][k] for kk, _, p in phases if kk == c and p["client"][k] is not None]
                or [0]
            )
            for k in KEYS
        }
        for c in clients
    }
    for k in KEYS:
        row = f"  {k:<16}" + "".join(f"{f(med[c][k]):>11}" for c in clients)
        row += "".join(
            f"{(f(med[c][k] / med[clients[0]][k]) if med[clients[0]][k] else '—'):>14}"
            for c in clients[1:]
        )
        lines.append(row)
    lines += ratio_spread(phases, clients)
    for kind, rnd, p in phases:
        s, m = p["server"], p["machine"]
        roles = ", ".join(
            f"{r} {m[r]['cpu_s']:.2f}/{m[r]['runq_wait_s']:.1f} (main "
            f"{m[r]['main_thread_wait_s']:.1f})"
            for r in ("client", "api_server", "engine_core", "workers")
            if r in m
        )
        lines.append(
            f"  [{kind} r{rnd}] server TTFT p50/p99 "
            f"{f(s['ttft']['p50_ms'])}/{f(s['ttft']['p99_ms'])}, ITL "
            f"p50/p99 {f(s['itl']['p50_ms'])}/{f(s['itl']['p99_ms'])}, E2E p99 "
            f"{f(s['e2el']['p99_ms'])} ms "
            f"(n={s['ttft']['count']:.0f}); client ITL p99 {f(p['client']['itl_p99_ms'])}; "
            f"window {m['window_s']:.1f} s, load {m.get('load1_end', 0):.1f}, busy "
            f"{m.get('busy_pct', 0):.0f}%, "
            f"steal {m.get('steal_pct', 0):.1f}%, others' CPU {m.get('others_cpu_s', 0):.1f} s; "
            f"CPU s/run-queue wait s: {roles}"
        )
    return "\n".join(lines)


class _Running:
    """A server someone started (``--server``): its URL, session id and model name."""

    def __init__(self, url: str, sid: str, model: str):
        self.pid = int(sid)
        self.launch = argparse.Namespace(url=url, model=model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny-tp2-pp4-vllm-cpu.yaml"))
    ap.add_argument("--checkpoint", default=str(REPO / "results" / "tiny-llama"))
    ap.add_argument("--tp", type=int, default=None)
    ap.add_argument("--pp", type=int, default=None)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--input", type=int, default=32)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="harness,harness-nocap,vllm,vllm-rt")
    ap.add_argument("--workloads", default="closed,poisson")
    ap.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra spec overrides (server)"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--aiperf-venv", default="/work/venvs/aiperf")
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="the tokenizer folder AIPerf counts with (default: --checkpoint)",
    )
    ap.add_argument(
        "--server",
        default=None,
        help="URL,SID,MODEL of a running server (its session id): no launch",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    clients = args.clients.split(",")
    if "aiperf" in clients:  # bad input stops here, before a checkpoint or server exists
        from peer_clients import check_tokenizer

        if args.tokenizer is not None:
            args.tokenizer = check_tokenizer(args.tokenizer)
        if not (Path(args.aiperf_venv) / "bin" / "aiperf").exists():
            print(
                f"client_vs_vllm_bench.py: error: --aiperf-venv {args.aiperf_venv}: no bin/aiperf "
                "there; pip install aiperf==0.13.0 into a venv of its own",
                file=sys.stderr,
            )
            return 2
    from harness.engines.vllm.engine import bring_up, launch_server, stop_and_record
    from harness.spec.spec import load_spec
    from tiny_checkpoint import fixed_length_sets

    common = [
        *fixed_length_sets(args.checkpoint, args.requests, args.input, args.output),
        *args.extra,
    ]
    out = Path(args.out or tempfile.mkdtemp(prefix="clients-"))
    out.mkdir(parents=True, exist_ok=True)
    common += [f"parallel.tp={args.tp}"] if args.tp else []
    common += [f"parallel.pp={args.pp}"] if args.pp else []
    wls = {
        "closed": {
            "name": f"closed loop, concurrency {args.concurrency}",
            "closed": True,
            "sets": common
            + ["workload.arrival=closed", f"workload.concurrency={args.concurrency}"],
        },
        "poisson": {
            "name": f"Poisson {args.rate:g}/s",
            "closed": False,
            "sets": common + ["workload.arrival=poisson", f"workload.rate_rps={args.rate}"],
        },
    }
    if "aiperf" in clients and args.tokenizer is None:
        args.tokenizer = check_tokenizer(args.checkpoint, "--checkpoint")
    spec = load_spec(args.config, common)
    print(f"runs in {out}", file=sys.stderr)
    server = launch_server(spec, out) if args.server is None else _Running(*args.server.split(","))
    results: dict = {
        "command": sys.argv,
        "layout": f"TP{spec.layout.tp}-PP{spec.layout.pp}",
        "phases": [],
    }
    try:
        info = asyncio.run(bring_up(spec, server, asyncio.Event())) if args.server is None else None
        results["ready_s"] = info.ready_s if info else None
        for w in args.workloads.split(","):
            write_trace(
                load_spec(args.config, wls[w]["sets"]),
                server.launch.url,
                server.launch.model,
                out / f"trace-{w}.json",
            )
        warm = out / "warm"
        warm.mkdir()
        run_phase(
            "bare",
            wls["closed"],
            out / f"trace-{args.workloads.split(',')[0]}.json",
            server,
            warm,
            args,
        )
        for w in args.workloads.split(","):
            for rnd in range(args.rounds):
                order = clients if rnd % 2 == 0 else clients[::-1]  # alternate who goes first
                for kind in order:
                    d = out / f"{w}-{kind}-{rnd}"
                    d.mkdir()
                    p = run_phase(kind, wls[w], out / f"trace-{w}.json", server, d, args)
                    results["phases"].append({"workload": w, "kind": kind, "round": rnd, **p})
                    print(
                        f"  {w} {kind} r{rnd}: {json.dumps(p['client'])}",
                        file=sys.stderr,
                        flush=True,
                    )
                    (out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        if args.server is None:
            stop_and_record(server, out)
    print(
        f"{spec.name}: {results['layout']}, {args.requests} requests of {args.input} in / "
        f"{args.output} out, "
        f"{args.rounds} rounds alternating; vLLM ready after {results['ready_s'] or 0:.0f} s; runs "
        f"in {out}"
    )
    for w in args.workloads.split(","):
        ph = [(p["kind"], p["round"], p) for p in results["phases"] if p["workload"] == w]
        print(report(wls[w]["name"], ph, clients))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--client-mode="):
        mode = sys.argv[1].split("=", 1)[1]
        if mode == "aiperf":
            sys.path.insert(0, str(REPO / "benchmarks"))
            from peer_clients import aiperf_client

            aiperf_client(*sys.argv[2:6])
        else:
            (vllm_client if mode == "vllm" else bare_client)(sys.argv[2], sys.argv[3])
        raise SystemExit(0)
    raise SystemExit(main())
