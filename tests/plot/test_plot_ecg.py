"""ECG paper geometry (25 mm/s, 10 mm/mV, true-size figure) and the captioned-PNG CLI hook."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from esi.plot import PaperLayout, plot_ecg, plot_records_with_captions
from esi.plot.paper import MM_PER_INCH

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
RATE = 100


def step_signal() -> np.ndarray:
    """Flat leads; lead II steps from 0 to 1 mV at t = 1 s."""
    signal = np.zeros((12, 10 * RATE), dtype=np.float32)
    signal[1, RATE:] = 1.0
    return signal


def lines_by_gid(fig, gid: str) -> list:
    return [line for line in fig.axes[0].get_lines() if line.get_gid() == gid]


def test_paper_is_true_to_scale():
    layout = PaperLayout()
    fig = plot_ecg(step_signal(), RATE, LEADS)
    ax = fig.axes[0]
    width_in, height_in = fig.get_size_inches()
    assert width_in * MM_PER_INCH == pytest.approx(layout.width_mm) == pytest.approx(265.0)
    assert height_in * MM_PER_INCH == pytest.approx(layout.height_mm) == pytest.approx(120.0)
    # One data unit is one millimetre of paper in both directions.
    box = ax.get_position()
    x_mm_per_unit = box.width * width_in * MM_PER_INCH / np.ptp(ax.get_xlim())
    y_mm_per_unit = box.height * height_in * MM_PER_INCH / np.ptp(ax.get_ylim())
    assert x_mm_per_unit == pytest.approx(1.0)
    assert y_mm_per_unit == pytest.approx(1.0)


def test_speed_and_gain():
    layout = PaperLayout()
    fig = plot_ecg(step_signal(), RATE, LEADS)
    (rhythm,) = lines_by_gid(fig, "rhythm")
    x, y = rhythm.get_data()
    assert x[0] == pytest.approx(layout.margin_left_mm)
    assert x[RATE] - x[0] == pytest.approx(25.0)  # 1 s -> 25 mm
    assert x[-1] - x[0] == pytest.approx(25.0 * (10 - 1 / RATE))  # full 10 s strip
    assert y[RATE] - y[0] == pytest.approx(10.0)  # 1 mV -> 10 mm
    # Lead II's 2.5 s segment in the 3x4 block sits in the first column and shows the same step.
    (segment,) = lines_by_gid(fig, "lead-II")
    sx, sy = segment.get_data()
    assert sx.min() == pytest.approx(layout.margin_left_mm)
    assert sx.max() < layout.margin_left_mm + 62.5
    assert np.ptp(sy) == pytest.approx(10.0)


def test_four_columns_of_three_leads():
    fig = plot_ecg(step_signal(), RATE, LEADS)
    for column, leads in enumerate((("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))):
        starts = {round(float(lines_by_gid(fig, f"lead-{lead}")[0].get_xdata()[0]), 3) for lead in leads}
        assert starts == {10.0 + 62.5 * column}, leads
    labels = {text.get_text() for text in fig.axes[0].texts}
    assert set(LEADS) <= labels
    assert any("25 mm/s" in label and "10 mm/mV" in label for label in labels)


def test_calibration_pulse_is_one_millivolt_for_200_ms():
    fig = plot_ecg(step_signal(), RATE, LEADS)
    pulses = lines_by_gid(fig, "calibration")
    assert len(pulses) == 4
    x, y = pulses[0].get_data()
    assert np.ptp(y) == pytest.approx(10.0)
    top = np.asarray(x)[np.isclose(y, np.max(y))]
    assert top.max() - top.min() == pytest.approx(5.0)


def test_leads_are_mapped_by_name():
    signal = step_signal()
    order = list(reversed(range(12)))
    fig = plot_ecg(signal[order], RATE, [LEADS[i].upper() for i in order])
    (rhythm,) = lines_by_gid(fig, "rhythm")
    assert np.ptp(rhythm.get_ydata()) == pytest.approx(10.0)


def test_missing_lead_is_refused():
    with pytest.raises(ValueError, match="V6"):
        plot_ecg(step_signal()[:11], RATE, LEADS[:11])


def test_png_with_title_and_caption(tmp_path):
    path = tmp_path / "ecg.png"
    caption = "The QTc (Bazett) is 462 ms and the QRS axis is +66 degrees, within the normal range. " * 12
    fig = plot_ecg(step_signal(), RATE, LEADS, title="ecg_id 1", caption=caption, output_path=path, dpi=100)
    width_in, height_in = fig.get_size_inches()
    assert height_in * MM_PER_INCH > PaperLayout().height_mm + PaperLayout().title_mm  # room for the caption
    text_box = fig.texts[-1].get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert fig.bbox.x0 < text_box.x0 and text_box.x1 < fig.bbox.x1  # wrapped inside the page
    assert fig.bbox.y0 < text_box.y0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == pytest.approx((width_in * 100, height_in * 100), abs=1)


def test_plot_records_with_captions(prepared_sample, tmp_path):
    prepared = datasets.load_from_disk(str(prepared_sample))
    ids = prepared["test"]["ecg_id"][:3]
    captions = datasets.DatasetDict(
        {"test": datasets.Dataset.from_dict({"ecg_id": ids, "caption": [f"Caption of {i}." for i in ids]})}
    )
    paths = plot_records_with_captions(captions, prepared_sample, n=2, out_dir=tmp_path / "plots")
    assert [p.name for p in paths] == [f"ecg_{i}.png" for i in ids[:2]]
    assert all(p.stat().st_size > 10_000 for p in paths)

    orphan = datasets.Dataset.from_dict({"ecg_id": [999_999], "caption": ["no such record"]})
    with pytest.raises(ValueError, match="999999"):
        plot_records_with_captions(orphan, prepared_sample, n=1, out_dir=tmp_path / "none")
