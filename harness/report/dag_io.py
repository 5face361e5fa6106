"""The DAG's files: ``dag.json`` and Graphviz ``dag.dot``, their writing and reading, and a
topological order (``harness.report.dag`` builds the graph)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.report.dag import Dag, Node, node_count
from harness.results.atomic import atomic_write_json, atomic_write_text


def to_json(dag: Dag) -> dict[str, Any]:
    lay = dag.layout
    node_bytes = sum(n.bytes or 0 for n in dag.nodes if n.kind == "comm")
    return {
        "layout": {"tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "layer_split": list(lay.layer_split)},
        "node_count": len(dag.nodes),
        "node_count_formula": node_count(lay),
        "edge_count": len(dag.edges),
        "comm_bytes_on_nodes": node_bytes,
        "comm_bytes_unmatched": sum(u["bytes"] for u in dag.unmatched),
        "comm_table_bytes": dag.comm_table_bytes,
        "nodes": [asdict(n) for n in dag.nodes],
        "edges": [asdict(e) for e in dag.edges],
        "unmatched": dag.unmatched,
    }


def _fmt_bytes(b: int | None) -> str:
    if b is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b} B"


def to_dot(dag: Dag) -> str:
    """Graphviz DOT text: one cluster per rank, compute boxes, comm ellipses; no binary needed."""
    lines = ["digraph deployment {", "  rankdir=LR; node [fontsize=9]; edge [fontsize=8];"]
    by_rank: dict[int, list[Node]] = {}
    for n in dag.nodes:
        by_rank.setdefault(n.rank, []).append(n)
    for r in sorted(by_rank):
        first = by_rank[r][0]
        lines.append(f'  subgraph "cluster_r{r}" {{')
        lines.append(
            f'    label="rank {r} ({first.gpu}) dp {first.dp} stage {first.stage} tp {first.tp}";'
        )
        for n in by_rank[r]:
            t = "" if n.time_s is None else f"\\n{n.time_s * 1e3:.2f} ms"
            b = "" if not n.bytes else f"\\n{_fmt_bytes(n.bytes)}"
            shape = "box" if n.kind == "compute" else "ellipse"
            label = n.id.split(".", 1)[1]
            lines.append(f'    "{n.id}" [shape={shape}, label="{label}{t}{b}"];')
        lines.append("  }")
    style = {
        "data": "",
        "collective": " [style=dashed, color=blue]",
        "p2p": " [color=red, penwidth=1.5]",
    }
    for e in dag.edges:
        lines.append(f'  "{e.src}" -> "{e.dst}"{style[e.kind]};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dag(dag: Dag, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    j = atomic_write_json(out_dir / "dag.json", to_json(dag))
    d = atomic_write_text(out_dir / "dag.dot", to_dot(dag))
    return j, d


def topological_order(dag: Dag) -> list[str]:
    """Kahn's algorithm; raises ValueError on a cycle (the DAG must have none)."""
    indeg = {n.id: 0 for n in dag.nodes}
    out: dict[str, list[str]] = {n.id: [] for n in dag.nodes}
    for e in dag.edges:
        indeg[e.dst] += 1
        out[e.src].append(e.dst)
    ready = [k for k, v in indeg.items() if v == 0]
    order = []
    while ready:
        k = ready.pop()
        order.append(k)
        for d in out[k]:
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    if len(order) != len(indeg):
        raise ValueError("the deployment graph has a cycle")
    return order


def load_dag_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
