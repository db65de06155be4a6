"""Uploaded files are the user's data: kept in a folder private to this server, each deleted once its
analysis is done, the folder removed when the server stops (also on SIGTERM)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def private_upload_folder() -> Path:
    """Gradio's upload folder ($GRADIO_TEMP_DIR), created for this server and removed at exit unless the
    environment names one."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="esi_app_uploads_")
        atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)
    return Path(os.environ["GRADIO_TEMP_DIR"])


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (how servers are stopped) raises SystemExit, so the exit handlers delete the uploads."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


_in_use: Counter[str] = Counter()
_in_use_lock = threading.Lock()


@contextmanager
def uploads_in_use(paths: list[str] | None) -> Iterator[None]:
    """Delete each uploaded file once the last analysis using it ends. Gradio stores uploads by content
    (one folder per sha), so two people uploading the same file at once share one path."""
    paths = list(paths or [])
    with _in_use_lock:
        _in_use.update(paths)
    try:
        yield
    finally:
        with _in_use_lock:
            _in_use.subtract(paths)
            done = [path for path in dict.fromkeys(paths) if _in_use[path] <= 0]
            for path in done:
                del _in_use[path]
            delete_uploads(done)


def delete_uploads(paths: list[str] | None) -> None:
    for path in paths or []:
        Path(path).unlink(missing_ok=True)
        try:
            Path(path).parent.rmdir()  # Gradio gives each upload its own folder
        except OSError:
            pass
