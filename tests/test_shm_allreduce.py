"""The shared-memory TP all-reduce (run.cpu_all_reduce: shm) in a real 3-rank gloo world
(tests/shm_worker.py says what each rank does)."""

import json

from demo_run import REPO, torchrun


def test_shared_memory_all_reduce_sums_exactly_falls_back_and_fails_fast(tmp_path):
    torchrun(3, REPO / "tests" / "shm_worker.py", str(tmp_path), timeout=240)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    for r in ranks:
        assert r["transport"] == "shm" and r["note"] is None
        # the seeded sizes: 1-1399 elements, fp32 (4 B) and bf16 (2 B) alternating; a 4096-byte
        # slot holds fp32 up to 1024 elements and every bf16 tensor
        small = sum(1 for op in range(300) if _numel(op) * (4 if op % 2 == 0 else 2) <= 4096)
        assert r["shm_ops"] == small and 0 < small < 300
        assert r["exact"] == small  # rank-order sum, bit for bit
        assert r["gloo_path_equal"] == 300 - small
        assert r["trace_rows"] == 300  # every exchange is in the trace, whichever path
        create_ok, create_why = r["create_fails"]
        assert create_ok and "could not create" in create_why
        open_ok, open_why = r["open_fails"]
        assert open_ok and ("[1]" in open_why or "rank 1" in open_why)
        assert r["left_on_disk"] == [] and r["stale_left"] == []
    assert ranks[0]["pair_same_as_gloo"] == ranks[1]["pair_same_as_gloo"] == 200
    for r in ranks[:2]:
        assert "peer rank 2 (pid" in r["dead_peer"] and "gone" in r["dead_peer"]
        assert r["dead_peer_s"] < 10


def _numel(op: int) -> int:
    import torch

    g = torch.Generator().manual_seed(1000 * op + 17)
    return int(torch.randint(1, 1400, (1,), generator=g))
