"""Uploaded files are the user's data: kept in a folder private to this server, each deleted once its
analysis is done, an upload never analysed deleted after `UNANALYSED_TTL_S`, the folder removed when the server
stops (also on SIGTERM). `UploadQuota` bounds what one request and one client address may upload in all."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# An upload that no analysis has used within this time is deleted (the page asks for it again if needed).
UNANALYSED_TTL_S = 600
SWEEP_INTERVAL_S = 60


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


def sweep_unanalysed(folder: Path, max_age_s: float = UNANALYSED_TTL_S) -> list[Path]:
    """Delete the files below `folder` older than `max_age_s` that no analysis is using, and the folders they
    leave empty; returns the deleted files."""
    deadline = time.time() - max_age_s
    deleted = []
    with _in_use_lock:
        busy = {str(Path(path).resolve()) for path, count in _in_use.items() if count > 0}
        for path in sorted(Path(folder).rglob("*"), reverse=True):  # files before the folders holding them
            try:
                if path.is_dir() and not path.is_symlink():
                    if path != folder and not any(path.iterdir()):
                        path.rmdir()
                elif str(path.resolve()) not in busy and path.lstat().st_mtime < deadline:
                    path.unlink()
                    deleted.append(path)
            except FileNotFoundError:  # removed meanwhile (an analysis finished)
                continue
    return deleted


def start_sweeper(folder: Path, max_age_s: float = UNANALYSED_TTL_S, every_s: float = SWEEP_INTERVAL_S) -> None:
    """Run `sweep_unanalysed` on `folder` every `every_s` seconds in a daemon thread."""

    def sweep_forever() -> None:
        while True:
            time.sleep(every_s)
            sweep_unanalysed(folder, max_age_s)

    threading.Thread(target=sweep_forever, name="upload-sweeper", daemon=True).start()


class UploadQuota:
    """ASGI middleware for the upload route: one request may carry at most `per_request_bytes` in all (Gradio's
    own limit is per file), one client address at most `per_client_bytes` within `window_s`. A refusal is a
    sentence with the HTTP status (411, 413, 429), sent before the body is read."""

    def __init__(self, app, per_request_bytes: int, per_client_bytes: int, window_s: float = 3600) -> None:
        self.app = app
        self.per_request_bytes = per_request_bytes
        self.per_client_bytes = per_client_bytes
        self.window_s = window_s
        self._spent: defaultdict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        refusal = self._refusal(scope, int(length) if length.isdigit() else None)
        if refusal is not None:
            status, message = refusal
            body = json.dumps({"error": message}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        stated, received = int(length), 0

        async def at_most_stated() -> dict:  # a body longer than its Content-Length ends the request
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return {"type": "http.disconnect"} if received > stated else message

        await self.app(scope, at_most_stated, send)

    def _refusal(self, scope, size: int | None) -> tuple[int, str] | None:
        limit_mb = self.per_request_bytes / 2**20
        if size is None:
            return 411, "An upload must state its size (Content-Length)."
        if size > self.per_request_bytes:
            return 413, f"This upload has {size / 2**20:.1f} MB in all; one upload may carry at most {limit_mb:g} MB."
        client = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        with self._lock:
            spent = self._spent[client]
            while spent and spent[0][0] < now - self.window_s:
                spent.popleft()
            total = sum(n for _, n in spent)
            if total + size > self.per_client_bytes:
                return 429, (
                    f"This address uploaded {total / 2**20:.1f} MB in the last {self.window_s / 60:g} minutes; at most "
                    f"{self.per_client_bytes / 2**20:g} MB are accepted in that time. Try again later."
                )
            spent.append((now, size))
        return None
