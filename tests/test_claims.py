"""verify-claims: the seed report, two more reports in its format, claims YAML, --results, bad
input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.plan.planner import plan
from harness.spec.spec import load_spec
from harness.verdicts.claims import load_claims, verify
from harness.verdicts.claims.parse import number

ROOT = Path(__file__).resolve().parents[1]
SHARED_SEED = ROOT.parent / "shared" / "seed" / "000_caabd6ac8876f5cc.txt"
CFG_70B = ROOT / "configs" / "llama3-70b-tp2-pp4-h100.yaml"

# The seed report (../shared/seed/000_caabd6ac8876f5cc.txt), verbatim: a clean clone has no
# ../shared.
SEED_TEXT = """# Nodes to Modify - Parallel Strategy Verification

## Verification Results Summary

Based on the comprehensive analysis of the TP2-PP4-DP1 parallel strategy for Llama3-70B-Instruct on H100-8GPU hardware:

### ✅ COMPATIBILITY STATUS: FULLY COMPATIBLE

**Verification Score: 98/100**
**Deployment Recommendation: PROCEED_WITH_CONFIDENCE**

## Key Findings

### Hardware Compatibility
- **Total GPUs Required**: 8 (2 TP × 4 PP × 1 DP × 1 EP)
- **Available GPUs**: 8x H100 (80GB each)
- **Utilization**: 100% - PERFECT MATCH

### Memory Compatibility
- **Model Memory**: 140GB (70B parameters × 2 bytes FP16)
- **Memory per GPU**: 35GB (43.75% of 80GB capacity)
- **Memory Balance**: Perfect (epsilon = 0.0)

### Performance Compatibility
- **All SLOs Exceeded**: 13-16% better than targets
- **Throughput**: 8.5 RPS (6% above 8 RPS target)
- **Latency**: All metrics significantly better than requirements

### Load Balancing
- **GPU Utilization**: 72% (target 70%)
- **Memory Distribution**: Perfectly balanced across all stages
- **Pipeline Efficiency**: 5% bubble ratio

## Nodes That Were Verified (No Modifications Needed)

### 1. Tensor Parallelism Nodes
- **TP Group 0**: GPUs [0,1] - Stage 0 (Layers 0-19)
- **TP Group 1**: GPUs [2,3] - Stage 1 (Layers 20-39)
- **TP Group 2**: GPUs [4,5] - Stage 2 (Layers 40-59)
- **TP Group 3**: GPUs [6,7] - Stage 3 (Layers 60-79)

### 2. Pipeline Parallelism Nodes
- **Stage 0**: 20 layers, 35GB memory
- **Stage 1**: 20 layers, 35GB memory
- **Stage 2**: 20 layers, 35GB memory
- **Stage 3**: 20 layers, 35GB memory

### 3. Communication Nodes
- **Tensor Parallel AllReduce**: 32 bytes per layer
- **Pipeline Parallel Send/Recv**: 16 bytes per stage
- **NVLink Utilization**: 15% (excellent efficiency)

## DAG Generation Compatibility

All nodes contain sufficient information for DAG generation:
- ✅ Module division with precise GPU assignments
- ✅ Memory layout across pipeline stages
- ✅ Communication patterns between parallel groups
- ✅ Execution schedule with proper dependencies

## Conclusion

**NO MODIFICATIONS REQUIRED**

The parallel strategy is optimally configured and ready for deployment. All verification checks pass with excellent scores. The strategy provides:

- Perfect hardware utilization (100%)
- Excellent memory efficiency (43.75%)
- Superior performance (13-16% better than targets)
- Perfect load balancing (epsilon = 0.0)
- Substantial operational headroom
- Future scaling readiness

