"""``vllm bench serve``'s flags as spec overrides, and the spec fields they need.

:func:`bench_overrides` maps the flags onto dotted ``--set`` strings, so a flag overrides the spec
file exactly as ``--set`` does (and ``spec.yaml`` records what it set). Only two command-line
sources that set one field to different values, a flag and a ``--set``, are an error naming both.
vLLM's semantics (vllm/benchmarks, 0.32):

* ``--request-rate R``: gaps ~ Gamma(shape=b, scale=1/(R·b)), b = ``--burstiness`` (b = 1: Poisson,
  b = inf: constant 1/R) → ``workload.rate_rps`` and ``workload.arrival`` poisson / gamma
  (+ ``workload.burstiness``) / constant. ``R = inf`` sends every request at once; with
  ``--max-concurrency C`` at most C are in flight, each finished one releasing the next: that is the
  harness's closed loop → ``arrival: closed``, ``concurrency: C`` (C = the number of requests
  without a cap). ``--burstiness`` has no effect with ``R = inf``.
* ``--max-concurrency C`` with a finite rate (or an open-loop spec): a cap on requests in flight,
  the rest wait at the client → ``workload.max_concurrency`` (with a closed-loop spec and no rate:
  ``workload.concurrency``). Flags not given keep the spec's values, except what the loop they
  ask for cannot hold: a finite rate over a closed-loop spec file makes the loop open (poisson
  unless ``--burstiness`` says otherwise), ``inf`` over an open-loop one drops its
  ``max_concurrency``.
* ``--num-prompts N`` → ``workload.num_requests``; ``--seed S`` → ``workload.seed``.
* ``--random-input-len L``, ``--random-output-len O``, ``--random-range-ratio r`` (a number, or
  {"input": r1, "output": r2}; 0 <= r < 1): lengths uniform on the integers
  [⌊L(1−r)⌋, ⌈L(1+r)⌉] and [max(1, ⌊O(1−r)⌋), max(1, ⌈O(1+r)⌉)], fixed when r = 0 →
  ``workload.input_len`` / ``workload.output_len``. The ratio applies to the lengths given as
  flags. (vLLM first subtracts the tokenizer's special tokens from L; the harness sends token ids,
  so L is the prompt's length.)
* ``--goodput ttft:MS tpot:MS e2el:MS`` → ``slo.goodput`` (per-request thresholds of
  ``request_goodput``, independent of the SLO targets).
* ``--percentile-metrics a,b``, ``--metric-percentiles 50,99`` → ``run.percentile_metrics``,
  ``run.metric_percentiles`` (the statistics of the vLLM-keyed result file).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import yaml

from harness.errors import UsageError

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
PERCENTILE_METRICS = (
    "ttft",
    "tpot",
    "itl",
    "e2el",
    "client_queue_time",
    "e2el_including_client_queue",
)


@dataclass(frozen=True)
class BenchFlags:
    """The flags as given (None: not given), e.g. from argparse."""

    request_rate: float | None = None
    burstiness: float | None = None
    max_concurrency: int | None = None
    num_prompts: int | None = None
    random_input_len: int | None = None
    random_output_len: int | None = None
    random_range_ratio: float | str | dict | None = None
    seed: int | None = None
    goodput: tuple[str, ...] | list[str] | None = None
    percentile_metrics: str | None = None
    metric_percentiles: str | None = None


# ---------------------------------------------------------------- parsing one flag


def parse_goodput(pairs: Iterable[str], flag: str = "--goodput") -> dict[str, float]:
    """``["ttft:500", "tpot:100"]`` → {"ttft": 500.0, "tpot": 100.0} (ms), vLLM's syntax."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, raw = str(pair).partition(":")
        try:
            value = float(raw) if sep else math.nan
        except ValueError:
            value = math.nan
        if name not in GOODPUT_METRICS:
            raise UsageError(
                f"{flag}: {pair!r}: use KEY:MS with KEY one of {', '.join(GOODPUT_METRICS)}, "
                "e.g. ttft:500"
            )
        if not math.isfinite(value) or value < 0:
            raise UsageError(
                f"{flag}: {pair!r}: the threshold must be a number of ms >= 0, e.g. {name}:500"
            )
        out[name] = value
    return out


def parse_percentile_metrics(text: str, flag: str = "--percentile-metrics") -> list[str]:
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = next((n for n in names if n not in PERCENTILE_METRICS), None)
    if not names or bad is not None:
        raise UsageError(
            f"{flag}: {bad or text!r} is not a metric; give a comma list of "
            f"{', '.join(PERCENTILE_METRICS)}"
        )
    return list(dict.fromkeys(names))


def parse_percentiles(text: str, flag: str = "--metric-percentiles") -> list[float]:
    out = []
    for t in str(text).split(","):
        try:
            q = float(t)
        except ValueError:
            q = math.nan
        if not 0 <= q <= 100:
            raise UsageError(
                f"{flag}: {t.strip()!r} is not a percentile in [0, 100]; e.g. 50,90,99"
            )
        out.append(q)
    return out


