import pytest

from harness.measure.stages import pipeline_summary, rank_stats


def _row(rank, stage, step, a, b, c, d):
    return {
        "rank": rank,
        "dp": 0,
        "stage": stage,
        "tp": 0,
        "step": step,
        "t_recv_start_s": a,
        "t_recv_end_s": b,
        "t_compute_end_s": c,
        "t_send_end_s": d,
    }


def test_busy_and_bubble_by_hand():
    # rank 0: waits 1 s, computes 2 s, sends 1 s; then waits 0, computes 2, sends 0 -> wall 6,
    # compute 4
    rows = [
        _row(0, 0, 0, 0, 1, 3, 4),
        _row(0, 0, 1, 4, 4, 6, 6),
        # rank 1 (stage 1): compute 1 s of a 4 s window
        _row(1, 1, 0, 0, 2, 3, 4),
    ]
    st = rank_stats(rows)
    assert (
        st[0]["wall_s"] == 6
        and st[0]["compute_s"] == 4
        and st[0]["wait_s"] == 1
        and st[0]["send_s"] == 1
    )
    assert st[0]["busy_fraction"] == pytest.approx(4 / 6) and st[0][
        "bubble_ratio"
    ] == pytest.approx(2 / 6)
    s = pipeline_summary(rows)
    assert s["bubble_ratio"] == pytest.approx((2 / 6 + 3 / 4) / 2)
    assert s["imbalance"] == pytest.approx(4 / 2.5)


def test_empty():
    assert pipeline_summary([]) == {"bubble_ratio": None, "imbalance": None, "stages": []}
