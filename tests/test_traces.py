"""Mooncake / AIPerf JSONL traces (harness.spec.traces): hash_ids → prompts that share exactly the
leading blocks their ids share, read ↔ write round trips, told apart from the harness format per
file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.errors import UsageError
from harness.spec.spec import load_spec
from harness.spec.traces import (
    BlockPrompt,
    hash_ids_for,
    load_mooncake,
    save_mooncake,
    trace_format,
)
from harness.spec.workload import Request, build_trace, load_trace, save_trace

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-tp2-pp4-cpu.yaml"
LINES = [  # block size 4: ⌈len / 4⌉ ids each
    {"timestamp": 0, "input_length": 10, "output_length": 4, "hash_ids": [0, 1, 2]},
    {
        "timestamp": 0,
        "input_length": 12,
        "output_length": 3,
        "hash_ids": [0, 1, 3],
    },  # shares 2 blocks with r0
    {
        "timestamp": 1500,
        "input_length": 7,
        "output_length": 2,
        "hash_ids": [0, 4],
    },  # shares 1 block
    {"timestamp": 2000.5, "input_length": 6, "output_length": 2, "hash_ids": [5, 6]},  # shares none
    {
        "timestamp": 3000,
        "input_length": 9,
        "output_length": 2,
        "hash_ids": [0, 1, 2],
    },  # r0's blocks, cut to 9
]


def _write(path: Path, lines) -> Path:
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def _common(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.fixture
def mooncake(tmp_path):
    return _write(tmp_path / "mooncake.jsonl", LINES)


def test_shared_hash_ids_are_shared_leading_blocks(mooncake, tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["workload"] = {"arrival": "poisson", "trace": str(mooncake), "trace_block_size": 4}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    reqs = trace.requests
    assert [r.arrival_s for r in reqs] == [0.0, 0.0, 1.5, 2.0005, 3.0]  # ms → s
    assert [(r.input_len, r.output_len) for r in reqs] == [(10, 4), (12, 3), (7, 2), (6, 2), (9, 2)]
    prompts = [trace.prompt_ids(r) for r in reqs]
    assert [len(p) for p in prompts] == [10, 12, 7, 6, 9]
    assert all(0 <= t < spec.shape.vocab for p in prompts for t in p)
    # exactly the shared leading blocks: 2 blocks = 8 tokens, 1 block = 4, none; r4 is r0 cut to 9
    assert (
        _common(prompts[0], prompts[1]),
        _common(prompts[0], prompts[2]),
        _common(prompts[0], prompts[3]),
    ) == (8, 4, 0)
    assert prompts[4] == prompts[0][:9] and _common(prompts[1], prompts[2]) == 4
    # a block depends on its id only: the same id gives the same tokens in every request and every
    # read
    again = load_trace(mooncake, vocab_size=spec.shape.vocab, block_size=4)
    assert [list(r.prompt) for r in again] == prompts and again[1].prompt[9] == prompts[1][9]


def test_round_trip_write_read(mooncake, tmp_path):
    reqs = load_trace(mooncake, vocab_size=256, block_size=4)
    assert all(isinstance(r.prompt, BlockPrompt) for r in reqs)
    out = tmp_path / "back.jsonl"
    save_mooncake(reqs, out, block_size=4)
    assert [json.loads(x) for x in out.read_text().splitlines()] == LINES  # ids kept, ms as written
    assert load_trace(out, vocab_size=256, block_size=4) == reqs
    # prompts given as token lists are cut into blocks and numbered by chained hashing
    a = list(range(1, 9))
    own = [
        Request(0, 0.0, 8, 2, a),
        Request(1, 0.25, 6, 2, a[:4] + [9, 9]),
        Request(2, 0.5, 5, 2, [7] * 5),
        Request(3, 0.5, 5, 1, a[:4] + [7]),
    ]
    save_mooncake(own, out, block_size=4)
    ids = [json.loads(x)["hash_ids"] for x in out.read_text().splitlines()]
    assert ids == [[0, 1], [0, 2], [3, 4], [0, 5]]
    assert [json.loads(x)["timestamp"] for x in out.read_text().splitlines()] == [0, 250, 500, 500]
    back = [list(r.prompt) for r in load_trace(out, vocab_size=256, block_size=4)]
    assert (_common(back[0], back[1]), _common(back[0], back[3]), _common(back[0], back[2])) == (
        4,
        4,
        0,
    )
    # the seeded prompts of a generated trace: shared by nobody, fresh ids per request
    spec = load_spec(CONFIG)
    trace = build_trace(spec.workload, spec.shape.vocab, 128)
    save_mooncake(trace, out, block_size=16)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    flat = [h for r in rows for h in r["hash_ids"]]
    assert len(flat) == len(set(flat)) and all(
        len(r["hash_ids"]) == -(-r["input_length"] // 16) for r in rows
    )
    assert hash_ids_for([None, [1, 2]], 4) == [[], [0]]


def test_formats_are_told_apart_per_file(mooncake, tmp_path):
    own = tmp_path / "own.jsonl"
    save_trace([Request(0, 0.0, 5, 3), Request(1, 0.5, 6, 2)], own)
    assert (trace_format(mooncake), trace_format(own)) == ("mooncake", "harness")
    assert [(r.arrival_s, r.input_len) for r in load_trace(own)] == [(0.0, 5), (0.5, 6)]
    assert [r.prompt for r in load_trace(mooncake, block_size=4)] == [
        None
    ] * 5  # no vocabulary: lengths only
    no_ids = _write(
        tmp_path / "no_ids.jsonl", [{"timestamp": 5, "input_length": 3, "output_length": 1}]
    )
    assert load_trace(no_ids, vocab_size=256) == [Request(0, 0.005, 3, 1, None)]
    assert trace_format(tmp_path / "absent.jsonl") == "harness"


@pytest.mark.parametrize(
    "line, message",
    [
        (
            {"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0, 1]},
            "t.jsonl:2: 2 hash_ids for input_length 10 at 4 tokens a block; expected 3 (set "
            "workload.trace_block_size",
        ),
        (
            {"timestamp": -1, "input_length": 4, "output_length": 1},
            't.jsonl:2: expected "timestamp" as a number of ms',
        ),
        ({"input_length": 4, "output_length": 1}, 't.jsonl:2: expected "timestamp"'),
        (
            {"timestamp": 0, "input_length": 4, "output_length": 1, "session_id": "a"},
            "t.jsonl:2: key 'session_id' is not read here",
        ),
        (
            {"timestamp": 0, "input_length": 0, "output_length": 1},
            't.jsonl:2: expected "input_length" as a positive',
        ),
        (
            {"timestamp": 0, "input_length": 4, "output_length": 1, "hash_ids": [0, -1]},
            't.jsonl:2: expected "hash_ids"',
        ),
        ("[1, 2]", "t.jsonl:2: expected a JSON object"),
        ("{oops", "t.jsonl:2: not valid JSON"),
    ],
)
def test_bad_mooncake_lines_name_file_and_line(tmp_path, line, message):
    path = _write(
        tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 4, "output_length": 1}, line]
    )
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        load_mooncake(path, vocab_size=256, block_size=4)


def test_order_context_and_block_size_checks(tmp_path):
    path = _write(
        tmp_path / "t.jsonl",
        [
            {"timestamp": 10, "input_length": 4, "output_length": 1},
            {"timestamp": 5, "input_length": 4, "output_length": 1},
        ],
    )
    with pytest.raises(
        UsageError, match='t.jsonl:2: "timestamp" 5 is before the previous line\'s 10; sort'
    ):
        load_trace(path)
    path = _write(
        tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 100, "output_length": 40}]
    )
    with pytest.raises(UsageError, match="exceeds the model context of 128 tokens"):
        load_trace(path, context_len=128)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["workload"] = {"trace": str(path), "trace_block_size": 0}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match="workload.trace_block_size: must be >= 1"):
        load_spec(tmp_path / "s.yaml")
