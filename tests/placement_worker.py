"""torchrun entry for tests/test_gpu_placement.py: each rank writes where the harness places it.

    torchrun --nnodes 2 --nproc-per-node 2 ... tests/placement_worker.py SPEC OUT_DIR

What torchrun told the rank (RANK, LOCAL_RANK, GROUP_RANK = its node), the CUDA device index the
harness would give it (``dist.device_index`` with the spec's ``parallel.gpu_map``), and what the
planner and the DAG say about the same rank. No process group is needed for that.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.engines.reference import dist as hdist  # noqa: E402
from harness.plan.planner import plan  # noqa: E402
from harness.report.dag import gpu_label  # noqa: E402
from harness.spec.spec import load_spec


def main() -> None:
    spec = load_spec(sys.argv[1])
    env = hdist.launch_env()
    rank_plan = plan(spec).ranks[env.rank]
    out = {
        "rank": env.rank,
        "local_rank": env.local_rank,
        "node": int(os.environ["GROUP_RANK"]),
        "device": hdist.device_index(env, spec.parallel.gpu_map),
        "planned_node": rank_plan.node,
        "dag_label": gpu_label(env.rank, spec.cluster.gpus_per_node, spec.parallel.gpu_map),
    }
    path = Path(sys.argv[2]) / f"rank{env.rank}.json"
    path.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