def _range_ratios(value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise UsageError(
                    f"--random-range-ratio: {value!r} is neither a number nor "
                    '{"input": r, "output": r}'
                ) from None
    if isinstance(value, dict):
        if set(value) != {"input", "output"}:
            raise UsageError(
                '--random-range-ratio: a mapping needs exactly the keys "input" and "output"'
            )
        pair = (value["input"], value["output"])
    else:
        pair = (value, value)
    for r in pair:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise UsageError(f"--random-range-ratio: {r!r} must be in [0, 1)")
    return float(pair[0]), float(pair[1])


def random_lengths(length: int, ratio: float, lowest: int, flag: str) -> dict[str, Any]:
    """vLLM's random-dataset length range as a LengthDist mapping (see the module docstring)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise UsageError(f"{flag}: must be a whole number of tokens >= 1, got {length!r}")
    lo, hi = math.floor(length * (1 - ratio)), math.ceil(length * (1 + ratio))
    lo, hi = max(lo, lowest), max(hi, lowest)
    if lo < 1:
        raise UsageError(
            f"--random-range-ratio: {ratio} leaves {flag} {length} lengths down to {lo}; "
            "lower the ratio or raise the length"
        )
    return (
        {"dist": "fixed", "value": length}
        if ratio == 0
        else {"dist": "uniform", "min": lo, "max": hi}
    )


# ---------------------------------------------------------------- flags → overrides


class _Given:
    """What the spec file and the --set overrides say about a dotted field (the later one wins)."""

    def __init__(self, raw: Mapping[str, Any] | None, source: str, overrides: Iterable[str]):
        self.layers: list[tuple[str, Mapping[str, Any]]] = [(source, raw or {})]
        for item in overrides:
            key, sep, text = str(item).partition("=")
            if not sep:
                continue
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            node: dict = {}
            root, parts = node, key.strip().split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
            self.layers.append((f"--set {item}", root))

    def get(self, path: str, command_line: bool = False) -> tuple[str, Any] | None:
        """(where, value) of the last layer that sets ``path`` (with ``command_line``: of the last
        ``--set``), else None."""
        found = None
        for where, tree in self.layers[1:] if command_line else self.layers:
            node: Any = tree
            for p in path.split("."):
                if not isinstance(node, Mapping) or p not in node:
                    node = _MISSING
                    break
                node = node[p]
            if node is not _MISSING:
                found = (where, node)
        return found


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = {k for k in (*a, *b) if a.get(k) is not None or b.get(k) is not None}
        return all(_same(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


class _Overrides:
    def __init__(self, given: _Given):
        self.given, self.fields = given, {}

    def set(self, path: str, value: Any, flag: str) -> None:
        """Set ``path`` over the spec file's value; a ``--set`` of another value is a
        contradiction."""
        have = self.given.get(path, command_line=True)
        if have is not None and not _same(have[1], value):
            raise UsageError(
                f"{flag} contradicts {have[0]} (it means {path}={_show(value)}); drop one of them"
            )
        self.fields[path] = value

    def strings(self) -> list[str]:
        return [f"{path}={json.dumps(v)}" for path, v in self.fields.items()]


def bench_overrides(
    flags: BenchFlags,
    raw: Mapping[str, Any] | None = None,
    source: str = "the spec file",
    overrides: Iterable[str] = (),
) -> list[str]:
    """vLLM bench flags → dotted ``--set`` strings (see the module docstring). ``raw``: the spec
    file as read (``source`` names it in errors); ``overrides``: the command's ``--set`` strings."""
    given = _Given(raw, source, overrides)
    out = _Overrides(given)
    arrival_given = given.get("workload.arrival")
    closed_spec = arrival_given is not None and arrival_given[1] == "closed"
    rate, burst, cap = flags.request_rate, flags.burstiness, flags.max_concurrency
    open_rate = rate is not None and not math.isinf(rate)
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise UsageError(f"--max-concurrency: must be a whole number >= 1, got {cap!r}")
    if burst is not None and not burst > 0:
        raise UsageError(f"--burstiness: must be > 0 (1 is Poisson, inf constant), got {burst!r}")
    if flags.num_prompts is not None:
        n = flags.num_prompts
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"--num-prompts: must be a whole number >= 1, got {n!r}")
        out.set("workload.num_requests", n, f"--num-prompts {n}")
    if rate is not None:
        if math.isnan(rate) or rate <= 0:
            raise UsageError(f"--request-rate: must be > 0 requests/s or inf, got {rate!r}")
        if math.isinf(rate):
            _closed_loop(out, given, flags)
        else:
            out.set("workload.rate_rps", float(rate), f"--request-rate {rate:g}")
            if closed_spec and burst is None:  # the file's closed loop opens: vLLM's default gaps
                out.set("workload.arrival", "poisson", f"--request-rate {rate:g}")
    if cap is not None and (rate is None or open_rate):
        if closed_spec and rate is None:
            out.set("workload.concurrency", cap, f"--max-concurrency {cap}")
        else:
            out.set("workload.max_concurrency", cap, f"--max-concurrency {cap}")
    if burst is not None and not (rate is not None and math.isinf(rate)):
        if closed_spec and rate is None:
            raise UsageError(
                f"--burstiness shapes the gaps of an open loop, but workload.arrival is closed in "
                f"{arrival_given[0]}; add --request-rate (or drop --burstiness)"
            )
        _arrival_shape(out, given, burst)
    _lengths(out, flags)
    if flags.seed is not None:
        out.set("workload.seed", int(flags.seed), f"--seed {flags.seed}")
    if flags.goodput:
        out.set("slo.goodput", parse_goodput(flags.goodput), "--goodput " + " ".join(flags.goodput))
    if flags.percentile_metrics is not None:
        out.set(
            "run.percentile_metrics",
            parse_percentile_metrics(flags.percentile_metrics),
            f"--percentile-metrics {flags.percentile_metrics}",
        )
    if flags.metric_percentiles is not None:
        out.set(
            "run.metric_percentiles",
            parse_percentiles(flags.metric_percentiles),
            f"--metric-percentiles {flags.metric_percentiles}",
        )
    return out.strings()


