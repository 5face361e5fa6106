"""``harness run --loadgen server|offline``: the LoadGen options of a run, from the spec and the
launch options, and every check of them before anything starts (one line, exit 2).

Refused: LoadGen not installed; Server without a rate (a closed loop, or no ``workload.rate_rps``);
a cap on requests in flight (``workload.max_concurrency``: LoadGen issues on its own schedule); more
than one DP replica of the reference engine (LoadGen feeds one coordinator); TTFT and TPOT targets
at two percentiles (LoadGen holds one); ``--mlperf-rules`` with a ``run.timeout_s`` that stops the
run before LoadGen's 600 s minimum duration is over, or with Offline and no ``workload.rate_rps``
(LoadGen sizes the run from it). The query count is the trace's request count
(``workload.num_requests``, or what a trace file or ``duration_s`` gives).
"""

from __future__ import annotations

from harness.engines.loadgen.settings import LoadGenOptions, make_options
from harness.engines.options import LaunchOptions
from harness.errors import UsageError


def loadgen_options(spec, launch: LaunchOptions) -> LoadGenOptions | None:
    """The run's LoadGen options, None without ``--loadgen``; pure (no LoadGen import)."""
    if launch.loadgen is None:
        return None
    from harness.spec.workload import build_trace

    w = spec.workload
    if w.max_concurrency is not None:
        raise UsageError(
            "--loadgen: LoadGen issues queries on its own schedule; drop workload.max_concurrency "
            "(--max-concurrency)"
        )
    if launch.loadgen == "server" and w.arrival == "closed":
        raise UsageError(
            "--loadgen server: workload.arrival is closed (no rate for LoadGen's Poisson "
            "schedule); set workload.arrival: poisson with workload.rate_rps, or use --loadgen "
            "offline"
        )
    if spec.engine.kind == "reference" and spec.layout.dp != 1:
        raise UsageError(
            f"--loadgen: parallel.dp is {spec.layout.dp}, but LoadGen feeds one coordinator; "
            "run one DP replica (parallel.dp: 1)"
        )
    # Offline under MLPerf's rules: LoadGen issues expected-rate × 600 s × 1.1 queries at once, so
    # it needs the rate the deployment should sustain (without the rules the trace's count is all)
    offline_rate = launch.loadgen == "offline" and launch.mlperf_rules
    if offline_rate and (w.arrival == "closed" or not w.rate_rps):
        raise UsageError(
            "--loadgen offline --mlperf-rules: LoadGen sizes a 600-s Offline run from the "
            "throughput you expect; set workload.rate_rps (--request-rate) to it"
        )
    trace = build_trace(w, spec.shape.vocab, spec.run.max_seq_len or spec.shape.max_context)
    opts = make_options(
        launch.loadgen,
        w.rate_rps if launch.loadgen == "server" or offline_rate else None,
        len(trace.requests),
        spec.slo_targets,
        mlperf_rules=launch.mlperf_rules,
        seed=w.seed,
    )
    floor_s = opts.min_duration_ms / 1000
    if floor_s and spec.run.timeout_s <= floor_s:
        # the stop would cut every such run short: refused here, not found out after 10 minutes
        raise UsageError(
            f"--mlperf-rules: LoadGen runs at least {floor_s:g} s, but run.timeout_s is "
            f"{spec.run.timeout_s:g} s and would stop the run first; give it room for the warm-up "
            "and the drain (e.g. --set run.timeout_s=900)"
        )
    return opts


def preflight(spec, launch: LaunchOptions) -> LoadGenOptions | None:
    """The checks of :func:`loadgen_options` and LoadGen's import, before any rank or server
    starts."""
    opts = loadgen_options(spec, launch)
    if opts is not None:
        from harness.engines.loadgen.bridge import import_loadgen

        import_loadgen()
    return opts
