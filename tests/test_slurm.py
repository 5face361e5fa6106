"""Slurm batch scripts: lint, rendering, and real jobs on a private local cluster.

The cluster (tests/slurm_cluster.py) has two nodes on this host, so the two-node
job really runs one torchrun agent per Slurm node meeting at a c10d rendezvous.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402
from slurm_cluster import local_slurm  # noqa: E402,F401  (fixture)

from harness import slurm  # noqa: E402
from harness.errors import UsageError  # noqa: E402
from harness.spec import load_spec  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SCRIPTS = [REPO / "slurm" / n for n in (slurm.SINGLE, slurm.MULTI, slurm.NIGHTLY)]
CPU_SPEC = REPO / "configs" / "tiny-tp2-pp4-cpu.yaml"
GPU_SPEC = REPO / "configs" / "llama3-70b-tp2-pp4-h100.yaml"
PY = sys.executable


def _shellcheck() -> str:
    try:
        slurm_cluster.ensure_installed()
    except slurm_cluster.SlurmUnavailable as e:
        pytest.skip(str(e))
    return shutil.which("shellcheck")


# ------------------------------------------------------------------ lint

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_with_bash_n(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_scripts_pass_shellcheck():
    proc = subprocess.run([_shellcheck(), *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------------ render

def _sbatch_lines(text: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in text.splitlines() if ln.startswith("#SBATCH")]


def _pinned(text: str) -> dict[str, str]:
    block = text[text.index("# Pinned for this spec"):text.index("set -uo pipefail")]
    return dict(ln.removeprefix("export ").split("=", 1) for ln in block.splitlines()
                if ln.startswith("export "))


def test_render_one_node_cpu_spec_uses_single_node_script():
    spec = load_spec(CPU_SPEC)
    text = slurm.render(spec, CPU_SPEC, partition="debug", account="proj1", time="00:30:00")
    assert _sbatch_lines(text) == [
        "--job-name=harness-tiny-tp2-pp4-cpu", "--nodes=1", "--ntasks-per-node=1", "--exclusive",
        "--signal=B:TERM@120", "--output=results/slurm-%j.out",
        "--partition=debug", "--account=proj1", "--time=00:30:00"]   # no GPUs on the CPU twin
    assert _pinned(text) == {"HARNESS_SPEC": str(CPU_SPEC), "HARNESS_HOME": str(REPO),
                             "HARNESS_PYTHON": PY, "HARNESS_NPROC": "8"}
    assert "--standalone" in text and "--rdzv-endpoint" not in text
    # everything after the pinned block is the template's body, unchanged
    template = (REPO / "slurm" / slurm.SINGLE).read_text()
    tail = template[template.index("set -uo pipefail"):]
    assert text.endswith(tail)


def test_render_two_node_gpu_spec_uses_multi_node_script(tmp_path):
    spec = load_spec(GPU_SPEC, ["cluster.nodes=2", "cluster.gpus_per_node=4"])
    text = slurm.render(spec, GPU_SPEC, results_dir=tmp_path / "res", python="/opt/venv/bin/python")
    assert _sbatch_lines(text) == [
        "--job-name=harness-llama3-70b-tp2-pp4-h100", "--nodes=2", "--ntasks-per-node=1",
        "--exclusive", "--signal=B:TERM@120", f"--output={tmp_path}/res/slurm-%j.out",
        "--gpus-per-node=4"]
    assert _pinned(text) == {"HARNESS_SPEC": str(GPU_SPEC), "HARNESS_HOME": str(REPO),
                             "HARNESS_PYTHON": "/opt/venv/bin/python", "HARNESS_NPROC": "4",
                             "HARNESS_RESULTS_ROOT": f"{tmp_path}/res"}
    assert '--rdzv-backend=c10d --rdzv-endpoint="$endpoint"' in text


def test_render_nightly_pins_baseline(tmp_path):
    spec = load_spec(CPU_SPEC)
    text = slurm.render(spec, CPU_SPEC, nightly=True, baseline=tmp_path / "base")
    assert _sbatch_lines(text)[0] == "--job-name=harness-nightly-tiny-tp2-pp4-cpu"
    assert "--output=results/nightly-%j.out" in _sbatch_lines(text)
    assert _pinned(text)["HARNESS_BASELINE"] == str(tmp_path / "base")
    assert "compare" in text


def test_rendered_scripts_pass_shellcheck(tmp_path):
    spec2 = load_spec(GPU_SPEC, ["cluster.nodes=2", "cluster.gpus_per_node=4"])
    texts = [slurm.render(load_spec(CPU_SPEC), CPU_SPEC, partition="p"),
             slurm.render(spec2, GPU_SPEC, time="1-00:00:00"),
             slurm.render(spec2, GPU_SPEC, nightly=True, account="a b".replace(" ", ""))]
    paths = []
    for i, t in enumerate(texts):
        paths.append(tmp_path / f"s{i}.sbatch")
        paths[-1].write_text(t)
    proc = subprocess.run([_shellcheck(), *map(str, paths)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("kwargs, field", [
    ({"time": "1 hour"}, "--time"),
    ({"partition": "gpu; rm -rf"}, "--partition"),
    ({"account": "a,b"}, "--account"),
    ({"baseline": "x"}, "--baseline"),
])
def test_render_rejects_bad_options(kwargs, field):
    with pytest.raises(UsageError, match=f"^{field}: "):
        slurm.render(load_spec(CPU_SPEC), CPU_SPEC, **kwargs)


def test_submit_without_sbatch_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="^--submit: sbatch not found"):
        slurm.submit("#!/bin/bash\n", env={"PATH": str(tmp_path)})


def test_output_dirs_reads_output_and_error():
    text = "#!/bin/bash\n#SBATCH --output=a/b/x-%j.out\n#SBATCH -e c/err\n#SBATCH --nodes=1\n"
    assert slurm.output_dirs(text) == [Path("a/b"), Path("c")]


# ------------------------------------------------------------------ real jobs
# Until harness.run exists, the jobs run tests/fake_run.py (same contract:
# summary.json, exit codes, SIGTERM -> complete=false, exit 3).

FAKE_ENV = {"HARNESS_RUN_MODULE": "fake_run", "HARNESS_CLI_MODULE": "fake_run",
            "PYTHONPATH": str(TESTS), "HARNESS_PYTHON": PY}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slurm
def test_single_node_job_rendered_and_submitted(local_slurm, tmp_path):
    spec = load_spec(CPU_SPEC)
    text = slurm.render(spec, CPU_SPEC, results_dir=tmp_path / "res", time="5:00")
    text = text.replace("export HARNESS_NPROC=8", "export HARNESS_NPROC=2")  # fake: 2 ranks suffice
    job = slurm.submit(text, env=local_slurm.env | FAKE_ENV, cwd=tmp_path)
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout
    run_dir = tmp_path / "res" / f"slurm-{job}"
    s = _summary(run_dir)
    assert s["complete"] is True and s["world_size"] == 2
    assert (tmp_path / "res" / f"slurm-{job}.out").is_file()   # the log, where --output said


@pytest.mark.slurm
def test_two_node_job_splits_ranks_across_nodes(local_slurm, tmp_path):
    env = FAKE_ENV | {"HARNESS_SPEC": str(CPU_SPEC), "HARNESS_NPROC": "2",
                      "HARNESS_RESULTS_ROOT": str(tmp_path)}
    job = local_slurm.sbatch(REPO / "slurm" / slurm.MULTI, "-o", str(tmp_path / "%j.out"),
                             env=env, cwd=REPO)
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout
    s = _summary(tmp_path / f"slurm-{job}")
    assert s["complete"] is True and s["world_size"] == 4
    by_node: dict[str, list[int]] = {}
    for r in s["ranks"]:
        by_node.setdefault(r["node"], []).append(r["rank"])
    assert sorted(by_node) == sorted(local_slurm.nodes)
    assert sorted(map(sorted, by_node.values())) == [[0, 1], [2, 3]]   # 2 consecutive ranks per node


@pytest.mark.slurm
def test_slo_miss_is_exit_1_and_bad_spec_is_exit_2(local_slurm, tmp_path):
    env = FAKE_ENV | {"HARNESS_SPEC": str(CPU_SPEC), "HARNESS_NPROC": "1",
                      "HARNESS_RESULTS_ROOT": str(tmp_path), "FAKE_RUN_SLO_PASS": "0"}
    job = local_slurm.sbatch(REPO / "slurm" / slurm.SINGLE, "-o", str(tmp_path / "%j.out"),
                             env=env, cwd=REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text(CPU_SPEC.read_text().replace("gpus_per_node: 8", "gpus_per_node: 0"))
    job2 = local_slurm.sbatch(REPO / "slurm" / slurm.SINGLE, "-o", str(tmp_path / "%j.out"),
                              env=env | {"HARNESS_SPEC": str(bad)}, cwd=REPO)
    res, res2 = local_slurm.wait(job), local_slurm.wait(job2)
    assert (res.state, res.exit_code) == ("FAILED", 1), res.stdout
    assert _summary(tmp_path / f"slurm-{job}")["complete"] is True
    assert (res2.state, res2.exit_code) == ("FAILED", 2), res2.stdout
    assert "cluster.gpus_per_node: must be >= 1" in res2.stdout and not (tmp_path / f"slurm-{job2}").exists()


@pytest.mark.slurm
@pytest.mark.parametrize("scancel_args", [["--signal=TERM", "--batch"], ["--signal=TERM"]],
                         ids=["batch-shell", "job-steps"])
def test_sigterm_leaves_partial_results(local_slurm, tmp_path, scancel_args):
    env = FAKE_ENV | {"HARNESS_SPEC": str(CPU_SPEC), "HARNESS_NPROC": "2",
                      "HARNESS_RESULTS_ROOT": str(tmp_path), "FAKE_RUN_SECONDS": "120"}
    job = local_slurm.sbatch(REPO / "slurm" / slurm.MULTI, "-o", str(tmp_path / "%j.out"),
                             env=env, cwd=REPO)
    run_dir = tmp_path / f"slurm-{job}"
    deadline = time.monotonic() + 60
    while "ranks" not in (_summary(run_dir) if (run_dir / "summary.json").exists() else {}):
        assert time.monotonic() < deadline, local_slurm.job_fields(job)
        time.sleep(0.2)
    t0 = time.monotonic()
    local_slurm.client("scancel", *scancel_args, job)
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("FAILED", 3), res.stdout
    assert time.monotonic() - t0 < 30          # stopped, not run to its 120 s end
    s = _summary(run_dir)
    assert s["complete"] is False and "SIGTERM" in s["incomplete_reason"]


@pytest.mark.slurm
def test_nightly_baseline_then_regression_and_resubmission(local_slurm, tmp_path):
    root = tmp_path / "nightly"
    env = FAKE_ENV | {"HARNESS_SPEC": str(CPU_SPEC), "HARNESS_NPROC": "1",
                      "HARNESS_RESULTS_ROOT": str(root), "HARNESS_HOME": str(REPO),
                      "HARNESS_RESUBMIT": "now+1hour"}
    nightly = REPO / "slurm" / slurm.NIGHTLY
    first = local_slurm.sbatch(nightly, "-o", str(tmp_path / "%j.out"), "-t", "5:00",
                               env=env | {"FAKE_RUN_TPS": "100"}, cwd=REPO)
    res = local_slurm.wait(first)
    # the first night queued the next one, one hour ahead, never concurrent with another
    queued = local_slurm.client("squeue", "-h", "-n", "harness-nightly", "-t", "PENDING",
                                "-o", "%i").stdout.split()
    try:
        assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout
        assert os.readlink(f"{root}-baseline") == str(root / f"slurm-{first}")
        assert len(queued) == 1, res.stdout
        nxt = local_slurm.job_fields(queued[0])
        eligible = datetime.datetime.fromisoformat(nxt["EligibleTime"]) - datetime.datetime.now()
        assert 50 * 60 < eligible.total_seconds() <= 3600, nxt["EligibleTime"]
        assert nxt["TimeLimit"] == "00:05:00" and nxt["Reason"] in ("BeginTime", "Dependency")
        assert f"next night queued: job {queued[0]}" in res.stdout

        # same throughput: no regression; half: regression -> exit 1
        same = local_slurm.sbatch(nightly, "-o", str(tmp_path / "%j.out"),
                                  env=env | {"FAKE_RUN_TPS": "99", "HARNESS_RESUBMIT": ""}, cwd=REPO)
        worse = local_slurm.sbatch(nightly, "-o", str(tmp_path / "%j.out"), f"--dependency=afterany:{same}",
                                   env=env | {"FAKE_RUN_TPS": "50", "HARNESS_RESUBMIT": ""}, cwd=REPO)
        r_same, r_worse = local_slurm.wait(same), local_slurm.wait(worse)
    finally:
        for j in queued:
            local_slurm.client("scancel", j, check=False)
    assert (r_same.state, r_same.exit_code) == ("COMPLETED", 0), r_same.stdout
    assert (r_worse.state, r_worse.exit_code) == ("FAILED", 1), r_worse.stdout
    assert "REGRESSION" in r_worse.stdout
    history = (root / "history.csv").read_text().splitlines()
    assert history[0] == "run,output_throughput" and len(history) == 4
