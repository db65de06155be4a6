"""A caption run's state on disk under damage: corrupt and stray shards, a damaged journal or run config, a lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from esi.cqa.cli import main as cqa_main
from esi.cqa.run import generate_captions
from esi.cqa.run_state import STATE_DIR, caption_folder
from esi.run_folder import RunFolderError

FEW = dict(num_samples=4, splits=["test"], records_per_file=2, num_workers=1, encoder_path=None)


def _ids(output_dir: Path) -> list[int]:
    return sorted(i for p in (output_dir / "data").glob("*.parquet") for i in pq.read_table(p)["ecg_id"].to_pylist())


@pytest.fixture()
def finished(prepared_sample, tmp_path) -> Path:
    out = tmp_path / "captions"
    assert generate_captions(prepared_sample, out, **FEW)["complete"]
    return out


def test_resume_redoes_a_corrupt_committed_shard(prepared_sample, finished):
    expected = _ids(finished)
    shard = sorted((finished / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # cut short, as by a failing disk
    assert f"data/{shard.name}" not in caption_folder(finished).journal()
    summary = generate_captions(prepared_sample, finished, resume=True, **FEW)
    assert summary["rows_written"] == 2 and summary["complete"]
    assert _ids(finished) == expected


def test_a_stray_shard_is_refused_not_loaded(prepared_sample, finished):
    stray = finished / "data" / "test-00009-of-00010.parquet"
    stray.write_bytes(sorted((finished / "data").glob("*.parquet"))[0].read_bytes())
    with pytest.raises(RunFolderError, match="no unit of this run.*test-00009-of-00010.parquet"):
        generate_captions(prepared_sample, finished, resume=True, **FEW)


def test_damaged_journal_line_is_redone_and_damaged_run_config_is_named(prepared_sample, finished):
    journal = finished / STATE_DIR / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], '{"not": "an entry"}', lines[1][:10]]) + "\n")
    assert generate_captions(prepared_sample, finished, resume=True, **FEW)["rows_written"] == 2
    (finished / STATE_DIR / "run.json").write_text('{"units": ')
    with pytest.raises(RunFolderError, match=r"run\.json is damaged"):
        generate_captions(prepared_sample, finished, resume=True, **FEW)


def test_resume_with_other_options_names_each_change(prepared_sample, finished):
    with pytest.raises(ValueError, match=r"cannot resume .*: records_per_file was 2, now 3\. Rerun with the earlier"):
        generate_captions(prepared_sample, finished, resume=True, **{**FEW, "records_per_file": 3})
    command = ["--dataset", str(prepared_sample), "--output_dir", str(finished), "--resume", "--num_samples", "4"]
    command += ["--splits", "test", "--records_per_file", "3", "--num_workers", "1", "--encoder_path", "none"]
    with pytest.raises(SystemExit, match=r"^error: cannot resume .*: records_per_file was 2, now 3\."):
        cqa_main(command)  # the command says it in one line, no traceback


def test_a_second_run_on_a_locked_folder_says_who_holds_it(prepared_sample, finished):
    # The holder is another process, as it would be for two resumed jobs.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from esi.cqa.run_state import caption_folder
            with caption_folder(Path({str(finished)!r})).lock():
                print("locked", flush=True)
                time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"being written by pid {holder.pid} on \S+ since \d{{4}}-\d\d-\d\d "):
            generate_captions(prepared_sample, finished, resume=True, **FEW)
    finally:
        holder.kill()
        holder.wait()
    with caption_folder(finished).lock():  # the kernel released the dead holder's lock
        pass
    assert json.loads((finished / STATE_DIR / "run.json").read_text())["units"]
