"""A private, throw-away Slurm cluster on this host, for the Slurm tests.

One ``munged`` (own key, own socket), one ``slurmctld`` and one ``slurmd`` per
node, all started by us in the foreground (``-D``/``-F``) so that we hold their
PIDs and stop exactly those, even when a test fails. Everything lives in a
temp dir; the only thing touched outside it is ``/etc/hosts``, which gets one
marked line so the node names resolve (torchrun's rendezvous host is the first
node name), and loses it again on stop.

Facts this relies on (Debian 12, Slurm 22.05.8, no systemd):
- two ``slurmd`` on one host work with ``NodeHostname=<host> NodeAddr=127.0.0.1``
  and one port per node;
- ``MailProg=/bin/true`` is required (no mail binary);
- ``Sockets=1 CoresPerSocket=N`` plus ``SlurmdParameters=config_overrides``
  lets a node advertise more CPUs than the box has without being drained;
- ``EnforcePartLimits=ALL`` turns impossible requests into errors, not
  forever-pending jobs;
- no accounting daemon, so ``sacct`` is useless: job state and exit codes come
  from ``scontrol show job`` (``MinJobAge`` is raised so finished jobs stay
  visible) and the ``jobcomp/filetxt`` log;
- clients find the cluster through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / ".ci" / "slurm_setup.sh"
REQUIRED = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "shellcheck")
HOSTS_FILE = Path("/etc/hosts")
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed here; the message is the skip reason."""


class SlurmStartError(RuntimeError):
    """Slurm is installed but the local cluster did not come up (a test failure, not a skip)."""


def missing_commands() -> list[str]:
    return [c for c in REQUIRED if shutil.which(c) is None]


def ensure_installed() -> None:
    """Install the Debian packages via .ci/slurm_setup.sh if any command is missing."""
    if not missing_commands():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SlurmUnavailable(
            "Slurm packages not installed and cannot install them (needs root and apt-get): "
            + ", ".join(missing_commands())
        )
    proc = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0 or missing_commands():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        raise SlurmUnavailable(f"installing Slurm packages failed: {tail[0]}")


def _free_ports(n: int) -> list[int]:
    """n distinct ports that are free right now (bound then released)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class JobResult:
    job_id: str
    state: str
    exit_code: int
    signal: int
    stdout: str


@dataclass
class SlurmCluster:
    """A running local cluster; use :func:`start_cluster` and :meth:`stop`."""

    root: Path
    conf: Path
    nodes: list[str]
    cpus_per_node: int
    partition: str = "debug"
    procs: list[subprocess.Popen] = field(default_factory=list)
    hosts_marker: str = ""

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm clients (sbatch, scontrol, ...)."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        for k in list(env):  # a test run inside a Slurm job must not leak into ours
            if k.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_")):
                del env[k]
        return env

    def client(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args),
            env=kw.pop("env", self.env),
            capture_output=True,
            text=True,
            check=check,
            timeout=kw.pop("timeout", 30),
            **kw,
        )

    # -- jobs ---------------------------------------------------------------------
    def sbatch(
        self,
        script: Path | str,
        *opts: str,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> str:
        """Submit and return the job id. ``script`` is a path or the script text."""
        run_env = self.env | (env or {})
        if isinstance(script, Path):
            args = ["sbatch", "--parsable", *opts, str(script)]
            proc = self.client(*args, check=False, env=run_env, cwd=cwd)
        else:
            proc = self.client(
                "sbatch", "--parsable", *opts, check=False, env=run_env, cwd=cwd, input=script
            )
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job_fields(self, job_id: str) -> dict[str, str]:
        out = self.client("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, timeout: float = 120.0, poll: float = 0.5) -> JobResult:
        """Poll ``scontrol show job`` until the job is in a terminal state.

        Polling, not ``sbatch --wait``: the latter can report 0 and lose the
        job's exit code (seen with a low MinJobAge).
        """
        deadline = time.monotonic() + timeout
        while True:
            f = self.job_fields(job_id)
            state = f.get("JobState", "?")
            if state in TERMINAL_STATES:
                code, sig = (int(x) for x in f.get("ExitCode", "0:0").split(":"))
                out = Path(f.get("StdOut", ""))
                text = out.read_text() if out.is_file() else ""
                return JobResult(job_id, state, code, sig, text)
            if time.monotonic() > deadline:
                self.client("scancel", job_id, check=False)
                raise TimeoutError(
                    f"job {job_id} still {state} after {timeout:.0f}s\n" + self.logs()
                )
            time.sleep(poll)

    def wait_running(self, job_id: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.job_fields(job_id).get("JobState")) != "RUNNING":
            if state in TERMINAL_STATES or time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} is {state}, expected RUNNING\n" + self.logs())
            time.sleep(0.2)

    def logs(self, tail: int = 30) -> str:
        """Last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- lifecycle ----------------------------------------------------------------
    def stop(self, remove: bool = True) -> None:
        """Stop the daemons we started (by PID, newest first), undo /etc/hosts, and
        remove the temp dir (``remove=False`` keeps it for a post-mortem)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        if self.hosts_marker:
            _remove_hosts_line(self.hosts_marker)
            self.hosts_marker = ""
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _add_hosts_line(names: list[str], marker: str) -> None:
    # /etc/hosts is often a bind mount in containers: rewrite in place, never replace.
    with HOSTS_FILE.open("a") as f:
        f.write(f"127.0.0.1 {' '.join(names)} {marker}\n")


def _remove_hosts_line(marker: str) -> None:
    text = HOSTS_FILE.read_text()
    kept = [ln for ln in text.splitlines(keepends=True) if marker not in ln]
    with HOSTS_FILE.open("w") as f:
        f.write("".join(kept))


def _slurm_conf(
    root: Path,
    nodes: list[str],
    ports: list[int],
    ctld_port: int,
    cpus: int,
    partition: str,
    max_time: str,
) -> str:
    host = socket.gethostname()
    node_lines = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} "
        f"CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 "
        f"RealMemory=1000 State=UNKNOWN"
        for n, p in zip(nodes, ports)
    )
    return f"""\
