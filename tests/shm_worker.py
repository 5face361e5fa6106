"""torchrun entry for tests/test_shm_allreduce.py: 3 gloo ranks exercise the shared-memory TP
all-reduce (harness/engines/reference/shm_allreduce.py); each rank writes ``DIR/rank{R}.json``.

1. A 3-rank group through ``Comm.all_reduce`` (attached as a run attaches it): 300 all-reduces of
   seeded sizes and dtypes, each rank sleeping at random before some of them (so bytes of the next
   op arrive while a rank still waits for the current one's): every result equals the rank-order
   sum of the three inputs, which each rank recomputes from the seeds, bit for bit; tensors larger
   than a slot go through gloo and equal gloo's sum.
2. Ranks 0 and 1 as a group of two: 200 shm sums equal gloo's, bit for bit.
3. Set-up failures: the first rank cannot create the files, then rank 1 cannot open them: every
   rank gets no segment and the same reason.
4. Nothing of the segments is left under the shm directory, and a stale one whose creator is gone
   (made by rank 0 before step 1) was swept.
5. Rank 2 dies in the middle of an all-reduce: ranks 0 and 1 raise within seconds, naming it.
"""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.engines.reference import shm_allreduce as shm  # noqa: E402
from harness.engines.reference.comm import Comm, CommRecorder  # noqa: E402

SLOT = 4096  # bytes: fp32 tensors above 1024 elements go through gloo


def inputs(op: int, rank: int):
    g = torch.Generator().manual_seed(1000 * op + 17)
    numel = int(torch.randint(1, 1400, (1,), generator=g))
    dtype = [torch.float32, torch.bfloat16][op % 2]
    g.manual_seed(1000 * op + rank)
    return torch.randn(numel, generator=g).to(dtype)


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    three = dist.new_group([0, 1, 2])
    two = dist.new_group([0, 1])
    res: dict = {"rank": rank}

    # 0. a segment left by a killed creator (its pid is gone) is swept by the next first rank
    stale = []
    if rank == 0:
        dead = subprocess.Popen(["true"])
        dead.wait()
        for suffix in ("", ".0", ".1"):
            stale.append(os.path.join(shm._shm_dir(), f"harness-tp-{dead.pid}-abc{suffix}"))
            Path(stale[-1]).write_bytes(b"")
    comm = Comm({"tp": (three, [0, 1, 2])}, CommRecorder(rank, "counts"))
    transport, note = shm.attach(comm, "gloo", "shm", SLOT, 30.0)
    res["stale_left"] = [p for p in stale if os.path.exists(p)]
    res["transport"], res["note"] = transport, note
    rnd = random.Random(rank)
    exact = gloo_path = 0
    for op in range(300):
        if rnd.random() < 0.2:
            time.sleep(rnd.random() * 0.004)
        t = inputs(op, rank)
        got = comm.all_reduce(t.clone(), "tp")
        if t.numel() * t.element_size() <= SLOT:
            a, b, c = (inputs(op, r) for r in range(3))
            exact += torch.equal(got, (a + b) + c)
        else:
            ref = t.clone()
            dist.all_reduce(ref, group=three)
            gloo_path += torch.equal(got, ref)
    res["ops"] = 300
    res["shm_ops"] = comm.shm["tp"].ops
    res["exact"], res["gloo_path_equal"] = exact, gloo_path
    res["trace_rows"] = len(comm.rec.rows)

    if rank < 2:
        pair, why = shm.open_group(two, [0, 1], rank, 1 << 16, 30.0)
        same = 0
        g = torch.Generator().manual_seed(5 + rank)  # sizes: the same on both ranks
        sizes = torch.Generator().manual_seed(5)
        for op in range(200):
            t = torch.randn(int(torch.randint(1, 4096, (1,), generator=sizes)), generator=g)
            ref = t.clone()
            dist.all_reduce(ref, group=two)
            same += torch.equal(pair(t.clone()), ref)
        res["pair_same_as_gloo"] = same

    # 3. set-up failures
    real_dir = shm._shm_dir
    if rank == 0:
        shm._shm_dir = lambda: "/nonexistent-harness-dir"
    seg, why = shm.open_group(three, [0, 1, 2], rank, SLOT, 30.0)
    res["create_fails"] = [seg is None, why]
    shm._shm_dir = real_dir
    if rank == 1:
        shm._shm_dir = lambda: "/nonexistent-harness-dir"
    seg, why = shm.open_group(three, [0, 1, 2], rank, SLOT, 30.0)
    res["open_fails"] = [seg is None, why]
    shm._shm_dir = real_dir

    dist.barrier()
    leader = comm.shm["tp"].pids[0]  # the files are named after the group's first rank's pid
    res["left_on_disk"] = glob.glob(os.path.join(shm._shm_dir(), f"harness-tp-{leader}-*"))

    # 5. a peer dies
    if rank == 2:
        (out / "rank2.json").write_text(json.dumps(res))
        os._exit(0)
    t0 = time.monotonic()
    try:
        comm.all_reduce(torch.ones(8), "tp")
        res["dead_peer"] = "returned"
    except RuntimeError as e:
        res["dead_peer"] = str(e)
    res["dead_peer_s"] = time.monotonic() - t0
    (out / f"rank{rank}.json").write_text(json.dumps(res))
    os._exit(0)  # the world lost a rank: no orderly teardown


if __name__ == "__main__":
    main()
