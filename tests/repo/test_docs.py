"""The documents are for users: the README is short and links every page of docs/, and no document names a
module, class or function that does not exist, a local `../shared` path, a commit hash or an issue number."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

REPO = REPO_ROOT
DOCUMENTS = [
    REPO / "README.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "model_cards").glob("*/README.md")),
]
# `esi.x.y` or `esi.x.y(arguments)` in backticks, and `from esi.x import a, b` in a code block.
DOTTED_NAME = re.compile(r"`((?:esi|modeling_esi)(?:\.\w+)+)(?:\([^`]*\))?`")
# `python -m module` commands, this repository's scripts included (benchmarks, model_cards).
PYTHON_M = re.compile(r"python -m ((?:esi|modeling_esi|benchmarks|model_cards)(?:\.\w+)+)")
FROM_IMPORT = re.compile(r"^\s*from ((?:esi|modeling_esi)(?:\.\w+)*) import \(?([\w, ]+)\)?", re.MULTILINE)


def named_in(text: str) -> set[str]:
    """Every name of this package that `text` mentions, dotted: `esi.x.y`, and `esi.x.y` for `from esi.x import y`."""
    names = set(DOTTED_NAME.findall(text)) | set(PYTHON_M.findall(text))
    for module, imported in FROM_IMPORT.findall(text):
        names.update(f"{module}.{name.split(' as ')[0].strip()}" for name in imported.split(",") if name.strip())
    return names


def test_readme_is_at_most_200_lines_and_links_every_docs_page():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    missing = [page.name for page in (REPO_ROOT / "docs").glob("*.md") if f"(docs/{page.name})" not in readme]
    assert not missing, f"README does not link {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_names_are_found_with_call_syntax_and_in_imports():
    text = "`esi.data.windows.random_start(samples, L, rng)`\n```python\nfrom esi.eval.stats import macro_auroc, nope\n"
    assert named_in(text) == {
        "esi.data.windows.random_start",
        "esi.eval.stats.macro_auroc",
        "esi.eval.stats.nope",
    }
    assert not _resolves("esi.eval.stats.nope") and _resolves("esi.data.windows.random_start")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_documents_name_only_what_exists_and_nothing_of_this_workplace(document: Path):
    text = document.read_text()
    unknown = sorted(name for name in named_in(text) if not _resolves(name))
    assert not unknown, f"{document.name} names {unknown}, which do not exist"
    assert "../shared" not in text
    assert not re.search(r"\bissue \d+", text, flags=re.I), "issue numbers mean nothing to users"
    assert not re.search(r"\b(commit|at) [0-9a-f]{7,40}\b", text), "commit hashes belong in result files"
