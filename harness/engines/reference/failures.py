"""Which rank failed first, at which stage, and how: what ``summary.json`` says of a failed run.

When one rank fails, its peers fail a moment later with the transport's error ("Connection closed
by peer", a recv timeout), and rank 0 may only have seen one of those. So each failing rank writes
a report (``rank<R>.json``: its place, its exception, whether that exception is a peer's failure
seen through a collective) into the launcher's failure folder, the agent writes how each process
ended (``agent.json``: exit code, signal), and the launcher picks the root cause (``root_cause``,
pure) after the world has ended."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from harness.results.atomic import atomic_write_json

AGENT_FILE = "agent.json"
# Text of the errors a rank sees when a peer died or hung: gloo's and NCCL's transport errors.
PEER_ERROR_MARKS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Timed out waiting",
    "gloo/transport",
    "NCCL communicator was aborted",
    "ProcessGroupNCCL",
    "DistNetworkError",
    "DistBackendError",
    "Socket Timeout",
    "Connection refused",
)
STOP_EXIT = 3  # a rank that stopped on request (signal, timeout) ends with harness's exit 3


def is_peer_failure(exc: BaseException) -> bool:
    """True when ``exc`` is how a collective reports that another rank died or hung."""
    text = f"{type(exc).__name__}: {exc}"
    return any(mark in text for mark in PEER_ERROR_MARKS)


def own_failure(rank: int, place, exc: BaseException) -> dict:
    """A rank's failure as the summary's ``failure`` record (``place`` may be None before the layout
    is known)."""
    return {
        "rank": rank,
        "dp": getattr(place, "dp", None),
        "stage": getattr(place, "stage", None),
        "tp": getattr(place, "tp", None),
        "kind": "exception",
        "exception": type(exc).__name__,
        "message": " ".join(str(exc).split())[:300],
        "signal": None,
        "exit_code": None,
        "peer": is_peer_failure(exc),
        "t": time.time(),
    }


def report_failure(folder: str | None, failure: dict) -> None:
    """A failing rank's own report to the launcher (nothing without a failure folder, e.g. a Slurm
    job)."""
    if not folder:
        return
    try:
        atomic_write_json(Path(folder) / f"rank{failure['rank']}.json", failure)
    except OSError:
        pass  # the report is a courtesy; the failure itself still ends the run


def read_reports(folder: str | Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """(rank reports, agent's per-rank endings) from a failure folder; unreadable files are
    skipped."""
    reports, agent = {}, {}
    for p in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if p.name == AGENT_FILE and isinstance(doc, dict):
            agent = {
                int(k): v
                for k, v in doc.get("ranks", {}).items()
                if str(k).isdigit() and isinstance(v, dict)
            }
        elif isinstance(doc, dict) and isinstance(doc.get("rank"), int):
            reports[doc["rank"]] = doc
    return reports, agent


def _where(rank: int, layout) -> dict:
    place = layout.place(rank) if layout is not None and 0 <= rank < layout.world_size else None
    return {
        "rank": rank,
        "dp": getattr(place, "dp", None),
        "stage": getattr(place, "stage", None),
        "tp": getattr(place, "tp", None),
    }


def describe(failure: dict) -> str:
    """One line: ``rank 5 (dp 0, stage 2, tp 1) failed: RuntimeError: ...`` / ``... was killed by
    SIGKILL``."""
    where = f"rank {failure['rank']}"
    if failure.get("stage") is not None:
        where += f" (dp {failure['dp']}, stage {failure['stage']}, tp {failure['tp']})"
    if failure["kind"] == "signal":
        return f"{where} was killed by {failure['signal']}"
    if failure["kind"] == "exit":
        return f"{where} exited with code {failure['exit_code']}"
    return f"{where} failed: {failure['exception']}: {failure['message']}"


def root_cause(layout, reports: dict[int, dict], agent: dict[int, dict]) -> dict | None:
    """The failure that explains the run's end, as a structured record (``describe`` words it):
    a rank's own exception first (earliest, not a peer's failure seen through a collective), then a
    rank killed by a signal other than a stop signal, then a non-zero exit nobody explained, then
    the earliest peer error. None when no rank failed (every rank stopped on request, or none
    ended)."""

    def exc_record(r: dict) -> dict:
        return {
            **_where(r["rank"], layout),
            "kind": "exception",
            "exception": r.get("exception"),
            "message": r.get("message"),
            "signal": None,
            "exit_code": agent.get(r["rank"], {}).get("exitcode"),
            "peer": bool(r.get("peer")),
        }

    own = sorted((r for r in reports.values() if not r.get("peer")), key=lambda r: r.get("t") or 0)
    if own:
        return exc_record(own[0])
    stops = {signal.SIGTERM.name, signal.SIGINT.name, signal.SIGHUP.name}
    killed = [
        (rank, a)
        for rank, a in sorted(agent.items())
        if a.get("signal") and a["signal"] not in stops
    ]
    if killed:
        rank, a = killed[0]
        return {
            **_where(rank, layout),
            "kind": "signal",
            "signal": a["signal"],
            "exit_code": a.get("exitcode"),
            "exception": None,
            "message": None,
            "peer": False,
        }
    unexplained = [
        (rank, a)
        for rank, a in sorted(agent.items())
        if rank not in reports and a.get("exitcode") not in (0, STOP_EXIT) and not a.get("signal")
    ]
    if unexplained:
        rank, a = unexplained[0]
        return {
            **_where(rank, layout),
            "kind": "exit",
            "exit_code": a.get("exitcode"),
            "signal": None,
            "exception": None,
            "message": None,
            "peer": False,
        }
    peer = sorted(reports.values(), key=lambda r: r.get("t") or 0)
    return exc_record(peer[0]) if peer else None
