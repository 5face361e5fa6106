"""harness: verify a parallel LLM serving strategy on real hardware (and its CPU twin)."""

from pathlib import Path

__version__ = "0.1.0"
SCHEMA_VERSION = 1
# The folder that holds the harness package: the checkout (its configs/, slurm/, .venv-vllm/, git
# history), or site-packages for an installed copy. The one place that finds it.
REPO_ROOT = Path(__file__).resolve().parent.parent
