"""No function in the package is longer than 60 lines (definition to last line, decorators excluded): a longer one
does several jobs, and each job is easier to read, test and change as a named helper."""

from __future__ import annotations

import ast

from tests.helpers import REPO_ROOT

MAX_LINES = 60
PACKAGES = ("esi", "modeling_esi")
# Being split in other branches; each entry goes once its function is short (the test says when).
KNOWN_EXCEPTIONS: set[str] = set()


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function in `source` longer than `max_lines`."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and length > max_lines:
                    found.append((name, child.lineno, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_no_function_over_60_lines():
    found = {
        f"{path.relative_to(REPO_ROOT)}:{name}": length
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for name, _, length in long_functions(path.read_text())
    }
    problems = [f"{where} has {length} lines" for where, length in found.items() if where not in KNOWN_EXCEPTIONS]
    assert not problems, f"functions over {MAX_LINES} lines (split them into named helpers):\n" + "\n".join(problems)
    assert not KNOWN_EXCEPTIONS - found.keys(), (
        f"no longer long, drop from KNOWN_EXCEPTIONS: {KNOWN_EXCEPTIONS - found.keys()}"
    )


def test_long_functions_are_found_nested_and_in_classes():
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    source = f"class A:\n    def short(self):\n        pass\n\n    def long(self):\n{body.replace('    ', '        ')}"
    source += f"\n\ndef outer():\n    def inner():\n{body.replace('    ', '        ')}\n    return inner\n"
    assert long_functions(source) == [("A.long", 5, 61), ("outer", 68, 64), ("outer.inner", 69, 61)]