# private test cluster (tests/slurm_cluster.py)
ClusterName=harnesstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
MailProg=/bin/true
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
{node_lines}
PartitionName={partition} Nodes=ALL Default=YES MaxTime={max_time} State=UP OverSubscribe=NO
"""


def _wait_for(pred, timeout: float, what: str, cluster: SlurmCluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            extra = cluster.logs() if cluster else ""
            raise SlurmStartError(f"local Slurm: {what} not ready after {timeout:.0f}s\n{extra}")
        time.sleep(0.1)


def start_cluster(
    nodes: int = 2, cpus_per_node: int = 8, *, partition: str = "debug", max_time: str = "10:00"
) -> SlurmCluster:
    """Install-if-needed and start a private cluster with ``nodes`` nodes.

    Raises :class:`SlurmUnavailable` (message = skip reason) when the packages
    cannot be installed, :class:`SlurmStartError` when the daemons do not come up.
    The caller must call ``stop()`` (the ``local_slurm`` fixture does).
    """
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    os.chmod(root, 0o755)  # munged checks its socket dir's ancestors
    for sub in ("munge", "state", "spool", "run", "log", "etc"):
        (root / sub).mkdir()
    os.chmod(root / "munge", 0o700)
    tag = f"h{os.getpid()}x{os.urandom(2).hex()}"
    names = [f"{tag}n{i}" for i in range(1, nodes + 1)]
    cluster = SlurmCluster(
        root=root,
        conf=root / "etc" / "slurm.conf",
        nodes=names,
        cpus_per_node=cpus_per_node,
        partition=partition,
    )
    try:
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        munge_sock = root / "munge" / "munge.socket"
        cluster.procs.append(
            subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={munge_sock}",
                    f"--pid-file={root}/munge/munged.pid",
                    f"--log-file={root}/log/munged.log",
                    f"--seed-file={root}/munge/munged.seed",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(root / "log" / "munged.err.log", "w"),
            )
        )
        _wait_for(munge_sock.exists, 10, "munged", cluster)

        *node_ports, ctld_port = _free_ports(nodes + 1)
        cluster.conf.write_text(
            _slurm_conf(root, names, node_ports, ctld_port, cpus_per_node, partition, max_time)
        )
        cluster.hosts_marker = f"# harness-slurm-test {tag}"
        _add_hosts_line(names, cluster.hosts_marker)
        for n in names:
            (root / "spool" / n).mkdir()

        daemon_env = cluster.env
        cluster.procs.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
                env=daemon_env,
                stdout=subprocess.DEVNULL,
                stderr=open(root / "log" / "slurmctld.err.log", "w"),
            )
        )
        for n in names:
            cluster.procs.append(
                subprocess.Popen(
                    ["slurmd", "-D", "-f", str(cluster.conf), "-N", n],
                    env=daemon_env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(root / "log" / f"slurmd-{n}.err.log", "w"),
                )
            )

        def all_idle() -> bool:
            dead = [p.args[0] for p in cluster.procs if p.poll() is not None]
            if dead:
                raise SlurmStartError(f"local Slurm: {dead[0]} exited\n{cluster.logs()}")
            out = cluster.client("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout
            states = dict(ln.split() for ln in out.splitlines() if ln.strip())
            return all(states.get(n, "").startswith("idle") for n in names)

        _wait_for(all_idle, 30, "nodes idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def local_slurm():
    """A two-node local cluster for a test module; skipped only if Slurm cannot be installed."""
    try:
        cluster = start_cluster(nodes=2, cpus_per_node=8)
    except SlurmUnavailable as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        cluster.stop()
