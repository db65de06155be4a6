"""A full disk, a used-up quota or a file-size limit ends a command-line tool with a sentence, not a traceback.

The long jobs commit their work in units (prepared shards, caption files, checkpoints), so the sentence can say
that rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file grew past the file-size limit",
}
# Libraries that wrap the OS error in their own type (Arrow, safetensors) keep its text.
_DISK_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG,
}


def disk_problem(error: BaseException) -> str | None:
    """What ran out, when `error` (or an error it was raised from) is a full disk, quota or file-size limit."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_PROBLEMS:
            return DISK_PROBLEMS[error.errno]
        for text, code in _DISK_TEXTS.items():
            if text in str(error):
                return DISK_PROBLEMS[code]
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def exit_on_full_disk(tool: str, rerun: str = "run the same command again") -> Iterator[None]:
    """Turn a full-disk error inside the block into `tool`'s exit with one sentence (status 1); `rerun` says how
    to continue."""
    try:
        yield
    except Exception as error:
        problem = disk_problem(error)
        if problem is None:
            raise
        sys.exit(
            f"error: {tool} stopped: {problem} ({type(error).__name__}: {str(error)[:800]}). Free some space (or raise "
            f"the limit) and {rerun}: work already committed is kept and not redone."
        )
