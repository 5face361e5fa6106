"""One module per CLI verb. Each has ``add_arguments(parser)`` and ``main(args) -> int``.

cli.py is the only argv reader: it builds the parsers from these modules and dispatches.

Place: the top of the flow's import order; a verb wires the packages below it together.
May import: every ``harness`` package. ``slurm_render`` renders the Slurm batch scripts.
"""

# verb -> (module under harness.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "plan": ("plan", "predict memory, communication and time bounds of a spec (no GPU needed)"),
    "verify-claims": (
        "verify_claims",
        "check a strategy report's claims against physics and measurements",
    ),
    "run": ("run", "launch the real model under the spec's layout and measure it (the main job)"),
    "import-bench": (
        "import_bench",
        "turn a peer tool's result (vllm bench serve, AIPerf, guidellm, MLPerf LoadGen) into a run "
        "directory",
    ),
    "report": ("report", "render report.md/report.html for a run directory"),
    "compare": ("compare", "compare a run with a baseline; exit 1 on regression"),
    "history": ("history", "table and plot of key metrics across runs"),
    "emulate": (
        "emulate",
        "run one rank's exact shapes on the local device and project the deployment",
    ),
    "predict": (
        "predict",
        "forecast a workload by simulating the scheduler on step costs fitted from a run",
    ),
    "sweep": (
        "sweep",
        "find the layout that serves the most within the SLOs: predict every layout, run the best",
    ),
    "slurm": ("slurm", "render (and submit) a Slurm batch script for a spec"),
}
