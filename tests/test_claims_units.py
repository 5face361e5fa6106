"""verify-claims: one consistent reading of a claim's units (GB as 10^9 B or GiB, KB as 1000 B or
KiB, a capacity the report states), numbers as written (sign, exponent), and bad claims files
refused.

Reports have the seed's shape (Llama3-70B, TP2-PP4-DP1, 8x H100); their numbers are computed here
from the planner's byte counts under one reading, so each test knows which claims are true.
"""

from __future__ import annotations

import pytest

from harness import cli
from harness.plan.planner import plan
from harness.spec.spec import spec_from_dict
from harness.verdicts.claims import load_claims, verify

SPEC = spec_from_dict(
    {
        "model": {"preset": "llama3-70b", "dtype": "fp16"},
        "cluster": {"gpu": "H100-SXM-80GB", "nodes": 1, "gpus_per_node": 8},
        "parallel": {"tp": 2, "pp": 4, "dp": 1},
    }
)
PLAN = plan(SPEC)
HI = max(r.weight_bytes for r in PLAN.ranks)  # 18,164,105,216 B on the fullest GPU
STAGES = [s.weight_bytes for s in PLAN.stages]  # 36.33 / 34.23 / 34.23 / 36.33 GB
MODEL = PLAN.params_total * 2  # 141.1 GB
USABLE = SPEC.gpu.memory_bytes  # 79.6 GiB
DECIMAL = {"G": 1e9, "K": 1e3}
BINARY = {"G": 2**30, "K": 2**10}


def report(
    unit: dict,
    *,
    per_gpu=None,
    pct=None,
    capacity="80GB",
    stage=None,
    model=None,
    allreduce=None,
    sendrecv=None,
    hardware="80GB",
    balance="Perfect (epsilon = 0.03)",
) -> str:
    """The seed's report with its numbers written under one reading ``unit`` (DECIMAL or BINARY)."""
    g, k = unit["G"], unit["K"]
    per_gpu = per_gpu if per_gpu is not None else f"{HI / g:.2f}GB"
    pct = pct if pct is not None else f"{100 * HI / (80 * g):.2f}%"
    stage = stage or [f"{b / g:.2f}GB" for b in STAGES]
    lines = [
        "# Nodes to Modify - Parallel Strategy Verification",
        "Based on the analysis of the TP2-PP4-DP1 parallel strategy for Llama3-70B-Instruct on "
        "H100-8GPU:",
        "- **Total GPUs Required**: 8 (2 TP × 4 PP × 1 DP × 1 EP)",
        f"- **Available GPUs**: 8x H100 ({hardware} each)",
        f"- **Model Memory**: {model or f'{MODEL / g:.1f}GB'} (70B parameters × 2 bytes FP16)",
        f"- **Memory per GPU**: {per_gpu} ({pct} of {capacity} capacity)",
        f"- **Memory Balance**: {balance}",
        *[f"- **Stage {s}**: 20 layers, {stage[s]} memory" for s in range(4)],
        f"- **Tensor Parallel AllReduce**: {allreduce or f'{32768 / k:g} KB'} per layer",
        f"- **Pipeline Parallel Send/Recv**: {sendrecv or f'{16384 / k:g} KB'} per stage",
    ]
    return "\n".join(lines) + "\n"


def check(tmp_path, text: str, name: str = "r.md") -> dict:
    p = tmp_path / name
    p.write_text(text)
    return {(v.id, v.index): v for v in verify(load_claims(p)).claims}


SIZE_CLAIMS = [
    ("gpu_memory_gb", None),
    ("model_memory_gb", None),
    ("memory_per_gpu_gb", None),
    ("memory_utilization_pct", None),
    *[("stage_memory_gb", s) for s in range(4)],
    ("tp_allreduce_bytes_per_layer", None),
    ("pp_sendrecv_bytes_per_stage", None),
]


@pytest.mark.parametrize("unit, word", [(DECIMAL, "decimal"), (BINARY, "binary")])
def test_every_size_claim_holds_under_its_one_reading(tmp_path, unit, word):
    v = check(tmp_path, report(unit))
    for key in SIZE_CLAIMS:
        assert v[key].verdict == "CONFIRMED", (key, v[key].reason)
    # the note names the reading each claim held under; 80GB of an H100 is binary in both reports
    assert v[("gpu_memory_gb", None)].reading.startswith("binary")
    for key in [
        ("memory_per_gpu_gb", None),
        ("stage_memory_gb", 1),
        ("tp_allreduce_bytes_per_layer", None),
    ]:
        assert v[key].reading.startswith(word) and f"reading: {word}" in v[key].reason
    util = v[("memory_utilization_pct", None)]
    assert util.reading.startswith("% of the line's 80 GB") and word in util.reading
    assert util.expected == pytest.approx(100 * HI / (80 * unit["G"]))
    # claimed and expected are both in canonical units (GB = 1e9 B, bytes) under that reading
    assert v[("memory_per_gpu_gb", None)].expected == pytest.approx(HI / 1e9)
    assert v[("tp_allreduce_bytes_per_layer", None)].claimed == pytest.approx(32768)


