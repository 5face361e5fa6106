"""Does this host give a process the same CPU from one moment to the next?

Run it alone. Every ``--interval`` seconds, on each core in turn (the process pinned there), a
fixed pure-Python loop is timed in *thread CPU time*: time the guest's scheduler took away from
the process is not in it, so what varies is how fast the core ran the same instructions (a
virtual CPU that shares its physical core with a neighbour, or whose host thread is held up
without the guest counting steal time). Between the samples, a pipe ping-pong between two
processes on the first two cores times a cross-core wake-up, which a pipeline's stages pay on every
hop. Per core: the loop's median CPU time, its 90th percentile and maximum over the median, and
the share of samples more than 25 % over the median; for the wake-ups, the median and 90th
percentile of a round trip; and steal time over the run from /proc/stat.

    .venv/bin/python benchmarks/host_noise.py --seconds 120 [--json OUT]

A forecast of the next run cannot be narrower than the host's changes between runs; this says
whether they come from the host (docs/performance.md, "Where the host's run-to-run spread comes
from").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

LOOP = 500_000  # iterations: about 15 ms of one core here
SLOW = 1.25  # a sample this far over its core's median counts as slow
PINGS = 300


def loop_cpu_ms(n: int = LOOP) -> float:
    t0 = time.thread_time()
    total = 0
    for i in range(n):
        total += i
    return (time.thread_time() - t0) * 1e3


def round_trip_us(a: int, b: int, n: int = PINGS) -> float:
    """Median round trip (µs) of one byte over two pipes, this process on core ``a``, a child on
    ``b``."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo
        os.sched_setaffinity(0, {b})
        for _ in range(n):
            os.read(r1, 1)
            os.write(w2, b"x")
        os._exit(0)
    os.sched_setaffinity(0, {a})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        os.write(w1, b"x")
        os.read(r2, 1)
        times.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    for fd in (r1, w1, r2, w2):
        os.close(fd)
    return statistics.median(times) * 1e6


def steal_ticks() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def core_row(xs: list[float]) -> dict:
    """One core's loop times (ms): how far its slow samples lie over its median, and how many."""
    med = statistics.median(xs)
    return {
        "samples": len(xs),
        "median_ms": med,
        "p90_over_median": quantile(xs, 0.9) / med,
        "max_over_median": max(xs) / med,
        "slow_share": sum(x > SLOW * med for x in xs) / len(xs),
    }


def measure(seconds: float, interval: float) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    per_core: dict[int, list[float]] = {c: [] for c in cores}
    trips: list[float] = []
    stamps: list[float] = []  # each round's start (s since t0): the slow phases' time structure
    steal0, t0 = steal_ticks(), time.time()
    while time.time() - t0 < seconds:
        stamps.append(time.time() - t0)
        for c in cores:
            os.sched_setaffinity(0, {c})
            per_core[c].append(loop_cpu_ms())
        if len(cores) > 1:
            trips.append(round_trip_us(cores[0], cores[1]))
        os.sched_setaffinity(0, set(cores))
        time.sleep(interval)
    wall = time.time() - t0
    return {
        "seconds": wall,
        "cores": {c: core_row(xs) for c, xs in per_core.items()},
        "round_trip_us": (
            {"median": statistics.median(trips), "p90": quantile(trips, 0.9), "samples": len(trips)}
            if trips
            else None
        ),
        "steal_s": (steal_ticks() - steal0) / os.sysconf("SC_CLK_TCK"),
        "series": {"t_s": stamps, "loop_ms": per_core},
    }


def table(res: dict) -> str:
    lines = [
        f"{res['seconds']:.0f} s, steal {res['steal_s']:.2f} s",
        "",
        "| core | samples | loop CPU ms, median | p90 / median | max / median | samples > "
        f"{SLOW:.2f}x median |",
        "|---|---|---|---|---|---|",
    ]
    for c, r in res["cores"].items():
        lines.append(
            f"| {c} | {r['samples']} | {r['median_ms']:.1f} | {r['p90_over_median']:.2f} | "
            f"{r['max_over_median']:.2f} | {100 * r['slow_share']:.1f} % |"
        )
    rt = res["round_trip_us"]
    if rt:
        lines += [
            "",
            f"cross-core wake-up round trip: median {rt['median']:.1f} µs, "
            f"p90 {rt['p90']:.1f} µs ({rt['samples']} medians of {PINGS})",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=0.2, help="pause between rounds (s)")
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.interval < 0:
        print("host_noise: --seconds must be > 0 and --interval >= 0", file=sys.stderr)
        return 2
    res = measure(args.seconds, args.interval)
    print(table(res))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
