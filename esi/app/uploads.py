"""Uploaded files are the user's data: kept in a folder private to this server, each deleted once its
analysis is done, the folder removed when the server stops (also on SIGTERM)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
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


def delete_uploads(paths: list[str] | None) -> None:
    for path in paths or []:
        Path(path).unlink(missing_ok=True)
        try:
            Path(path).parent.rmdir()  # Gradio gives each upload its own folder
        except OSError:
            pass
