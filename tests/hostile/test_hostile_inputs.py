"""Issue 14's hostile and careless inputs to the app and the single-file reader: each test failed before
the fix. Records are real PTB-XL signals written with wfdb, then edited the way an attacker would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import markdown_it
import numpy as np
import pytest

from esi.app.records import RecordError, read_upload
from esi.app.ui import escape_markdown, refusal_status
from esi.app.uploads import uploads_in_use
from esi.app.workers import AnalysisTimeout, WorkerPool
from esi.constants import STANDARD_LEADS
from esi.data.ptbxl import read_signal
from tests.helpers import PTBXL_SAMPLE, REPO_ROOT, SAMPLE_RECORD, write_record
from tests.hostile.pool_targets import Sleeper


def edit_header(files: list[Path], edit) -> list[Path]:
    lines = files[0].read_text().splitlines()
    files[0].write_text("\n".join(edit(lines)) + "\n")
    return files


# ---- High 1: memory through the sampling rate ----------------------------------------------------------


def test_coprime_rate_resamples_in_bounded_memory():
    """2 s at 2003 Hz (no factor shared with 100 Hz) needed ~800 MB before; now a few MB."""
    script = (
        "import resource, numpy as np\n"
        "from modeling_esi.feature_extraction_esi import resample_poly\n"
        "x = np.random.default_rng(0).standard_normal((12, 2 * 2003))\n"
        "resample_poly(x[:, :50], 500, 100)\n"  # warm up imports and allocator
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "y = resample_poly(x, 2003, 100)\n"
        "print(y.shape[1], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    length, grown_mb = out.stdout.split()
    assert 199 <= int(length) <= 201
    assert float(grown_mb) < 150, f"resampling 2 s at 2003 Hz grew the process by {grown_mb} MB"


def test_coprime_rate_keeps_the_signal():
    """The bounded ratio (2003 Hz read as 2004.2 Hz) keeps a 1 Hz wave in place to within 1%."""
    from modeling_esi.feature_extraction_esi import resample_poly

    t = np.arange(10 * 2003) / 2003
    y = resample_poly(np.sin(2 * np.pi * t)[None], 2003, 100)[0, :1000]
    np.testing.assert_allclose(y[20:-20], np.sin(2 * np.pi * np.arange(1000) / 100)[20:-20], atol=0.05)


def test_rate_out_of_bounds_is_refused(tmp_path):
    files = edit_header(write_record(tmp_path, rate=500), lambda lines: [lines[0].replace(" 500 ", " 99991 ")])
    with pytest.raises(RecordError, match=r"rec\.hea: the sampling rate is 99991 Hz; rates from 100 to 10000"):
        read_upload(files)


# ---- High 2: CPU through the header; limits on size, signals, length, upload; timeout and concurrency ---------


def test_huge_header_is_refused_unread(tmp_path):
    files = write_record(tmp_path)
    extra = [f"rec.dat 16 1000.0(0)/mV 16 0 0 0 0 X{i}" for i in range(3000)]
    edit_header(files, lambda lines: [lines[0].replace("rec 12 ", "rec 3012 "), *lines[1:], *extra])
    started = time.monotonic()
    with pytest.raises(RecordError, match=r"rec\.hea has \d+ KB; a WFDB header is limited to 64 KB"):
        read_upload(files)
    assert time.monotonic() - started < 30  # liveness only: the header is not parsed


def test_too_many_signals_are_refused(tmp_path):
    files = write_record(tmp_path)
    edit_header(files, lambda lines: [lines[0].replace("rec 12 ", "rec 100 "), *lines[1:]])
    with pytest.raises(RecordError, match=r"rec\.hea declares 100 signals; at most 32"):
        read_upload(files)


def test_too_long_record_is_refused(tmp_path):
    files = edit_header(write_record(tmp_path), lambda lines: [lines[0].replace(" 5000", " 500000000"), *lines[1:]])
    with pytest.raises(RecordError, match=r"rec\.hea: the record lasts 1000000 s; at most 120 s"):
        read_upload(files)


def test_oversized_upload_is_refused(tmp_path):
    files = write_record(tmp_path)
    with files[1].open("r+b") as handle:
        handle.truncate(25 * 2**20)  # sparse: no disk used
    with pytest.raises(RecordError, match=r"The upload has 25\.\d MB; uploads are limited to 20 MB"):
        read_upload(files)


@pytest.mark.slow
def test_worker_pool_stops_an_overrun_and_serves_others_meanwhile():
    pool = WorkerPool(Sleeper, count=2, timeout_s=8)
    try:
        assert pool.call("echo", 1) == 1 and pool.call("echo", 2) == 2  # both workers started
        outcome = {}

        def slow():
            try:
                pool.call("sleep", 600)
            except AnalysisTimeout as error:
                outcome["error"] = str(error)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(1)
        assert pool.call("echo", "quick") == "quick"  # answered while the other worker is stuck
        thread.join(timeout=60)
        assert "took longer than 8 s and was stopped" in outcome["error"]
        with pytest.raises(ValueError, match="bad file"):
            pool.call("refuse", "bad file")
        assert pool.call("echo", 3) == 3  # the killed worker was replaced
    finally:
        pool.close()


# ---- Medium 3: uploads deleted after analysis and at shutdown ---------------------------------------------


def test_uploads_are_deleted_after_the_last_analysis_using_them(tmp_path):
    files = [str(f) for f in write_record(tmp_path / "upload")]
    with uploads_in_use(files):
        with uploads_in_use(files):  # the same file uploaded by two people shares Gradio's path
            pass
        assert all(Path(f).exists() for f in files)  # still in use by the first analysis
    assert not any(Path(f).exists() for f in files) and not (tmp_path / "upload").exists()


def test_upload_folder_is_removed_at_sigterm(tmp_path):
    script = (
        "import time\n"
        "from esi.app.uploads import exit_cleanly_on_sigterm, private_upload_folder\n"
        "folder = private_upload_folder()\n"
        "exit_cleanly_on_sigterm()\n"
        "(folder / 'upload.dat').write_bytes(b'x' * 1000)\n"
        "print(folder, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "GRADIO_TEMP_DIR"}
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    folder = Path(server.stdout.readline().strip())
    assert (folder / "upload.dat").is_file()
    server.terminate()
    server.wait(timeout=60)
    assert not folder.exists()


# ---- Low: silent wrong values and generic failures -----------------------------------------------------------


def test_negative_rate_is_refused(tmp_path):
    files = edit_header(write_record(tmp_path), lambda lines: [lines[0].replace(" 500 ", " -250 "), *lines[1:]])
    with pytest.raises(RecordError, match=r"rec\.hea: the sampling rate -250 Hz is not a positive number"):
        read_upload(files)


def test_duplicated_lead_names_are_refused(tmp_path):
    files = edit_header(write_record(tmp_path), lambda lines: [*lines[:-1], lines[-1].replace(" V6", " V5")])
    with pytest.raises(RecordError, match=r"rec\.hea names lead V5 twice"):
        read_upload(files)


def test_megavolt_amplitudes_are_refused(tmp_path):
    files = edit_header(
        write_record(tmp_path), lambda lines: [line.replace(" 1000.0(0)/mV", " 0.001(0)/mV") for line in lines]
    )
    with pytest.raises(RecordError, match=r"rec\.hea: leads .* reach .* mV; a surface ECG stays within ±100 mV"):
        read_upload(files)


def test_negative_gain_is_refused(tmp_path):
    files = edit_header(
        write_record(tmp_path), lambda lines: [line.replace(" 1000.0(0)/mV", " -1000.0(0)/mV") for line in lines]
    )
    with pytest.raises(RecordError, match=r"rec\.hea: leads I, .* have a negative gain"):
        read_upload(files)


def test_header_without_rate_or_length_is_named(tmp_path):
    files = edit_header(write_record(tmp_path), lambda lines: ["rec 12", *lines[1:]])
    with pytest.raises(RecordError, match=r"rec\.hea does not state the sampling rate and the record length"):
        read_upload(files)


def test_multi_segment_header_is_named(tmp_path):
    files = write_record(tmp_path)
    files[0].write_text("rec/2 12 500 5000\nrec_1 2500\nrec_2 2500\n")
    with pytest.raises(RecordError, match=r"rec\.hea is a multi-segment WFDB record"):
        read_upload(files)


def test_header_without_checksums_is_read(tmp_path):
    folder = tmp_path / "records100" / "00000"
    folder.mkdir(parents=True)
    base = PTBXL_SAMPLE / SAMPLE_RECORD
    (folder / "00547_lr.dat").write_bytes(base.with_suffix(".dat").read_bytes())
    lines = base.with_suffix(".hea").read_text().splitlines()
    # file format gain bits zero initial-value [checksum block-size] name: checksum and block size are optional
    stripped = [lines[0]] + [" ".join(line.split()[:6] + line.split()[8:]) for line in lines[1:13]]
    (folder / "00547_lr.hea").write_text("\n".join(stripped) + "\n")
    np.testing.assert_array_equal(
        read_signal(tmp_path, 547, SAMPLE_RECORD, 100), read_signal(PTBXL_SAMPLE, 547, SAMPLE_RECORD, 100)
    )
    assert read_upload([folder / "00547_lr.hea", folder / "00547_lr.dat"]).signal.shape == (12, 1000)


def test_markup_in_lead_names_is_not_rendered(tmp_path):
    hostile = ["![x](http://evil.example/x.png)", "[click](http://evil.example)", "<img src=x onerror=alert(1)>"]
    files = write_record(tmp_path, names=[*STANDARD_LEADS[:9], *hostile])
    with pytest.raises(RecordError) as refusal:
        read_upload(files)
    page = markdown_it.MarkdownIt().render(refusal_status(str(refusal.value)))
    assert "<img" not in page and "<a " not in page and "missing" in page
    assert "<em>" not in markdown_it.MarkdownIt().render(escape_markdown("*Uploaded* _record_"))


def test_sample_list_never_offers_a_record_whose_file_name_leaves_the_folder(tmp_path):
    from esi.app.records import SampleCatalogue

    folder = tmp_path / "samples"
    shutil.copytree(PTBXL_SAMPLE, folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    for suffix in (".hea", ".dat"):  # a real record placed outside the sample folder
        shutil.copy(PTBXL_SAMPLE / f"records100/00000/00001_lr{suffix}", outside / f"00001_lr{suffix}")
    database = folder / "ptbxl_database.csv"
    text = database.read_text()
    escaped = text.replace("records100/00000/00002_lr", "../outside/00001_lr", 1)
    absolute = escaped.replace("records100/00000/00003_lr", str(outside / "00001_lr"), 1)
    assert absolute != text and absolute.count("outside") == 2
    database.write_text(absolute)
    catalogue = SampleCatalogue(folder)
    assert 2 not in catalogue.ecg_ids and 3 not in catalogue.ecg_ids
    assert 1 in catalogue.ecg_ids and len(catalogue.ecg_ids) > 100