def test_the_issues_examples(tmp_path):
    # "20GB (25% of 80GB capacity)" shape: per-GPU GB and its percentage of the stated 80GB, both
    # decimal
    v = check(tmp_path, report(DECIMAL, per_gpu="18.16GB", pct="22.7%"))
    # 18.16 / 80 = 22.7 %, not 21.25 %
    assert v[("memory_utilization_pct", None)].verdict == "CONFIRMED"
    # 16 KB per stage for a hidden state of 8192 x 2 B = 16,384 B: KB read as KiB
    v = check(tmp_path, report(DECIMAL, allreduce="32 KB", sendrecv="16 KB"))
    for key in [("tp_allreduce_bytes_per_layer", None), ("pp_sendrecv_bytes_per_stage", None)]:
        assert v[key].verdict == "CONFIRMED" and v[key].reading == "binary, 1 KB = 1 KiB = 2^10 B"


def test_readings_are_per_claim_not_per_report(tmp_path):
    # per-GPU memory in GiB-valued "GB", its percentage of the decimal 80 GB: each claim is
    # consistent in itself
    text = report(
        DECIMAL,
        per_gpu=f"{HI / 2**30:.2f}GB",
        pct=f"{100 * HI / 80e9:.2f}%",
        stage=[f"{STAGES[0] / 2**30:.2f} GB", f"{STAGES[1] / 1e9:.2f} GB", "34.23GB", "33.83 GiB"],
    )
    v = check(tmp_path, text)
    assert v[("memory_per_gpu_gb", None)].reading.startswith("binary")
    assert "decimal" in v[("memory_utilization_pct", None)].reading
    assert v[("stage_memory_gb", 0)].reading.startswith("binary")
    assert v[("stage_memory_gb", 1)].reading.startswith("decimal")
    s3 = v[("stage_memory_gb", 3)]  # GiB has one reading: no note, confirmed
    assert s3.verdict == "CONFIRMED" and s3.reading is None


@pytest.mark.parametrize(
    "line, capacity",
    [
        ("(22.7% of 80GB capacity)", "line's 80 GB (decimal"),
        ("(21.15% of 80GB capacity)", "line's 80 GB (binary"),
        ("(21.25% of the GPU)", "79.6 GiB usable"),
        ("(22.7%)", "report's 80 GB (decimal"),
    ],
)
def test_a_percentage_of_memory_holds_against_any_capacity_the_report_states(
    tmp_path, line, capacity
):
    text = report(DECIMAL).replace(
        next(x for x in report(DECIMAL).splitlines() if "Memory per GPU" in x),
        f"- **Memory per GPU**: 18.16GB {line}",
    )
    util = check(tmp_path, text)[("memory_utilization_pct", None)]
    assert util.verdict == "CONFIRMED" and capacity in util.reading


def test_no_capacity_stated_reads_the_nominal_one(tmp_path):
    text = (
        "Llama3-70B TP2-PP4-DP1 on H100\n- **Memory Utilization**: 22.7%\n"
        "- **Memory per GPU**: 18.16GB\n"
    )
    util = check(tmp_path, text)[("memory_utilization_pct", None)]
    assert util.verdict == "CONFIRMED" and "nominal 80 GB (decimal" in util.reading


@pytest.mark.parametrize(
    "over",
    [
        dict(per_gpu="20.0GB"),
        dict(pct="25.0%"),
        dict(stage=["40GB"] * 4),
        dict(model="160GB"),
        dict(allreduce="30 KB"),
        dict(sendrecv="15 KB"),
        dict(hardware="70GB"),
    ],
)
def test_a_number_no_reading_makes_true_is_refuted(tmp_path, over):
    v = check(tmp_path, report(DECIMAL, **over))
    refuted = [k for k, x in v.items() if x.verdict == "REFUTED"]
    assert len(set(k[0] for k in refuted)) == 1, refuted
    x = v[refuted[0]]
    assert "it holds under no reading" in x.reason and x.reading is None


