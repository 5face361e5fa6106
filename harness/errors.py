"""The one exception type for bad input, and the exit codes every verb uses.

Exit codes: ``0`` fine; ``1`` a verdict failed (SLO missed, claim refuted, regression); ``2`` bad
input (one line naming the field and the fix); ``3`` a run failed or was interrupted (partial
results on disk, marked incomplete); ``4`` inconclusive: the data cannot decide a verdict at the
confidence level (an SLO neither met nor missed with confidence, a possible regression within the
noise), nothing failed."""

import reprlib

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad input from the user: a config field, a claims file, a checkpoint, a flag.

    The message names the field path and what would fix it, e.g.
    ``parallel.tp: 3 does not divide model.num_heads=64; use 1, 2, 4 or 8``.
    """


def _bounded_repr(limit: int) -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    return r


SHOWN_CHARS = 100
_REPR = _bounded_repr(SHOWN_CHARS)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error line: one line, at most ``limit`` characters.

    Built with ``reprlib`` (bounded depth and width), so a YAML alias bomb (a few aliases that
    expand to millions of nodes) costs a few hundred characters of work, not its full repr.
    """
    text = " ".join(_REPR.repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
