"""The package's import graph: nothing imports a higher layer or a command-line entry module, there are no cycles,
and every import names something that exists.

Layers, lowest first (README, "Layout"): modeling_esi; esi's shared modules; esi.data and esi.knowledge;
esi.plot; esi.cqa, esi.train and esi.eval (which do not import each other); esi.app, esi.publish and esi.demo;
benchmarks; the checkout's scripts (train.py, ..., dataset_scripts/); tests.
Imports inside functions count too: a lazy import is still a dependency, and since it runs only when its function
does, a name it imports that no longer exists goes unnoticed until then. String imports
(`importlib.import_module("esi.x")`, `__import__`, `runpy.run_module`) count as imports.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import tomllib

from tests.helpers import REPO_ROOT

# The checkout's thin entry scripts (`python train.py`, `python dataset_scripts/prepare.py`).
CHECKOUT_SCRIPTS = {path.stem for path in REPO_ROOT.glob("*.py")} | {"dataset_scripts"}
LAYERS = {
    "modeling_esi": 0,
    "esi": 1,  # the package's own __init__
    "esi.constants": 1,
    "esi.text_encoder": 1,
    "esi.hub": 1,
    "esi.checksum": 1,
    "esi.disk_errors": 1,
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
    **dict.fromkeys(CHECKOUT_SCRIPTS, 7),
    "tests": 8,
}
STRING_IMPORTERS = {"import_module", "__import__", "run_module"}


def entry_points() -> dict[str, tuple[str, str]]:
    """pyproject.toml's console scripts: name -> (module, function)."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: tuple(target.split(":")) for name, target in scripts.items()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str | None:
    """The LAYERS key a module belongs to (the longest matching prefix)."""
    candidates = [key for key in LAYERS if module == key or module.startswith(key + ".")]
    return max(candidates, key=len) if candidates else None


@cache
def _modules() -> dict[str, Path]:
    files = [p for root in ("esi", "modeling_esi", "benchmarks", "tests") for p in (REPO_ROOT / root).rglob("*.py")]
    # model_cards/: its build script only (the release folder's copy of the remote code is data, not a module).
    files += list((REPO_ROOT / "model_cards").glob("*.py"))
    files += list(REPO_ROOT.glob("*.py")) + list((REPO_ROOT / "dataset_scripts").glob("*.py"))
    return {_module_name(p): p for p in files}


def _string_import(node: ast.Call) -> str | None:
    """The module a call like `importlib.import_module("esi.x")` imports (absolute names only)."""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name not in STRING_IMPORTERS or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
        return first.value
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _from_imports(module_name: str, tree: ast.Module, is_package: bool = False) -> list[tuple[int, str, str]]:
    """(line, module, name) for every `from module import name` in the module, relative imports resolved."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.extend((node.lineno, module, alias.name) for alias in node.names)
    return found


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) for every `import module` and every string import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.Call) and (target := _string_import(node)):
            found.append((node.lineno, target))
    return found


def _imports(module_name: str, tree: ast.Module, is_package: bool = False) -> set[str]:
    found = {module for _, module in _imported_modules(tree)}
    for _, module, name in _from_imports(module_name, tree, is_package):
        found.update((module, f"{module}.{name}"))  # `from esi.cqa import run` imports esi.cqa.run
    return found


@cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {m for m in _imports(name, _tree(path), path.name == "__init__.py") if m in modules}
        for name, path in modules.items()
    }


def _entry_modules() -> set[str]:
    """Modules that are only a command: the checkout's scripts and the `cli` modules behind console scripts."""
    commands = {module for module, _ in entry_points().values() if module.rpartition(".")[2] == "cli"}
    return commands | {m for m in _modules() if m.split(".")[0] in CHECKOUT_SCRIPTS}


# Benchmarks whose measurement is a command's own call path: they start the command, as a script would.
COMMAND_TRACERS = {"benchmarks.call_path"}


