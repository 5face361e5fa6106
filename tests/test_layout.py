"""The package layout: imports go down the layering only (no cycle), modules stay small, and the
top of ``harness/`` holds only the CLI entry and the error type (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "harness"
# Lowest first; a package may import only packages lower in this list (and itself).
LAYERS = [
    "errors",
    "spec",
    "plan",
    "measure",
    "results",
    "engines",
    "verdicts",
    "report",
    "emulate",
    "predict",
    "sweep",
    "commands",
    "cli",
]
TOP_LEVEL_FILES = {"__init__.py", "__main__.py", "cli.py", "errors.py"}


TOP_NAMES = {"__version__", "SCHEMA_VERSION", "REPO_ROOT"}  # defined in harness/__init__.py


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "harness":
        return None
    if len(parts) == 1 or parts[1] in TOP_NAMES:
        return ""
    return "cli" if parts[1] == "__main__" else parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harness":
                out += [f"harness.{a.name}" for a in node.names]
            else:
                out.append(node.module)
    return out


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        yield ".".join(rel.parts), path


def test_top_of_harness_holds_only_entry_points():
    files = {p.name for p in ROOT.iterdir() if p.is_file() and p.suffix == ".py"}
    assert files == TOP_LEVEL_FILES
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {"errors", "cli"}


def test_imports_go_down_the_layers_only():
    bad = []
    for module, path in _modules():
        mine = _package(module)
        if mine in ("", None):
            continue
        for imported in _imports(path):
            theirs = _package(imported)
            if theirs in (None, "", mine):  # "from harness import __version__" is the top package
                continue
            if theirs not in LAYERS or LAYERS.index(theirs) > LAYERS.index(mine):
                bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    graph = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        deps = set()
        for imported in _imports(path):
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != module and not module.startswith(imported + "."):
                deps.add(imported)
        graph[module] = {d for d in deps if not d.endswith("__init__") and d in names}
    # Package __init__ modules that only hold a docstring have no edges; others are ordinary nodes.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d) :] + [d] if d in stack else [m, d])
                return True
            if state.get(d) is None and visit(d, stack + [d]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)


def test_modules_stay_small():
    long = [
        f"{p.relative_to(ROOT.parent)}: {n}"
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long, long


def test_every_package_says_its_place():
    for init in ROOT.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init} has no docstring"
        if init.parent.parent == ROOT:
            assert "import" in doc, f"{init}: say which packages it may import"
