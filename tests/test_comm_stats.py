import pytest

from harness.measure.comm_stats import per_group_op, with_bandwidth


def _row(op, nbytes, n, t0, t1, group="tp"):
    return {
        "op": op,
        "bytes": nbytes,
        "group_size": n,
        "t_start_s": t0,
        "t_end_s": t1,
        "group": group,
    }


def test_nccl_tests_formulas_by_hand():
    # not timed
    rows = with_bandwidth(
        [
            _row("all_reduce", 8e9, 8, 0.0, 2.0),  # algbw 4, busbw 4*2*7/8 = 7
            _row("all_gather", 1e9, 4, 0.0, 1.0),  # size 4e9: algbw 4, busbw 4*3/4 = 3
            _row("send", 5e8, 2, 1.0, 1.5, "pp"),  # algbw = busbw = 1
            _row("recv", 100, 2, None, None, "pp"),
        ]
    )
    assert rows[0]["algbw_gbps"] == pytest.approx(4) and rows[0]["busbw_gbps"] == pytest.approx(7)
    assert rows[1]["algbw_gbps"] == pytest.approx(4) and rows[1]["busbw_gbps"] == pytest.approx(3)
    assert rows[2]["algbw_gbps"] == pytest.approx(1) and rows[2]["busbw_gbps"] == pytest.approx(1)
    assert rows[3]["time_s"] is None and rows[3]["busbw_gbps"] is None


def test_totals_per_group_and_op():
    rows = [_row("all_reduce", 1e9, 2, 0, 1), _row("all_reduce", 3e9, 2, 1, 2)]
    (tot,) = per_group_op(rows)
    assert tot["ops"] == 2 and tot["bytes"] == 4e9 and tot["time_s"] == 2
    # 2(n-1)/n = 1
    assert tot["algbw_gbps"] == pytest.approx(2) and tot["busbw_gbps"] == pytest.approx(2)
