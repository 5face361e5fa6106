"""Run with vLLM's Python: feed each harness-written vLLM result file's per-request lists to vLLM's
own ``calculate_metrics`` (vllm/benchmarks/serve.py) and compare its numbers with the file's.

    python vllm_crosscheck.py FILE=GOODPUT_JSON ...   → one JSON line {FILE: {"compared",
    "mismatches"}}
"""

import json
import sys

from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
from vllm.benchmarks.serve import calculate_metrics

SCALARS = (
    "completed",
    "failed",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
)


def check(path: str, goodput: dict) -> dict:
    d = json.load(open(path))
    outs = [
        RequestFuncOutput(
            success=d["errors"][i] == "",
            latency=d["latencies"][i],
            output_tokens=d["output_lens"][i],
            ttft=d["ttfts"][i],
            itl=d["itls"][i],
            prompt_len=d["input_lens"][i],
            start_time=d["start_times"][i],
            error=d["errors"][i],
        )
        for i in range(len(d["start_times"]))
    ]
    pcts = sorted(
        {
            float(k[1 : -len("_ttft_ms")])
            for k in d
            if k.startswith("p") and k.endswith("_ttft_ms") and "including" not in k
        }
    )
    m, _ = calculate_metrics([], outs, d["duration"], None, pcts, goodput)
    pairs = [(k, d[k], getattr(m, k)) for k in SCALARS]
    pairs += [
        ("total_input_tokens", d["total_input_tokens"], m.total_input),
        ("total_output_tokens", d["total_output_tokens"], m.total_output),
    ]
    if goodput:
        pairs.append(("request_goodput", d["request_goodput"], m.request_goodput))
    for fam in ("ttft", "tpot", "itl", "e2el"):
        pairs += [
            (f"{st}_{fam}_ms", d[f"{st}_{fam}_ms"], getattr(m, f"{st}_{fam}_ms"))
            for st in ("mean", "median", "std")
            if f"{st}_{fam}_ms" in d
        ]
        for q, v in getattr(m, f"percentiles_{fam}_ms"):
            word = str(int(q)) if int(q) == q else str(q)
            if f"p{word}_{fam}_ms" in d:
                pairs.append((f"p{word}_{fam}_ms", d[f"p{word}_{fam}_ms"], v))
    bad = [
        (k, ours, float(theirs))
        for k, ours, theirs in pairs
        if abs(ours - theirs) > 1e-9 * max(abs(float(theirs)), 1.0)
    ]
    return {"compared": len(pairs), "mismatches": bad}


if __name__ == "__main__":
    out = {}
    for arg in sys.argv[1:]:
        path, _, goodput = arg.partition("=")
        out[path] = check(path, json.loads(goodput) if goodput else {})
    print(json.dumps(out))