**Status**: APPROVED FOR PRODUCTION DEPLOYMENT"""

SEED_VERDICTS = {
    ("total_gpus", None): "CONFIRMED",
    ("gpu_memory_gb", None): "CONFIRMED",
    ("gpu_allocation_pct", None): "CONFIRMED",
    ("model_memory_gb", None): "CONFIRMED",
    ("memory_per_gpu_gb", None): "REFUTED",
    ("memory_utilization_pct", None): "REFUTED",
    ("memory_balance_epsilon", None): "REFUTED",
    ("slo_margin_pct", None): "UNVERIFIED",
    ("throughput_rps", None): "UNVERIFIED",
    ("latency_slos_met", None): "UNVERIFIED",
    ("gpu_utilization_pct", None): "UNVERIFIED",
    ("bubble_ratio", None): "UNVERIFIED",
    ("nvlink_utilization_pct", None): "UNVERIFIED",
    ("tp_allreduce_bytes_per_layer", None): "REFUTED",
    ("pp_sendrecv_bytes_per_stage", None): "REFUTED",
    **{("tp_group_gpus", g): "CONFIRMED" for g in range(4)},
    **{("stage_layers", s): "CONFIRMED" for s in range(4)},
    **{("stage_memory_gb", s): "REFUTED" for s in range(4)},
}

REPORT_8B = """# Nodes to Modify - Parallel Strategy Verification

Based on the analysis of the TP1-PP2-DP4 parallel strategy for Llama3-8B-Instruct on A100-8GPU hardware:

### Hardware Compatibility
- **Total GPUs Required**: 8 (1 TP × 2 PP × 4 DP × 1 EP)
- **Available GPUs**: 8x A100 (80GB each)
- **Utilization**: 100% - PERFECT MATCH

### Memory Compatibility
- **Model Memory**: 16GB (8B parameters × 2 bytes BF16)
- **Memory per GPU**: 8.03GB (9.4% of 80GB capacity)
- **Memory Balance**: Perfect (epsilon = 0.0)

### Performance Compatibility
- **Throughput**: 40 RPS
- **GPU Utilization**: 65%
- **Pipeline Efficiency**: 20% bubble ratio

### 1. Tensor Parallelism Nodes
- **TP Group 0**: GPUs [0] - Stage 0 (Layers 0-15)
- **TP Group 1**: GPUs [1] - Stage 1 (Layers 16-31)
- **TP Group 2**: GPUs [2] - Stage 1 (Layers 16-31)

### 2. Pipeline Parallelism Nodes
- **Stage 0**: 16 layers, 8.03GB memory
- **Stage 1**: 18 layers, 8.0GB memory

### 3. Communication Nodes
- **Tensor Parallel AllReduce**: 0 bytes per layer
- **Pipeline Parallel Send/Recv**: 8 KB per stage
"""

REPORT_405B = """# Nodes to Modify - Parallel Strategy Verification

Based on the analysis of the TP8-PP2-DP1 parallel strategy for Llama3.1-405B-Instruct on
H200-16GPU hardware (2 nodes x 8 H200):

