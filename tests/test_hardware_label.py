"""``hardware.gpu`` is the GPU the run ran on, from the device's name, never the spec's (issue 26,
finding 7): an H200 spec run on an H100 is an H100 run, says so, and is no evidence for H200
claims; and the catalogue maps a device name only to the exact part it describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.engines.reference.summary import RankPayload, reference_result
from harness.plan.planner import plan as make_plan
from harness.spec.catalog import catalog_key_for_device, gpu_label
from harness.spec.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
H100_SXM = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(
    "name, key",
    [
        (H100_SXM, "H100-SXM-80GB"),
        ("NVIDIA H100 PCIe", None),  # 2.0 TB/s, PCIe: not the SXM part
        ("NVIDIA H100 NVL", None),  # 94 GB, 3.9 TB/s
        ("NVIDIA H100 SXM5 64GB", None),
        ("NVIDIA H200", "H200-SXM-141GB"),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
        ("NVIDIA A100-SXM4-40GB", None),
        ("NVIDIA A100 80GB PCIe", None),
        ("CPU", "cpu"),
        ("H100-SXM-80GB", "H100-SXM-80GB"),  # a catalogue name reads as itself
    ],
)
def test_device_names_map_to_the_exact_catalogue_part(name, key):
    assert catalog_key_for_device(name) == key


def test_emulate_uses_the_same_mapping():
    from harness.emulate import catalog_gpu_for

    assert catalog_gpu_for("NVIDIA H100 PCIe") is None
    assert catalog_gpu_for(H100_SXM).name == "H100-SXM-80GB"


def _run_on(spec_gpu: str, device: str):
    spec = load_spec(ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml", [f"cluster.gpu={spec_gpu}"])
    plan = make_plan(spec)
    payloads = [
        RankPayload(
            rank=r.rank,
            dp=0,
            stage=r.stage,
            tp=r.rank % 2,
            coordinator=r.rank == 0,
            hostname="node0",
            param_bytes=r.weight_bytes,
            kv_bytes=0,
            num_slots=1,
            memory={"source": "torch.cuda", "device_name": device},
        )
        for r in plan.ranks
    ]
    return reference_result(spec, plan, payloads, complete=True, reason=None)


def test_hardware_gpu_comes_from_the_device_with_a_mismatch_warning():
    res = _run_on("H200-SXM-141GB", H100_SXM)
    assert res.hardware["gpu"] == "H100-SXM-80GB" and res.hardware["gpu_name"] == H100_SXM
    notes = [n for n in res.extra["notes"] if n.startswith("hardware:")]
    assert notes == [
        "hardware: the spec names H200-SXM-141GB but the run's devices are NVIDIA H100 80GB HBM3 "
        "(H100-SXM-80GB); hardware.gpu says what ran, and the plan's floors are H200-SXM-141GB's"
    ]
    same = _run_on("H100-SXM-80GB", H100_SXM)
    assert same.hardware["gpu"] == "H100-SXM-80GB"
    assert not [n for n in same.extra["notes"] if n.startswith("hardware:")]
    pcie = _run_on("H100-SXM-80GB", "NVIDIA H100 PCIe")
    assert pcie.hardware["gpu"] == "NVIDIA H100 PCIe"  # not in the catalogue: its own name


def test_gpu_label_of_mixed_devices():
    label, note = gpu_label("H100-SXM-80GB", [H100_SXM, "NVIDIA H100 PCIe"])
    assert label == "mixed: H100-SXM-80GB, NVIDIA H100 PCIe" and note


def test_an_h100_run_is_no_evidence_for_h200_claims():
    """run_mismatch: the run's device decides, also for a summary written before this fix (its
    hardware.gpu carried the spec's H200 while gpu_name named the H100)."""
    from harness.verdicts.claims.context import RunResults, run_mismatch

    spec = load_spec(
        ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml", ["cluster.gpu=H200-SXM-141GB"]
    )

    def results(hw):
        return RunResults("run", True, hw, {}, "llama3-70b", "bf16")

    old = results({"gpu": "H200-SXM-141GB", "gpu_name": H100_SXM, "total_gpus": 8})
    new = results({"gpu": "H100-SXM-80GB", "gpu_name": H100_SXM, "total_gpus": 8})
    right = results({"gpu": "H200-SXM-141GB", "gpu_name": "NVIDIA H200", "total_gpus": 8})
    assert run_mismatch(old, spec)["hardware"].startswith("run on H100-SXM-80GB")
    assert run_mismatch(new, spec)["hardware"].startswith("run on H100-SXM-80GB")
    assert run_mismatch(right, spec)["hardware"] is None
