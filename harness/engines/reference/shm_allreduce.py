"""The TP all-reduce of CPU ranks on one host through shared memory (``run.cpu_all_reduce: shm``).

Why: on the CPU twin a decode step is almost no arithmetic, and the step breakdown
(docs/performance.md, "Where a decode step goes") showed each rank spending 4.4–6.9 ms per step
in its 3–5 TP all-reduces against 1.5–2 ms of forward. Gloo runs every collective through hand-offs
between threads (the caller, gloo's worker, its transport loop, and back), and with 8 ranks on 2
cores each hand-off can wait for a time slice. Here the calling thread does everything: it copies
its partial sum into its slot of a shared segment, writes one byte into each peer's FIFO, and
blocks reading its own FIFO until every peer's byte of this op has come (the kernel wakes it
directly; nothing spins, which matters when ranks outnumber cores). Measured in isolation
(benchmarks/cpu_all_reduce.py: 8 processes, 4 TP pairs, 2048 fp32, this 2-core host): 0.28 ms per
all-reduce against gloo's 2.02 ms. vLLM's CPU backend has a shared-memory all-reduce for the same
reason.

Results: every rank adds the slots in rank order, so all ranks hold the same bits. For two ranks
that equals gloo's sum exactly (a + b == b + a in IEEE arithmetic); for more, the order of the
additions may differ from gloo's ring, as any two all-reduce algorithms may.

Protocol. Op g uses slot set g % 2. A rank writes op g + 2 into the set op g used only after every
peer's byte of op g + 1 came, which each peer sends after it finished reading op g: two sets
suffice. Each byte names its sender, and a byte that comes early (a peer already at op g + 1 while
this rank still waits for another peer's op g) is kept for its op. A tensor larger than a slot, or
not contiguous, goes through gloo instead: the choice depends only on its shape and dtype, which
every TP rank shares, so all ranks take the same path in the same order.

Set-up is collective over the TP group (``open_group``): the group's first rank creates the segment
and one FIFO per rank under /dev/shm with a random name and reserves the segment's pages
(``posix_fallocate``: a full tmpfs must fail here, not raise SIGBUS on a later write); every rank
opens them and checks the name's nonce in the header (so ranks on different hosts, which cannot
share memory, find out); if any rank failed, all keep gloo. Then the files are unlinked: the open
descriptors and the mapping stay valid and nothing is left on disk if a rank dies later. A rank
killed during the set-up itself (torchrun stopping a world whose other rank failed at start-up)
can leave its files: the names carry the creator's pid, and the next group's first rank on the
host removes those whose creator is gone (``_sweep_stale``).

A dead peer: the wait polls in 1 s slices; between slices it checks the peers' pids and the comm
timeout, and raises (the rank fails, torchrun stops the world) rather than waiting for ever.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import select
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

HEADER = 64  # bytes: the nonce (8) then zeros; the slots start here
POLL_MS = 1000


@dataclass
class ShmAllReduce:
    """One rank's end of a TP group's shared segment (built by ``open_group``)."""

    index: int  # this rank's position in the TP group
    slot_bytes: int
    pids: list[int]  # of every member, for the dead-peer check
    ranks: list[int]  # global ranks of the members, for messages
    timeout_s: float
    _mm: mmap.mmap = field(repr=False)
    _fifo_read: int = field(repr=False)  # own FIFO, non-blocking
    _fifo_write: list[int] = field(repr=False)  # peers' FIFOs (this rank's own entry: -1)
    _sets: torch.Tensor = field(init=False, repr=False)  # [2, size, slot_bytes] uint8 view
    _seen: list[int] = field(init=False, repr=False)  # bytes received per sender
    _op: int = 0
    ops: int = 0  # all-reduces done here (the rest went through gloo)

    @property
    def size(self) -> int:  # ranks in the TP group
        return len(self.ranks)

    def __post_init__(self) -> None:
        n = 2 * self.size * self.slot_bytes
        self._sets = torch.frombuffer(self._mm, dtype=torch.uint8, count=n, offset=HEADER).view(
            2, self.size, self.slot_bytes
        )
        self._seen = [0] * self.size
        self._byte = bytes([self.index])

    def fits(self, t: torch.Tensor) -> bool:
        return t.is_contiguous() and t.numel() * t.element_size() <= self.slot_bytes

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` (CPU, contiguous, ``fits``) over the group, in place."""
        nbytes = t.numel() * t.element_size()
        slots = self._sets[self._op % 2]
        flat = t.view(-1)
        slots[self.index, :nbytes].copy_(flat.view(torch.uint8))
        for fd in self._fifo_write:
            if fd >= 0:
                os.write(fd, self._byte)
        self._op += 1
        self._wait(self._op)
        parts = [slots[i, :nbytes].view(t.dtype) for i in range(self.size)]
        torch.add(parts[0], parts[1], out=flat)
        for p in parts[2:]:
            flat.add_(p)
        self.ops += 1
        return t

    def _wait(self, op: int) -> None:
        """Until every peer's byte of op ``op`` (its op-th byte) has come."""
        started = None
        while any(self._seen[i] < op for i in range(self.size) if i != self.index):
            try:
                got = os.read(self._fifo_read, 4096)
            except BlockingIOError:
                got = b""
            if got:
                for sender in got:
                    self._seen[sender] += 1
                continue
            started = started or time.monotonic()
            if not select.select([self._fifo_read], [], [], POLL_MS / 1e3)[0]:
                self._check(started)

    def _check(self, started: float) -> None:
        for i, pid in enumerate(self.pids):
            if i != self.index and not _alive(pid):
                raise RuntimeError(
                    f"TP all-reduce (shared memory): its peer rank {self.ranks[i]} (pid {pid}) "
                    "is gone"
                )
        if time.monotonic() - started > self.timeout_s:
            raise RuntimeError(
                f"TP all-reduce (shared memory): no answer from a peer in {self.timeout_s:.0f} s "
                "(run.comm_timeout_s)"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"


def _base(creator_pid: int, nonce: int) -> str:
    """The segment's path (its FIFOs: ``.0``, ``.1``, ...); ``STALE`` parses the pid back."""
    return os.path.join(_shm_dir(), f"harness-tp-{creator_pid}-{nonce:x}")


def open_group(
    pg, ranks: list[int], rank: int, slot_bytes: int, timeout_s: float
) -> tuple[ShmAllReduce | None, str | None]:
    """Collective over the TP group ``pg`` (every member calls it at the same point): this rank's
    ``ShmAllReduce``, or (None, why) when any member could not join (then all keep gloo)."""
    index = ranks.index(rank)
    size = len(ranks)
    slot_bytes = -(-slot_bytes // 64) * 64  # every slot 64-byte aligned: any dtype views it
    total = HEADER + 2 * size * slot_bytes
    # the first rank names the files (random: runs on one host never collide) and creates them
    word = torch.zeros(2, dtype=torch.int64)
    made = None  # index 0: why the files could not be made
    if index == 0:
        _sweep_stale(_shm_dir())
        nonce = secrets.randbits(62) + 1
        try:
            _create(_base(os.getpid(), nonce), size, total, nonce)
            word[0] = nonce
        except OSError as e:
            made = f"could not create the shared segment under {_shm_dir()}: {e.strerror or e}"
        word[1] = os.getpid()
    try:
        return _join(pg, ranks, rank, index, size, total, slot_bytes, timeout_s, word, made)
    except BaseException:
        if index == 0 and int(word[0]):  # a peer died mid-set-up: leave nothing on disk
            _unlink(_base(os.getpid(), int(word[0])), size)
        raise


def _join(pg, ranks, rank, index, size, total, slot_bytes, timeout_s, word, made):
    """``open_group`` after the first rank made the files: everyone opens them and agrees."""
    dist.broadcast(word, src=ranks[0], group=pg)
    nonce = int(word[0])
    base = _base(int(word[1]), nonce)
    opened, why = None, None
    if nonce == 0:
        why = made if isinstance(made, str) else "the group's first rank could not create it"
    else:
        try:
            opened = _open(base, index, size, total, nonce)
        except (OSError, ValueError) as e:
            why = f"rank {rank} could not open the shared segment: {e}"
    # everyone must agree (a rank on another host fails here) and learn the pids
    state = torch.tensor([os.getpid(), 1 if opened else 0], dtype=torch.int64)
    everyone = [torch.zeros_like(state) for _ in ranks]
    dist.all_gather(everyone, state, group=pg)
    if index == 0 and nonce:
        _unlink(base, size)  # every member has it open (or gave up): nothing stays on disk
    if not all(int(s[1]) for s in everyone):
        if opened is not None:
            _close_fds(*opened)
        bad = [r for r, s in zip(ranks, everyone) if not int(s[1])]
        return None, why or f"ranks {bad} could not open the shared segment"
    mm, fifo_read, fifo_write = opened
    return (
        ShmAllReduce(
            index,
            slot_bytes,
            [int(s[0]) for s in everyone],
            list(ranks),
            timeout_s,
            mm,
            fifo_read,
            fifo_write,
        ),
        None,
    )


def _sweep_stale(folder: str) -> None:
    """Remove segments whose first rank is gone. The files live only from their creation until
    every member opened them, but a rank killed in between (torchrun stopping a world whose other
    rank failed at start-up) leaves them; the name carries the creator's pid."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = STALE.fullmatch(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


STALE = re.compile(r"harness-tp-(\d+)-[0-9a-f]+(\.\d+)?")


def _create(base: str, size: int, total: int, nonce: int) -> None:
    fd = os.open(base, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, total)  # tmpfs full: fails here, not SIGBUS on a later write
        os.pwrite(fd, nonce.to_bytes(8, "little"), 0)
        for i in range(size):
            os.mkfifo(f"{base}.{i}", 0o600)
    except OSError:
        _unlink(base, size)
        raise
    finally:
        os.close(fd)


def _open(base: str, index: int, size: int, total: int, nonce: int):
    fd = os.open(base, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, total)
    finally:
        os.close(fd)
    if int.from_bytes(mm[:8], "little") != nonce:
        mm.close()
        raise ValueError("its header is not this group's (another host?)")
    # O_RDWR: opening a FIFO so never blocks (Linux), and a reader keeps it open for writers
    fifo_read = os.open(f"{base}.{index}", os.O_RDWR | os.O_NONBLOCK)
    fifo_write = [-1 if i == index else os.open(f"{base}.{i}", os.O_RDWR) for i in range(size)]
    return mm, fifo_read, fifo_write


def _close_fds(mm, fifo_read, fifo_write) -> None:
    mm.close()
    for fd in [fifo_read, *fifo_write]:
        if fd >= 0:
            os.close(fd)


def _unlink(base: str, size: int) -> None:
    for path in [base] + [f"{base}.{i}" for i in range(size)]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


SLOT_CAP = 16 << 20  # bytes per slot at most: larger tensors (long prefills) go through gloo


def attach(
    comm, backend: str, asked: str, tensor_bytes: int, timeout_s: float, profiled: bool = False
):
    """``run.cpu_all_reduce`` on this rank's ``comm`` (collective over its TP group):
    ``(transport, note)``, transport 'shm', 'gloo', 'nccl' or 'none' (TP 1) for the run's summary,
    note why shm fell back (None otherwise). ``tensor_bytes``: the largest all-reduce of a step (the
    micro-batch's tokens × hidden × dtype bytes).

    ``profiled`` (a torch.profiler window, ``run.profile_steps``) keeps gloo: with torch 2.13 (CPU)
    the profiler and this exchange together crashed a rank after the window (SIGSEGV) in 2 of 3
    TP2-PP2-DP2 runs, against 0 of 3 with gloo; the cause inside torch is not known (the same
    profiler trouble as build_stage's ``column_major``), and a profiled run is not one to time."""
    pg, ranks = comm.groups["tp"]
    if len(ranks) == 1:
        return "none", None
    if backend != "gloo" or asked != "shm":
        return backend, None
    if profiled:
        return "gloo", "run.cpu_all_reduce: shm not used in a run with run.profile_steps (gloo)"
    shm, why = open_group(pg, ranks, comm.rec.rank, min(tensor_bytes, SLOT_CAP), timeout_s)
    if shm is None:
        return "gloo", f"run.cpu_all_reduce: shm fell back to gloo: {why}"
    comm.shm["tp"] = shm
    return "shm", None
