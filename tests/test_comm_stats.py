import pytest

from harness.measure.comm_stats import per_group_op, with_bandwidth
from harness.plan.comm import COLLECTIVES, bus_factor, link_bytes, op_size, ring_factor


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


def test_one_table_of_ops_with_nccl_tests_sizes_and_bus_factors():
    """nccl-tests' PERFORMANCE.md: busbw factor all_reduce 2(n−1)/n, all_gather and reduce_scatter
    (n−1)/n (over the gathered size n·B), broadcast and point-to-point 1. The planner's link-time
    floor of an op is its size times its factor: the bytes each rank's link carries."""
    n, b = 8, 100
    assert {op: bus_factor(op, n) for op in COLLECTIVES} == {
        "all_reduce": 1.75,
        "all_gather": 0.875,
        "reduce_scatter": 0.875,
        "broadcast": 1.0,
        "send": 1.0,
        "recv": 1.0,
    }
    assert [op_size(op, b, n) for op in ("all_reduce", "all_gather", "broadcast")] == [
        100,
        800,
        100,
    ]
    assert link_bytes("all_reduce", b, n) == pytest.approx(175.0)  # 2(n−1)/n · B
    assert link_bytes("all_gather", b, n) == pytest.approx(700.0)  # (n−1) · B
    assert link_bytes("send", b, 2) == 100.0
    assert ring_factor(1) == bus_factor("all_reduce", 1) == 0.0  # a group of one moves nothing
    assert bus_factor("barrier", 4) == 1.0  # an op outside the table moves its bytes once
