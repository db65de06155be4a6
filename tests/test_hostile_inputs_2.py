"""Issue 23's hostile and careless inputs (round two): publishing over its inputs, markup and instructions in
a record's own text, pickles on resume, upload totals, duplicate ids, remote code, and the low items. Every
hostile input is built here from scratch; each test failed before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esi.publish import assemble_and_push as publish
from esi.publish import assemble_model_folder

# ---- High 1: publishing never deletes or overwrites its inputs ------------------------------------------------


def fake_model_folder(folder: Path) -> Path:
    """What the refusals look at: a model folder's config and weights (never loaded: refused first)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "esi"}')
    (folder / "model.safetensors").write_bytes(b"trained weights")
    return folder


def fake_captions_folder(folder: Path, shards: int = 16) -> Path:
    (folder / "data").mkdir(parents=True)
    for name in ("README.md", "LICENSE.txt"):
        (folder / name).write_text(name)
    for i in range(shards):
        (folder / "data" / f"train-{i:05d}.parquet").write_bytes(b"shard")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("output", ["run", "run/model", "run/model/publish", "."])
def test_publish_refuses_an_output_folder_overlapping_the_model(tmp_path, capsys, monkeypatch, output):
    monkeypatch.chdir(tmp_path)
    model = fake_model_folder(tmp_path / "run" / "model")
    before = snapshot(model)
    with pytest.raises(SystemExit):
        publish(["--model-dir", "run/model", "--output-dir", output])
    assert "overlaps the input run/model" in capsys.readouterr().err
    assert snapshot(model) == before


def test_publish_refuses_an_output_folder_holding_the_captions(tmp_path, capsys):
    captions = fake_captions_folder(tmp_path / "run" / "dataset")
    before = snapshot(captions)
    with pytest.raises(SystemExit):
        publish(["--captions-dir", str(captions), "--output-dir", str(tmp_path / "run")])
    assert "publishing would overwrite or delete it" in capsys.readouterr().err
    assert snapshot(captions) == before and len(list((captions / "data").iterdir())) == 16


def test_publish_refuses_a_symlink_in_the_model_folder(tmp_path):
    secret = tmp_path / "elsewhere" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    model = fake_model_folder(tmp_path / "model")
    (model / "vocab.txt").symlink_to(secret)
    with pytest.raises(ValueError, match=r"holds symbolic links \(vocab\.txt\); publishing refuses them"):
        assemble_model_folder(model, tmp_path / "publish" / "model", "me/esi")
    assert not (tmp_path / "publish" / "model").exists()


def test_publish_replaces_only_its_own_folders_and_keeps_the_last_one_on_failure(tmp_path):
    model = fake_model_folder(tmp_path / "model")
    unrelated = tmp_path / "publish" / "model"
    unrelated.mkdir(parents=True)
    (unrelated / "notes.txt").write_text("the user's own folder")
    with pytest.raises(FileExistsError, match="was not written by esi-publish"):
        assemble_model_folder(model, unrelated, "me/esi")
    assert (unrelated / "notes.txt").read_text() == "the user's own folder"
    # An earlier publish output survives a failing one whole, and no staging folder is left behind.
    (unrelated / "notes.txt").unlink()
    (unrelated / ".esi-publish").write_text("")
    (unrelated / "config.json").write_text("earlier")
    (model / "training_summary.json").write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        assemble_model_folder(model, unrelated, "me/esi")
    assert (unrelated / "config.json").read_text() == "earlier"
    assert sorted(p.name for p in unrelated.parent.iterdir()) == ["model"]