def test_seed_known_wrong_numbers_stay_refuted(tmp_path):
    # the seed's numbers (35 GB per GPU, 43.75 % of 80GB, epsilon 0, 32 / 16 bytes) are wrong under
    # every reading
    text = report(
        DECIMAL,
        per_gpu="35GB",
        pct="43.75%",
        stage=["35GB"] * 4,
        allreduce="32 bytes",
        sendrecv="16 bytes",
        balance="Perfect (epsilon = 0.0)",
    )
    v = check(tmp_path, text)
    for key in [
        ("memory_per_gpu_gb", None),
        ("memory_utilization_pct", None),
        ("memory_balance_epsilon", None),
        ("tp_allreduce_bytes_per_layer", None),
        ("pp_sendrecv_bytes_per_stage", None),
        *[("stage_memory_gb", s) for s in range(4)],
    ]:
        assert v[key].verdict == "REFUTED", key
    assert v[("tp_allreduce_bytes_per_layer", None)].unit_slip == "x1024"
    assert v[("memory_per_gpu_gb", None)].unit_slip == "÷tp"


def test_claims_without_units_are_judged_as_before(tmp_path):
    text = report(DECIMAL).replace("20 layers", "21 layers", 1)
    text = text.replace("Total GPUs Required**: 8", "Total GPUs Required**: 16")
    v = check(tmp_path, text)
    assert (
        v[("stage_layers", 0)].verdict == "REFUTED"
        and v[("stage_layers", 1)].verdict == "CONFIRMED"
    )
    assert v[("total_gpus", None)].verdict == "REFUTED" and v[("total_gpus", None)].reading is None


@pytest.mark.parametrize(
    "balance, verdict",
    [
        ("Good (epsilon < 0.05)", "CONFIRMED"),
        ("Good (epsilon < 0.01)", "REFUTED"),
        ("Good (ε ≈ 0.03)", "CONFIRMED"),
        ("Good (epsilon = 3e-2)", "CONFIRMED"),
        ("Good (epsilon = 1e-3)", "REFUTED"),
    ],
)
def test_balance_bounds_and_exponents(tmp_path, balance, verdict):
    eps = check(tmp_path, report(DECIMAL, balance=balance))[("memory_balance_epsilon", None)]
    assert eps.verdict == verdict, eps.reason


def test_numbers_keep_their_sign_and_exponent(tmp_path):
    text = (
        "Llama3-70B TP2-PP4-DP1 on 8x H100\n- **Stage 0**: -3 layers\n"
        "- **Pipeline Parallel Send/Recv**: 1.6384e4 bytes per stage\n"
        "- **Tensor Parallel AllReduce**: 3.2768e+4 bytes per layer\n"
        "- **Memory Balance**: epsilon = 2.98e-2\n- **All SLOs Exceeded**: 13-16% better\n"
        "- **Model Memory**: 1.411e2 GB\n"
    )
    (tmp_path / "x.md").write_text(text)
    doc = load_claims(tmp_path / "x.md")
    got = {c.id: c.claimed for c in doc.claims}
    assert got == {
        "stage_layers": -3,
        "pp_sendrecv_bytes_per_stage": 16384.0,
        "tp_allreduce_bytes_per_layer": 32768.0,
        "memory_balance_epsilon": pytest.approx(0.0298),
        "slo_margin_pct": [13, 16],
        "model_memory_gb": pytest.approx(141.1),
    }
    v = {c.id: c for c in verify(doc).claims}
    assert v["stage_layers"].verdict == "REFUTED"
    assert all(
        v[k].verdict == "CONFIRMED"
        for k in (
            "pp_sendrecv_bytes_per_stage",
            "tp_allreduce_bytes_per_layer",
            "memory_balance_epsilon",
            "model_memory_gb",
        )
    )


def _cli(tmp_path, capsys, name: str, text: str) -> tuple[int, str]:
    p = tmp_path / name
    p.write_text(text)
    rc = cli.main(["verify-claims", str(p)])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize(
    "name, text, needle",
    [
        (
            "r.md",
            "Llama3-70B TP2-PP4 8x H100\n- **TP Group 0**: GPUs 0-99999999999\n",
            "line 2 (TP Group 0)",
        ),
        (
            "r.md",
            "Llama3-70B TP2-PP4 8x H100\n- **Model Memory**: 1e999 GB\n",
            "is not a finite number",
        ),
        (
            "c.yaml",
            "model: llama3-70b\nhardware: 8x H100\nstrategy: TP2-PP4\nclaims:\n  "
            "memory_per_gpu_gb: .nan\n",
            "claims.memory_per_gpu_gb: nan is not a finite number",
        ),
        (
            "c.yaml",
            "model: llama3-70b\nhardware: 8x H100\nstrategy: TP2-PP4\nclaims:\n  stage_memory_gb: "
            "[.inf]\n",
            "claims.stage_memory_gb[0]: inf is not a finite number",
        ),
        (
            "c.yaml",
            "model: llama3-70b\nhardware: {gpu: H100, nodes: x, gpus_per_node: 8}\nstrategy: "
            "TP2-PP4\n"
            "claims:\n  total_gpus: 8\n",
            "hardware.nodes: give a whole number",
        ),
        (
            "c.yaml",
            "model: llama3-70b\nhardware: 8x H100\nstrategy: TP2-PP4\nclaims:\n  stage_layers: "
            "{true: 20}\n",
            "index True must be a whole number",
        ),
    ],
)
def test_bad_claims_are_one_line_exit_2(tmp_path, capsys, name, text, needle):
    rc, err = _cli(tmp_path, capsys, name, text)
    assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_yaml_exponent_written_without_a_dot_is_a_number(tmp_path, capsys):
    # PyYAML reads 1.6384e4 (no sign in the exponent) as text; the claim means the number
    rc, err = _cli(
        tmp_path,
        capsys,
        "c.yaml",
        "model: llama3-70b\nhardware: 8x H100\nstrategy: TP2-PP4\n"
        "claims:\n  pp_sendrecv_bytes_per_stage: 1.6384e4\n  gpu_memory_gb: 80\n",
    )
    assert rc == 0, err