def test_no_upward_or_sideways_imports_and_no_entry_module_imports():
    problems = []
    entry_modules = _entry_modules()
    entry_functions = {f"{module}.{function}" for module, function in entry_points().values()}
    for module, imported in _graph().items():
        own_group = _group(module)
        layer = LAYERS[own_group]
        for target in imported:
            # The checkout's scripts exist to start a command, and tests to run one.
            starts_commands = layer >= LAYERS["dataset_scripts"] or module in COMMAND_TRACERS
            if not starts_commands and (target in entry_modules or target in entry_functions):
                problems.append(f"{module} imports the command-line entry {target}")
                continue
            target_group = _group(target)
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


def test_every_console_script_names_a_function_of_a_layered_module():
    modules = _modules()
    problems = []
    for script, (module, function) in entry_points().items():
        if module not in modules or _group(module) is None:
            problems.append(f"{script}: {module} is not a module of a layer")
        elif function not in _top_level_names(modules[module]):
            problems.append(f"{script}: {module} defines no {function}")
    assert not problems, "\n".join(problems)


def _bound_names(statements: list[ast.stmt]) -> set[str]:
    """Names a module body binds, looking into if/try/with blocks but not into functions or classes."""
    names = set()
    for node in statements:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for block in ("body", "orelse", "finalbody", "handlers"):
            if isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.ExceptHandler) and hasattr(node, block):
                names |= _bound_names(getattr(node, block))
    return names


def _top_level_names(path: Path) -> frozenset[str]:
    tree = _tree(path)
    names = _bound_names(tree.body)
    if "__getattr__" in names:  # PEP 562: the names it serves are the strings the module spells out
        names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    if any(isinstance(n, ast.ImportFrom) and n.names[0].name == "*" for n in tree.body):
        names.add("*")
    return frozenset(names)


def unresolved_imports(module_name: str, tree: ast.Module, is_package: bool = False) -> list[str]:
    """Imports of this repository's modules that name a module, or a name in a module, that does not exist."""
    modules = _modules()
    ours = ("esi", "modeling_esi", "benchmarks", "tests", "model_cards")
    problems = []
    for line, module, name in _from_imports(module_name, tree, is_package):
        if module.split(".")[0] not in ours:
            continue
        if module not in modules:
            problems.append(f"{module_name}:{line}: no module {module}")
        elif f"{module}.{name}" not in modules and not {name, "*"} & _top_level_names(modules[module]):
            problems.append(f"{module_name}:{line}: {module} has no {name}")
    for line, module in _imported_modules(tree):
        if module.split(".")[0] in ours and module not in modules:
            problems.append(f"{module_name}:{line}: no module {module}")
    return problems


def test_every_import_names_something_that_exists():
    problems = [
        problem
        for name, path in _modules().items()
        for problem in unresolved_imports(name, _tree(path), path.name == "__init__.py")
    ]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_are_for():
    """A lazy import of a removed name from a command module, a string import of an upper layer and of a module
    that does not exist, and `esi` importing `tests`."""
    command = min(m for m in _entry_modules() if m.startswith("esi."))  # e.g. esi.cqa.cli
    upper = min(m for m in _modules() if _group(m) == "esi.app")
    tree = ast.parse(
        "import importlib\n\n\n"
        "def later():\n"
        f"    from {command} import removed_long_ago\n"
        "    from tests import conftest\n"
        "    __import__('esi.gone')\n"
        f"    return importlib.import_module('{upper}')\n"
    )
    module = "esi.data.probe"
    assert unresolved_imports(module, tree) == [
        f"esi.data.probe:5: {command} has no removed_long_ago",
        "esi.data.probe:7: no module esi.gone",
    ]
    assert {upper, "tests.conftest", command} <= _imports(module, tree)
    assert all(LAYERS[_group(m)] > LAYERS[_group(module)] for m in (upper, "tests.conftest"))
