"""A repeats folder (``harness run --repeats N``) as one side of ``harness compare``: its first
complete run stands for the system (model, layout, spec), with every numeric metric replaced by the
geometric mean over its complete runs; the runs' summaries give the run-to-run variation that
``harness.verdicts.change.runs_interval`` puts each row's interval on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.errors import UsageError
from harness.results.reader import Run, load_run
from harness.spec.json_file import read_json_file
from harness.verdicts.repeats import REPEATS_FILE, geometric_means

SECTIONS = ("metrics", "measured", "client")


def is_repeats(path: str | Path) -> bool:
    return (Path(path) / REPEATS_FILE).is_file()


def load_side(path: str | Path) -> tuple[Run, list[dict] | None]:
    """(the run, None) for a run directory; (a run standing for the folder, every complete run's
    summary) for a repeats folder."""
    if not is_repeats(path):
        return load_run(path, ("requests",)), None
    root = Path(path)
    doc = read_json_file(root / REPEATS_FILE, None, "run `harness run --repeats N` again")
    runs = [
        load_run(root / r["dir"], tables=False)
        for r in doc.get("runs") or []
        if isinstance(r, dict) and r.get("complete") and (root / r["dir"]).is_dir()
    ]
    if not runs:
        raise UsageError(f"{root}: a repeats folder with no complete run; run it again")
    summaries = [r.summary for r in runs]
    combined = dict(summaries[0])
    for section in SECTIONS:
        if isinstance(combined.get(section), dict):
            combined[section] = {**combined[section], **geometric_means(summaries, section)}
    return replace(runs[0], path=root, summary=combined), summaries
