"""Process groups, backend, device and timeouts. The only reader of torch distributed env vars.

Backend: NCCL when the run uses CUDA, gloo on CPU. Device from ``LOCAL_RANK`` (through the
spec's per-node ``parallel.gpu_map`` when given). On CUDA the default group is bound to the rank's
device (``device_id``: NCCL initialises eagerly, a failure shows at start-up, and every later
group is split from it). One process group per TP group, PP group and DP group, and one per
directed pipeline edge (``pipeline_edges``: stage s -> s+1 of each TP shard, and the last stage's
TP rank 0 -> the coordinator), created on every rank in the same order (torch requires that).

Why a group per edge and direction: with NCCL a process group is one communicator and one stream
per rank, whose ops run in issue order, and in eager mode torch runs every unbatched send/recv of a
group in that order with everything else on it. On the default group the coordinator's receive of
returned tokens would queue behind its next micro-batch's send, and a pipeline with every
micro-batch in flight could wait in a cycle (tests/test_pipeline_streams.py models it). With one
group per directed edge, each stream carries one direction of one edge only.

On NCCL every TP group and pipeline edge also has a gloo twin (``make_host_groups``): the step
headers are host integers and travel there, read by the receiver without a device wait."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from harness.engines.reference.comm import Comm, CommRecorder
from harness.errors import UsageError
from harness.spec.layout import Layout, RankPlace


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun (or Slurm) told this process."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    in_torchrun: bool


def launch_env() -> LaunchEnv:
    env = os.environ
    in_torchrun = (
        "RANK" in env
        and "WORLD_SIZE" in env
        and ("TORCHELASTIC_RUN_ID" in env or "MASTER_ADDR" in env)
    )
    return LaunchEnv(
        rank=int(env.get("RANK", 0)),
        world_size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
        master_addr=env.get("MASTER_ADDR"),
        in_torchrun=in_torchrun,
    )


def slurm_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def fail_rank_request() -> int | None:
    """Test-only: ``HARNESS_FAIL_RANK=R`` makes rank R raise after its model is built."""
    v = os.environ.get("HARNESS_FAIL_RANK")
    return int(v) if v not in (None, "") else None


def device_index(env: LaunchEnv, gpu_map: list[int] | None) -> int:
    """The CUDA device of this rank on its node: ``gpu_map[LOCAL_RANK]``, identity without a map.

    ``parallel.gpu_map`` is per node (docs/architecture.md, "GPU placement"): entry i is the device
    index of local rank i on every node, so its length is the processes per node. A map for another
    count of processes per node is a UsageError here (the spec checked it against gpus_per_node)."""
    if not gpu_map:
        return env.local_rank
    if len(gpu_map) != env.local_world_size:
        raise UsageError(
            f"parallel.gpu_map: {len(gpu_map)} entries but this node runs {env.local_world_size} "
            "ranks; give one device index per local rank"
        )
    return gpu_map[env.local_rank]


def pick_device(
    kind: str, env: LaunchEnv, gpu_map: list[int] | None, spec_gpu: str | None = None
) -> torch.device:
    """``run.device``: cuda, cpu, or auto: CUDA when one is visible, unless the spec describes
    the CPU twin (``cluster.gpu: cpu``: its plan, KV layout and floors are the CPU's)."""
    cpu_spec = spec_gpu is not None and spec_gpu.lower() == "cpu"
    want_cuda = kind == "cuda" or (kind == "auto" and not cpu_spec and torch.cuda.is_available())
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            "run.device: cuda requested but no CUDA device is visible; use device: cpu or auto"
        )
    index = device_index(env, gpu_map)
    if index >= torch.cuda.device_count():
        raise UsageError(
            f"parallel.gpu_map: GPU {index} requested but only {torch.cuda.device_count()} visible"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def device_uuid(device: torch.device) -> str:
    """The NVML name of a CUDA device, 'GPU-<uuid>', from the UUID CUDA reports for it (what
    ``nvmlDeviceGetHandleByUUID`` takes; a MIG slice's may not resolve, and the sampler then says
    so)."""
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


@dataclass
class DistContext:
    env: LaunchEnv
    layout: Layout
    place: RankPlace
    device: torch.device
    backend: str
    comm: Comm
    # every rank, gloo, the whole run's timeout: the ranks wait here for rank 0 to write the run
    # (``engine.close``); rank 0's writing grows with the run, one collective's timeout does not
    end_group: object | None = None

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def is_first_stage(self) -> bool:
        return self.place.stage == 0

    @property
    def is_last_stage(self) -> bool:
        return self.place.stage == self.layout.pp - 1

    def peer(self, stage: int) -> int:
        """The rank holding the same TP shard and replica at another stage."""
        return self.layout.rank_of(self.place.dp, stage, self.place.tp)


def pipeline_edges(layout: Layout) -> list[tuple[int, int]]:
    """Every directed point-to-point edge of the pipeline as (src, dst) global ranks, in one order
    all ranks share: for each replica, stage s -> s+1 of each TP shard (hidden states), then the
    last stage's TP rank 0 -> the first stage's TP rank 0 (sampled tokens back to the
    coordinator). Empty when pp == 1."""
    edges = []
    if layout.pp == 1:
        return edges
    for dp in range(layout.dp):
        for s in range(layout.pp - 1):
            for tp in range(layout.tp):
                edges.append((layout.rank_of(dp, s, tp), layout.rank_of(dp, s + 1, tp)))
        edges.append((layout.rank_of(dp, layout.pp - 1, 0), layout.rank_of(dp, 0, 0)))
    return edges


def make_groups(
    layout: Layout, rank: int, new_group: Callable[[list[int]], object] | None
) -> tuple[dict[str, tuple[object, list[int]]], dict[tuple[int, int], object]]:
    """This rank's role groups ({name: (group, ranks)}) and pipeline edge groups ({(src, dst):
    group}). ``new_group(ranks)`` is called for every group of more than one rank in the same
    order on every rank (None: a world of one process, no group at all)."""
    groups: dict[str, tuple[object, list[int]]] = {"world": (None, list(range(layout.world_size)))}
    for name, all_groups in (
        ("tp", layout.tp_groups()),
        ("pp", layout.pp_groups()),
        ("dp", layout.dp_groups()),
    ):
        for ranks in all_groups:
            pg = new_group(ranks) if new_group is not None and len(ranks) > 1 else None
            if rank in ranks:
                groups[name] = (pg, ranks)
    p2p: dict[tuple[int, int], object] = {}
    for src, dst in pipeline_edges(layout):
        pg = new_group(sorted((src, dst))) if new_group is not None else None
        if rank in (src, dst):
            p2p[(src, dst)] = pg
    return groups, p2p


def make_host_groups(
    layout: Layout, rank: int, new_group: Callable[[list[int]], object]
) -> tuple[dict[str, object], dict[tuple[int, int], object]]:
    """Gloo twins of this rank's TP group and pipeline edges, for the step headers (host
    integers) when the device groups are NCCL: ``({"tp": group}, {(src, dst): group})``. Created
    on every rank in the same order (TP groups, then the edges of ``pipeline_edges``)."""
    tp: dict[str, object] = {}
    for ranks in layout.tp_groups():
        if len(ranks) > 1:
            pg = new_group(ranks)
            if rank in ranks:
                tp["tp"] = pg
    edges: dict[tuple[int, int], object] = {}
    for src, dst in pipeline_edges(layout):
        pg = new_group(sorted((src, dst)))
        if rank in (src, dst):
            edges[(src, dst)] = pg
    return tp, edges


def init(
    layout: Layout,
    device_kind: str,
    gpu_map: list[int] | None,
    timeout_s: float,
    instrument: str,
    spec_gpu: str | None = None,
    end_timeout_s: float | None = None,
) -> DistContext:
    env = launch_env()
    if env.world_size != layout.world_size:
        raise UsageError(
            f"parallel: the spec needs {layout.world_size} processes (tp*pp*dp) but this world has "
            f"{env.world_size}; start torchrun with --nproc-per-node/--nnodes that multiply to "
            f"{layout.world_size}"
        )
    device = pick_device(device_kind, env, gpu_map, spec_gpu)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if env.world_size > 1 and not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    new_group = (
        (lambda ranks: dist.new_group(ranks, timeout=timeout)) if env.world_size > 1 else None
    )
    groups, p2p = make_groups(layout, env.rank, new_group)
    host_tp, host_p2p = (
        make_host_groups(
            layout, env.rank, lambda ranks: dist.new_group(ranks, timeout=timeout, backend="gloo")
        )
        if backend != "gloo" and env.world_size > 1
        else ({}, {})
    )
    end_group = (
        dist.new_group(
            list(range(env.world_size)),
            timeout=datetime.timedelta(seconds=max(end_timeout_s or 0.0, timeout_s)),
            backend="gloo",
        )
        if env.world_size > 1
        else None
    )
    place = layout.place(env.rank)
    recorder = CommRecorder(env.rank, instrument, cuda=device.type == "cuda")
    comm = Comm(groups, recorder, p2p, host_tp, host_p2p)
    return DistContext(env, layout, place, device, backend, comm, end_group)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
