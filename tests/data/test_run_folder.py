"""The resumable job folder shared by preparation and captioning: options diff, journal, lock, atomic writes."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from esi.run_folder import RunFolder, RunFolderError, write_json_atomic

FILES = re.compile(r"data/part-\d\.txt")


def _folder(root) -> RunFolder:
    return RunFolder(root, ".state", FILES, data_glob="data/*.txt")


def _commit(folder: RunFolder, *indices: int) -> None:
    units = (
        (f"u{i}", {f"data/part-{i}.txt": lambda tmp, i=i: Path(tmp).write_text(f"unit {i}")}, {"i": i}) for i in indices
    )
    folder.commit_all(units)


def test_a_resumed_run_keeps_intact_units_and_redoes_damaged_ones(tmp_path):
    config = {"rows": 3, "size": 1}
    with _folder(tmp_path).run(config, resume=False) as done:
        assert done == {}
        _commit(_folder(tmp_path), 0)  # another handle on the folder journals too
    folder = _folder(tmp_path)
    with folder.run(config, resume=True) as done:
        assert set(done) == {"u0"}
        _commit(folder, 1, 2)
    (tmp_path / "data" / "part-1.txt").write_text("changed")  # damaged after its commit
    journal = tmp_path / ".state" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    escape = json.dumps({"unit": "u9", "files": {"../outside.txt": "0" * 64}})
    journal.write_text("\n".join([*lines, '{"unit": "u2", "fi', escape]) + "\n")
    (tmp_path / "data" / ".part-2.txt.tmp-4242").write_text("half")  # a killed run's write
    with _folder(tmp_path).run(config, resume=True) as done:
        assert set(done) == {"u0", "u2"} and done["u2"]["i"] == 2
    assert not list((tmp_path / "data").glob(".*"))


def test_other_options_a_stray_file_and_a_full_folder_are_refused(tmp_path):
    with _folder(tmp_path).run({"rows": 3, "model": "a"}, resume=False):
        pass
    with pytest.raises(ValueError, match=r"different options: model was 'a', now 'b'; rows was 3, now 4\. Rerun"):
        with _folder(tmp_path).run({"rows": 4, "model": "b"}, resume=True):
            pass
    with pytest.raises(FileExistsError, match="not empty; pass --resume"):
        with _folder(tmp_path).run({"rows": 3, "model": "a"}, resume=False):
            pass
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-7.txt").write_text("not ours")
    with pytest.raises(RunFolderError, match=r"no unit of this run: \['data/part-7.txt'\]"):
        with _folder(tmp_path).run({"rows": 3, "model": "a"}, resume=True, expected=["data/part-0.txt"]):
            pass


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    first, second = _folder(tmp_path), _folder(tmp_path)
    with first.run({}, resume=False):
        holder = rf"pid {os.getpid()} on {re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
        with pytest.raises(RunFolderError, match=rf"is being written by {holder} \(lock "):
            with second.run({}, resume=True):
                pass
        with pytest.raises(RunFolderError, match=rf"is being written by {holder}"):
            second.clear()  # a fresh run does not empty a folder another run is writing
    with second.run({}, resume=True):
        pass
    second.clear()
    with second.run({"new": 1}, resume=False):  # a cleared folder takes a fresh run
        pass


def test_json_is_replaced_whole(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": [1, 2]}, indent=2)
    assert json.loads(path.read_text()) == {"b": [1, 2]} and [p.name for p in tmp_path.iterdir()] == ["state.json"]
