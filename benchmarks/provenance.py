"""Where a benchmark's result came from: the commit it ran at and when. The one place benchmarks ask git."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()


def resolve_commit(rev: str) -> str:
    """The full hash of `rev` (a branch, tag or abbreviated hash) in this repository."""
    return _git("rev-parse", rev)


def changed_files() -> list[str]:
    """Tracked files with uncommitted changes, as `git status --porcelain` lists them. Untracked files do not
    count: a running benchmark writes its own results into the tree."""
    return _git("status", "--porcelain", "--untracked-files=no").splitlines()


def git_commit() -> str:
    """HEAD, with "-dirty" when tracked files have uncommitted changes. ESI_GIT_COMMIT names it where the tree has
    no .git (a copy of the working tree on another machine); "unknown" where neither is there."""
    if os.environ.get("ESI_GIT_COMMIT"):
        return os.environ["ESI_GIT_COMMIT"]
    try:
        return resolve_commit("HEAD") + ("-dirty" if changed_files() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def utc_timestamp(for_file_name: bool = False) -> str:
    """Now in UTC: ISO 8601 (2026-01-31T12:00:00Z), or compact for a result file's name (20260131T120000Z)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ" if for_file_name else "%Y-%m-%dT%H:%M:%SZ")
