"""The "Imported results" section of a run read from a peer tool (``harness import-bench``): every
number the tool printed beside ours, and for each metric whose definition differs, the tool's
definition with both values; the server's token counts against the client's where both exist.
Any other run has no such section."""

from __future__ import annotations

from harness.report.doc import Section, Table, Text
from harness.report.rows import Ctx, fmt


def _check(r: dict) -> str:
    if r.get("reproduced") is True:
        return "reproduced" if r.get("same") else "reproduced by its formula"
    if r.get("reproduced") is False:
        return "NOT reproduced"
    return "—"


def imported_section(ctx: Ctx) -> Section | None:
    eng = ctx.run.summary.get("engine")
    rows = eng.get("comparisons") if isinstance(eng, dict) else None
    if not rows:
        return None
    same = [r for r in rows if r.get("same")]
    differ = [r for r in rows if not r.get("same")]
    tool = eng.get("source") or "the tool"
    blocks: list = []
    if same:
        blocks.append(Text(f"Same definition: our summary against {tool}'s own number."))
        blocks.append(
            Table(
                ["metric (ours)", f"{tool}'s name", f"{tool}", "ours", "check"],
                [
                    [r["key"], r["tool_key"], fmt(r["theirs"]), fmt(r["ours"]), _check(r)]
                    for r in same
                ],
            )
        )
    if differ:
        blocks.append(
            Text(
                f"Defined differently: {tool}'s number, the same formula applied to the imported "
                "records (where it can be), and ours under our own definition."
            )
        )
        blocks.append(
            Table(
                [f"{tool}'s metric", tool, "its formula, our records", "ours", "our key", "how"],
                [
                    [
                        r["tool_key"],
                        fmt(r["theirs"]),
                        fmt(r["theirs_recomputed"]),
                        fmt(r["ours"]),
                        r["key"] or "—",
                        r["definition"],
                    ]
                    for r in differ
                ],
            )
        )
    tc = eng.get("token_counts")
    if isinstance(tc, dict) and tc.get("client") is not None:
        m = ctx.run.summary.get("metrics") or {}
        client_tpot = ((tc.get("metrics") or {}).get("mean_tpot_ms") or {}).get("client")
        blocks.append(
            Text(
                f"Output tokens: the server counted {fmt(tc.get('server'))} (its usage fields, "
                f"used here), {tool}'s client {fmt(tc.get('client'))} by re-tokenizing the text, "
                f"over {fmt(tc.get('requests'))} requests ({fmt(tc.get('differ'))} disagree). "
                f"Mean TPOT over the server's count {fmt(m.get('mean_tpot_ms'))} ms, over the "
                f"client's {fmt(client_tpot)} ms."
            )
        )
    return Section("Imported results", blocks)
