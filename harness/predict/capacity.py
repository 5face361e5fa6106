"""``--find-capacity --predict``: the capacity search of ``harness.verdicts.capacity`` with the
simulator as its probe (seconds per probe instead of a run each).

The search is the same (``next_probe``: from the spec's load, double or halve, then bisect); each
probe's spec is loaded with the probe's override (``load``), simulated on one calibrated model, and
passes when its simulated SLO verdict is PASS. ``max_probes`` is higher than a real search's
default since a probe costs a simulation."""

from __future__ import annotations

from typing import Callable

from harness.errors import UsageError
from harness.predict.calibrate import PipelineModel
from harness.predict.forecast import simulate_spec
from harness.verdicts.capacity import capacity, next_probe

SIM_PROBES = 12


def predicted_capacity(
    spec, model: PipelineModel, load: Callable[[list[str]], object], max_probes: int = SIM_PROBES
) -> dict:
    """{field, start, probes: [{value, verdict, request_throughput, ...}], capacity} from the
    simulator."""
    closed = spec.workload.arrival == "closed"
    field = "workload.concurrency" if closed else "workload.rate_rps"
    x0 = float(spec.workload.concurrency if closed else spec.workload.rate_rps)
    history: list[tuple[float, bool]] = []
    probes: list[dict] = []
    stopped = None
    while (x := next_probe(history, x0, integer=closed, max_probes=max_probes)) is not None:
        value = int(x) if closed else round(x, 6)
        try:
            probe_spec = load([f"{field}={value}"])
        except UsageError as e:  # the doubling passed a field's limit: the search ends there
            stopped = f"probe {field}={value}: {e}"
            break
        out = simulate_spec(probe_spec, model)
        m = out["metrics"]
        passed = out["verdict"] == "PASS"
        history.append((x, passed))
        probes.append(
            {
                "probe": len(probes),
                field: value,
                "verdict": out["verdict"],
                "request_throughput": m.get("request_throughput"),
                "request_goodput": m.get("request_goodput"),
                "p99_ttft_ms": m.get("p99_ttft_ms"),
                "p99_tpot_ms": m.get("p99_tpot_ms"),
                "sim_wall_s": out["simulation"]["wall_s"],
            }
        )
    best = capacity(history)
    return {
        "field": field,
        "start": x0,
        "probes": probes,
        "capacity": best,
        "predicted": True,
        **({"stopped": stopped} if stopped else {}),
    }
