"""The CLI surface: verbs, one-line errors with exit 2, and nothing written on bad input."""

import subprocess
import sys

from demo_run import REPO
from harness.cli import main


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_run_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: {preset: tiny, dtype: fp32}\ncluster: {gpu: cpu, gpus_per_node: 8}\n"
        "parallel: {tp: 3, pp: 1}\n"
    )
    out = tmp_path / "run"
    p = _cli("run", str(bad), "--results-dir", str(out))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "parallel" in lines[0] and "Traceback" not in p.stderr
    assert not out.exists()


def test_a_results_dir_holding_a_run_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "summary.json").write_text('{"complete": true}')
    assert (
        main(["run", str(REPO / "configs/tiny-tp2-pp4-cpu.yaml"), "--results-dir", str(tmp_path)])
        == 2
    )
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == '{"complete": true}'


def test_bad_override_and_unknown_flag(capsys):
    assert (
        main(["run", str(REPO / "configs/tiny-tp2-pp4-cpu.yaml"), "--set", "run.max_batch=0"]) == 2
    )
    assert "run.max_batch: must be >= 1" in capsys.readouterr().err
    p = _cli("plan", "configs/tiny-tp2-pp4-cpu.yaml", "--no-such-flag")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_slurm_verb_renders_and_rejects_bad_time(capsys):
    assert main(["slurm", str(REPO / "configs/tiny-tp2-pp4-cpu.yaml"), "--time", "00:30:00"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --nodes=1" in text and "#SBATCH --time=00:30:00" in text
    assert main(["slurm", str(REPO / "configs/tiny-tp2-pp4-cpu.yaml"), "--time", "soon"]) == 2
    assert "--time" in capsys.readouterr().err


def test_an_external_engine_spec_inside_a_torchrun_world_is_refused(tmp_path):
    """#27: a vLLM (or openai) spec started as a torchrun rank, as a Slurm script would, exits 2
    with one line instead of serving the reference engine; nothing is written."""
    import os

    from harness.engines.registry import ENGINES
    from harness.spec.engine import KINDS

    assert set(ENGINES) == set(KINDS)  # one registry entry per kind the spec accepts
    world = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    openai = [
        "--set",
        "engine.kind=openai",
        "--set",
        "engine.url=http://127.0.0.1:9",
        "--set",
        "engine.model=m",
    ]
    cases = [("configs/tiny-tp2-pp4-cpu.yaml", openai, "openai")]
    if (REPO / ".venv-vllm" / "bin" / "python").exists():
        from vllm_server import tiny_checkpoint

        ckpt = tiny_checkpoint(tmp_path / "ckpt")
        vllm = ["--set", f"model.checkpoint={ckpt}"]
        cases.append(("configs/tiny-tp2-pp4-vllm-cpu.yaml", vllm, "vllm"))
    for config, extra, kind in cases:
        out = tmp_path / kind
        p = subprocess.run(
            [sys.executable, "-m", "harness", "run", config, "--results-dir", str(out), *extra],
            cwd=REPO,
            env=world,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().splitlines() == [
            f"harness run: error: engine.kind: {kind} serves from the harness run process, not "
            f"from a torchrun world; start `harness run {config}` without torchrun"
        ]
        assert not out.exists()
