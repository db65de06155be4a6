"""A stand-in analyser for WorkerPool tests, in a module that imports nothing heavy (spawned workers
import it)."""

from __future__ import annotations

import time


class Sleeper:
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def echo(self, value):
        return value

    def refuse(self, message: str):
        raise ValueError(message)
