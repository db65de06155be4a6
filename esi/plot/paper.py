"""A 12-lead ECG on standard ECG paper: four columns of 2.5 s (I/II/III, aVR/aVL/aVF, V1-V3, V4-V6)
plus a full-length lead II rhythm strip, at 25 mm/s and 10 mm/mV.

The drawing is laid out in millimetres of paper (one data unit = 1 mm) and the figure is sized
from those millimetres, so the proportions are those of a real printout and a PNG printed at its
own DPI is true to scale.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

MM_PER_INCH = 25.4
COLUMNS: tuple[tuple[str, ...], ...] = (
    ("I", "II", "III"),
    ("aVR", "aVL", "aVF"),
    ("V1", "V2", "V3"),
    ("V4", "V5", "V6"),
)
RHYTHM_LEAD = "II"

PAPER_COLOUR = "#fff8f8"
MINOR_GRID_COLOUR = "#f7d4d4"
MAJOR_GRID_COLOUR = "#e9a3a3"
TRACE_COLOUR = "#111111"
TEXT_PT = 8.5


@dataclass(frozen=True)
class PaperLayout:
    """Geometry of the printout, in millimetres and seconds."""

    speed_mm_per_s: float = 25.0
    gain_mm_per_mv: float = 10.0
    column_seconds: float = 2.5
    row_pitch_mm: float = 30.0  # baseline to baseline
    margin_left_mm: float = 10.0  # holds the calibration pulse
    margin_right_mm: float = 5.0
    title_mm: float = 9.0  # band above the paper when a title is given

    @property
    def trace_width_mm(self) -> float:
        return len(COLUMNS) * self.column_seconds * self.speed_mm_per_s

    @property
    def width_mm(self) -> float:
        return self.margin_left_mm + self.trace_width_mm + self.margin_right_mm

    @property
    def height_mm(self) -> float:
        return (len(COLUMNS[0]) + 1) * self.row_pitch_mm

    def baseline_mm(self, row: int) -> float:
        """Baseline height of row 0-2 (the 3x4 block) or 3 (the rhythm strip), from the bottom of the paper."""
        return self.height_mm - (row + 0.5) * self.row_pitch_mm

    def x_mm(self, seconds: np.ndarray | float) -> np.ndarray | float:
        return self.margin_left_mm + np.asarray(seconds) * self.speed_mm_per_s


def _leads_by_name(signal: np.ndarray, lead_names: Sequence[str]) -> dict[str, np.ndarray]:
    if signal.ndim != 2 or signal.shape[0] != len(lead_names):
        raise ValueError(
            f"signal must be (leads, time) with one row per lead name; got {signal.shape} for {len(lead_names)} names"
        )
    by_name = {name.casefold(): row for name, row in zip(lead_names, signal, strict=True)}
    needed = [lead for column in COLUMNS for lead in column]
    missing = [lead for lead in needed if lead.casefold() not in by_name]
    if missing:
        raise ValueError(f"cannot draw a 12-lead ECG: leads {missing} are missing (have {list(lead_names)})")
    return {lead: np.asarray(by_name[lead.casefold()], dtype=float) for lead in needed}


def _draw_grid(ax, layout: PaperLayout) -> None:
    width, height = layout.width_mm, layout.height_mm
    ax.add_patch(Rectangle((0, 0), width, height, facecolor=PAPER_COLOUR, edgecolor="none", zorder=0))
    for step, colour, linewidth, z in ((1, MINOR_GRID_COLOUR, 0.35, 1), (5, MAJOR_GRID_COLOUR, 0.75, 2)):
        xs = np.arange(0, width + 1e-9, step)
        ys = np.arange(0, height + 1e-9, step)
        lines = [[(x, 0), (x, height)] for x in xs] + [[(0, y), (width, y)] for y in ys]
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=linewidth, zorder=z))


def _calibration_pulse(layout: PaperLayout, baseline: float) -> tuple[list[float], list[float]]:
    """1 mV for 0.2 s, drawn in the left margin."""
    top = baseline + layout.gain_mm_per_mv
    start, rise, fall, end = 1.5, 3.0, 3.0 + 0.2 * layout.speed_mm_per_s, layout.margin_left_mm - 0.5
    return [start, rise, rise, fall, fall, end], [baseline, baseline, top, top, baseline, baseline]


def _trace(
    ax, layout: PaperLayout, values: np.ndarray, rate: float, start_s: float, stop_s: float, baseline: float, gid: str
) -> None:
    first, last = int(round(start_s * rate)), min(int(round(stop_s * rate)), values.size)
    seconds = np.arange(first, last) / rate
    ax.plot(
        layout.x_mm(seconds),
        baseline + values[first:last] * layout.gain_mm_per_mv,
        color=TRACE_COLOUR,
        linewidth=0.8,
        solid_joinstyle="round",
        zorder=4,
        gid=gid,
    )


def _label(ax, x: float, baseline: float, text: str, layout: PaperLayout) -> None:
    ax.text(
        x,
        baseline + 0.85 * layout.gain_mm_per_mv,
        text,
        fontsize=TEXT_PT,
        fontweight="bold",
        color=TRACE_COLOUR,
        ha="left",
        va="bottom",
        zorder=5,
    )


def _draw_ecg(ax, layout: PaperLayout, leads: dict[str, np.ndarray], rate: float) -> None:
    for col, column in enumerate(COLUMNS):
        start = col * layout.column_seconds
        x0 = float(layout.x_mm(start))
        for row, lead in enumerate(column):
            baseline = layout.baseline_mm(row)
            _trace(ax, layout, leads[lead], rate, start, start + layout.column_seconds, baseline, gid=f"lead-{lead}")
            _label(ax, x0 + 1.0, baseline, lead, layout)
            if col:  # column separator, as printed by electrocardiographs
                ax.plot([x0, x0], [baseline - 2.5, baseline + 2.5], color=TRACE_COLOUR, linewidth=0.8, zorder=4)
    strip = layout.baseline_mm(len(COLUMNS[0]))
    _trace(ax, layout, leads[RHYTHM_LEAD], rate, 0.0, len(COLUMNS) * layout.column_seconds, strip, gid="rhythm")
    _label(ax, float(layout.x_mm(0.0)) + 1.0, strip, RHYTHM_LEAD, layout)
    for row in range(len(COLUMNS[0]) + 1):
        ax.plot(
            *_calibration_pulse(layout, layout.baseline_mm(row)),
            color=TRACE_COLOUR,
            linewidth=0.8,
            zorder=4,
            gid="calibration",
        )
    ax.text(
        layout.width_mm - layout.margin_right_mm,
        1.2,
        f"{layout.speed_mm_per_s:g} mm/s   {layout.gain_mm_per_mv:g} mm/mV   {rate:g} Hz",
        fontsize=TEXT_PT - 1,
        color="#7a3b3b",
        ha="right",
        va="bottom",
        zorder=5,
    )


def _wrap(text: str, layout: PaperLayout) -> list[str]:
    chars_per_line = int((layout.width_mm - 10) / 1.8)  # ~1.65 mm per average character at TEXT_PT, with slack
    return [
        line for paragraph in text.strip().splitlines() for line in (textwrap.wrap(paragraph, chars_per_line) or [""])
    ]


def plot_ecg(
    signal: np.ndarray,
    sampling_rate: float,
    lead_names: Sequence[str],
    title: str | None = None,
    caption: str | None = None,
    output_path: str | Path | None = None,
    dpi: int = 200,
    layout: PaperLayout = PaperLayout(),
) -> Figure:
    """Draw a 12-lead ECG (leads x time, millivolts, any lead order named by `lead_names`) on ECG paper.

    `title` goes in a band above the paper, `caption` in a wrapped text block below it. Only the first
    10 s are drawn. Saves a PNG at `dpi` when `output_path` is given. The figure is not registered with
    pyplot, so servers can draw many without leaking.
    """
    leads = _leads_by_name(np.asarray(signal), lead_names)
    title_mm = layout.title_mm if title else 0.0
    caption_lines = _wrap(caption, layout) if caption else []
    caption_mm = 6.0 + 4.3 * len(caption_lines) if caption_lines else 0.0
    total_mm = title_mm + layout.height_mm + caption_mm

    fig = Figure(figsize=(layout.width_mm / MM_PER_INCH, total_mm / MM_PER_INCH), facecolor="white")
    ax = fig.add_axes((0.0, caption_mm / total_mm, 1.0, layout.height_mm / total_mm))
    ax.set_xlim(0, layout.width_mm)
    ax.set_ylim(0, layout.height_mm)
    ax.set_axis_off()
    _draw_grid(ax, layout)
    _draw_ecg(ax, layout, leads, float(sampling_rate))
    if title:
        fig.text(
            3 / layout.width_mm,
            1 - (title_mm / 2) / total_mm,
            title,
            fontsize=TEXT_PT + 1.5,
            fontweight="bold",
            ha="left",
            va="center",
        )
    if caption_lines:
        fig.text(
            5 / layout.width_mm,
            (caption_mm - 3) / total_mm,
            "\n".join(caption_lines),
            fontsize=TEXT_PT,
            ha="left",
            va="top",
            linespacing=1.45,
        )
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output_path, dpi=dpi, facecolor=fig.get_facecolor())
    return fig
