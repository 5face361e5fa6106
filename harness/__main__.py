"""``python -m harness VERB ...`` is ``harness VERB ...``. torchrun starts the reference engine's
ranks this way: ``torchrun ... -m harness run CONFIG --results-dir DIR``."""

import os
import sys

if (
    len(sys.argv) > 1
    and sys.argv[1] == "run"
    and "RANK" in os.environ
    and "WORLD_SIZE" in os.environ
):
    # A rank: block SIGTERM/SIGINT/SIGHUP before any thread exists, so the stop thread alone takes
    # them, and ask for SIGTERM when the agent dies (before the seconds of importing torch).
    from harness.engines.reference.lifetime import die_with_parent
    from harness.engines.reference.stop import block_stop_signals

    block_stop_signals()
    die_with_parent()

from harness.cli import main  # noqa: E402

raise SystemExit(main(sys.argv[1:]))
