"""model_cards/: every committed card is what its inputs generate (`python -m model_cards.build`), and valid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, ModelCard

import model_cards.build as build


def test_every_committed_card_is_what_its_inputs_generate():
    cards = build.expected_cards()
    assert build.DATASET_DIR / "README.md" in cards  # the caption dataset's inputs are committed
    stale = [str(path) for path, text in cards.items() if not path.exists() or path.read_text() != text]
    assert not stale, f"out of date (run python -m model_cards.build): {stale}"


def test_the_caption_dataset_card_states_its_licence_sources_and_split_sizes():
    card = DatasetCard((build.DATASET_DIR / "README.md").read_text())
    inputs = json.loads((build.DATASET_DIR / build.INPUTS).read_text())
    assert set(inputs["stats"]["sources"]) == {"ptb-xl"} and card.data.license == "cc-by-4.0"
    (info,) = DatasetInfosDict.from_dataset_card_data(card.data).values()  # what `datasets` reads from the card
    rows = inputs["stats"]["rows_per_split"]
    assert {name: split.num_examples for name, split in info.splits.items()} == rows
    assert all(split.num_bytes > 0 for split in info.splits.values())
    assert info.dataset_size == sum(split.num_bytes for split in info.splits.values())


def test_model_cards_parse_with_their_results_tied_to_weights():
    for folder in (build.ENCODER_DIR, build.MODEL_DIR):
        if (folder / "README.md").exists():
            card = ModelCard((folder / "README.md").read_text())
            assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
            assert all("weights_sha256" in (result.metric_args or {}) for result in card.data.eval_results or [])


def test_check_names_a_card_whose_inputs_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = shutil.copytree(build.DATASET_DIR, tmp_path / "captions")
    inputs = json.loads((folder / build.INPUTS).read_text())
    inputs["stats"]["rows_per_split"]["train"] += 1
    (folder / build.INPUTS).write_text(json.dumps(inputs))
    monkeypatch.setattr(build, "CARDS", ((folder, build.INPUTS, build._dataset_card),))
    monkeypatch.setattr(build, "DATASET_DIR", folder)
    with pytest.raises(SystemExit, match="out of date"):
        build.main(["--check"])
    build.main([])  # regenerates it
    build.main(["--check"])
    assert "| train | 4,807 |" in (folder / "README.md").read_text()
