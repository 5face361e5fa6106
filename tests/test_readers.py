"""No traceback from report / compare / history on any summary or table (issue 14): every value of
the wrong type is one line naming the file and the key, exit 2 (history skips such a run)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import cli
from harness.errors import UsageError
from harness.results.reader import load_run, read_summary
from run_fixtures import build_synthetic_run


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return build_synthetic_run(tmp_path_factory.mktemp("good") / "run")


def _edited(good, tmp_path, edit):
    d = tmp_path / "bad"
    shutil.copytree(good, d)
    s = json.loads((d / "summary.json").read_text())
    edit(s)
    (d / "summary.json").write_text(json.dumps(s))
    return d


def _one_line_exit_2(capsys, argv, needle):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    assert rc == 2, cap
    assert cap.err.count("\n") == 1 and needle in cap.err, cap.err
    return cap


def test_metrics_as_text_is_one_line_from_every_verb(good, tmp_path, capsys):
    bad = _edited(good, tmp_path, lambda s: s.update(metrics="fast"))
    needle = f"{bad / 'summary.json'}: summary.metrics is str, expected an object"
    _one_line_exit_2(capsys, ["report", str(bad), "--out", str(tmp_path / "rep")], needle)
    _one_line_exit_2(capsys, ["compare", str(good), str(bad)], needle)
    _one_line_exit_2(capsys, ["compare", str(bad), str(good)], needle)
    root = tmp_path / "hist"
    root.mkdir()
    shutil.copytree(bad, root / "bad")
    _one_line_exit_2(
        capsys, ["history", str(root)], "no readable run directory (summary.json) found; skipped: "
    )
    shutil.copytree(good, root / "good")
    # the good one is kept
    assert cli.main(["history", str(root), "--out", str(tmp_path / "h.md")]) == 0
    assert "summary.metrics is str" in capsys.readouterr().out


DEPTH = 3


def _paths(value, path=()):
    """Every key path of a JSON document, DEPTH levels into lists and objects (first list
    element)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k)
            if len(path) < DEPTH:
                yield from _paths(v, (*path, k))
    elif isinstance(value, list) and value:
        yield (*path, 0)
        if len(path) < DEPTH:
            yield from _paths(value[0], (*path, 0))


def _wrong(v):
    """A value of another JSON type than ``v``."""
    return 7 if isinstance(v, str) else {"x": 1} if isinstance(v, list) else "text"


def test_any_value_of_the_wrong_type_is_refused_or_harmless(good, tmp_path, capsys):
    """Each key path (three levels deep) given a value of another type: the reader refuses it with
    one line naming the key, or report, compare and history all work on it."""
    original = json.loads((good / "summary.json").read_text())
    paths = [p for p in _paths(original) if p[0] != "schema_version"]
    assert len(paths) > 200
    accepted = []
    try:
        for p in paths:
            s = json.loads(json.dumps(original))
            node = s
            for k in p[:-1]:
                node = node[k]
            node[p[-1]] = _wrong(node[p[-1]])
            (good / "summary.json").write_text(json.dumps(s))
            try:
                read_summary(good)
            except UsageError as e:
                assert "\n" not in str(e) and f"summary.{p[0]}" in str(e), (p, str(e))
                continue
            accepted.append(p)
            assert cli.main(["report", str(good), "--out", str(tmp_path / "rep")]) == 0, p
            assert cli.main(["compare", str(good), str(good), "--force"]) in (0, 1, 4), p
            assert cli.main(["history", str(good.parent), "--out", str(tmp_path / "h.md")]) == 0, p
            capsys.readouterr()
    finally:
        (good / "summary.json").write_text(json.dumps(original))
    assert len(accepted) < 5, accepted  # free text (incomplete_reason) and the like


def test_a_table_column_of_the_wrong_type(good, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(good, d)
    t = pq.read_table(d / "requests.parquet")
    i = t.column_names.index("arrival_s")
    pq.write_table(
        t.set_column(i, "arrival_s", pa.array(["soon"] * len(t))), d / "requests.parquet"
    )
    with pytest.raises(
        UsageError, match=r"requests.parquet: column arrival_s holds string, expected double"
    ):
        load_run(d)
    # a column of ints where floats are expected is read as floats, not refused
    t = pq.read_table(good / "requests.parquet")
    pq.write_table(
        t.set_column(i, "arrival_s", pa.array(list(range(len(t))), pa.int64())),
        d / "requests.parquet",
    )
    assert load_run(d).requests["arrival_s"].dtype == "float64"


def test_a_verdict_outside_the_vocabulary(good, tmp_path):
    bad = _edited(good, tmp_path, lambda s: s.update(verdict="GREAT"))
    with pytest.raises(
        UsageError,
        match="summary.verdict is 'GREAT', expected one of PASS, FAIL, INCONCLUSIVE, UNMEASURED",
    ):
        read_summary(bad)
