"""The torchrun agent of a reference run: torch's own ``torch.distributed.run`` (same arguments),
plus

* SIGTERM when its launcher dies (``prctl(PR_SET_PDEATHSIG)``): torch's agent then stops every
  rank the way it stops them on Ctrl-C, instead of serving on as an orphan;
* its pid in the ranks' environment, so that a rank can tell that its agent died;
* how each failed rank ended (exit code or signal) in ``<failure dir>/agent.json``, for
  ``harness.engines.reference.failures.root_cause``.

``python -m harness.engines.reference.agent [torchrun args] -m harness run CONFIG ...``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from harness.engines.reference.failures import AGENT_FILE
from harness.engines.reference.lifetime import AGENT_ENV, die_with_parent, failure_dir
from harness.results.atomic import atomic_write_json


def _signal_name(exitcode: int) -> str | None:
    if exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def main(argv: list[str]) -> int:
    die_with_parent()
    os.environ[AGENT_ENV] = str(os.getpid())  # the ranks inherit this environment
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    folder = failure_dir()
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        if folder:
            ranks = {
                str(rank): {
                    "local_rank": f.local_rank,
                    "pid": f.pid,
                    "exitcode": f.exitcode,
                    "signal": _signal_name(f.exitcode),
                }
                for rank, f in e.failures.items()
            }
            atomic_write_json(Path(folder) / AGENT_FILE, {"ranks": ranks})
        return 1
    except SignalException as e:
        print(
            f"harness agent: stopped the ranks on {signal.Signals(e.sigval).name}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