- **Total GPUs Required**: 16 (8 TP × 2 PP × 1 DP × 1 EP)
- **Available GPUs**: 16x H200 (141GB each)
- **Model Memory**: 810GB (405B parameters × 2 bytes BF16)
- **Memory per GPU**: 50.7GB (33.7% of 141GB capacity)
- **Memory Balance**: Perfect (epsilon = 0.0)
- **Throughput**: 5000 RPS
- **Pipeline Efficiency**: 33% bubble ratio
- **TP Group 0**: GPUs [0,1,2,3,4,5,6,7] - Stage 0 (Layers 0-62)
- **TP Group 1**: GPUs [8,9,10,11,12,13,14,15] - Stage 1 (Layers 63-125)
- **Stage 0**: 63 layers, 405.9GB memory
- **Stage 1**: 63 layers, 50.7GB memory
- **Tensor Parallel AllReduce**: 64 KB per layer
- **Pipeline Parallel Send/Recv**: 32768 bytes per stage
- **NVLink Utilization**: 40%
"""


@pytest.fixture
def seed(tmp_path) -> Path:
    p = tmp_path / "000_caabd6ac8876f5cc.txt"
    p.write_text(SEED_TEXT)
    return p


def test_embedded_seed_is_the_shared_one():
    if not SHARED_SEED.exists():
        pytest.skip(
            "no ../shared/seed next to this checkout (a clean clone); the embedded copy is used"
        )
    assert SHARED_SEED.read_text() == SEED_TEXT


def _verdicts(report) -> dict:
    return {(v.id, v.index): v for v in report.claims}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _config(tmp_path: Path, name: str = "spec.yaml", **sections) -> Path:
    raw = yaml.safe_load(CFG_70B.read_text())
    for sec, values in sections.items():
        raw.setdefault(sec, {}).update(values)
    return _write(tmp_path, name, yaml.safe_dump(raw))


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---------------------------------------------------------------- numbers and the seed


def test_number_and_half_unit():
    assert number("35") == (35, 0.5)
    assert number("43.75") == (43.75, 0.005)
    assert number("32,768") == (32768, 0.5)
    assert number("0.0") == (0.0, 0.05)


def test_seed_facts_are_read_from_the_text(seed):
    doc = load_claims(seed)
    assert doc.model == "llama3-70b-instruct" and doc.gpu == "H100-SXM-80GB" and doc.total_gpus == 8
    assert doc.strategy == {"tp": 2, "pp": 4, "dp": 1, "ep": 1} and doc.dtype == "fp16"


def test_seed_exact_verdict_per_claim(seed):
    rep = verify(load_claims(seed))
    got = {k: v.verdict for k, v in _verdicts(rep).items()}
    assert got == SEED_VERDICTS
    v = _verdicts(rep)
    assert v[("model_memory_gb", None)].expected == pytest.approx(141.107412992)
    mpg = v[("memory_per_gpu_gb", None)]
    assert mpg.expected == pytest.approx(18.164105216) and mpg.unit_slip == "÷tp"
    assert "KV cache comes on top" in mpg.reason
    util = v[("memory_utilization_pct", None)]
    assert util.expected == pytest.approx(100 * 18_164_105_216 / int(79.6 * 2**30))  # 21.25 %
    assert util.unit_slip == "÷tp"
    eps = v[("memory_balance_epsilon", None)]
    assert eps.expected == pytest.approx(0.0297838, abs=1e-7) and eps.unit_slip is None
    assert v[("stage_memory_gb", 0)].expected == pytest.approx(36.328177664)
    assert v[("stage_memory_gb", 1)].expected == pytest.approx(34.22683136)
    assert v[("stage_memory_gb", 3)].expected == pytest.approx(36.328210432)
    assert "model weights / pp" in v[("stage_memory_gb", 1)].reason
    ar = v[("tp_allreduce_bytes_per_layer", None)]
    assert ar.expected == 32_768 and ar.unit_slip == "x1024" and ar.ratio == pytest.approx(1 / 1024)
    pp = v[("pp_sendrecv_bytes_per_stage", None)]
    assert pp.expected == 16_384 and pp.unit_slip == "x1024"
    assert v[("tp_group_gpus", 2)].expected == [4, 5]
    assert "no workload" in v[("throughput_rps", None)].reason
    assert all(
        x.source == "predicted"
        for x in rep.claims
        if x.verdict != "UNVERIFIED" and x.id != "gpu_allocation_pct"
    )


def test_seed_cli_json_exit_1(capsys, seed):
    rc, out, _ = _run_cli(["verify-claims", str(seed), "--json"], capsys)
    assert rc == 1
    d = json.loads(out)
    assert {"claims", "model", "layout", "hardware"} <= set(d)
    assert set(d["claims"][0]) >= {
        "id",
        "text",
        "claimed",
        "expected",
        "verdict",
        "reason",
        "source",
    }
    assert (
        d["model"]["name"] == "llama3-70b"
        and d["layout"]["tp"] == 2
        and d["hardware"]["gpu"] == "H100-SXM-80GB"
    )


def test_seed_with_config_states_the_workload(tmp_path, seed):
    rep = verify(load_claims(seed), str(CFG_70B))
    v = _verdicts(rep)
    bound = plan(load_spec(CFG_70B)).bounds.rps_bound
    assert (
        v[("throughput_rps", None)].verdict == "UNVERIFIED"
        and f"{bound:.3g} RPS" in v[("throughput_rps", None)].reason
    )
    assert rep.workload_stated
    # a config that pins 8 micro-batches in flight makes the bubble checkable: (4-1)/(8+4-1)
    cfg = _config(tmp_path, run={"micro_batches": 8})
    b = _verdicts(verify(load_claims(seed), str(cfg)))[("bubble_ratio", None)]
    assert b.verdict == "REFUTED" and b.expected == pytest.approx(3 / 11)
    # one row per micro-batch: the planner's bound falls below the claimed 8.5 RPS
    cfg = _config(tmp_path, "slow.yaml", run={"max_batch": 1})
    t = _verdicts(verify(load_claims(seed), str(cfg)))[("throughput_rps", None)]
    slow = plan(load_spec(cfg)).bounds.rps_bound
    assert slow < 8.5 and t.verdict == "REFUTED" and t.expected == pytest.approx(slow)


# ---------------------------------------------------------------- other reports of the seed's
# format


def test_report_llama3_8b_tp1_pp2_dp4_on_a100(tmp_path):
    rep = verify(load_claims(_write(tmp_path, "r8b.md", REPORT_8B)))
    assert rep.model["name"] == "llama3-8b" and rep.hardware["gpu"] == "A100-SXM-80GB"
    v = _verdicts(rep)
    got = {k: x.verdict for k, x in v.items()}
    assert got == {
        ("total_gpus", None): "CONFIRMED",
        ("gpu_memory_gb", None): "CONFIRMED",
        ("gpu_allocation_pct", None): "CONFIRMED",
        ("model_memory_gb", None): "CONFIRMED",  # 8,030,261,248 x 2 B = 16.06 GB
        ("memory_per_gpu_gb", None): "CONFIRMED",  # 4,015,132,672 x 2 B = 8.03 GB
        ("memory_utilization_pct", None): "CONFIRMED",  # 8.03 GB / 85.9 GB = 9.35 %
        ("memory_balance_epsilon", None): "CONFIRMED",  # 5e-7
        ("throughput_rps", None): "UNVERIFIED",
        ("gpu_utilization_pct", None): "UNVERIFIED",
        ("bubble_ratio", None): "UNVERIFIED",
        ("tp_group_gpus", 0): "CONFIRMED",
        ("tp_group_gpus", 1): "CONFIRMED",
        ("tp_group_gpus", 2): "REFUTED",  # GPU 2 is replica 1's stage 0
        ("stage_layers", 0): "CONFIRMED",
        ("stage_memory_gb", 0): "CONFIRMED",
        ("stage_layers", 1): "REFUTED",
        ("stage_memory_gb", 1): "CONFIRMED",
        ("tp_allreduce_bytes_per_layer", None): "CONFIRMED",  # tp = 1: none
        ("pp_sendrecv_bytes_per_stage", None): "CONFIRMED",  # 8 KB ~ 8,192 B within half a KB
    }
    assert v[("model_memory_gb", None)].expected == pytest.approx(8_030_261_248 * 2 / 1e9)
    assert v[("memory_per_gpu_gb", None)].expected == pytest.approx(4_015_132_672 * 2 / 1e9)
    assert v[("stage_layers", 1)].expected == 16
    assert "serves stage 0, not 1" in v[("tp_group_gpus", 2)].reason
    assert v[("tp_allreduce_bytes_per_layer", None)].expected == 0


def test_report_405b_two_nodes_of_h200(tmp_path):
    rep = verify(load_claims(_write(tmp_path, "r405.md", REPORT_405B)))
    assert rep.hardware == {"gpu": "H200-SXM-141GB", "nodes": 2, "gpus_per_node": 8}
    v = _verdicts(rep)
    stage0 = 63 * (3_187_703_808 - 32768) // 8 + 63 * 32768 + 128256 * 16384 // 8  # per GPU
    assert stage0 == 25_367_642_112
    assert v[("memory_per_gpu_gb", None)].verdict == "CONFIRMED"
    assert v[("memory_per_gpu_gb", None)].expected == pytest.approx((stage0 + 16384) * 2 / 1e9)
    assert v[("model_memory_gb", None)].verdict == "CONFIRMED"  # 810 vs 811.7 GB
    assert v[("stage_memory_gb", 0)].verdict == "CONFIRMED"  # 8 x 50.74 GB = 405.9
    s1 = v[("stage_memory_gb", 1)]
    assert s1.verdict == "REFUTED" and s1.unit_slip == "xtp"  # one GPU's share, not the stage's
    ar = v[("tp_allreduce_bytes_per_layer", None)]  # 64 KB holds when KB is read as KiB: 65,536 B
    assert ar.verdict == "CONFIRMED" and ar.expected == 65_536 and ar.claimed == 65_536
    assert ar.reading == "binary, 1 KB = 1 KiB = 2^10 B" and "reading: binary" in ar.reason
    assert v[("pp_sendrecv_bytes_per_stage", None)].verdict == "CONFIRMED"
    assert (
        v[("tp_group_gpus", 1)].verdict == "CONFIRMED"
        and v[("stage_layers", 1)].verdict == "CONFIRMED"
    )
    assert v[("throughput_rps", None)].verdict == "UNVERIFIED"


def test_405b_throughput_above_the_bound_is_refuted_with_a_config(tmp_path):
    cfg = _config(
        tmp_path,
        model={"preset": "llama3.1-405b"},
        cluster={"gpu": "H200-SXM-141GB", "nodes": 2, "gpus_per_node": 8},
        parallel={"tp": 8, "pp": 2, "dp": 1, "layer_split": None},
        slo={"targets": []},
    )
    rep = verify(load_claims(_write(tmp_path, "r405.md", REPORT_405B)), str(cfg))
    t = _verdicts(rep)[("throughput_rps", None)]
    bound = plan(load_spec(cfg)).bounds.rps_bound
    assert t.verdict == "REFUTED" and t.expected == pytest.approx(bound) and bound < 5000


# ---------------------------------------------------------------- claims YAML

CLAIMS_YAML = """
model: llama3-70b
dtype: bf16
hardware: {gpu: H100, nodes: 1, gpus_per_node: 8}
strategy: TP2-PP4-DP1
claims:
  total_gpus: 8
  model_memory_gb: 141.1
  memory_per_gpu_gb: 18.16
  memory_balance_epsilon: 0.03
  stage_layers: [20, 20, 20, 20]
  stage_memory_gb: {0: 36.33, 3: 36.33}
  tp_group_gpus: {1: [2, 3]}
  tp_allreduce_bytes_per_layer: 32768
  pp_sendrecv_bytes_per_stage: 16384
  throughput_rps: 8
