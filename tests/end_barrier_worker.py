"""torchrun entry for tests/test_end_barrier.py: 2 gloo ranks, the world's timeout 2 s.

1. Rank 0 takes 5 s (as it takes writing a long run's results) before the end barrier of
   ``hdist.init`` (``end_group``, 30 s): both ranks pass it.
2. The same wait before a barrier of the world's group: rank 1 times out (what every rank but 0
   did at the end of a 10-minute run before the end group existed).

Each rank writes ``DIR/rank{R}.json`` (atomically).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.engines.reference import dist as hdist  # noqa: E402
from harness.spec.layout import Layout  # noqa: E402

WORLD_TIMEOUT_S, END_TIMEOUT_S, RANK0_WRITES_S = 2.0, 30.0, 5.0


def timed_barrier(rank: int, group) -> dict:
    t0 = time.monotonic()
    if rank == 0:
        time.sleep(RANK0_WRITES_S)
    try:
        dist.barrier(group=group)
        return {"ok": True, "wall_s": time.monotonic() - t0}
    except RuntimeError as e:
        return {"ok": False, "wall_s": time.monotonic() - t0, "error": str(e)[:200]}


def main() -> None:
    out = Path(sys.argv[1])
    layout = Layout(1, 2, 1, (1, 1))
    ctx = hdist.init(layout, "cpu", None, WORLD_TIMEOUT_S, "off", end_timeout_s=END_TIMEOUT_S)
    res = {"end": timed_barrier(ctx.rank, ctx.end_group)}
    res["world"] = timed_barrier(ctx.rank, None)
    tmp = out / f"rank{ctx.rank}.json.tmp"
    tmp.write_text(json.dumps(res))
    tmp.replace(out / f"rank{ctx.rank}.json")
    # the world's group is broken by step 2: leave without its teardown
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
