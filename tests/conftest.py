"""Shared fixtures: the embedded PTB-XL sample and its prepared DatasetDict (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PTBXL_SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"


@pytest.fixture(scope="session")
def ptbxl_sample_dir() -> Path:
    """The 300-record PTB-XL sample shipped in the repository (read-only: copy before corrupting)."""
    return PTBXL_SAMPLE


@pytest.fixture(scope="session")
def prepared_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`save_to_disk` folder of the sample prepared at 100 Hz; load it with `datasets.load_from_disk`."""
    from dataset_scripts.prepare_ptbxl import prepare_ptbxl

    output_dir = tmp_path_factory.mktemp("prepared") / "ptbxl_sample_100hz"
    prepare_ptbxl(PTBXL_SAMPLE, output_dir, sampling_rate=100, num_proc=2)
    return output_dir
