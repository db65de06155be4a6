"""The project's licence text (Apache-2.0), which every model folder it writes carries as `LICENSE`."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from esi.extras import DISTRIBUTION

LICENCE_FILE = "LICENSE"


def licence_text() -> str:
    """From the source checkout's LICENSE, else from the installed distribution's metadata (wheels ship it there)."""
    checkout = Path(__file__).resolve().parent.parent / LICENCE_FILE
    if checkout.is_file():
        return checkout.read_text()
    for path in importlib.metadata.distribution(DISTRIBUTION).files or []:
        if path.name == LICENCE_FILE:
            return path.read_text()
    raise FileNotFoundError(f"the {DISTRIBUTION} installation has no {LICENCE_FILE} file")


def write_licence(folder: str | Path) -> Path:
    path = Path(folder) / LICENCE_FILE
    path.write_text(licence_text())
    return path
