"""Process groups, backend, device and timeouts. The only reader of torch distributed env vars.

Backend: NCCL when the run uses CUDA, gloo on CPU. Device from ``LOCAL_RANK`` (through the
spec's per-node ``parallel.gpu_map`` when given). One process group per TP group, PP group and DP
group, created on every rank in the same order (torch requires that)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

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


def pick_device(kind: str, env: LaunchEnv, gpu_map: list[int] | None) -> torch.device:
    want_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
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


def init(
    layout: Layout, device_kind: str, gpu_map: list[int] | None, timeout_s: float, instrument: str
) -> DistContext:
    env = launch_env()
    if env.world_size != layout.world_size:
        raise UsageError(
            f"parallel: the spec needs {layout.world_size} processes (tp*pp*dp) but this world has "
            f"{env.world_size}; start torchrun with --nproc-per-node/--nnodes that multiply to "
            f"{layout.world_size}"
        )
    device = pick_device(device_kind, env, gpu_map)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if env.world_size > 1 and not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    place = layout.place(env.rank)
    groups: dict[str, tuple[object, list[int]]] = {"world": (None, list(range(env.world_size)))}
    for name, all_groups in (
        ("tp", layout.tp_groups()),
        ("pp", layout.pp_groups()),
        ("dp", layout.dp_groups()),
    ):
        for ranks in all_groups:
            # Every rank creates every group, in the same order; it keeps its own.
            pg = (
                dist.new_group(ranks, timeout=timeout)
                if env.world_size > 1 and len(ranks) > 1
                else None
            )
            if env.rank in ranks:
                groups[name] = (pg, ranks)
    recorder = CommRecorder(env.rank, instrument, cuda=device.type == "cuda")
    return DistContext(env, layout, place, device, backend, Comm(groups, recorder))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
