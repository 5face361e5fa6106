"""Slurm batch scripts: lint, rendering, and real jobs on a private local cluster;
and the same two-node run started as two torchrun agents without Slurm.

The cluster (tests/slurm_cluster.py) has two nodes on this host, so the two-node
job really runs one torchrun agent per Slurm node meeting at a c10d rendezvous.
Real jobs run the CPU demo spec (8 gloo ranks, TP2-PP4) shortened to 8 requests
with an SLO it always meets, so the exit code is 0 unless something broke; its
generated tokens are compared with a plain single-node ``harness run``.
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
from harness.commands import slurm_render as slurm  # noqa: E402
from harness.errors import UsageError  # noqa: E402
from harness.spec.spec import load_spec
from slurm_cluster import local_slurm  # noqa: E402,F401  (fixture)

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
    block = text[text.index("# Pinned for this spec") : text.index("set -uo pipefail")]
    return dict(
        ln.removeprefix("export ").split("=", 1)
        for ln in block.splitlines()
        if ln.startswith("export ")
    )


def test_render_one_node_cpu_spec_uses_single_node_script():
    spec = load_spec(CPU_SPEC)
    text = slurm.render(spec, CPU_SPEC, partition="debug", account="proj1", time="00:30:00")
    assert _sbatch_lines(text) == [
        "--job-name=harness-tiny-tp2-pp4-cpu",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--exclusive",
        "--signal=B:TERM@120",
        "--output=results/slurm-%j.out",
        "--partition=debug",
        "--account=proj1",
        "--time=00:30:00",
    ]  # no GPUs on the CPU twin
    assert _pinned(text) == {
        "HARNESS_SPEC": str(CPU_SPEC),
        "HARNESS_HOME": str(REPO),
        "HARNESS_PYTHON": PY,
        "HARNESS_NPROC": "8",
    }
    assert "--standalone" in text and "--rdzv-endpoint" not in text
    # everything after the pinned block is the template's body, unchanged
    template = (REPO / "slurm" / slurm.SINGLE).read_text()
    tail = template[template.index("set -uo pipefail") :]
    assert text.endswith(tail)


def test_render_two_node_gpu_spec_uses_multi_node_script(tmp_path):
    spec = load_spec(GPU_SPEC, ["cluster.nodes=2", "cluster.gpus_per_node=4"])
    text = slurm.render(spec, GPU_SPEC, results_dir=tmp_path / "res", python="/opt/venv/bin/python")
    assert _sbatch_lines(text) == [
        "--job-name=harness-llama3-70b-tp2-pp4-h100",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--exclusive",
        "--signal=B:TERM@120",
        f"--output={tmp_path}/res/slurm-%j.out",
        "--gpus-per-node=4",
    ]
    assert _pinned(text) == {
        "HARNESS_SPEC": str(GPU_SPEC),
        "HARNESS_HOME": str(REPO),
        "HARNESS_PYTHON": "/opt/venv/bin/python",
        "HARNESS_NPROC": "4",
        "HARNESS_RESULTS_ROOT": f"{tmp_path}/res",
    }
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
    texts = [
        slurm.render(load_spec(CPU_SPEC), CPU_SPEC, partition="p"),
        slurm.render(spec2, GPU_SPEC, time="1-00:00:00"),
        slurm.render(spec2, GPU_SPEC, nightly=True, account="a b".replace(" ", "")),
    ]
    paths = []
    for i, t in enumerate(texts):
        paths.append(tmp_path / f"s{i}.sbatch")
        paths[-1].write_text(t)
    proc = subprocess.run([_shellcheck(), *map(str, paths)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"time": "1 hour"}, "--time"),
        ({"partition": "gpu; rm -rf"}, "--partition"),
        ({"account": "a,b"}, "--account"),
        ({"baseline": "x"}, "--baseline"),
    ],
)
def test_render_rejects_bad_options(kwargs, field):
    with pytest.raises(UsageError, match=f"^{field}: "):
        slurm.render(load_spec(CPU_SPEC), CPU_SPEC, **kwargs)


def test_submit_without_sbatch_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="^--submit: sbatch not found"):
        slurm.submit("#!/bin/bash\n", env={"PATH": str(tmp_path)})


def test_output_dirs_reads_output_and_error():
    text = "#!/bin/bash\n#SBATCH --output=a/b/x-%j.out\n#SBATCH -e c/err\n#SBATCH --nodes=1\n"
    assert slurm.output_dirs(text) == [Path("a/b"), Path("c")]


# ------------------------------------------------------------------ real runs

# 8 requests instead of 24; an SLO that any complete run meets (exit 0); tokens recorded.
RUN_ARGS = [
    "--set",
    "run.record_tokens=true",
    "--set",
    "workload.num_requests=8",
    "--set",
    "slo.targets=[throughput_rps>=0.001]",
]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _tokens(run_dir: Path) -> dict[int, list[int]]:
    import pyarrow.parquet as pq

    t = pq.read_table(run_dir / "requests.parquet", columns=["request_id", "tokens"]).to_pydict()
    return dict(zip(t["request_id"], t["tokens"]))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The CPU demo as one plain ``harness run`` (torchrun --standalone, 8 ranks)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(
        [PY, "-m", "harness.cli", "run", str(CPU_SPEC), "--results-dir", str(run_dir), *RUN_ARGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tokens = _tokens(run_dir)
    measured = {k: v for k, v in tokens.items() if k < 8}  # warm-up requests have ids from 1e9
    # output_len 16
    assert sorted(measured) == list(range(8)) and all(len(v) == 16 for v in measured.values())
    return run_dir


@pytest.mark.slow
def test_two_torchrun_agents_match_single_node(reference_run, tmp_path):
    """Two torchrun agents ("nodes", 4 ranks each) at a c10d rendezvous on 127.0.0.1: agent 0
    holds ranks 0-3 = pipeline stages 0-1, agent 1 ranks 4-7 = stages 2-3 (TP innermost), so
    activations cross the agent boundary. Greedy tokens must equal the single-agent run's."""
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = [
        subprocess.Popen(
            [
                PY,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=4",
                "--max-restarts=0",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                "--rdzv-id=two-agents",
                "-m",
                "harness",
                "run",
                str(CPU_SPEC),
                "--results-dir",
                str(tmp_path / "two"),
                *RUN_ARGS,
            ],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outs = [a.communicate(timeout=300)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-2000:] for o in outs)
    s = _summary(tmp_path / "two")
    assert s["complete"] is True and s["layout"]["pp"] == 4 and s["hardware"]["total_gpus"] == 8
    assert _tokens(tmp_path / "two") == _tokens(reference_run)


@pytest.mark.slow
@pytest.mark.slurm
def test_single_node_job_rendered_and_submitted(local_slurm, reference_run, tmp_path):
    text = slurm.render(load_spec(CPU_SPEC), CPU_SPEC, results_dir=tmp_path / "res", time="5:00")
    env = local_slurm.env | {"HARNESS_RUN_ARGS": " ".join(RUN_ARGS)}
    job = slurm.submit(text, env=env, cwd=tmp_path)  # also creates res/ for the log
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout[-3000:]
    run_dir = tmp_path / "res" / f"slurm-{job}"
    s = _summary(run_dir)
    assert (s["complete"], s["verdict"], s["hardware"]["total_gpus"]) == (True, "PASS", 8)
    assert json.loads((run_dir / "env.json").read_text())["slurm_job_id"] == job
    assert (
        tmp_path / "res" / f"slurm-{job}.out"
    ).read_text() == res.stdout  # log where --output said
    assert _tokens(run_dir) == _tokens(reference_run)


@pytest.mark.slow
@pytest.mark.slurm
def test_two_node_job_runs_one_agent_per_node(local_slurm, reference_run, tmp_path):
    env = {
        "HARNESS_SPEC": str(CPU_SPEC),
        "HARNESS_NPROC": "4",
        "HARNESS_PYTHON": PY,
        "HARNESS_RESULTS_ROOT": str(tmp_path),
        "HARNESS_RUN_ARGS": " ".join(RUN_ARGS),
    }
    job = local_slurm.sbatch(
        REPO / "slurm" / slurm.MULTI,
        "-t",
        "5:00",
        "-o",
        str(tmp_path / "%j.out"),
        env=env,
        cwd=REPO,
    )
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout[-3000:]
    n1, n2 = local_slurm.nodes
    assert f"node {n1} (" in res.stdout and f"node {n2} (" in res.stdout  # one agent on each
    assert f"rendezvous {n1}:" in res.stdout  # at the first host
    s = _summary(tmp_path / f"slurm-{job}")
    assert (s["complete"], s["verdict"], s["hardware"]["total_gpus"]) == (True, "PASS", 8)
    assert _tokens(tmp_path / f"slurm-{job}") == _tokens(reference_run)


@pytest.mark.slow
@pytest.mark.slurm
def test_sigterm_to_the_batch_shell_leaves_partial_results(local_slurm, tmp_path):
    """``scancel --signal=TERM --batch`` = what ``--signal=B:TERM@120`` does before the time
    limit. 24 requests at 1 req/s: the run is still serving when the signal comes."""
    env = {
        "HARNESS_SPEC": str(CPU_SPEC),
        "HARNESS_NPROC": "4",
        "HARNESS_PYTHON": PY,
        "HARNESS_RESULTS_ROOT": str(tmp_path),
        "HARNESS_RUN_ARGS": "--set workload.rate_rps=1",
    }
    job = local_slurm.sbatch(
        REPO / "slurm" / slurm.MULTI, "-o", str(tmp_path / "%j.out"), env=env, cwd=REPO
    )
    run_dir = tmp_path / f"slurm-{job}"
    deadline = time.monotonic() + 120
    while not (run_dir / "summary.json").exists():  # written when the run starts
        assert time.monotonic() < deadline, local_slurm.job_fields(job)
        time.sleep(0.2)
    t0 = time.monotonic()
    local_slurm.client("scancel", "--signal=TERM", "--batch", job)
    res = local_slurm.wait(job)
    assert (res.state, res.exit_code) == ("FAILED", 3), res.stdout[-3000:]
    assert time.monotonic() - t0 < 30, "the run was not stopped"
    s = _summary(run_dir)
    assert (s["complete"], s["verdict"]) == (False, "INCOMPLETE")
    assert "SIGTERM" in s["incomplete_reason"], s["incomplete_reason"]
    assert "asking the run to stop" in res.stdout


# ------------------------------------------------------------------ verdicts and the nightly job
# tests/fake_run.py stands in for the run: it copies a real run dir (edited by the test),
# so these jobs take seconds and their numbers are chosen.

FAKE_ENV = {
    "HARNESS_RUN_MODULE": "fake_run",
    "PYTHONPATH": str(TESTS),
    "HARNESS_PYTHON": PY,
    "HARNESS_SPEC": str(CPU_SPEC),
    "HARNESS_NPROC": "1",
}


def _planted(src: Path, dst: Path, *, speed: float = 1.0, verdict: str | None = None) -> Path:
    """A copy of run ``src`` whose throughputs are ``speed`` x and latencies 1/``speed`` x: the
    summary's numbers and the requests table's times (compare reads both)."""
    import pandas as pd

    shutil.copytree(src, dst)
    if speed != 1.0:
        req = pd.read_parquet(dst / "requests.parquet")
        for col in ("arrival_s", "admitted_s", "first_token_s", "finish_s", "sent_s"):
            req[col] = req[col] / speed
        req["token_times_s"] = [[t / speed for t in ts] for ts in req["token_times_s"]]
        req.to_parquet(dst / "requests.parquet", index=False)
    s = _summary(dst)
    for k, v in s["metrics"].items():
        if not isinstance(v, (int, float)) or k.startswith("warmup"):
            continue
        if k.endswith(("_throughput", "_goodput", "_per_s")):
            s["metrics"][k] = v * speed
        elif k.endswith(("_ms", "_s")):  # the duration too: compare counts the rates over it
            s["metrics"][k] = v / speed
    if verdict is not None:
        s["verdict"] = verdict
        for row in s["slo"]:
            row["passed"] = verdict == "PASS"
            row["verdict"] = verdict
    (dst / "summary.json").write_text(json.dumps(s))
    return dst


@pytest.mark.slow
@pytest.mark.slurm
def test_slo_miss_is_exit_1_and_bad_spec_is_exit_2(local_slurm, reference_run, tmp_path):
    failed = _planted(reference_run, tmp_path / "failed", verdict="FAIL")
    env = FAKE_ENV | {"HARNESS_RESULTS_ROOT": str(tmp_path), "FAKE_RUN_COPY_FROM": str(failed)}
    job = local_slurm.sbatch(
        REPO / "slurm" / slurm.SINGLE, "-o", str(tmp_path / "%j.out"), env=env, cwd=REPO
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(CPU_SPEC.read_text().replace("gpus_per_node: 8", "gpus_per_node: 0"))
    job2 = local_slurm.sbatch(
        REPO / "slurm" / slurm.SINGLE,
        "-o",
        str(tmp_path / "%j.out"),
        env=env | {"HARNESS_SPEC": str(bad)},
        cwd=REPO,
    )
    res, res2 = local_slurm.wait(job), local_slurm.wait(job2)
    assert (res.state, res.exit_code) == ("FAILED", 1), res.stdout
    assert _summary(tmp_path / f"slurm-{job}")["verdict"] == "FAIL"
    assert (res2.state, res2.exit_code) == ("FAILED", 2), res2.stdout
    assert "cluster.gpus_per_node: must be >= 1" in res2.stdout
    assert not (tmp_path / f"slurm-{job2}").exists()  # rejected before any rank started


@pytest.mark.slow
@pytest.mark.slurm
def test_nightly_baseline_then_regression_and_resubmission(local_slurm, reference_run, tmp_path):
    root = tmp_path / "nightly"
    # a tenth of the throughput: 8 requests leave a halving inconclusive (rate interval about
    # [-88, +107] %), a tenth is decided with room ([-98, -59] % on a quiet host)
    slower = _planted(reference_run, tmp_path / "slower", speed=0.1)
    env = FAKE_ENV | {
        "HARNESS_RESULTS_ROOT": str(root),
        "HARNESS_HOME": str(REPO),
        "FAKE_RUN_COPY_FROM": str(reference_run),
    }
    nightly = REPO / "slurm" / slurm.NIGHTLY
    out = ["-o", str(tmp_path / "%j.out")]
    first = local_slurm.sbatch(
        nightly, *out, "-t", "5:00", env=env | {"HARNESS_RESUBMIT": "now+1hour"}, cwd=REPO
    )
    res = local_slurm.wait(first)
    queued = local_slurm.client(
        "squeue", "-h", "-n", "harness-nightly", "-t", "PENDING", "-o", "%i"
    ).stdout.split()
    try:
        # night 1: no baseline yet, so it becomes the baseline; it queued night 2 an hour ahead
        assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout
        assert os.readlink(f"{root}-baseline") == str(root / f"slurm-{first}")
        assert len(queued) == 1 and f"next night queued: job {queued[0]}" in res.stdout
        nxt = local_slurm.job_fields(queued[0])
        eligible = datetime.datetime.fromisoformat(nxt["EligibleTime"]) - datetime.datetime.now()
        assert 50 * 60 < eligible.total_seconds() <= 3600, nxt["EligibleTime"]
        assert nxt["TimeLimit"] == "00:05:00" and nxt["Reason"] in ("BeginTime", "Dependency")
        # night 2: same numbers, no regression; night 3: a tenth of the throughput, a regression
        same = local_slurm.sbatch(nightly, *out, env=env, cwd=REPO)
        worse = local_slurm.sbatch(
            nightly,
            *out,
            f"--dependency=afterany:{same}",
            env=env | {"FAKE_RUN_COPY_FROM": str(slower)},
            cwd=REPO,
        )
        r_same, r_worse = local_slurm.wait(same), local_slurm.wait(worse)
    finally:
        for j in queued:
            local_slurm.client("scancel", j, check=False)
    assert (r_same.state, r_same.exit_code) == ("COMPLETED", 0), r_same.stdout
    assert (r_worse.state, r_worse.exit_code) == ("FAILED", 1), r_worse.stdout
    assert "REGRESSION against" in r_worse.stdout
    history = (root / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3, history  # header + three nights


@pytest.mark.slow
@pytest.mark.slurm
def test_a_vllm_spec_job_is_one_harness_run_process_never_torchrun(local_slurm, tmp_path):
    """#27 item 1. A vLLM spec (fake interpreters answer the build probe; fake_run stands in for
    the run): the rendered single-node job and the nightly job start ONE process, outside any
    torchrun world, and exit 0; with the real `harness run` the vLLM engine's own preflight runs
    (a CUDA build for this CPU spec: exit 2, its one line in the log, no run dir); the multi-node
    script refuses the spec with exit 2."""
    import yaml

    from test_vllm_node import CPU_BUILD, CUDA_BUILD, _raw, fake_python

    spec_path = tmp_path / "vllm.yaml"
    spec_path.write_text(yaml.safe_dump(_raw(tmp_path, fake_python(tmp_path, CPU_BUILD))))
    cuda_spec = tmp_path / "vllm-cuda.yaml"
    cuda_py = fake_python(tmp_path, CUDA_BUILD, "cuda-python")
    cuda_spec.write_text(yaml.safe_dump(_raw(tmp_path, cuda_py)))
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "summary.json").write_text('{"complete": true, "verdict": "PASS"}')
    record = tmp_path / "record.jsonl"
    fake = {
        "HARNESS_RUN_MODULE": "fake_run",
        "PYTHONPATH": str(TESTS),
        "FAKE_RUN_COPY_FROM": str(planted),
        "FAKE_RUN_RECORD": str(record),
    }
    text = slurm.render(load_spec(spec_path), spec_path, results_dir=tmp_path / "res")
    single = slurm.submit(text, env=local_slurm.env | fake, cwd=tmp_path)
    plain = {"HARNESS_PYTHON": PY, "HARNESS_RESULTS_ROOT": str(tmp_path / "plain")}
    refused = local_slurm.sbatch(
        REPO / "slurm" / slurm.SINGLE,
        "-o",
        str(tmp_path / "%j.out"),
        env=plain | {"HARNESS_SPEC": str(cuda_spec)},
        cwd=REPO,
    )
    multi = local_slurm.sbatch(
        REPO / "slurm" / slurm.MULTI,
        "-o",
        str(tmp_path / "%j.out"),
        env=plain | {"HARNESS_SPEC": str(spec_path)},
        cwd=REPO,
    )
    res = local_slurm.wait(single)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout[-3000:]
    assert "one harness run process (engine serves from it; no torchrun)" in res.stdout
    assert [json.loads(ln) for ln in record.read_text().splitlines()] == [
        {"RANK": None, "WORLD_SIZE": None}
    ]
    res = local_slurm.wait(refused)
    assert (res.state, res.exit_code) == ("FAILED", 2), res.stdout[-3000:]
    assert f"harness run: error: engine.python: {cuda_py} has vLLM's cuda build" in res.stdout
    assert not (tmp_path / "plain" / f"slurm-{refused}" / "summary.json").exists()
    res = local_slurm.wait(multi)
    assert (res.state, res.exit_code) == ("FAILED", 2), res.stdout[-3000:]
    assert "submit slurm/single_node.sbatch" in res.stdout
    record.unlink()
    nightly = local_slurm.sbatch(
        REPO / "slurm" / slurm.NIGHTLY,
        "-o",
        str(tmp_path / "%j.out"),
        env=fake
        | {
            "HARNESS_SPEC": str(spec_path),
            "HARNESS_PYTHON": PY,
            "HARNESS_HOME": str(REPO),
            "HARNESS_RESULTS_ROOT": str(tmp_path / "nightly"),
        },
        cwd=REPO,
    )
    res = local_slurm.wait(nightly)
    assert (res.state, res.exit_code) == ("COMPLETED", 0), res.stdout[-3000:]
    assert "one harness run process" in res.stdout and "this run is now the baseline" in res.stdout
    assert len(record.read_text().splitlines()) == 1
