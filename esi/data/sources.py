"""The sources `esi-prepare` reads (`--source NAME`), each a reader for `esi.data.prepare.prepare_source`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# The readers are imported when a preparation runs, not for `--help`.
if TYPE_CHECKING:
    from esi.data.prepare import Source

SOURCES = ("ptbxl", "challenge", "mimic", "wfdb-folder")


def make_source(
    name: str, folder: Path, sampling_rate: int, labels: Path | None = None, limit: int | None = None
) -> Source:
    """The reader for source `name` over `folder`."""
    from esi.data.challenge import ChallengeSource
    from esi.data.mimic import MimicEcgSource
    from esi.data.ptbxl import PtbxlSource
    from esi.data.wfdb_folder import WfdbFolderSource

    if name == "ptbxl":
        return PtbxlSource(folder, sampling_rate, limit)
    if name == "challenge":
        return ChallengeSource(folder, sampling_rate)
    if name == "mimic":
        return MimicEcgSource(folder, sampling_rate, limit)
    if name == "wfdb-folder":
        if labels is None:
            raise ValueError("--source wfdb-folder needs --labels (a CSV with a 'record' column)")
        return WfdbFolderSource(folder, labels, sampling_rate)
    raise ValueError(f"unknown source {name!r}; expected one of {SOURCES}")
