"""The library's shape: no Prefect below tasks/, no import cycles, layers that point one way.

Imports inside functions count: they are read from the source (AST), not from what happens to be
imported at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import irv2_core

PACKAGE = Path(irv2_core.__file__).resolve().parent
REPO = PACKAGE.parent
# lower may be imported by higher, never the other way round
LAYERS = {
    "errors": 0,
    "runtime": 0,
    "records": 0,
    "contracts": 0,
    "lineage": 0,
    "storage": 1,
    "models": 2,
    "config": 3,
    "data": 4,
    "evaluation": 5,
    "training": 6,
    "export": 7,
    "report": 7,
    "promotion": 7,
    "cli": 8,
    "__main__": 9,
}
BLOCKER = """
import sys
for name in ("prefect", "flows", "tasks"):
    sys.modules[name] = None  # any import of them now raises ImportError
"""


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """irv2_core modules that *module* imports anywhere in its source."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in known:
                    if candidate != module and not module.startswith(candidate + "."):
                        out.add(candidate)  # (a package's own __init__ is no edge)
                    break
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0  # the package root sets the CPU env


def test_no_import_cycles_counting_imports_inside_functions():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 30  # the walk saw the whole package


def test_layers_point_one_way():
    mods = _modules()
    unknown = {m.split(".")[1] for m in mods if "." in m} - set(LAYERS)
    assert not unknown, f"give these parts of irv2_core a layer: {unknown}"
    upward = [
        f"{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})"
        for m, p in mods.items()
        for n in _imports(m, p, mods)
        if _layer(n) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_every_module_imports_with_prefect_flows_and_tasks_blocked():
    names = sorted(m for m in _modules() if m != "irv2_core.__main__")
    done = _run_blocked(
        f"""
        import importlib
        for name in {names!r}:
            importlib.import_module(name)
        print("imported", len({names!r}))
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"imported {len(names)}" in done.stdout


def test_core_verbs_help_works_without_prefect():
    from irv2_core.cli import COMMANDS

    done = _run_blocked(
        f"""
        from irv2_core.cli import main
        for verb in {sorted(COMMANDS)!r}:
            try:
                main([verb, "--help"])
            except SystemExit as exc:
                assert exc.code == 0, (verb, exc.code)
        import sys
        print("mindspore imported:", "mindspore" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for verb in ("stage", "convert", "train", "evaluate", "export", "predict", "report"):
        assert f"usage: irv2 {verb}" in done.stdout
    # --help never pays for MindSpore's import (~2 s)
    assert "mindspore imported: False" in done.stdout


def test_bench_and_scripts_import_only_what_the_library_has():
    """bench/ and scripts/ import library names inside functions, where nothing runs them in CI:
    a module moved or renamed in irv2_core must not leave them broken."""
    import importlib

    missing = []
    for path in sorted([*REPO.glob("bench/*.py"), *REPO.glob("scripts/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("irv2_core"):
                if importlib.util.find_spec(node.module) is None:
                    missing.append(f"{path.name}: {node.module}")
                    continue
                module = importlib.import_module(node.module)
                missing += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name)
                    and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                ]
    assert not missing, missing


# tasks/ modules every stage task may use; any other module of tasks/ is one stage's own
SHARED_TASK_MODULES = {"tasks.caching", "tasks.common", "tasks.results", "tasks.nodes"}
# what flows may take from the storage layer: names and addresses, never I/O
FLOW_STORAGE_NAMES = {
    "irv2_core.storage.layout": None,  # every name: the layout is pure
    "irv2_core.storage.publish": {"StoreRef", "SMALL_RUN_FILES"},
    "irv2_core.storage.pull": {"split_run_uri"},
    "irv2_core.storage.s3client": {"check_endpoint_url"},  # a validator: no I/O
}


def _import_froms(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_no_stage_task_module_imports_another_stages_module():
    found = []
    for path in sorted((REPO / "tasks").glob("*.py")):
        me = f"tasks.{path.stem}"
        for module, _ in _import_froms(path):
            if path.stem == "__init__" or not module.startswith("tasks."):
                continue
            if module not in SHARED_TASK_MODULES and module != me:
                found.append(f"{me} imports {module}")
    assert not found, found


def test_flows_only_wire_no_store_io_outside_tasks():
    """Flows name things in the store; every read or write of it is a task (retried, visible)."""
    found = []
    for path in sorted((REPO / "flows").glob("*.py")):
        for module, names in _import_froms(path):
            if not module.startswith("irv2_core.storage"):
                continue
            allowed = FLOW_STORAGE_NAMES.get(module, set())
            bad = [] if allowed is None else [n for n in names or ["*"] if n not in allowed]
            found += [f"flows/{path.name}: {module}.{n}" for n in bad]
    assert not found, found
