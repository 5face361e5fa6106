"""CUDA graphs for decode in ``run`` (issue 28 item 3): the parts that do not need a GPU. The graph
against the eager step is tests/test_gpu.py's ``test_decode_graphs_give_the_eager_tokens``."""

from __future__ import annotations

import pytest

from harness.engines.reference.parallel.graphs import (
    bucket,
    capture_sizes,
    graphs_note,
    padded_rows,
)
from harness.spec.spec import load_spec


def test_capture_sizes_are_vllms_cut_at_max_batch():
    assert capture_sizes(1) == [1]
    assert capture_sizes(3) == [1, 2, 3]
    assert capture_sizes(8) == [1, 2, 4, 8]
    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert capture_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    with pytest.raises(ValueError, match="max_batch"):
        capture_sizes(0)


def test_a_step_runs_in_the_smallest_bucket_that_holds_it():
    sizes = capture_sizes(20)
    assert [bucket(b, sizes) for b in (1, 2, 3, 4, 5, 8, 9, 16, 17, 20)] == [
        1,
        2,
        4,
        4,
        8,
        8,
        16,
        16,
        20,
        20,
    ]
    with pytest.raises(ValueError, match="largest capture size 20"):
        bucket(21, sizes)


def test_padding_rows_write_where_no_real_row_reads():
    # 3 rows in a bucket of 4, 6 slots: the padding row takes the first slot the step does not use,
    # at the last position of the cache
    assert padded_rows([0, 2, 1], [5, 9, 3], 4, num_slots=6, max_seq_len=64) == (
        [0, 2, 1, 3],
        [5, 9, 3, 63],
    )
    # no padding needed: the rows as they are
    assert padded_rows([4, 1], [7, 8], 2, num_slots=6, max_seq_len=64) == ([4, 1], [7, 8])
    # every slot in the step: the slot of the row with the shortest cache (it writes position 63
    # itself before it ever reads it)
    assert padded_rows([1, 0, 2], [40, 12, 30], 4, num_slots=3, max_seq_len=64) == (
        [1, 0, 2, 0],
        [40, 12, 30, 63],
    )
    # every row already at the last position: no safe place, the step runs eagerly
    assert padded_rows([1, 0, 2], [63, 63, 63], 4, num_slots=3, max_seq_len=64) is None


def test_the_option_parses_and_does_nothing_on_the_cpu_with_a_note(tmp_path):
    base = "configs/tiny-tp2-pp4-cpu.yaml"
    assert load_spec(base, []).run.cuda_graphs is None  # default: on with CUDA
    assert load_spec(base, ["run.cuda_graphs=false"]).run.cuda_graphs is False
    assert load_spec(base, ["run.cuda_graphs=true"]).run.cuda_graphs is True
    assert graphs_note(True, cuda=False).startswith("run.cuda_graphs: true does nothing on the CPU")
    assert graphs_note(None, cuda=False) is None and graphs_note(False, cuda=False) is None
    assert graphs_note(True, cuda=True) is None
