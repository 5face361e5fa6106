"""Slurm batch scripts for a spec: render the right one, and submit it.

The scripts live in ``slurm/`` (single_node, multi_node, nightly); they are the
single source of truth and work as they are with environment settings. ``render``
copies one and pins everything the spec decides: node count, GPUs per node (or
processes per node on CPU), job name, absolute spec path, repository, python,
results root, and the optional partition/account/time. Pinned values are
unconditional ``export`` lines, so a stale ``HARNESS_*`` variable in the
submitting shell (sbatch exports the whole environment by default) cannot
redirect a rendered job.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness import REPO_ROOT
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.spec.spec import Spec

REPO = REPO_ROOT
SCRIPTS_DIR = REPO / "slurm"
SINGLE, MULTI, NIGHTLY = "single_node.sbatch", "multi_node.sbatch", "nightly.sbatch"
SIGNAL_LEAD_S = 120  # SIGTERM this long before the time limit: time to write partial results

# Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (and UNLIMITED).
_TIME = re.compile(r"^(\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$")
_NAME = re.compile(r"^[A-Za-z0-9_.+:@-]+$")  # partition / account: no spaces, quotes or commas


def template_name(spec: Spec, nightly: bool = False) -> str:
    """Which script a spec needs: nightly, or by ``cluster.nodes`` (1: single, more: multi)."""
    if nightly:
        return NIGHTLY
    return SINGLE if spec.cluster.nodes == 1 else MULTI


def launch_mode(spec: Spec) -> str:
    """How the job starts the spec's engine: ``torchrun`` (one rank per GPU: the reference engine)
    or ``process`` (``harness run`` itself serves: vllm, openai; inside torchrun it is refused).
    The batch scripts ask this of the spec they are given, so a hand-submitted script and a
    rendered one agree."""
    from harness.engines.registry import engine_entry

    return "torchrun" if engine_entry(spec.engine.kind).world_engine is not None else "process"


def is_cpu(spec: Spec) -> bool:
    return spec.cluster.gpu.strip().lower() == "cpu"


def sbatch_options(
    spec: Spec,
    *,
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    results_root: Path | None = None,
    nightly: bool = False,
) -> list[str]:
    """The ``#SBATCH`` options for a spec (without the ``#SBATCH`` prefix)."""
    for flag, value, pattern, example in (
        ("--partition", partition, _NAME, "gpu"),
        ("--account", account, _NAME, "myproject"),
        ("--time", time, _TIME, "01:30:00 or 1-00:00:00"),
    ):
        if value is not None and not pattern.match(value):
            raise UsageError(f"{flag}: {value!r} is not a valid Slurm value; write e.g. {example}")
    log = f"{results_root or 'results'}/{'nightly' if nightly else 'slurm'}-%j.out"
    opts = [
        f"--job-name={_job_name(spec, nightly)}",
        f"--nodes={spec.cluster.nodes}",
        "--ntasks-per-node=1",
        "--exclusive",
        f"--signal=B:TERM@{SIGNAL_LEAD_S}",
        f"--output={log}",
    ]
    if not is_cpu(spec):
        opts.append(f"--gpus-per-node={spec.cluster.gpus_per_node}")
    if partition:
        opts.append(f"--partition={partition}")
    if account:
        opts.append(f"--account={account}")
    if time:
        opts.append(f"--time={time}")
    return opts


def _job_name(spec: Spec, nightly: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.name)[:60]
    return f"harness-nightly-{safe}" if nightly else f"harness-{safe}"


def render(
    spec: Spec,
    spec_path: str | Path,
    *,
    partition: str | None = None,
    account: str | None = None,
    time: str | None = None,
    results_dir: str | Path | None = None,
    python: str | None = None,
    nightly: bool = False,
    baseline: str | Path | None = None,
) -> str:
    """The batch script text for ``spec`` (loaded from ``spec_path``).

    ``results_dir`` is the root the job's run dirs go under (``<root>/slurm-<jobid>``;
    default: ``results`` for a run, ``results/nightly`` for the nightly job, relative
    to the submit dir). ``python`` defaults to the interpreter running this code;
    ``baseline`` (nightly only) pins the run dir to compare with.
    """
    if baseline is not None and not nightly:
        raise UsageError("--baseline: only the nightly job compares with a baseline; add --nightly")
    root = Path(results_dir).expanduser().resolve() if results_dir is not None else None
    name = template_name(spec, nightly)
    lines = (SCRIPTS_DIR / name).read_text().splitlines()
    body = [ln for ln in lines[1:] if not ln.startswith("#SBATCH")]
    # header comment lines
    at = next(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) - 1
    opts = sbatch_options(
        spec, partition=partition, account=account, time=time, results_root=root, nightly=nightly
    )
    pinned = {
        "HARNESS_SPEC": str(Path(spec_path).expanduser().resolve()),
        "HARNESS_HOME": str(REPO),
        "HARNESS_PYTHON": python or sys.executable,
    }
    if launch_mode(spec) == "torchrun":  # a process-served engine starts no ranks
        pinned["HARNESS_NPROC"] = str(spec.cluster.gpus_per_node)
    if root is not None:
        pinned["HARNESS_RESULTS_ROOT"] = str(root)
    if baseline is not None:
        pinned["HARNESS_BASELINE"] = str(Path(baseline).expanduser().resolve())
    out = [
        lines[0],
        f"# Rendered by `harness slurm` for spec {spec.name!r} from slurm/{name}.",
        *body[:at],
    ]
    out += [f"#SBATCH {o}" for o in opts]
    out += ["", "# Pinned for this spec (they override the environment of the submitting shell):"]
    out += [f"export {k}={shlex.quote(v)}" for k, v in pinned.items()]
    out += body[at:]
    return "\n".join(out) + "\n"


def output_dirs(script_text: str) -> list[Path]:
    """Directories of the script's ``#SBATCH --output``/``--error`` paths (relative to cwd)."""
    dirs = []
    for m in re.finditer(r"^#SBATCH\s+(?:--output|--error|-o|-e)[= ](\S+)", script_text, re.M):
        dirs.append(Path(m.group(1)).parent)
    return dirs


def submit(
    script_text: str,
    *,
    sbatch_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> str:
    """Submit a rendered script with ``sbatch --parsable``; return the job id.

    Creates the directories of the script's --output/--error first: Slurm cannot
    create them and would fail the job without a log.
    """
    sbatch = shutil.which("sbatch", path=(env or {}).get("PATH"))
    if sbatch is None:
        raise UsageError(
            "--submit: sbatch not found on PATH; run on a Slurm login node, "
            "or drop --submit and copy the printed script there"
        )
    base = Path(cwd) if cwd is not None else Path.cwd()
    for d in output_dirs(script_text):
        (base / d).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sbatch, "--parsable", *(sbatch_args or [])],
        input=script_text,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        raise UsageError(f"--submit: sbatch rejected the job: {reason}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise UsageError(f"--submit: sbatch printed {proc.stdout.strip()!r}, not a job id")
    return job_id
