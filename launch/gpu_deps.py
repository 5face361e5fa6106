"""The first step of launch/gpu_check.sh: what the check imports, present or missing.

  gpu_deps.py deps FILE          import everything the check needs -> FILE (JSON); print the missing
  gpu_deps.py needs FILE MOD...  exit 0 if every MOD was present at the deps step, else name the
                                 missing ones and exit 1 (the shell then skips that step)

A lent GPU machine has its own image (no accelerate, psutil or pytest-timeout on the one issue 26
describes) and no network: the check installs nothing, runs every step it can and names why it
skipped the others."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# What the check imports: (module, distribution, what needs it). Required ones gate the steps that
# name them (gpu_check.sh ``needs``); optional ones only change what a step does.
REQUIRED = (
    ("torch", "torch", "every step"),
    ("yaml", "pyyaml", "specs (emulate, run)"),
    ("numpy", "numpy", "emulate, run"),
    ("pyarrow", "pyarrow", "run (parquet tables)"),
    ("pandas", "pandas", "run (tables)"),
    ("transformers", "transformers", "pytest-gpu (the reference model)"),
    ("pytest", "pytest", "pytest-gpu"),
)
OPTIONAL = (
    (
        "pytest_timeout",
        "pytest-timeout",
        "pytest-gpu runs without --timeout (the step's own limit)",
    ),
    ("psutil", "psutil", "/proc stands in (lifelines, process RSS)"),
    ("accelerate", "accelerate", "the run skips accelerate's weight count (its summary says so)"),
    ("pynvml", "nvidia-ml-py", "no NVML telemetry (the run says 'NVML unavailable')"),
    ("matplotlib", "matplotlib", "the run's report has no plots"),
)
HARNESS = (
    "harness.cli",
    "harness.commands.run",
    "harness.commands.emulate",
    "harness.engines.reference.worker",
    "harness.emulate",
    "harness.results.writer",
)


def deps(path: str) -> int:
    """Import everything the check needs; write what is present and what is missing (and why it
    matters) to ``path``; print the missing. Exit 0 whatever is missing: the steps that need a
    missing module are skipped and say so, the others run."""
    import importlib
    import importlib.metadata

    from harness.results.atomic import atomic_write_json

    out: dict = {"present": {}, "missing": {}, "optional_missing": {}, "harness": {}}
    for group, table in (("missing", REQUIRED), ("optional_missing", OPTIONAL)):
        for module, dist, role in table:
            try:
                importlib.import_module(module)
            except Exception as e:  # ImportError, or a broken install
                out[group][module] = f"{dist} ({role}): {type(e).__name__}: {e}"
                continue
            try:
                out["present"][module] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out["present"][module] = "?"
    for module in HARNESS:
        try:
            importlib.import_module(module)
            out["harness"][module] = "ok"
        except Exception as e:
            out["harness"][module] = f"{type(e).__name__}: {e}"
    atomic_write_json(path, out)
    for module, why in out["missing"].items():
        print(f"MISSING   {module}: {why}")
    for module, why in out["optional_missing"].items():
        print(f"optional  {module}: {why}")
    for module, status in out["harness"].items():
        if status != "ok":
            print(f"BROKEN    {module}: {status}")
    print(f"present   {', '.join(f'{k} {v}' for k, v in out['present'].items())}")
    return 0


def needs(path: str, *modules: str) -> int:
    """Exit 0 when every module was present at the deps step (or the deps step left no file);
    else print the missing ones and exit 1."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        found = None
    if found is None:
        return 0
    gone = [m for m in modules if m in found["missing"] or m in found["optional_missing"]]
    if gone:
        print("missing: " + ", ".join(gone))
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "deps":
        return deps(argv[1])
    if len(argv) >= 3 and argv[0] == "needs":
        return needs(argv[1], *argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
