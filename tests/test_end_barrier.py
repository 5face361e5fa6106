"""The ranks wait for rank 0's writing at the end of a run on a group with the run's timeout
(``hdist.init``'s ``end_group``), not the world's one-collective timeout
(tests/end_barrier_worker.py)."""

import json

from demo_run import REPO, torchrun


def test_rank_0_may_write_longer_than_one_collectives_timeout(tmp_path):
    torchrun(2, REPO / "tests" / "end_barrier_worker.py", str(tmp_path), timeout=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:  # the end group waits out rank 0's 5 s
        assert r["end"]["ok"] is True, r
    assert ranks[1]["end"]["wall_s"] > 4.5
    # the control: the world's group (timeout 2 s) gives up on rank 0 before it arrives
    assert ranks[1]["world"]["ok"] is False and ranks[1]["world"]["wall_s"] < 4.9