def test_label_variants_of_the_seed_format(tmp_path):
    text = (
        "Llama3-70B-Instruct, TP2-PP4-DP1\n- **GPUs**: 8 x H100 80GB\n- **Number of GPUs**: 8\n"
        "- **Memory Usage per GPU**: 18.2 GB\n- **GPU Memory Utilization**: 22.7% of 80 GB\n"
        "- **NVLink Bandwidth Utilization**: 15%\n- **Stage 1 (Layers 20-39)**: GPUs [2,3], "
        "34.2GB\n"
        "- **Stage 2**: Layers 40-60, 34.2GB\n- **Pipeline Communication**: 16 KiB per boundary\n"
    )
    v = check(tmp_path, text)
    assert {k: x.verdict for k, x in v.items()} == {
        ("gpu_memory_gb", None): "CONFIRMED",
        ("total_gpus", None): "CONFIRMED",
        ("memory_per_gpu_gb", None): "CONFIRMED",
        ("memory_utilization_pct", None): "CONFIRMED",
        ("nvlink_utilization_pct", None): "UNVERIFIED",
        ("stage_layers", 1): "CONFIRMED",
        ("stage_memory_gb", 1): "CONFIRMED",
        ("stage_layers", 2): "REFUTED",
        ("stage_memory_gb", 2): "CONFIRMED",  # 40-60 is 21 layers
        ("pp_sendrecv_bytes_per_stage", None): "CONFIRMED",
    }
    assert v[("stage_layers", 1)].claimed == 20 and v[("stage_layers", 2)].expected == 20


def test_more_variants_and_other_models(tmp_path):
    text = (
        "TP8-PP2-DP1 for Llama-2-70B-Chat on 16x H100 (2 nodes)\n"
        "- **Expected Throughput**: 3.5 RPS\n- **Average GPU Utilization**: 80%\n"
        "- **TP Group 1**: GPUs [8-15] - Stage 1\n- **TP Group 0**: GPU 0, GPU 1, GPU 2, GPU 3, "
        "GPU 4, GPU 5, "
        "GPU 6, GPU 7\n- **Activation Transfer**: 16 KB per stage\n- **Model Memory**: 138GB\n"
    )
    rep = verify(load_claims(_write_md(tmp_path, text)))
    assert rep.model["name"] == "llama2-70b"
    v = {(x.id, x.index): x for x in rep.claims}
    assert (
        v[("tp_group_gpus", 1)].claimed == list(range(8, 16))
        and v[("tp_group_gpus", 1)].verdict == "CONFIRMED"
    )
    assert (
        v[("tp_group_gpus", 0)].claimed == list(range(8))
        and v[("tp_group_gpus", 0)].verdict == "CONFIRMED"
    )
    # 8192 x 2 B, KB read as KiB
    assert v[("pp_sendrecv_bytes_per_stage", None)].verdict == "CONFIRMED"
    mm = v[("model_memory_gb", None)]  # 68,976,648,192 x 2 B = 137.95 GB
    assert mm.verdict == "CONFIRMED" and mm.expected == pytest.approx(137.953296384)
    assert (
        v[("throughput_rps", None)].verdict
        == v[("gpu_utilization_pct", None)].verdict
        == "UNVERIFIED"
    )
    # Llama 3.3 70B has Llama 3's shape
    assert (
        verify(
            load_claims(
                _write_md(tmp_path, "Llama 3.3 70B, TP2-PP4 on 8x H100\n- **Total GPUs**: 8\n")
            )
        ).model["name"]
        == "llama3-70b"
    )


def _write_md(tmp_path, text: str):
    p = tmp_path / "v.md"
    p.write_text(text)
    return p
