"""``harness run CONFIG --repeats N``: the spec run N times, each a normal run directory
(``<results-dir>/run-01`` …) with its own report, then ``repeats.json`` and ``report.md`` across
them (``harness.verdicts.repeats``; every run listed).

The runs go through the engine's ``probes`` (as a capacity search's do): the reference engine
starts a torchrun world per run; ``kind: vllm`` launches one server and reuses it for every run;
``kind: openai`` drives the given server each time. ``repeats.json`` says which (``served_by``).

A run that fails ends the repeats (exit 3; the runs before it stay). Otherwise the exit code is the
verdict across repeats: PASS 0, FAIL 1, INCONCLUSIVE 4.
"""

from __future__ import annotations

import sys

from harness.commands.run_options import RunOptions
from harness.errors import EXIT_INCOMPLETE

SERVED_BY = {
    "reference": "a torchrun world per run: nothing is shared between runs",
    "vllm": (
        "one vLLM server, launched once and reused by every run; vLLM's prefix caching is its "
        "default (the harness's command line does not set it), so from the second run on the "
        "same prompts may hit the cache"
    ),
    "openai": "the given server (engine.url), reused as it is by every run",
}


def run_repeats(spec, options: RunOptions, entry) -> int:
    from harness.commands.run_exit import exit_code, verdict_exit_code
    from harness.commands.run_outputs import write_outputs
    from harness.report.repeats_table import repeats_markdown
    from harness.results.atomic import atomic_write_json, atomic_write_text
    from harness.results.summary import confidence_of
    from harness.results.writer import check_new_run_dir, default_run_dir, read_summary_file
    from harness.verdicts.repeats import REPEATS_FILE, repeats_summary

    launch, n = options.launch, options.repeats
    root = check_new_run_dir(launch.results_dir or default_run_dir(spec.name + "-repeats"))
    served_by = SERVED_BY.get(spec.engine.kind, spec.engine.kind)
    dirs, summaries, failed = [], [], False

    def write() -> dict:
        doc = repeats_summary(summaries, dirs, confidence_of(spec), served_by)
        atomic_write_json(root / REPEATS_FILE, doc)
        atomic_write_text(root / "report.md", repeats_markdown(doc))
        return doc

    with entry.probes(spec, launch) as serve:
        for i in range(1, n + 1):
            run_dir = root / f"run-{i:02d}"
            print(f"harness run: repeat {i} of {n} -> {run_dir}", file=sys.stderr, flush=True)
            rc = exit_code(run_dir, serve(spec, launch.for_run(run_dir)))
            write_outputs(run_dir, options.outputs)
            dirs.append(run_dir.name)
            summaries.append(read_summary_file(run_dir) or {"complete": False})
            write()
            if rc == EXIT_INCOMPLETE:
                failed = True
                break
    doc = write()
    print(repeats_markdown(doc))
    print(f"harness run: repeats {doc['verdict']}; results in {root}", file=sys.stderr)
    return EXIT_INCOMPLETE if failed else verdict_exit_code(doc["verdict"])
