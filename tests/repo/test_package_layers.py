"""The package's import graph: nothing imports a higher layer or a command-line entry module, and there are no cycles.

Layers, lowest first (README, "Layout"): modeling_esi; esi's shared modules; esi.data and esi.knowledge;
esi.plot; esi.cqa, esi.train and esi.eval (which do not import each other); esi.app, esi.publish and esi.demo;
benchmarks.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

ENTRY_MODULES = {"train", "finetune", "cqa_generate", "app"}
LAYERS = {
    "modeling_esi": 0,
    "esi": 1,  # the package's own __init__
    "esi.constants": 1,
    "esi.text_encoder": 1,
    "esi.hub": 1,
    "esi.checksum": 1,
    "esi.extras": 1,
    "esi.licence": 1,
    "esi.data": 2,
    "esi.knowledge": 2,
    "esi.plot": 3,
    "esi.cqa": 4,
    "esi.train": 4,
    "esi.eval": 4,
    "esi.app": 5,
    "esi.publish": 5,
    "esi.demo": 5,
    "esi.release": 5,
    "model_cards": 6,
    "benchmarks": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str | None:
    """The LAYERS key a module belongs to (the longest matching prefix)."""
    candidates = [key for key in LAYERS if module == key or module.startswith(key + ".")]
    return max(candidates, key=len) if candidates else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from esi.cqa import run`
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for root in ("esi", "modeling_esi", "benchmarks") for p in (REPO_ROOT / root).rglob("*.py")]
    # model_cards/: its build script only (the release folder's copy of the remote code is data, not a module).
    files += list((REPO_ROOT / "model_cards").glob("*.py"))
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules or m.split(".")[0] in ENTRY_MODULES}
    return graph


def test_no_upward_or_sideways_imports_and_no_entry_module_imports():
    problems = []
    for module, imported in _graph().items():
        layer = LAYERS[_group(module)]
        for target in imported:
            if target.split(".")[0] in ENTRY_MODULES:
                problems.append(f"{module} imports the entry module {target}")
                continue
            target_group, own_group = _group(target), _group(module)
            if target_group == own_group or target_group is None:
                continue
            target_layer = LAYERS[target_group]
            if target_layer > layer or (target_layer == layer and layer > 1):
                problems.append(f"{module} (layer {layer}) imports {target} (layer {target_layer})")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt in graph and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_every_module_has_a_layer():
    assert not [m for m in _graph() if _group(m) is None]
