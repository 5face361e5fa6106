"""The one exception type for bad input, and the exit codes every verb uses.

Exit codes: ``0`` fine; ``1`` a verdict failed (SLO missed, claim refuted, regression); ``2`` bad
input (one line naming the field and the fix); ``3`` a run failed or was interrupted (partial
results on disk, marked incomplete).
"""

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the user: a config field, a claims file, a checkpoint, a flag.

    The message names the field path and what would fix it, e.g.
    ``parallel.tp: 3 does not divide model.num_heads=64; use 1, 2, 4 or 8``.
    """
