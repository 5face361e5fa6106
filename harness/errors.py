"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """Bad input from the user: a config field, a claims file, a checkpoint, a flag.

    The message names the field path and what would fix it, e.g.
    ``parallel.tp: 3 does not divide model.num_heads=64; use 1, 2, 4 or 8``.
    """
