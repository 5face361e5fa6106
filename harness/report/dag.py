"""The deployment DAG that ran: per-rank compute blocks and communication ops, data-dependency
edges, measured time and bytes on every node. Exported as JSON and Graphviz DOT (text only).

Nodes of one rank at stage s (L_s layers), mirroring harness.engines.reference.parallel (pp.py,
tp.py):
  stage 0:   ``bcast`` (tp > 1: the coordinator's header + token ids to its TP peers), ``embed``,
             ``embed.ar`` (tp > 1: vocab-parallel embedding all-reduce)
  each layer l:  ``L{l}.attn``, ``L{l}.attn.ar`` (tp > 1), ``L{l}.mlp``, ``L{l}.mlp.ar`` (tp > 1)
  last stage:  ``head`` (final norm + lm_head), ``head.ag`` (tp > 1: sampling all-gather)
  pp > 1:    ``send`` (s < pp−1, to the same TP rank of s+1), ``recv`` (s > 0, from s−1),
             ``ret.send`` (last stage, TP rank 0) → ``ret.recv`` (stage 0, TP rank 0): sampled
             tokens back to the coordinator (they feed the next step; that edge is left out to keep
             it acyclic).

Node count (pure, :func:`node_count`), with N = Σ L_s, T = [tp > 1], P = [pp > 1]:
  dp · ( tp·(2N + 2) + T·tp·(2N + 3) + P·(2·tp·(pp − 1) + 2) )

Measured attributes, from the run's tables:
- comm nodes: Σ bytes (every row of the run) and Σ (t_end − t_start) (rows of the measured steps,
  those in the stages table) of the comm rows of that rank whose (op, group) match the node kind,
  split equally among that rank's nodes of the kind (all its all-reduces carry the same activation
  shape). A send is an isend: its time runs from post to wait, not transfer time. Rows with no
  matching node are kept in ``unmatched`` so that Σ node bytes + Σ unmatched bytes = Σ comm table
  bytes.
- compute nodes: the rank's stage compute time (stages table: Σ t_compute_end − t_recv_end) minus
  its TP all-reduce time, apportioned by parameter count (attention, MLP, lm_head; the embedding is
  a lookup, weighted as one hidden vector). Marked ``time_source: apportioned``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.spec.layout import Layout

# (op, group) in the comm table → the node kind that carries it
COMM_KINDS = {
    ("all_reduce", "tp"): "ar",
    ("all_gather", "tp"): "ag",
    ("broadcast", "tp"): "bcast",
    ("send", "pp"): "send",
    ("recv", "pp"): "recv",
}


@dataclass
class Node:
    id: str
    kind: str  # compute | comm
    op: str  # embed attn mlp head | all_reduce all_gather broadcast send recv
    rank: int
    dp: int
    stage: int
    tp: int
    gpu: str
    layer: int | None = None
    group: str | None = None
    peer: int | None = None
    time_s: float | None = None
    bytes: int | None = None
    calls: int | None = None
    time_source: str | None = None


@dataclass
class Edge:
    src: str
    dst: str
    kind: str  # data (same rank) | collective | p2p


@dataclass
class Dag:
    layout: Layout
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)
    comm_table_bytes: int = 0

    def node(self, node_id: str) -> Node:
        return self._index()[node_id]

    def _index(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}


def node_count(layout: Layout) -> int:
    """Number of DAG nodes for a layout (see the module docstring)."""
    n = sum(layout.layer_split)
    t, p = int(layout.tp > 1), int(layout.pp > 1)
    per_replica = (
        layout.tp * (2 * n + 2)
        + t * layout.tp * (2 * n + 3)
        + p * (2 * layout.tp * (layout.pp - 1) + 2)
    )
    return layout.dp * per_replica


def gpu_label(rank: int, gpus_per_node: int, gpu_map: list[int] | None) -> str:
    """Rank r runs on node r // gpus_per_node, on device gpu_map[r % gpus_per_node] there (per-node
    map)."""
    node, local = divmod(rank, gpus_per_node)
    if gpu_map and len(gpu_map) == gpus_per_node:
        local = gpu_map[local]
    return f"node{node}/gpu{local}"


def _rank_chain(layout: Layout, rank: int, gpu: str) -> list[Node]:
    """The rank's nodes in execution order."""
    p = layout.place(rank)
    tp_on, last = layout.tp > 1, p.stage == layout.pp - 1
    base = dict(rank=rank, dp=p.dp, stage=p.stage, tp=p.tp, gpu=gpu)
    nodes: list[Node] = []

    def add(suffix: str, kind: str, op: str, **kw) -> None:
        nodes.append(Node(id=f"r{rank}.{suffix}", kind=kind, op=op, **base, **kw))

    if layout.pp > 1 and p.stage > 0:
        add("recv", "comm", "recv", group="pp", peer=layout.rank_of(p.dp, p.stage - 1, p.tp))
    if p.stage == 0:
        if tp_on:
            add("bcast", "comm", "broadcast", group="tp", peer=layout.rank_of(p.dp, 0, 0))
        add("embed", "compute", "embed")
        if tp_on:
            add("embed.ar", "comm", "all_reduce", group="tp")
    for layer in layout.layers_of_stage(p.stage):
        for block in ("attn", "mlp"):
            add(f"L{layer}.{block}", "compute", block, layer=layer)
            if tp_on:
                add(f"L{layer}.{block}.ar", "comm", "all_reduce", group="tp", layer=layer)
    if last:
        add("head", "compute", "head")
        if tp_on:
            add("head.ag", "comm", "all_gather", group="tp")
    if layout.pp > 1 and not last:
        add("send", "comm", "send", group="pp", peer=layout.rank_of(p.dp, p.stage + 1, p.tp))
    if layout.pp > 1 and last and p.tp == 0:
        add("ret.send", "comm", "send", group="pp", peer=layout.rank_of(p.dp, 0, 0))
    return nodes


