"""What ``harness run`` prints about a LoadGen-driven run: LoadGen's verdict, the duration rule it
applied and whether our percentiles agree with its own (from the summary's ``loadgen`` block,
``harness.engines.loadgen.judged``)."""

from __future__ import annotations

from typing import Any


def loadgen_lines(block: dict[str, Any]) -> list[str]:
    """What ``harness run`` prints about LoadGen's verdict (from the summary's block)."""
    s = block.get("settings", {})
    failed = block.get("failed") or []
    head = f"LoadGen {s.get('scenario')}: {block.get('validity') or 'no result'}"
    if failed:
        head += f" (failed: {'; '.join(failed)})"
    lines = [head, block.get("rules", "")]
    rows = block.get("agreement") or []
    if rows:
        bad = [r["metric"] for r in rows if not r["within"]]
        lines.append(
            f"ours vs LoadGen's percentiles ({len(rows)} rows, same requests, its ⌊N·p⌋ rule): "
            + ("all within 1 % or 1 ms" if not bad else f"differ beyond 1 % and 1 ms: {bad}")
        )
    if block.get("note"):
        lines.append(block["note"])
    return [f"harness run: {x}" for x in lines if x]
