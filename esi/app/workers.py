"""Analyses run in worker processes, each holding its own `Analyser`, so one upload can neither stall the
page (a request that overruns its time is stopped by killing its worker, which is then replaced) nor
block the others (requests run side by side, one per worker)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)


class AnalysisTimeout(RuntimeError):
    """An analysis ran past its time and was stopped."""


class WorkerFailed(RuntimeError):
    """A worker process died during an analysis (e.g. killed for memory)."""


def _serve(factory: Callable[[], Any], connection: Connection, threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch loads: workers share the cores
    target = factory()
    connection.send(("ready", None))
    while True:
        method, args = connection.recv()
        try:
            connection.send(("ok", getattr(target, method)(*args)))
        except ValueError as error:  # refusals (RecordError): the message is for the user
            connection.send(("refused", str(error)))
        except Exception:
            logger.exception("%s failed in worker %d", method, os.getpid())
            connection.send(("failed", None))


@dataclass(eq=False)  # compared and hashed by identity
class _Worker:
    process: multiprocessing.Process
    connection: Connection
    ready: bool = False


class WorkerPool:
    """`count` spawned processes, each building `factory()` once; `call(method, *args)` runs
    `getattr(built, method)(*args)` in a free one, waiting for one when all are busy."""

    def __init__(self, factory: Callable[[], Any], count: int, timeout_s: float, start_timeout_s: float = 600):
        self.factory, self.timeout_s, self.start_timeout_s = factory, timeout_s, start_timeout_s
        self.context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and torch
        self.threads = max(1, (os.cpu_count() or 1) // count)
        self.free: queue.Queue[_Worker] = queue.Queue()
        self.workers: set[_Worker] = set()
        self.lock = threading.Lock()
        for _ in range(count):
            self.free.put(self._start())

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(self.factory, child, self.threads), daemon=True)
        # A spawned child re-runs the parent's main script unless told otherwise, and `app.py` builds the
        # page (and this pool) at import; the workers need nothing from it, so they are shown none.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__mp_main__")
        try:
            process.start()
        finally:
            sys.modules["__main__"] = main
        child.close()
        worker = _Worker(process, parent)
        with self.lock:
            self.workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(timeout=10)
        worker.connection.close()
        with self.lock:
            self.workers.discard(worker)
        self.free.put(self._start())

    def call(self, method: str, *args: Any) -> Any:
        """The result; `ValueError` with the worker's refusal; `AnalysisTimeout`; `WorkerFailed`."""
        worker = self.free.get()
        try:
            if not worker.ready:
                if not worker.connection.poll(self.start_timeout_s):
                    raise WorkerFailed(f"the analysis worker did not start within {self.start_timeout_s:.0f} s")
                worker.connection.recv()
                worker.ready = True
            worker.connection.send((method, args))
            if not worker.connection.poll(self.timeout_s):
                logger.warning(
                    "%s%r ran past %.0f s; worker %d killed", method, args, self.timeout_s, worker.process.pid
                )
                raise AnalysisTimeout(f"the analysis took longer than {self.timeout_s:.0f} s and was stopped")
            status, value = worker.connection.recv()
        except (AnalysisTimeout, WorkerFailed, EOFError, OSError) as error:
            self._replace(worker)
            if isinstance(error, (AnalysisTimeout, WorkerFailed)):
                raise
            raise WorkerFailed(f"the analysis worker stopped ({error!r})") from None
        self.free.put(worker)
        if status == "refused":
            raise ValueError(value)
        if status == "failed":
            raise WorkerFailed("the analysis failed; the details are in the server log")
        return value

    def pids(self) -> list[int]:
        with self.lock:
            return [w.process.pid for w in self.workers]

    def close(self) -> None:
        with self.lock:
            workers, self.workers = list(self.workers), set()
        for worker in workers:
            worker.process.kill()
            worker.process.join(timeout=10)