def _kind_of(node: Node) -> str | None:
    return COMM_KINDS.get((node.op, node.group)) if node.kind == "comm" else None


def build_dag(
    layout: Layout,
    comm_rows=None,
    stage_rows=None,
    block_weights: dict[str, float] | None = None,
    gpus_per_node: int | None = None,
    gpu_map: list[int] | None = None,
) -> Dag:
    """The DAG of ``layout`` with measured attributes from comm and stages rows (dicts or
    DataFrames)."""
    gpn = gpus_per_node or layout.world_size
    dag = Dag(layout)
    chains = {
        r: _rank_chain(layout, r, gpu_label(r, gpn, gpu_map)) for r in range(layout.world_size)
    }
    for r, chain in chains.items():
        dag.nodes.extend(chain)
        for a, b in zip(chain, chain[1:]):
            if a.id.endswith("ret.recv"):
                continue
            dag.edges.append(Edge(a.id, b.id, "data"))
        p = layout.place(r)
        if layout.pp > 1 and p.stage == 0 and p.tp == 0:
            src = layout.rank_of(p.dp, layout.pp - 1, 0)
            node = Node(
                id=f"r{r}.ret.recv",
                kind="comm",
                op="recv",
                rank=r,
                dp=p.dp,
                stage=0,
                tp=0,
                gpu=chain[0].gpu,
                group="pp",
                peer=src,
            )
            dag.nodes.append(node)
            chain.append(node)  # a sink: the tokens feed the next step's embedding
    _cross_edges(dag, chains)
    _attach_measurements(
        dag,
        chains,
        [] if comm_rows is None else comm_rows,
        [] if stage_rows is None else stage_rows,
        block_weights or {},
    )
    return dag


def _cross_edges(dag: Dag, chains: dict[int, list[Node]]) -> None:
    layout = dag.layout
    ids = {n.id for n in dag.nodes}
    for r, chain in chains.items():
        p = layout.place(r)
        peers = [q for q in layout.tp_groups()[p.dp * layout.pp + p.stage] if q != r]
        for i, n in enumerate(chain):
            if n.op in ("all_reduce", "all_gather"):
                producer = chain[i - 1].id.split(".", 1)[1]  # e.g. "L3.attn" or "head"
                for q in peers:
                    dag.edges.append(Edge(f"r{q}.{producer}", n.id, "collective"))
            elif n.op == "broadcast" and p.tp != 0:
                dag.edges.append(Edge(f"r{layout.rank_of(p.dp, 0, 0)}.bcast", n.id, "collective"))
            elif n.id.endswith(".send") and not n.id.endswith("ret.send"):
                dag.edges.append(Edge(n.id, f"r{n.peer}.recv", "p2p"))
            elif n.id.endswith("ret.send"):
                dag.edges.append(Edge(n.id, f"r{n.peer}.ret.recv", "p2p"))
    bad = [e for e in dag.edges if e.src not in ids or e.dst not in ids]
    if bad:  # a bug in this module: every edge must join nodes it made
        raise AssertionError(f"DAG edges to unknown nodes: {bad[:3]}")


