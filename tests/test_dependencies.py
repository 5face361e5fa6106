"""pyproject.toml declares exactly the third-party packages harness/ imports (no more, no fewer)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTION = {
    "yaml": "pyyaml",
    "pynvml": "nvidia-ml-py",
    "prometheus_client": "prometheus-client",
    "mlperf_loadgen": "mlcommons-loadgen",
}


def _imported() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in harness/ -> the files importing them."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "harness" and top not in sys.stdlib_module_names:
                    out.setdefault(DISTRIBUTION.get(top, top), set()).add(
                        str(path.relative_to(ROOT))
                    )
    return out


def test_every_import_is_declared_and_every_dependency_imported():
    text = (
        ROOT / "pyproject.toml"
    ).read_text()  # [project] dependencies = [ "name>=x", ... ] (no tomllib on 3.10)
    deps = re.findall(
        r'"([^"]+)"', re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    )
    declared = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps}
    # an optional extra (harness[loadgen]): imported only where its feature runs
    extras = re.findall(r'^loadgen = \["([^"<>=]+)==', text, re.M)
    assert extras == ["mlcommons-loadgen"]
    imported = _imported()
    assert set(imported) - declared - set(extras) == set(), {
        k: imported[k] for k in set(imported) - declared - set(extras)
    }
    assert imported["mlcommons-loadgen"] == {"harness/engines/loadgen/bridge.py"}
    assert declared - set(imported) == set()
    # the two the project's users name: accelerate cross-checks the weight bytes, transformers reads
    # configs
    assert "harness/engines/reference/model/accounting.py" in imported["accelerate"]
    assert "harness/spec/hf_config.py" in imported["transformers"]
