"""Files a spec names, checked in the launcher before any rank starts (issue 14): checkpoints by
their safetensors headers only (a pickle is never loaded), traces, and the results folder. Each
bad one is one line naming the field, exit 2, and no run folder is made."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from demo_run import DEMO_CONFIG, REPO
from harness import cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, hf, tiny):
    """The tiny model saved by transformers in three safetensors shards (with the index)."""
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    hf.model(tiny, seed=5).save_pretrained(d, safe_serialization=True, max_shard_size="500KB")
    assert len(list(d.glob("*.safetensors"))) >= 2
    return d


def _run(capsys, tmp_path, *sets):
    """`harness run` of the demo with overrides: (exit code, stderr lines); no run folder may
    appear."""
    argv = ["run", str(DEMO_CONFIG), "--results-dir", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "run").exists()
    return rc, err


def _broken(checkpoint, tmp_path, how):
    d = tmp_path / "ckpt"
    shutil.copytree(checkpoint, d)
    index_p = d / "model.safetensors.index.json"
    index = json.loads(index_p.read_text())
    shard = d / index["weight_map"]["model.layers.3.mlp.up_proj.weight"]
    if how == "empty folder":
        shutil.rmtree(d)
        d.mkdir()
    elif how == "missing shard":
        shard.unlink()
    elif how == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif how == "weight_map as a list":
        index_p.write_text(json.dumps({"metadata": {}, "weight_map": list(index["weight_map"])}))
    elif how == "missing tensor":
        del index["weight_map"]["model.layers.3.mlp.up_proj.weight"]
        index_p.write_text(json.dumps(index))
    elif how == "index names the wrong file":
        other = next(f for f in index["weight_map"].values() if f != shard.name)
        index["weight_map"]["model.layers.3.mlp.up_proj.weight"] = other
        index_p.write_text(json.dumps(index))
    return d


CASES = [
    ("empty folder", "has no config.json"),
    ("missing shard", "is listed in model.safetensors.index.json but missing from"),
    ("truncated shard", "is not a complete safetensors file (Error while deserializing header"),
    (
        "weight_map as a list",
        "weight_map must map tensor names to file names, got ['lm_head.weight'",
    ),
    ("missing tensor", "tensor model.layers.3.mlp.up_proj.weight is missing from the checkpoint"),
    (
        "index names the wrong file",
        "tensor model.layers.3.mlp.up_proj.weight is missing from model-0000",
    ),
]


@pytest.mark.parametrize("how, needle", CASES, ids=[c[0] for c in CASES])
def test_a_bad_checkpoint_is_refused_by_its_headers(checkpoint, tmp_path, capsys, how, needle):
    rc, err = _run(capsys, tmp_path, f"model.checkpoint={_broken(checkpoint, tmp_path, how)}")
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert err[0].startswith("harness run: error: model.c")


def test_a_checkpoint_of_another_shape_names_the_tensor(tmp_path, capsys, hf, tiny):
    hf.model(dataclasses.replace(tiny, vocab=512), seed=1).save_pretrained(tmp_path / "other")
    capsys.readouterr()  # transformers' progress bar
    rc, err = _run(capsys, tmp_path, f"model.checkpoint={tmp_path / 'other'}")
    assert rc == 2 and err == [
        "harness run: error: model.checkpoint: tensor model.embed_tokens.weight in "
        "model.safetensors has shape [512, 64], the model config needs [256, 64]; the "
        "checkpoint does not match the config"
    ]


class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_checkpoint_is_never_loaded(checkpoint, tmp_path, capsys):
    import pickle

    d = tmp_path / "pt"
    d.mkdir()
    shutil.copy(checkpoint / "config.json", d / "config.json")
    marker = tmp_path / "unpickled"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    rc, err = _run(capsys, tmp_path, f"model.checkpoint={d}")
    assert (
        rc == 2
        and len(err) == 1
        and "holds pytorch_model.bin (a pickle) and no safetensors; convert it to safetensors"
        in err[0]
    )
    assert not marker.exists()


def test_a_good_checkpoint_passes_plan_and_the_checks(checkpoint, capsys):
    from harness.spec.checkpoint import check_checkpoint
    from harness.spec.spec import load_spec

    spec = load_spec(DEMO_CONFIG, [f"model.checkpoint={checkpoint}"])
    check_checkpoint(spec.model.checkpoint, spec.shape)  # no error
    assert cli.main(["plan", str(DEMO_CONFIG), "--set", f"model.checkpoint={checkpoint}"]) == 0


@pytest.mark.parametrize(
    "content, needle",
    [
        (bytes(range(256)) * 4, "is not UTF-8 text (a binary file?)"),
        (b"", "holds no requests"),
        (b"\n\n   \n", "holds no requests"),
    ],
    ids=["binary", "empty", "blank lines"],
)
def test_a_bad_trace_is_refused_by_plan_and_run(tmp_path, capsys, content, needle):
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(content)
    rc, err = _run(capsys, tmp_path, f"workload.trace={trace}")
    assert (
        rc == 2 and len(err) == 1 and f"workload.trace: {trace} " in err[0] and needle in err[0]
    ), err
    assert cli.main(["plan", str(DEMO_CONFIG), "--set", f"workload.trace={trace}"]) == 2
    assert needle in capsys.readouterr().err


def test_a_trace_cut_to_nothing_by_duration(tmp_path, capsys):
    trace = tmp_path / "late.jsonl"
    trace.write_text('{"arrival_s": 50, "input_len": 16, "output_len": 4}\n')
    rc, err = _run(capsys, tmp_path, f"workload.trace={trace}", "workload.duration_s=10")
    assert (
        rc == 2
        and "workload.duration_s: no request of" in err[0]
        and "arrives before 10 s" in err[0]
    )


def test_a_results_dir_that_is_a_file_or_holds_files_is_refused_and_kept(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    assert cli.main(["run", str(DEMO_CONFIG), "--results-dir", str(f)]) == 2
    assert f"--results-dir: {f} is a file; give a new folder" in capsys.readouterr().err
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("keep me")
    assert cli.main(["run", str(DEMO_CONFIG), "--results-dir", str(d)]) == 2
    assert "already holds files but no run; give a new or empty folder" in capsys.readouterr().err
    assert [p.name for p in d.iterdir()] == ["todo.txt"] and (
        d / "todo.txt"
    ).read_text() == "keep me"


def _as_user(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """A CLI call as an unprivileged user (root ignores file modes: drop to nobody with setpriv)."""
    drop = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip(
                "running as root without util-linux setpriv: cannot drop privileges to test file "
                "modes"
            )
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for need in (REPO, Path(sys.executable).parent):
            if not all(
                p.stat().st_mode & stat.S_IXOTH for p in (need.resolve(), *need.resolve().parents)
            ):
                pytest.skip(
                    f"{need} sits below a folder others cannot enter (e.g. a mktemp -d clone, "
                    f"0700): "
                    "an unprivileged user cannot run the harness from it"
                )
    return subprocess.run(
        [*drop, sys.executable, "-m", "harness.cli", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HOME=str(cwd)),
    )


def test_read_only_results_dir_and_unreadable_config():
    base = Path(tempfile.mkdtemp(prefix="harness-perm-"))  # /tmp/..., not pytest's 0700 folders
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        r = _as_user("run", str(DEMO_CONFIG), "--results-dir", str(ro / "run"), cwd=base)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"harness run: error: --results-dir: cannot write in {ro / 'run'} (Permission denied); "
            "give a writable folder"
        ]
        secret = base / "secret.yaml"
        secret.write_text(DEMO_CONFIG.read_text())
        secret.chmod(0)
        r = _as_user("plan", str(secret), cwd=base)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"harness plan: error: config: cannot read {secret} (Permission denied); give a "
            f"readable spec YAML"
        ]
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base)