def _attach_measurements(
    dag: Dag, chains: dict[int, list[Node]], comm_rows, stage_rows, weights
) -> None:
    import pandas as pd

    comm = comm_rows if isinstance(comm_rows, pd.DataFrame) else pd.DataFrame(list(comm_rows))
    stages = stage_rows if isinstance(stage_rows, pd.DataFrame) else pd.DataFrame(list(stage_rows))
    acc: dict[tuple[int, str], list[float]] = {}  # (rank, kind) -> [bytes, time, calls]
    ar_time: dict[int, float] = {}  # TP all-reduce time inside the measured steps' compute
    if len(comm):
        dag.comm_table_bytes = int(comm["bytes"].sum())
        dur = (
            (comm["t_end_s"].astype("float64") - comm["t_start_s"].astype("float64"))
            .clip(lower=0.0)
            .fillna(0.0)
        )
        kind = [
            COMM_KINDS.get((o, g)) or f"?{o}@{g}"
            for o, g in zip(comm["op"].tolist(), comm["group"].tolist())
        ]
        df = pd.DataFrame(
            {
                "rank": comm["rank"].astype("int64"),
                "kind": kind,
                "bytes": comm["bytes"].astype("int64"),
                "dur": dur,
                "step": comm["step"].fillna(-1).astype("int64"),
            }
        )
        timed = df
        if len(stages):  # times over the measured steps only, like the stage compute times
            measured = stages[["rank", "step"]].astype("int64").drop_duplicates()
            timed = df.merge(measured, on=["rank", "step"])
            ar = timed[timed["kind"] == "ar"]
            ar_time = {int(r): float(t) for r, t in ar.groupby("rank")["dur"].sum().items()}
        times = {
            (int(r), k): float(t)
            for (r, k), t in timed.groupby(["rank", "kind"])["dur"].sum().items()
        }
        for (rank, k), g in df.groupby(["rank", "kind"], sort=True):
            acc[(int(rank), k)] = [
                int(g["bytes"].sum()),
                times.get((int(rank), k), 0.0),
                int(len(g)),
            ]
    used = set()
    for r, chain in chains.items():
        by_kind: dict[str, list[Node]] = {}
        for n in chain:
            k = _kind_of(n)
            if k:
                by_kind.setdefault(k, []).append(n)
        for k, nodes in by_kind.items():
            a = acc.get((r, k))
            if a is None:
                for n in nodes:
                    n.bytes, n.calls, n.time_s = 0, 0, 0.0
                continue
            used.add((r, k))
            share_b, rem = divmod(int(a[0]), len(nodes))
            for i, n in enumerate(nodes):
                n.bytes = share_b + (1 if i < rem else 0)  # exact: the shares add up to the total
                n.time_s = a[1] / len(nodes)
                n.calls = a[2] / len(nodes)
                n.time_source = (
                    "measured: isend post → wait (async, not transfer time)"
                    if n.op == "send"
                    else "measured (rank total split equally)"
                    if len(nodes) > 1
                    else "measured"
                )
    for (r, k), a in sorted(acc.items()):
        if (r, k) not in used:
            dag.unmatched.append(
                {"rank": r, "kind": k, "bytes": int(a[0]), "time_s": a[1], "calls": int(a[2])}
            )
    _compute_times(chains, stages, ar_time, weights)


def _compute_times(chains, stages, ar_time, weights) -> None:
    if not len(stages):
        return
    span = (
        stages["t_compute_end_s"].astype("float64") - stages["t_recv_end_s"].astype("float64")
    ).clip(lower=0.0)
    compute = {int(r): float(t) for r, t in span.groupby(stages["rank"]).sum().items()}
    for r, chain in chains.items():
        if r not in compute:
            continue
        own = max(0.0, compute[r] - ar_time.get(r, 0.0))
        blocks = [n for n in chain if n.kind == "compute"]
        w = [weights.get(n.op, 1.0) for n in blocks]
        total = sum(w) or 1.0
        for n, wi in zip(blocks, w):
            n.time_s = own * wi / total
            n.time_source = "apportioned (stage compute − TP all-reduce, by parameters)"


def block_weights_for(shape, tp: int) -> dict[str, float]:
    """Parameters per compute block on one rank (a proxy for its share of the stage's time)."""
    attn = shape.hidden * shape.q_dim * 2 + shape.hidden * shape.kv_dim * 2
    return {
        "embed": float(shape.hidden),
        "attn": attn / tp,
        "mlp": 3 * shape.hidden * shape.intermediate / tp,
        "head": shape.vocab * shape.hidden / tp,
    }


def dag_from_run(run) -> Dag:
    """The DAG of a loaded run (``harness.results.reader.Run``)."""
    layout = run.layout()
    spec = run.spec or {}
    cluster = spec.get("cluster") or {}
    weights = {}
    shape = shape_of(spec)
    if shape is not None:
        weights = block_weights_for(shape, layout.tp)
    return build_dag(
        layout,
        run.comm,
        run.stages,
        weights,
        cluster.get("gpus_per_node"),
        (spec.get("parallel") or {}).get("gpu_map"),
    )


def shape_of(spec: dict):
    from harness.errors import UsageError
    from harness.spec.catalog import model_preset
    from harness.spec.hf_config import model_from_hf_config

    model = spec.get("model") or {}
    try:
        if model.get("preset"):
            return model_preset(model["preset"])
        if model.get("config"):
            return model_from_hf_config(model["config"])
    except UsageError:
        return None  # a config.json that is not on this machine: equal weights instead
    return None