"""


def test_claims_yaml_all_right(tmp_path, capsys):
    p = _write(tmp_path, "claims.yaml", CLAIMS_YAML)
    rep = verify(load_claims(p))
    v = _verdicts(rep)
    assert (
        v[("stage_memory_gb", 3)].verdict == "CONFIRMED"
        and v[("tp_group_gpus", 1)].verdict == "CONFIRMED"
    )
    assert v[("throughput_rps", None)].verdict == "UNVERIFIED"
    assert [x.verdict for x in rep.claims].count("CONFIRMED") == len(rep.claims) - 1
    rc, out, _ = _run_cli(["verify-claims", str(p)], capsys)
    assert rc == 0 and "0 refuted" in out


def test_claims_yaml_with_its_own_config(tmp_path, capsys):
    cfg = _config(tmp_path)
    p = _write(
        tmp_path,
        "claims.yaml",
        "config: spec.yaml\nclaims:\n  throughput_rps: 1000\n  bubble_ratio: 0.05\n",
    )
    rc, out, _ = _run_cli(["verify-claims", str(p), "--json"], capsys)
    d = json.loads(out)
    assert rc == 1 and d["workload_stated"] is True
    t = next(c for c in d["claims"] if c["id"] == "throughput_rps")
    assert t["verdict"] == "REFUTED" and t["expected"] == pytest.approx(
        plan(load_spec(cfg)).bounds.rps_bound
    )


@pytest.mark.parametrize(
    "text, needle",
    [
        ("claims:\n  foo_gb: 1\n", "claims.foo_gb: unknown claim id"),
        ("claims: {}\n", "claims: give a mapping"),
        ("claims:\n  total_gpus: [1, 2\n", "is not valid YAML"),
        (
            "model: llama3-70b\nhardware: 8x H100\nstrategy: TP2-PP4-DP1\nclaims:\n  stage_layers: "
            "20\n",
            "claims.stage_layers: give a list",
        ),
        (
            "model: llama3-70b\nhardware: 8x H100\nstrategy: TP3-PP4-DP1\nclaims:\n  total_gpus: "
            "12\n",
            "cannot run llama3-70b",
        ),
        ("hardware: 8x H100\nstrategy: TP2-PP4-DP1\nclaims:\n  total_gpus: 8\n", "names no model"),
        ("whatever: 1\nclaims:\n  total_gpus: 8\n", "whatever: unknown key"),
    ],
)
def test_bad_claims_yaml_exit_2_one_line(tmp_path, capsys, text, needle):
    p = _write(tmp_path, "claims.yaml", text)
    rc, out, err = _run_cli(["verify-claims", str(p)], capsys)
    assert rc == 2 and out == ""
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_without_claims_or_missing_exit_2(tmp_path, capsys):
    p = _write(tmp_path, "notes.md", "# Notes\n\nNothing to see here.\n")
    rc, _, err = _run_cli(["verify-claims", str(p)], capsys)
    assert rc == 2 and "no recognisable claim" in err
    rc, _, err = _run_cli(["verify-claims", str(tmp_path / "absent.md")], capsys)
    assert rc == 2 and "not found" in err


def test_bad_report_as_subprocess_no_traceback(tmp_path, seed):
    p = _write(tmp_path, "notes.txt", "Just prose.\n")
    exe = Path(sys.executable).parent / "harness"
    r = subprocess.run(
        [str(exe), "verify-claims", str(p)], capture_output=True, text=True, timeout=60
    )
    assert (
        r.returncode == 2
        and "Traceback" not in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
    r = subprocess.run(
        [str(exe), "verify-claims", str(seed), "--json"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and json.loads(r.stdout)["claims"]


# ---------------------------------------------------------------- --results


def _summary(tmp_path: Path, name: str, **over) -> Path:
    d = tmp_path / name
    d.mkdir()
    s = {
        "schema_version": 1,
        "complete": True,
        "hardware": {
            "gpu": "H100-SXM-80GB",
            "gpu_name": "NVIDIA H100 80GB HBM3",
            "total_gpus": 8,
            "nodes": 1,
        },
        "layout": {"tp": 2, "pp": 4, "dp": 1},
        "predicted": {"model": {"name": "llama3-70b"}, "dtype": "bf16"},
        "measured": {
            "throughput_rps": 9.1,
            "gpu_utilization_pct": 71.0,
            "bubble_ratio": 0.06,
            "nvlink_utilization_pct": None,
            "memory_per_gpu_gb": 18.164,
            "memory_balance_epsilon": 0.0298,
            "tp_allreduce_bytes_per_layer": 32768.0,
            "pp_sendrecv_bytes_per_stage": 16384.0,
            "stage_memory_gb": [36.33, 34.23, 34.23, 36.33],
            "model_memory_gb": 141.1,
            "total_gpus": 8,
        },
        "slo": [
            {
                "target": "ttft_p99_ms <= 2000",
                "measured": 1700.0,
                "passed": True,
                "margin_pct": 15.0,
            },
            {
                "target": "tpot_p99_ms <= 200",
                "measured": 172.5,
                "passed": True,
                "margin_pct": 13.75,
            },
        ],
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(s.get(k), dict):
            s[k] = {**s[k], **v}
        else:
            s[k] = v
    (d / "summary.json").write_text(json.dumps(s))
    return d


def test_results_on_matching_hardware_replace_predictions(tmp_path, seed):
    run = _summary(tmp_path, "h100")
    v = _verdicts(verify(load_claims(seed), None, str(run)))
    assert (v[("throughput_rps", None)].verdict, v[("throughput_rps", None)].source) == (
        "CONFIRMED",
        "measured",
    )
    assert (v[("gpu_utilization_pct", None)].verdict, v[("gpu_utilization_pct", None)].source) == (
        "CONFIRMED",
        "measured",
    )
    bub = v[("bubble_ratio", None)]
    assert bub.verdict == "REFUTED" and bub.source == "measured" and bub.expected == 0.06
    assert v[("nvlink_utilization_pct", None)].verdict == "UNVERIFIED"
    assert "did not measure" in v[("nvlink_utilization_pct", None)].reason
    mpg = v[("memory_per_gpu_gb", None)]
    assert mpg.verdict == "REFUTED" and mpg.source == "measured" and mpg.unit_slip == "÷tp"
    assert (
        v[("stage_memory_gb", 1)].source == "measured"
        and v[("stage_memory_gb", 1)].expected == 34.23
    )
    assert (
        v[("slo_margin_pct", None)].verdict == "CONFIRMED"
        and v[("latency_slos_met", None)].verdict == "CONFIRMED"
    )
    assert v[("stage_layers", 0)].source == "predicted"


def test_results_from_a_cpu_run_do_not_confirm_hardware_claims(tmp_path, capsys, seed):
    run = _summary(
        tmp_path,
        "cpu",
        hardware={"gpu": "cpu", "gpu_name": "cpu", "total_gpus": 8, "nodes": 1},
        predicted={"model": {"name": "tiny"}, "dtype": "fp32"},
        measured={
            "throughput_rps": 3.9,
            "tp_allreduce_bytes_per_layer": 512.0,
            "memory_per_gpu_gb": 0.00018,
            "bubble_ratio": 0.3,
        },
    )
    rep = verify(load_claims(seed), None, str(run))
    v = _verdicts(rep)
    t = v[("throughput_rps", None)]
    assert (
        t.verdict == "UNVERIFIED"
        and "run on cpu (8 ranks); claims are for 8x H100-SXM-80GB" in t.reason
    )
    assert v[("bubble_ratio", None)].verdict == "UNVERIFIED"
    ar = v[("tp_allreduce_bytes_per_layer", None)]
    assert (ar.verdict, ar.source, ar.expected) == ("REFUTED", "predicted", 32_768)
    assert "run used tiny" in ar.reason
    assert any("hardware" in n for n in rep.notes)
    rc, out, _ = _run_cli(["verify-claims", str(seed), "--results", str(run), "--json"], capsys)
    assert rc == 1 and json.loads(out)["results"] == str(run)


def test_results_on_other_hardware_still_give_model_facts(tmp_path, seed):
    # the same model run on CPU ranks: bytes per all-reduce per token do not depend on the hardware
    run = _summary(
        tmp_path, "cpu70b", hardware={"gpu": "cpu", "gpu_name": "cpu", "total_gpus": 8, "nodes": 1}
    )
    v = _verdicts(verify(load_claims(seed), None, str(run)))
    ar = v[("tp_allreduce_bytes_per_layer", None)]
    assert (ar.verdict, ar.source, ar.expected) == ("REFUTED", "measured", 32768.0)
    assert v[("throughput_rps", None)].verdict == "UNVERIFIED"
    assert v[("gpu_utilization_pct", None)].verdict == "UNVERIFIED"


def test_incomplete_run_gives_no_rates(tmp_path, seed):
    run = _summary(tmp_path, "partial", complete=False)
    v = _verdicts(verify(load_claims(seed), None, str(run)))
    assert v[("throughput_rps", None)].verdict == "UNVERIFIED"
    assert "did not complete" in v[("throughput_rps", None)].reason
    assert v[("memory_per_gpu_gb", None)].source == "measured"


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "not found"),
        ("{not json", "is not valid JSON"),
        (
            json.dumps({"schema_version": 2, "complete": True, "hardware": {}, "measured": {}}),
            "schema_version 2 unknown",
        ),
        (json.dumps({"schema_version": 1, "hardware": {}}), "lacks complete/hardware/measured"),
    ],
)
def test_bad_results_exit_2(tmp_path, capsys, content, needle, seed):
    d = tmp_path / "run"
    d.mkdir()
    if content is not None:
        (d / "summary.json").write_text(content)
    rc, _, err = _run_cli(["verify-claims", str(seed), "--results", str(d)], capsys)
    assert rc == 2 and needle in err and err.count("\n") == 1


def test_format_variants_of_the_same_claims(tmp_path):
    text = """Strategy TP2-PP4-DP1 of Meta-Llama-3-70B, bf16, on 8x H100
