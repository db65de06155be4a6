"""The demo app end to end: `python app.py` on a free localhost port, driven by Debian's headless Chromium.

Uploads a real PTB-XL record (.hea + .dat) and checks what the page shows; then bad uploads, which must
produce a readable message. Saves a screenshot to $ESI_SCREENSHOT (default outputs/screenshots/app.png;
the committed docs/screenshots/app.png was made with ESI_SCREENSHOT pointing there).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom.examples
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from esi.constants import DISCLAIMER
from tests.helpers import REPO_ROOT, SHARED, build_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
RECORD = REPO_ROOT / "data" / "ptbxl_sample" / "records100" / "00000" / "00547_lr"
PHILIPS_XML = SHARED / "vendor-ecg" / "philips-xml" / "129DYPRG.XML"
SCREENSHOT = Path(os.environ.get("ESI_SCREENSHOT", REPO_ROOT / "outputs" / "screenshots" / "app.png"))
START_TIMEOUT_S = 240
ANALYSIS_TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("app_server")
    port = free_port()
    env = {
        **os.environ,
        "ESI_MODEL": str(build_tiny_model(work / "model")),
        "ESI_SAMPLES": str(REPO_ROOT / "data" / "ptbxl_sample"),
        "ESI_CACHE": str(work / "cache"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    log = (work / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"app.py exited with {server.returncode}:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"app.py did not answer within {START_TIMEOUT_S} s:\n{(work / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(app_url, tmp_path_factory) -> Iterator[Page]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        yield context.new_page()
        context.close()


def upload_and_analyse(page: Page, url: str, files: list[Path]) -> None:
    page.goto(url)
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in files])
    # The files must have reached the server (one row each) before the button is pressed.
    expect(page.locator("#upload tbody tr")).to_have_count(len(files), timeout=30_000)
    page.locator("#analyse-upload").click()


def test_upload_shows_ecg_measurements_predictions_and_neighbours(page, app_url):
    upload_and_analyse(page, app_url, [RECORD.with_suffix(".hea"), RECORD.with_suffix(".dat")])
    expect(page.locator("#status")).to_contain_text("Showing: Uploaded record 00547_lr", timeout=ANALYSIS_TIMEOUT_MS)

    expect(page.locator("#disclaimer")).to_contain_text(DISCLAIMER)
    plot = page.locator("#ecg-plot img")
    expect(plot).to_be_visible()
    assert page.evaluate("img => img.naturalWidth", plot.element_handle()) > 1000

    measurements = page.locator("#measurements")
    expect(measurements).to_contain_text("Heart rate")
    expect(measurements).to_contain_text(" bpm")
    expect(measurements).to_contain_text("QRS duration")

    expect(page.locator("#predictions")).to_contain_text("%")
    for superclass in ("NORM", "MI", "STTC", "CD", "HYP"):
        expect(page.locator("#predictions")).to_contain_text(superclass)
    expect(page.locator("#method")).to_contain_text("Zero-shot")

    expect(page.locator("#cqa-description")).to_contain_text("bpm")
    expect(page.locator("#cqa-description")).to_contain_text("not a diagnosis")
    expect(page.locator("#model-info")).to_contain_text("runs from this folder, which the operator named")
    # The uploaded record is itself in the sample: it must come first, identical to itself.
    # (Rows by ARIA role: the table also holds a hidden row Gradio uses to size its columns.)
    rows = page.locator("#similar").get_by_role("row").filter(has=page.get_by_role("gridcell"))
    expect(rows).to_have_count(5)
    expect(rows.first.get_by_role("gridcell").nth(1)).to_have_text("547")
    expect(rows.first.get_by_role("gridcell").nth(2)).to_have_text("1.000")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_header_without_dat_shows_a_message(page, app_url):
    upload_and_analyse(page, app_url, [RECORD.with_suffix(".hea")])
    status = page.locator("#status")
    expect(status).to_contain_text("Could not analyse this record", timeout=ANALYSIS_TIMEOUT_MS)
    expect(status).to_contain_text("00547_lr.dat, which is missing")
    expect(page.locator("#ecg-plot img")).to_have_count(0)


def test_text_file_shows_a_message(page, app_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Not an ECG.")
    upload_and_analyse(page, app_url, [notes])
    status = page.locator("#status")
    expect(status).to_contain_text("notes.txt: not an ECG file the app reads", timeout=ANALYSIS_TIMEOUT_MS)
    assert "Traceback" not in page.content()


def test_philips_xml_upload_is_analysed(page, app_url):
    upload_and_analyse(page, app_url, [PHILIPS_XML])
    status = page.locator("#status")
    expect(status).to_contain_text("Showing: Uploaded record 129DYPRG", timeout=ANALYSIS_TIMEOUT_MS)
    expect(status).to_contain_text("male, 50 y")  # demographics from the XML
    expect(status).to_contain_text("500 Hz, 10.0 s")
    expect(page.locator("#ecg-plot img")).to_be_visible()
    expect(page.locator("#measurements")).to_contain_text("Heart rate")


def test_dicom_upload_is_analysed(page, app_url, tmp_path):
    dicom = tmp_path / "waveform_ecg.dcm"
    dicom.write_bytes(Path(pydicom.examples.get_path("waveform")).read_bytes())
    upload_and_analyse(page, app_url, [dicom])
    status = page.locator("#status")
    expect(status).to_contain_text("Showing: Uploaded record waveform_ecg", timeout=ANALYSIS_TIMEOUT_MS)
    expect(status).to_contain_text("female, 42 y")
    expect(status).to_contain_text("1000 Hz, 10.0 s")
    expect(page.locator("#measurements")).to_contain_text("Heart rate")


def test_markup_in_a_lead_name_is_shown_as_text(page, app_url, tmp_path):
    header = tmp_path / "00547_lr.hea"
    header.write_text(RECORD.with_suffix(".hea").read_text().replace(" V6\n", " ![x](http://127.0.0.1:9/x.png)\n"))
    dat = tmp_path / "00547_lr.dat"
    dat.write_bytes(RECORD.with_suffix(".dat").read_bytes())
    upload_and_analyse(page, app_url, [header, dat])
    status = page.locator("#status")
    expect(status).to_contain_text("leads V6 are missing", timeout=ANALYSIS_TIMEOUT_MS)
    expect(status).to_contain_text("![x](http://127.0.0.1:9/x.png)")  # the text itself, not an image
    expect(status.locator("img")).to_have_count(0)
    expect(status.locator("a")).to_have_count(0)


def test_markup_in_a_dx_line_never_reaches_the_page(page, app_url, tmp_path):
    """A header's `# Dx:` line with an image and a link: refused as text, and the viewer's browser fetches nothing."""
    fetched: list[str] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    header = tmp_path / "00547_lr.hea"
    dx = f"# Dx: 426783006,<img src=http://127.0.0.1:{port}/x.png>,[Click for results](http://127.0.0.1:{port}/)"
    header.write_text(RECORD.with_suffix(".hea").read_text() + dx + "\n")
    dat = tmp_path / "00547_lr.dat"
    dat.write_bytes(RECORD.with_suffix(".dat").read_bytes())
    try:
        upload_and_analyse(page, app_url, [header, dat])
        status = page.locator("#status")
        expect(status).to_contain_text("is not a SNOMED-CT code", timeout=ANALYSIS_TIMEOUT_MS)
        expect(status).to_contain_text("<img src=")  # the text itself
        for region in ("#status", "#cqa-description", "#model-caption"):
            expect(page.locator(f"{region} img")).to_have_count(0)
            expect(page.locator(f"{region} a")).to_have_count(0)
        try:
            connection, _ = listener.accept()
            fetched.append(connection.recv(200).decode(errors="replace"))
            connection.close()
        except TimeoutError:
            pass
    finally:
        listener.close()
    assert fetched == []
