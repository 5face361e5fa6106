"""What ``harness run`` writes after a run, from its run directory alone: the vLLM-keyed result file
(``--save-result``) and the report (``report.md``/``report.html``, unless ``--no-report``).

Neither changes the run's exit code nor touches its results: a failure is one warning line.

``--save-result`` follows ``vllm bench serve``: it writes the file when the benchmark ran to its
end (requests that failed count as ``failed``), and none when the run was stopped (a signal,
``run.timeout_s``, a failed rank or server): vLLM writes nothing then, and a partial file would
read as a whole benchmark to vLLM's scripts, which know no "incomplete". The run directory keeps
the partial results, marked incomplete. The file goes to ``--result-dir`` (default: the run
directory) / ``--result-filename`` (default vLLM's name,
``harness.results.bench_file.result_filename``).
The report is written for every run that left a summary, complete or not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands.run_options import OutputOptions


def _say(text: str) -> None:
    print(f"harness run: {text}", file=sys.stderr, flush=True)


def write_outputs(run_dir: Path, outputs: OutputOptions) -> None:
    """The result file and the report for the run in ``run_dir``; nothing when it holds no summary
    (rank 0 and its results on another node, or a run that failed before writing any)."""
    from harness.results.writer import read_summary_file

    summary = read_summary_file(run_dir)
    if summary is None:
        return
    if outputs.save_result:
        save_result(run_dir, outputs, summary)
    if outputs.report:
        report(run_dir)


def result_path(run_dir: Path, outputs: OutputOptions, header: dict) -> Path:
    """vLLM's rule: ``--result-dir`` joined with ``--result-filename`` (a path in it is kept)."""
    from harness.results.bench_file import result_filename

    folder = outputs.result_dir or run_dir
    return folder / (outputs.result_filename or result_filename(header))


def save_result(run_dir: Path, outputs: OutputOptions, summary: dict) -> Path | None:
    if not summary.get("complete"):
        _say(
            "--save-result: no result file for an incomplete run (vllm bench serve writes none "
            "when stopped); "
            f"the partial results are in {run_dir}"
        )
        return None
    try:
        from harness.results.bench_file import bench_result_of_run, write_bench_file
        from harness.results.reader import load_run

        result = bench_result_of_run(load_run(run_dir), detailed=outputs.save_detailed)
        path = write_bench_file(result, result_path(run_dir, outputs, result))
    except Exception as e:  # noqa: BLE001 - the run's own results stay as they are, whatever went wrong here
        _say(
            f"warning: --save-result failed ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}); "
            f"the run's results in {run_dir} are intact"
        )
        return None
    _say(f"vLLM result file: {path}")
    return path


def report(run_dir: Path) -> Path | None:
    try:
        from harness.report.render import write_report

        files = write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - as above: a report is a view, never the run's results
        _say(
            f"warning: no report ({type(e).__name__}: {' '.join(str(e).split())[:300]}); the run's "
            f"results "
            f"are intact; retry with: harness report {run_dir}"
        )
        return None
    _say(f"report: {files.html}")
    return files.html
