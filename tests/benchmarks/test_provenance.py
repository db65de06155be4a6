"""Benchmarks ask git for their provenance in one place (benchmarks/provenance.py), and it answers correctly."""

from __future__ import annotations

import re

from benchmarks import provenance
from tests.helpers import REPO_ROOT


def test_only_the_provenance_module_runs_git():
    callers = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "benchmarks").rglob("*.py")
        if path.name != "provenance.py" and re.search(r"""["']git["']\s*,\s*["'](rev-parse|status)""", path.read_text())
    ]
    assert not callers, f"use benchmarks.provenance instead of asking git directly: {callers}"


def test_git_commit_is_head_marked_dirty_only_with_changed_tracked_files(monkeypatch):
    monkeypatch.delenv("ESI_GIT_COMMIT", raising=False)
    head = provenance.resolve_commit("HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    expected = head + ("-dirty" if provenance.changed_files() else "")
    assert provenance.git_commit() == expected


def test_git_commit_named_by_the_environment_where_there_is_no_git(monkeypatch):
    monkeypatch.setenv("ESI_GIT_COMMIT", "abc123")
    assert provenance.git_commit() == "abc123"


def test_timestamps():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", provenance.utc_timestamp())
    assert re.fullmatch(r"\d{8}T\d{6}Z", provenance.utc_timestamp(for_file_name=True))
