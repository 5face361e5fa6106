"""``--find-capacity --predict``: the capacity search (``harness.verdicts.capacity.search``) with
the simulator as its probe (seconds per probe instead of a run each).

Each probe's spec is loaded with the probe's override (``load``), simulated on one calibrated model,
and passes when its simulated SLO verdict is PASS. ``max_probes`` is higher than a real search's
default since a probe costs a simulation."""

from __future__ import annotations

from typing import Callable

from harness.errors import UsageError
from harness.predict.calibrate import PipelineModel
from harness.predict.forecast import simulate_spec
from harness.verdicts.capacity import ProbeRefused, ProbeResult, load_axis, search

SIM_PROBES = 12


def predicted_capacity(
    spec, model: PipelineModel, load: Callable[[list[str]], object], max_probes: int = SIM_PROBES
) -> dict:
    """{field, start, probes: [one row each], capacity, done, predicted} from the simulator."""
    field_name = load_axis(spec.workload)[0]

    def probe(value) -> ProbeResult:
        try:
            probe_spec = load([f"{field_name}={value}"])
        except UsageError as e:
            raise ProbeRefused(str(e)) from None
        out = simulate_spec(probe_spec, model)
        return ProbeResult(
            out["verdict"],
            out["metrics"],
            out["slo"],
            extra={"sim_wall_s": out["simulation"]["wall_s"]},
        )

    return {**search(spec.workload, probe, max_probes), "predicted": True}