* TP group 1 (node 0): GPUs 2, 3 - Stage 1 (Layers 20-39)
* Stage 2 (GPUs 4-5): 20 layers, 34.2 GB
* Memory per GPU: 16.9 GiB
* Pipeline efficiency: 95%
* NCCL AllReduce volume: 32 KiB per layer
"""
    doc = load_claims(_write(tmp_path, "variants.md", text))
    assert doc.model == "llama3-70b" and doc.dtype == "bf16"
    v = _verdicts(verify(doc))
    assert (
        v[("tp_group_gpus", 1)].claimed == [2, 3] and v[("tp_group_gpus", 1)].verdict == "CONFIRMED"
    )
    assert (
        v[("stage_memory_gb", 2)].verdict == "CONFIRMED"
        and v[("stage_layers", 2)].verdict == "CONFIRMED"
    )
    mpg = v[("memory_per_gpu_gb", None)]  # 16.9 GiB = 18.15 GB vs 18.16 GB
    assert mpg.claimed == pytest.approx(16.9 * 2**30 / 1e9) and mpg.verdict == "CONFIRMED"
    assert v[("bubble_ratio", None)].claimed == pytest.approx(0.05)
    ar = v[("tp_allreduce_bytes_per_layer", None)]
    assert ar.claimed == 32 * 1024 and ar.verdict == "CONFIRMED"