def _closed_loop(out: _Overrides, given: _Given, flags: BenchFlags) -> None:
    cap = flags.max_concurrency
    flag = "--request-rate inf" + (f" --max-concurrency {cap}" if cap is not None else "")
    if flags.burstiness is not None and flags.burstiness != 1:
        raise UsageError(
            f"--burstiness {flags.burstiness:g} has no effect with --request-rate inf "
            "(no arrival gaps to shape); drop one of them"
        )
    out.set("workload.arrival", "closed", f"{flag} (a closed loop)")
    if given.get("workload.max_concurrency") is not None:  # an open loop's cap: the loop is closed
        out.set("workload.max_concurrency", None, f"{flag} (a closed loop)")
    if cap is None:
        n = flags.num_prompts
        if n is None:
            have = given.get("workload.num_requests")
            n = have[1] if have is not None else None
        if not isinstance(n, int) or isinstance(n, bool):
            raise UsageError(
                "--request-rate inf without --max-concurrency sends every request at once: "
                "give --num-prompts (or workload.num_requests) to size it"
            )
        cap = n
    out.set("workload.concurrency", cap, flag)


def _arrival_shape(out: _Overrides, given: _Given, burst: float) -> None:
    flag = f"--burstiness {burst:g}"
    if math.isinf(burst):
        out.set("workload.arrival", "constant", flag)
        return
    arrival = given.get("workload.arrival")
    if burst == 1 and not (arrival is not None and arrival[1] == "gamma"):
        out.set("workload.arrival", "poisson", flag)
        return
    out.set("workload.arrival", "gamma", flag)
    out.set("workload.burstiness", float(burst), flag)


def _lengths(out: _Overrides, flags: BenchFlags) -> None:
    r_in = r_out = 0.0
    if flags.random_range_ratio is not None:
        if flags.random_input_len is None and flags.random_output_len is None:
            raise UsageError(
                "--random-range-ratio: give --random-input-len and/or --random-output-len "
                "for it to apply to"
            )
        r_in, r_out = _range_ratios(flags.random_range_ratio)
    suffix = (
        f" --random-range-ratio {flags.random_range_ratio}"
        if flags.random_range_ratio is not None
        else ""
    )
    if flags.random_input_len is not None:
        out.set(
            "workload.input_len",
            random_lengths(flags.random_input_len, r_in, 0, "--random-input-len"),
            f"--random-input-len {flags.random_input_len}{suffix}",
        )
    if flags.random_output_len is not None:
        out.set(
            "workload.output_len",
            random_lengths(flags.random_output_len, r_out, 1, "--random-output-len"),
            f"--random-output-len {flags.random_output_len}{suffix}",
        )


# ---------------------------------------------------------------- the spec fields they need


def check_bench_fields(workload: Any, slo: Any, run: Any, replicas: int = 1) -> None:
    """Validate the spec fields the flags map onto (called by harness.spec.spec.validate, after the
    numeric ranges of harness.spec.bounds). ``replicas``: the DP replicas that split a cap on
    requests in flight among them (the reference engine's; 1 for a server behind one client)."""
    cap = workload.max_concurrency
    if cap is not None:  # its range: harness.spec.bounds
        if workload.arrival == "closed":
            raise UsageError(
                "workload.max_concurrency: a closed loop's cap is workload.concurrency; drop "
                "max_concurrency"
            )
        if cap < replicas:
            raise UsageError(
                f"workload.max_concurrency: {cap} < parallel.dp {replicas}; each DP replica holds "
                f"its own share of the cap, so give at least {replicas}"
            )
    parse_goodput([f"{k}:{v}" for k, v in (slo.goodput or {}).items()], "slo.goodput")
    parse_percentile_metrics(",".join(run.percentile_metrics), "run.percentile_metrics")
    parse_percentiles(",".join(str(q) for q in run.metric_percentiles), "run.metric_percentiles")
