"""The captioned dataset's card names the sources actually captioned and owes each its own licence and attribution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from esi.cqa.dataset_card import render_dataset_card
from esi.cqa.provenance import dataset_sources, licence_front_matter, licence_section
from esi.cqa.run import generate_captions, output_stats
from esi.cqa.run_state import caption_folder
from esi.data.challenge import ChallengeSource
from esi.data.mimic import MimicEcgSource
from esi.data.prepare import PrepareOptions, prepare_source
from tests.helpers import MIMIC_LAYOUT, SHARED, copy_challenge_records

CINC = SHARED / "cinc2021-sample"
CPSC = SHARED / "cpsc2018-sample"
# One record of each database in the samples: Georgia, PTB-XL (500 Hz copy), Ningbo, CPSC 2018.
CHALLENGE_RECORDS = {CINC: ["E07500", "HR06000", "JS20000"], CPSC: ["A0001"]}
FAST = {"backend": "template", "encoder_path": None, "num_workers": 1}

pytestmark = pytest.mark.skipif(not CINC.is_dir() or not CPSC.is_dir(), reason="needs ../shared Challenge samples")


def _front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def challenge_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("challenge")
    copy_challenge_records(CHALLENGE_RECORDS, folder)
    prepare_source(ChallengeSource(folder, sampling_rate=100), folder / "prepared", PrepareOptions(num_proc=1))
    assert generate_captions(folder / "prepared", folder / "out", **FAST)["complete"]
    return folder / "out"


@pytest.fixture(scope="module")
def mimic_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mimic")
    prepare_source(MimicEcgSource(MIMIC_LAYOUT, sampling_rate=100), folder / "prepared", PrepareOptions(num_proc=1))
    assert generate_captions(folder / "prepared", folder / "out", **FAST)["complete"]
    return folder / "out"


def test_ptbxl_only_card_is_cc_by_and_cites_wagner(prepared_sample):
    sources = dataset_sources(prepared_sample)
    assert sources == {"ptb-xl": {"PTB-XL": 300}}
    card = render_dataset_card(_config(prepared_sample), {**_stats(300), "sources": sources})
    meta = _front_matter(card)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"].startswith("ESI captioned PTB-XL")
    assert "- **PTB-XL** (300 records): released under CC BY 4.0." in card
    assert "Wagner P, Strodthoff N" in card and "doi:10.13026/x4td-x982" in card and "PhysioNet" in card
    assert "ODbL" not in card and "MIMIC" not in card.split("## License")[1]


def test_challenge_card_names_each_contributing_database(challenge_run):
    card = (challenge_run / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "cc-by-4.0" and "PTB-XL" not in meta["pretty_name"]
    assert meta["pretty_name"].startswith("ESI captioned PhysioNet/CinC Challenge")
    assert "source_datasets" not in meta
    assert (
        "Contributing databases found in this dataset: CPSC 2018 (China Physiological Signal Challenge 2018) (1), "
        "Chapman-Shaoxing/Ningbo (Ningbo First Hospital) (1), Georgia 12-lead ECG Challenge database (1), PTB-XL (1)."
    ) in card
    licence = card.split("## License and attribution")[1]
    for citation in ("Reyna MA, et al.", "Perez Alday EA, et al.", "Liu F, et al.", "Zheng J, et al.", "Wagner P"):
        assert citation in licence
    assert "ODbL" not in licence


def test_mimic_card_is_odbl_share_alike_and_cites_gow(mimic_run):
    card = (mimic_run / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "odbl" and meta["pretty_name"].startswith("ESI captioned MIMIC-IV-ECG")
    licence = card.split("## License and attribution")[1]
    assert "derived database" in licence and "share-alike" in licence and "ODbL v1.0" in licence
    assert "Gow B, et al." in licence and "MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset" in licence
    assert "CC BY 4.0" not in licence and "Wagner" not in licence
    licence_file = (mimic_run / "LICENSE.txt").read_text()
    assert "MIMIC-IV-ECG: Open Data Commons Open Database License v1.0" in licence_file
    assert "Creative Commons" not in licence_file


def test_mixed_card_is_other_with_every_licence(challenge_run, mimic_run):
    sources = {}
    for run in (challenge_run, mimic_run):
        sources |= output_stats(run, caption_folder(run).read_config()["dataset_dir"])["sources"]
    assert set(sources) == {"challenge", "mimic-iv-ecg"}
    card = render_dataset_card(caption_folder(mimic_run).read_config(), {**_stats(7), "sources": sources})
    meta = _front_matter(card)
    assert meta["license"] == "other" and meta["license_name"] == "cc-by-4.0 + odbl"
    assert meta["license_link"] == [
        "https://creativecommons.org/licenses/by/4.0/",
        "https://opendatacommons.org/licenses/odbl/1-0/",
    ]
    licence = card.split("## License and attribution")[1]
    assert "**PhysioNet/CinC Challenge 2020/2021 data** (4 records), released under CC BY 4.0" in licence
    assert "**MIMIC-IV-ECG** (3 records)" in licence and "share-alike" in licence
    assert "marked `license: other`" in licence and "Reyna MA" in licence and "Gow B" in licence


def test_own_wfdb_folder_licence_is_unknown_and_other():
    sources = {"wfdb-folder": {"a user's own WFDB records": 5}}
    assert yaml.safe_load(licence_front_matter(sources)) == {
        "license": "other",
        "license_name": "unknown-owner-set",
        "license_link": "LICENSE.txt",
    }
    assert "(5 records): licence unknown: set by the data owner." in licence_section(sources)
    mixed = yaml.safe_load(licence_front_matter({"ptb-xl": {"PTB-XL": 1}, **sources}))
    assert mixed["license"] == "other" and mixed["license_name"] == "cc-by-4.0 + unknown-owner-set"


def _config(dataset_dir: Path) -> dict:
    return {
        "splits": ["train", "validation", "test"],
        "backend": "template",
        "retrieval_k": 3,
        "encoder_path": None,
        "max_retries": 1,
        "dataset_dir": str(dataset_dir),
    }


def _stats(n: int) -> dict:
    return {"rows_per_split": {"train": n}, "faithfulness": {"pass": n}}
