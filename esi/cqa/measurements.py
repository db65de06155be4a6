"""Interval, axis, voltage and rhythm measurements from a 12-lead ECG, for the CQA captions.

Research software, not a diagnostic device: every value is an automated estimate.

Method (as clinical ECG programs do it, not per-lead delineation):
1. neurokit2 cleans every lead and finds R peaks in every lead; the lead whose peaks the
   other leads confirm best gives the beat positions (not lead II alone).
2. Beats are cut out at a working rate of >= 500 Hz (100 Hz records are band-limited, so
   polyphase upsampling only refines the grid), aligned by cross-correlation, and the
   dominant beats are combined into one MEDIAN BEAT per lead.
3. QRS onset/offset come from the summed absolute slope of all independent leads on the
   median beat; per-lead QRS bounds, combined across leads, check them (too few agreeing
   leads: low confidence). T end and P onset/offset are delineated per lead by the tangent
   method and combined across leads as clinical programs do: the global offset is the latest
   lead that other leads agree with (a lead no other lead confirms is an outlier and is
   ignored); the P onset is the median lead of the earliest agreeing group, since that
   group's earliest lead is its noisiest member. The P-onset tangent meets the level just
   before the wave, not the baseline of the whole P window; a biphasic P wave begins with its
   first phase, even when the second is larger. The T-end search stops before the next beat's P
   wave and at a physiological QT limit for the measured RR, so it cannot run into the next
   beat. A P wave is present when the delineated wave is locked to the QRS beat after beat.
4. Every interval carries a quality flag (``quality``: measured / low_confidence /
   not_measurable) with its reason; physiologically implausible values (QTc > 600 ms in a
   regular rhythm with P waves at normal rate, PR > 400 ms, QRS < 50 ms) are re-checked and
   flagged low confidence unless the re-check confirms them; so is a PR that the leads' own
   P-to-QRS intervals (median of I, II, V1, V2) put more than 40 ms away. Writers state only
   ``measured`` values as fact (``reliable_value``).
Each field is either measured or None with the reason in ``missing``; nothing is guessed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from fractions import Fraction
from functools import lru_cache
from multiprocessing import get_context

import neurokit2 as nk
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, filtfilt, resample_poly, sosfiltfilt

from esi.constants import MIN_SECONDS, STANDARD_LEADS, map_leads_by_name

# The other four limb leads are linear combinations of I and II; slopes use independent leads only.
_INDEPENDENT = [0, 1, 6, 7, 8, 9, 10, 11]
_LIMB = [0, 1, 2, 3, 4, 5]
_P_LEADS = [0, 1, 2, 5, 6, 7]  # I, II, III, aVF, V1, V2: where atrial activity is largest

WORK_RATE = 500.0
MIN_RATE = 100.0
FLAT_MV = 0.02  # peak-to-peak below this: no signal in the lead
PEAK_MATCH_S = 0.08  # R peaks of two leads closer than this are the same beat
BEAT_PRE_S, BEAT_POST_S = 0.5, 0.7  # median-beat window around the R fiducial
ALIGN_S = 0.04  # max cross-correlation shift when aligning beats
DOMINANT_CORR = 0.8  # beats correlating less with the template (ectopics, artefacts) are left out
MIN_BEATS = 3
IRREGULAR_RATIO = 0.05  # median |successive RR difference| / mean RR above this: irregular
PREMATURE_RATIO = 0.85  # a beat ending an RR shorter than this share of the median RR is premature
QRS_SLOPE_FRACTION = 0.08  # QRS boundary: summed slope falls to this fraction above its floor
QRS_GAP_S = 0.016  # a slope dip shorter than this (a notch) does not end the QRS
QRS_LEAD_MIN_SLOPE = 0.1  # a lead with a QRS slope below this share of the strongest lead's is left out
AGREE_QRS_S = 0.01  # per-lead QRS boundaries within this of each other agree
P_MIN_MV = 0.03  # smaller median-beat P waves are not called present
P_COHERENCE = 0.42  # P energy that survives averaging across beats, below: no consistent P
ARTEFACT_ENERGY = 3.0  # a beat with more than this times a lead's median P-window energy is an artefact there
# P onset: the tangent meets the level of this stretch before the wave, not the chord's zero. The chord
# joins the end of the previous T wave to the PR segment, which lies lower (atrial repolarisation), so
# its zero sits below the level the P wave rises from and the tangent met it too early (PTB-XL NORM,
# lead II: a median 0.012 mV below).
P_LEVEL_S = 0.03
T_MIN_MV = 0.05
ST_OFFSET_S = 0.06
P_LEAD_MIN_MV = 0.025  # a lead whose P wave is smaller takes no part in P delineation
T_LEAD_MIN_MV = 0.06  # likewise for the T wave
# A biphasic P wave (III, aVF, V1: + then -, or - then +) begins with its first phase even when the second is
# larger; an opposite deflection of at least this share of the apex, ending at most P_PHASE_GAP_S before the
# apex's own onset and lasting at most half of P_MAX_S, is that first phase. Taking the second phase's onset
# put the P onset in the middle of the wave (PTB-XL 1AVB with a bundle branch block: PR 151 ms for ~215 ms).
BIPHASIC_SHARE = 0.5
P_PHASE_GAP_S = 0.01
P_MAX_S = 0.18  # longest P wave (onset to offset) taken for atrial depolarisation
P_EDGE_S = 0.01  # margin around the delineated P wave when judging its beat-to-beat consistency
AGREE_P_S, AGREE_T_S = 0.02, 0.03  # per-lead boundaries within this of each other agree
MIN_AGREEING = 3  # R peaks, and each global wave boundary, need this many agreeing leads (the lead itself included)
P_SEARCH_S = 0.38  # P search starts at most this long before QRS onset (long PR in AV block)
QT_LIMIT_S = 0.62  # physiological QT limit: QT_LIMIT_S * sqrt(RR) (Bazett QTc 620 ms) ...
QT_LIMIT_WIDE_QRS = 1.0  # ... plus the QRS widening beyond 120 ms
BOUND_MARGIN_S = 0.02  # a T end closer than this to its search bound was cut by the bound
NEXT_P_MARGIN_S = 0.02
WAVE_FLANK = 0.2
RECHECK_AGREE_S = 0.04  # the area-method re-check must agree within this to confirm a value
PR_WAYS_MS = 2000.0 * AGREE_P_S  # twice the P-boundary agreement, in ms: a median-lead PR further off is low confidence

INTERVAL_NAMES = (
    "heart_rate_bpm",
    "pr_interval_ms",
    "p_duration_ms",
    "qrs_duration_ms",
    "qt_interval_ms",
    "qtc_bazett_ms",
    "qtc_fridericia_ms",
)
MEASURED, LOW_CONFIDENCE, NOT_MEASURABLE = "measured", "low_confidence", "not_measurable"


@dataclass
class EcgMeasurements:
    """Measurements of one ECG; each value is None when not measurable, with the reason in ``missing``."""

    heart_rate_bpm: float | None = None
    rr_std_ms: float | None = None
    rr_irregular: bool | None = None
    p_wave_absent: bool | None = None
    pr_interval_ms: float | None = None
    p_duration_ms: float | None = None  # P onset to P offset (earliest agreeing group to latest agreeing lead)
    qrs_duration_ms: float | None = None
    # QRS duration by other ways of combining the leads (median lead; global: earliest confirmed onset to
    # latest confirmed offset); diagnostic, not a column.
    qrs_variants_ms: dict[str, float] | None = None
    # PR likewise (global: earliest confirmed P onset to earliest confirmed QRS onset, as the standards
    # define it; median lead: each of I, II, V1, V2 from its own P onset to its own QRS onset); diagnostic.
    pr_variants_ms: dict[str, float] | None = None
    qt_interval_ms: float | None = None
    qtc_bazett_ms: float | None = None
    qtc_fridericia_ms: float | None = None
    qt_search_limit_ms: float | None = None  # end of the T-end search window after QRS onset (diagnostic)
    qrs_axis_deg: float | None = None
    qrs_axis_category: str | None = None
    sokolow_lyon_mv: float | None = None
    cornell_mv: float | None = None
    low_voltage: bool | None = None
    st_deviation_mv: dict[str, float] | None = None
    missing: dict[str, str] = field(default_factory=dict)
    # Interval -> reason its (kept, raw) value is low confidence; writers must not state it as fact.
    low_confidence: dict[str, str] = field(default_factory=dict)

    def quality(self, name: str) -> tuple[str, str]:
        """(measured | low_confidence | not_measurable, reason) of one field."""
        if getattr(self, name) is None:
            return NOT_MEASURABLE, self.missing.get(name, "not measured")
        if name in self.low_confidence:
            return LOW_CONFIDENCE, self.low_confidence[name]
        return MEASURED, ""

    def to_columns(self) -> dict:
        """Flat row for a `datasets` table; the same keys and types for every record.

        Scalars keep their field names; ST becomes ``st_deviation_<lead>_mv`` (12 columns, PTB-XL
        lead order); ``missing`` becomes the JSON string ``measurement_missing``.
        """
        row: dict = {}
        for f in fields(self):
            if f.name in ("st_deviation_mv", "missing", "low_confidence", "qrs_variants_ms", "pr_variants_ms"):
                continue
            row[f.name] = getattr(self, f.name)
        st = self.st_deviation_mv or {}
        for lead in STANDARD_LEADS:
            value = st.get(lead)
            row[f"st_deviation_{lead}_mv"] = None if value is None else float(value)
        row["measurement_missing"] = json.dumps(self.missing, sort_keys=True)
        row["measurement_quality"] = json.dumps(
            {name: dict(zip(("flag", "reason"), self.quality(name), strict=True)) for name in INTERVAL_NAMES}
        )
        return row

    def _mark_missing(self, names: Sequence[str], reason: str) -> None:
        for name in names:
            if getattr(self, name) is None and name not in self.missing:
                self.missing[name] = reason


def reliable_value(m, name: str):
    """The value of ``name`` when it may be stated as fact: measured and not flagged low confidence."""
    value = getattr(m, name, None)
    return None if value is None or name in (getattr(m, "low_confidence", None) or {}) else value


_MEASURED_FIELDS = tuple(f.name for f in fields(EcgMeasurements) if f.name not in ("missing", "low_confidence"))
_MORPHOLOGY_FIELDS = tuple(n for n in _MEASURED_FIELDS if n not in ("heart_rate_bpm", "rr_std_ms", "rr_irregular"))


def axis_category_ptbxl(axis_deg: float) -> str:
    """PTB-XL's (German) axis grouping, for validation only: "left" below 0 deg, "normal" 0..+90, "right" above."""
    if axis_deg < 0.0:
        return "left"
    if axis_deg > 90.0:
        return "right"
    return "normal"


def _axis_category_american(axis_deg: float) -> str:
    """American convention used in captions: normal -30..+90, left -30..-90, right +90..+180, else extreme."""
    if -30.0 <= axis_deg <= 90.0:
        return "normal"
    if -90.0 <= axis_deg < -30.0:
        return "left"
    if 90.0 < axis_deg <= 180.0:
        return "right"
    return "extreme"


def _record(ecg_id: int | str | None) -> str:
    return f"record {ecg_id}" if ecg_id is not None else "record <no id>"


def _standard_order(signal: np.ndarray, sampling_rate: float, lead_names: Sequence[str], ecg_id) -> np.ndarray:
    """Validate the input and return it as float64 (12, T) in PTB-XL lead order."""
    rec = _record(ecg_id)
    if not (isinstance(sampling_rate, (int, float, np.integer, np.floating)) and math.isfinite(sampling_rate)):
        raise ValueError(f"{rec}: sampling_rate must be a finite number, got {sampling_rate!r}")
    if sampling_rate < MIN_RATE:
        raise ValueError(f"{rec}: sampling_rate {sampling_rate} Hz is too coarse (need >= {MIN_RATE:.0f} Hz)")
    x = np.asarray(signal, dtype=np.float64)
    names = [str(n) for n in lead_names]
    if x.ndim != 2 or x.shape[0] != len(STANDARD_LEADS):
        raise ValueError(f"{rec}: signal must be (12 leads, time), got shape {x.shape}")
    if len(names) != x.shape[0]:
        raise ValueError(f"{rec}: {len(names)} lead names for {x.shape[0]} signal rows")
    try:
        sources = map_leads_by_name(names, STANDARD_LEADS)
    except ValueError as err:
        raise ValueError(f"{rec}: {err}") from None
    if x.shape[1] < MIN_SECONDS * sampling_rate:
        raise ValueError(f"{rec}: signal is {x.shape[1] / sampling_rate:.2f} s long; need at least {MIN_SECONDS} s")
    bad = ~np.isfinite(x)
    if bad.any():
        lead, sample = np.argwhere(bad)[0]
        raise ValueError(f"{rec}: {int(bad.sum())} NaN/inf values (first: lead {names[lead]}, sample {sample})")
    return x[sources]


@lru_cache(maxsize=8)
def _highpass(rate: float) -> np.ndarray:
    """0.5 Hz order-5 Butterworth high-pass (second-order sections), designed once per sampling rate."""
    return butter(5, 0.5, btype="highpass", output="sos", fs=rate)


def _clean(x: np.ndarray, rate: float) -> np.ndarray:
    """neurokit2's ``ecg_clean(method="neurokit")`` for all leads (leads, T) in one call.

    Same filters (0.5 Hz order-5 Butterworth high-pass, zero phase, then a one-period 50 Hz moving
    average, zero phase); designing them once per record instead of once per lead is most of the
    speed-up. tests/cqa/test_measurements.py checks the output equals neurokit2's lead by lead.
    """
    sos = _highpass(float(rate))
    smooth = np.ones(int(rate / 50))
    return filtfilt(smooth, [len(smooth)], sosfiltfilt(sos, x, axis=1), axis=1, method="pad")


def _peak_agreement(peaks: Sequence[np.ndarray], tol: int, length: int) -> np.ndarray:
    """(leads, leads) F1-like share of beats two peak lists have in common (0..1), all pairs at once.

    Entry [i, j]: peaks of lead i with a peak of lead j within ``tol`` samples, over the longer list.
    Every lead's peaks are shifted by its own multiple of 2 * ``length`` into one sorted array, so one
    searchsorted finds each peak's nearest neighbour in every lead (a neighbour from another lead is
    always further than ``tol``); a per-pair Python loop cost more than the rest of the R-peak search.
    """
    n = len(peaks)
    counts = np.array([len(p) for p in peaks])
    score = np.zeros((n, n))
    if counts.sum() == 0:
        return score
    offset = 2 * length + 2 * tol
    every = np.concatenate([p + k * offset for k, p in enumerate(peaks)])  # sorted, as each list is
    own = np.concatenate(peaks)
    owner = np.repeat(np.arange(n), counts)[None, :] == np.arange(n)[:, None]  # (lead i, every peak)
    query = own[None, :] + (np.arange(n) * offset)[:, None]  # (lead j, every peak of every lead i)
    pos = np.searchsorted(every, query)
    last = len(every) - 1
    left = np.abs(query - every[np.minimum(np.maximum(pos - 1, 0), last)])
    right = np.abs(query - every[np.minimum(pos, last)])
    hit = np.minimum(left, right) <= tol
    matched = owner.astype(float) @ hit.T.astype(float)  # [i, j]: exact small integers
    longer = np.maximum(counts[:, None], counts[None, :])
    both = (counts[:, None] > 0) & (counts[None, :] > 0)
    score[both] = matched[both] / longer[both]
    return score


def _consensus_r_peaks(clean: np.ndarray, rate: float) -> tuple[np.ndarray | None, str]:
    """R peaks (samples) of the lead the others agree with most; (None, reason) when leads disagree."""
    live = [i for i in range(clean.shape[0]) if np.ptp(clean[i]) >= FLAT_MV]
    if not live:
        return None, "signal is flat in every lead"
    peaks = {}
    for i in live:
        try:
            peaks[i] = np.asarray(nk.ecg_findpeaks(clean[i], sampling_rate=rate)["ECG_R_Peaks"], dtype=int)
        except (ValueError, IndexError):  # neurokit2 fails on leads without any QRS-like activity
            peaks[i] = np.array([], dtype=int)
    tol = int(PEAK_MATCH_S * rate)
    matrix = _peak_agreement([peaks[i] for i in live], tol, clean.shape[1]).tolist()
    scores = {i: [matrix[a][b] for b in range(len(live)) if b != a] for a, i in enumerate(live)}
    best = max(live, key=lambda i: sum(scores[i]))
    agreeing = 1 + sum(s >= 0.8 for s in scores[best])
    if agreeing < MIN_AGREEING:
        return None, f"R peaks agree in only {agreeing} lead(s); no consistent heartbeat (noise?)"
    if len(peaks[best]) < MIN_BEATS:
        return None, f"only {len(peaks[best])} beats detected"
    return peaks[best], ""


def _irregular(rr: np.ndarray) -> bool:
    """RR intervals (at least 3) whose median successive difference exceeds IRREGULAR_RATIO of their mean."""
    return bool(np.median(np.abs(np.diff(rr))) / rr.mean() > IRREGULAR_RATIO)


def _rhythm(peaks: np.ndarray, rate: float, out: EcgMeasurements) -> float:
    """Fill rate and regularity fields; return mean RR in seconds."""
    rr = np.diff(peaks) / rate
    mean_rr = float(rr.mean())
    out.heart_rate_bpm = 60.0 / mean_rr
    out.rr_std_ms = float(rr.std() * 1000.0)
    if len(rr) >= 3:
        out.rr_irregular = _irregular(rr)
    else:
        out.missing["rr_irregular"] = f"only {len(rr)} RR intervals"
    return mean_rr


def _beats(sig: np.ndarray, fiducials: np.ndarray, pre: int, post: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows (beats, leads, pre+post) around fiducials that fit in the record, and the fiducials kept."""
    keep = fiducials[(fiducials - pre >= 0) & (fiducials + post <= sig.shape[1])]
    idx = keep[:, None] + np.arange(-pre, post)[None, :]
    return np.transpose(sig[:, idx], (1, 0, 2)), keep


def _align(sig: np.ndarray, fiducials: np.ndarray, rate: float) -> np.ndarray:
    """Shift each fiducial so its QRS best matches the median QRS (cross-correlation over all leads)."""
    half = int(0.1 * rate)
    shift = int(ALIGN_S * rate)
    beats, kept = _beats(sig, fiducials, half + shift, half + shift + 1)
    if len(kept) == 0:
        return fiducials
    template = np.median(beats[:, :, shift : shift + 2 * half + 1], axis=0)  # (leads, 2*half+1)
    windows = sliding_window_view(beats, 2 * half + 1, axis=2)  # (beats, leads, 2*shift+1, 2*half+1)
    score = np.einsum("blsw,lw->bs", windows, template)
    return kept + np.argmax(score, axis=1) - shift


@dataclass
class _MedianBeat:
    beat: np.ndarray  # (leads, samples): median of the dominant beats
    beats: np.ndarray  # (beats, leads, samples): the aligned dominant beats
    premature: np.ndarray  # (beats,) the beat ends a short RR (an atrial premature beat: its P lies elsewhere)
    # The rhythm is regular apart from premature beats: the RR intervals between two beats on time agree.
    regular_between_premature: bool


def _premature(fiducials: np.ndarray) -> tuple[np.ndarray, bool]:
    """(premature flag per beat, whether the intervals between beats on time are regular) of sorted fiducials.

    A premature beat (atrial or ventricular) makes the rhythm irregular in sinus rhythm too; the RR
    intervals whose two beats are both on time tell sinus rhythm with ectopy from atrial fibrillation.
    """
    rr = np.diff(fiducials).astype(float)
    premature = np.r_[False, rr < PREMATURE_RATIO * np.median(rr)]
    on_time = rr[~premature[:-1] & ~premature[1:]]
    return premature, len(on_time) >= MIN_BEATS and not _irregular(on_time)


def _median_beat(sig: np.ndarray, peaks: np.ndarray, rate: float) -> tuple[_MedianBeat | None, str]:
    """Median beat of the dominant morphology and the aligned beats used, or (None, reason)."""
    pre, post = int(BEAT_PRE_S * rate), int(BEAT_POST_S * rate)
    fid = np.unique(_align(sig, peaks, rate))
    premature, regular = _premature(fid)
    beats, kept = _beats(sig, fid, pre, post)
    premature = premature[np.searchsorted(fid, kept)]
    if len(beats) < MIN_BEATS:
        return None, f"only {len(beats)} complete beats in the record"
    qrs = slice(pre - int(0.1 * rate), pre + int(0.1 * rate))
    flat = beats[:, :, qrs].reshape(len(beats), -1)
    template = np.median(flat, axis=0)
    # Pearson correlation of every beat with the template at once (a flat beat or template: 0).
    centred, centred_template = flat - flat.mean(axis=1, keepdims=True), template - template.mean()
    norm = np.sqrt((centred**2).sum(axis=1) * (centred_template**2).sum())
    corr = np.divide(centred @ centred_template, norm, out=np.zeros(len(flat)), where=norm > 0)
    dominant = corr >= DOMINANT_CORR
    if dominant.sum() < MIN_BEATS or dominant.sum() < 0.5 * len(beats):
        return None, f"no consistent beat morphology ({dominant.sum()} of {len(beats)} beats alike)"
    return _MedianBeat(np.median(beats[dominant], axis=0), beats[dominant], premature[dominant], regular), ""


def _slope_extent(slope: np.ndarray, floor: float, lo: int, hi: int, gap: int) -> tuple[int, int, float]:
    """(first, last + 1, peak height above floor) of the run of ``slope`` around its peak in [lo, hi).

    ``floor``: the slope's 10th percentile. The run ends where the slope stays below
    QRS_SLOPE_FRACTION of its height above the floor for more than ``gap`` samples (a shorter dip is
    a notch inside the QRS).
    """
    peak = lo + int(np.argmax(slope[lo:hi]))
    thr = floor + QRS_SLOPE_FRACTION * (slope[peak] - floor)

    def walk(step: int, stop: int) -> int:
        last, below, i = peak, 0, peak
        while i != stop:
            i += step
            if slope[i] >= thr:
                last, below = i, 0
            else:
                below += 1
                if below > gap:
                    break
        return last

    return walk(-1, lo), walk(1, hi) + 1, float(slope[peak] - floor)  # slope[i] lies between samples i and i+1


@dataclass
class _QrsBounds:
    onset: int  # sample where the summed slope of the independent leads starts
    offset: int  # sample where it ends
    agreeing: int  # leads in the smaller agreeing group of per-lead onsets or offsets
    variants_ms: dict[str, float]  # QRS duration by other ways of combining the leads (diagnostic)
    earliest_onset: float | None  # earliest per-lead onset other leads confirm (None: none confirmed)
    lead_onsets: np.ndarray  # (independent leads,) each lead's own onset; NaN for a lead too weak to take part


def _qrs_bounds(beat: np.ndarray, rate: float, r0: int) -> _QrsBounds | None:
    """QRS onset/offset (samples) of the median beat (leads, samples), and how far the leads agree on them.

    The bounds come from the summed absolute slope of the independent leads. Each independent lead
    is also delineated on its own slope and the per-lead bounds combined as clinical programs do
    (``combine_leads``: earliest confirmed onset, latest confirmed offset, unconfirmed leads are
    outliers); the size of the smaller agreeing group says how far the leads support the bounds.
    The summed-slope bounds are kept as the value; the global (earliest confirmed onset to latest
    confirmed offset) and median-lead durations are returned for comparison. On PTB-XL the global
    onset moved with the sampling rate more (same recordings at 100 and 500 Hz) and the latest
    confirmed offset missed terminal deflections that only two or three leads show (the terminal R'
    of right bundle branch block in V1-V2).
    """
    width = max(1, int(0.008 * rate))
    kernel = np.ones(width) / width
    slopes = np.stack([np.convolve(s, kernel, mode="same") for s in np.abs(np.diff(beat[_INDEPENDENT], axis=1))])
    lo, hi = r0 - int(0.15 * rate), r0 + int(0.2 * rate)
    gap = int(QRS_GAP_S * rate)
    summed = slopes.sum(axis=0)
    onset, offset, _ = _slope_extent(summed, float(np.percentile(summed, 10)), lo, hi, gap)
    if not 0.04 * rate <= offset - onset <= 0.25 * rate:
        return None
    floors = np.percentile(slopes, 10, axis=1)  # one call for all leads
    per_lead = [_slope_extent(s, float(f), lo, hi, gap) for s, f in zip(slopes, floors, strict=True)]
    # A lead whose QRS slope is small against the others' is mostly noise: it takes no part.
    strongest = max(h for _, _, h in per_lead)
    strong = np.array([h >= QRS_LEAD_MIN_SLOPE * strongest for _, _, h in per_lead])
    leads = [(a, b) for (a, b, _), keep in zip(per_lead, strong, strict=True) if keep]
    tol = AGREE_QRS_S * rate
    first, on_agree = combine_leads([a for a, _ in leads], tol, latest=False)
    last, off_agree = combine_leads([b for _, b in leads], tol, latest=True)
    variants = {"median_lead": float(np.median([b - a for a, b in leads])) * 1000.0 / rate}
    if first is not None and last is not None:
        variants["global"] = (last - first) * 1000.0 / rate
    lead_onsets = np.where(strong, [float(a) for a, _, _ in per_lead], np.nan)
    return _QrsBounds(onset, offset, min(on_agree, off_agree), variants, first, lead_onsets)


def _t_end(mag: np.ndarray, rate: float, start: int, stop: int) -> int | None:
    """T end (sample) by the tangent at the steepest descent after the T peak of the spatial magnitude."""
    if stop - start < int(0.1 * rate):
        return None
    peak = start + int(np.argmax(mag[start:stop]))
    if mag[peak] < T_MIN_MV or peak >= stop - 2:
        return None
    descent = np.diff(mag[peak:stop])
    k = int(np.argmin(descent))
    slope = descent[k]
    if slope >= 0:
        return None
    level = float(mag[peak:stop].min())
    return int(round(peak + k + (level - mag[peak + k]) / slope))


def _t_end_area(mag: np.ndarray, rate: float, start: int, stop: int) -> int | None:
    """T end by the area method (Zhang et al. 2006): the point after the T peak that maximises the area
    between the curve and its own level over the preceding 80 ms. Independent of the tangent: a re-check."""
    width = int(0.08 * rate)
    if stop - start < 2 * width:
        return None
    peak = start + int(np.argmax(mag[start:stop]))
    candidates = np.arange(max(peak + 1, start + width), stop)
    if len(candidates) == 0:
        return None
    csum = np.concatenate([[0.0], np.cumsum(mag)])
    area = csum[candidates + 1] - csum[candidates + 1 - width] - width * mag[candidates]
    return int(candidates[np.argmax(area)])


def _wave_bounds(
    x: np.ndarray, min_mv: float, onset_level: int = 0, phase_gap: int = 0, phase_max: int = 0
) -> tuple[float, float] | None:
    """(onset, offset) of the largest deflection in one lead's window, by the tangent method.

    The tangent at the steepest slope on each flank of the apex (the flank ends where the wave falls
    to WAVE_FLANK of its apex) meets the baseline at the boundary: 0, or for the onset with
    ``onset_level`` > 0 the median level of that many samples before the rising flank (the level the
    wave actually rises from). With ``phase_gap`` > 0 the wave may be biphasic: an opposite deflection
    of at least BIPHASIC_SHARE of the apex, ending at most ``phase_gap`` samples before the apex's onset
    and lasting at most ``phase_max`` samples, is its first phase, and its onset is the wave's. None when
    the deflection is too small, or a boundary falls outside the window (the wave is cut by it).
    """
    if len(x) < 5:
        return None
    apex = int(np.argmax(np.abs(x)))
    if abs(x[apex]) < min_mv or apex < 2 or apex > len(x) - 3:
        return None
    y = x * np.sign(x[apex])  # positive deflection from here on
    low = np.nonzero(y <= WAVE_FLANK * y[apex])[0]
    right = int(low[low > apex].min()) if (low > apex).any() else len(y) - 1
    d = np.diff(y)
    fall = apex + int(np.argmin(d[apex:right]))
    onset = _tangent_onset(y, apex, onset_level)
    if onset is None or d[fall] >= 0:
        return None
    offset = fall - y[fall] / d[fall]
    first_onset = (
        _first_phase_onset(y, apex, onset, onset_level, phase_gap, phase_max) if phase_gap and onset > 2 else None
    )
    if first_onset is not None:
        onset = first_onset
    if onset < 0 or offset > len(y) - 1:
        return None
    return onset, offset


def _first_phase_onset(
    y: np.ndarray, apex: int, onset: float, onset_level: int, phase_gap: int, phase_max: int
) -> float | None:
    """Onset of the opposite first phase of a biphasic wave whose main deflection (positive in ``y``) peaks at
    ``apex`` and begins at ``onset``; None when there is no such phase (see _wave_bounds)."""
    first = -y[: int(onset) + 1]
    first_apex = int(np.argmax(first))
    joined = (first[first_apex:] < WAVE_FLANK * first[first_apex]).sum() <= phase_gap
    if first_apex < 2 or first[first_apex] < BIPHASIC_SHARE * y[apex] or not joined:
        return None
    first_onset = _tangent_onset(first, first_apex, onset_level)
    return first_onset if first_onset is not None and onset - first_onset <= phase_max else None


def _tangent_onset(y: np.ndarray, apex: int, onset_level: int) -> float | None:
    """Onset (fractional sample) of the positive deflection at ``apex`` of ``y`` by the tangent at its steepest
    rise (see _wave_bounds); None when the flank does not rise."""
    low = np.nonzero(y[:apex] <= WAVE_FLANK * y[apex])[0]
    left = int(low.max()) if len(low) else 0
    d = np.diff(y[: apex + 1])
    rise = left + int(np.argmax(d[left:apex]))
    if d[rise] <= 0:
        return None
    level = min(float(np.median(y[max(0, left - onset_level) : left + 1])), y[rise]) if onset_level else 0.0
    return rise - (y[rise] - level) / d[rise]


def combine_leads(
    bounds: Sequence[float], tol: float, latest: bool, min_agreeing: int = MIN_AGREEING
) -> tuple[float | None, int]:
    """Global boundary from per-lead ones, as clinical programs do.

    A lead's boundary is confirmed when at least ``min_agreeing - 1`` other leads lie within ``tol``
    of it; unconfirmed leads are outliers. Returns the earliest (onset) or latest (offset, ``latest``)
    confirmed boundary and the size of the largest agreeing group; (None, size) when none is confirmed.
    """
    b = np.asarray(bounds, dtype=float)
    if len(b) == 0:
        return None, 0
    support = (np.abs(b[:, None] - b[None, :]) <= tol).sum(axis=1)
    confirmed = b[support >= min_agreeing]
    if len(confirmed) == 0:
        return None, int(support.max())
    return float(confirmed.max() if latest else confirmed.min()), int(support.max())


def _combined(bounds: Sequence[float], tol: float, latest: bool) -> tuple[float | None, int]:
    """combine_leads, falling back to a pair of agreeing leads (a weaker estimate the caller flags)."""
    value, agreeing = combine_leads(bounds, tol, latest=latest)
    if value is None:
        value = combine_leads(bounds, tol, latest=latest, min_agreeing=2)[0]
    return value, agreeing


def _t_end_leads(
    beat: np.ndarray, rate: float, start: int, stop: int, baseline: np.ndarray
) -> tuple[float | None, int]:
    """Global T end: latest confirmed per-lead tangent end of the independent leads.

    ``baseline`` (per lead) is the TP-segment level the T wave returns to; with PR-segment or ST
    depression it differs from the PR baseline and the tangent must meet the former.
    """
    ends: list[float] = []
    if stop - start < int(0.1 * rate):
        return None, 0
    for lead in _INDEPENDENT:
        found = _wave_bounds(beat[lead, start:stop] - baseline[lead], T_LEAD_MIN_MV)
        if found is not None:
            ends.append(start + found[1])
    return _combined(ends, AGREE_T_S * rate, latest=True)  # a pair of agreeing leads: the caller re-checks it


def _chord_detrend(segment: np.ndarray, rate: float) -> np.ndarray:
    """Subtract the straight line joining the mean of the first and last 10 ms (..., samples).

    Both ends of the P window are isoelectric in sinus rhythm, so the P wave survives while
    residual baseline drift and the offset between beats do not.
    """
    edge = max(1, int(0.01 * rate))
    first = segment[..., :edge].mean(axis=-1, keepdims=True)
    last = segment[..., -edge:].mean(axis=-1, keepdims=True)
    return segment - (first + (last - first) * np.linspace(0.0, 1.0, segment.shape[-1]))


@dataclass
class _PWave:
    present: bool
    onset: float | None = None  # P onset (sample): median lead of the earliest agreeing group; None: no pair agrees
    offset: float | None = None  # global P offset (sample), likewise
    agreeing: int = 0  # leads in the largest agreeing group of onsets
    offset_agreeing: int = 0  # likewise for the offsets
    # The onset lies within P_EDGE_S of the search start: the wave may begin earlier, in the previous T wave.
    onset_at_window_start: bool = False
    earliest_onset: float | None = None  # earliest onset other leads confirm (sample), the standards' global onset
    lead_onsets: np.ndarray | None = None  # (P leads,) each lead's own onset (sample); NaN where not delineated


def _coherence(segments: np.ndarray) -> float:
    """Share of per-beat energy that survives averaging (beats, leads, samples): ~1 for a wave locked
    to the QRS, ~1/beats for activity unrelated to it (atrial fibrillation's f waves).

    Judged lead by lead without the artefacts: a beat whose energy in a lead exceeds ARTEFACT_ENERGY
    times that lead's median (an electrode artefact, a wandering baseline) would otherwise dominate
    the per-beat energy and hide a consistent P wave in the other beats and leads.
    """
    energy = (segments**2).sum(axis=2)  # (beats, leads)
    keep = energy <= ARTEFACT_ENERGY * np.median(energy, axis=0)
    count = keep.sum(axis=0)
    used = count >= MIN_BEATS
    if not used.any():
        return 0.0
    mean = (segments * keep[:, :, None]).sum(axis=0)[used] / count[used, None]
    per_beat = (energy * keep).sum(axis=0)[used] / count[used]
    return float((mean**2).sum() / max(per_beat.sum(), 1e-12))


def _p_wave(
    beats: np.ndarray, beat: np.ndarray, rate: float, onset: int, start: int, irregular: bool = False
) -> _PWave:
    """Consistent P wave in [start, QRS onset - 20 ms) of the median beat, and its global onset/offset.

    beats: (beats, leads, samples) aligned dominant beats; beat: (leads, samples) their median;
    both referenced to the PR-segment baseline.
    """
    stop = onset - int(0.02 * rate)
    start = max(start, 0)
    if stop - start < int(0.08 * rate):
        return _PWave(False)
    segments = _chord_detrend(beats[:, _P_LEADS, start:stop], rate)
    detrended = _chord_detrend(beat[_P_LEADS, start:stop], rate)
    if np.sqrt((detrended**2).sum(axis=0)).max() < P_MIN_MV:
        return _PWave(False)
    edge = P_EDGE_S * rate
    level = int(P_LEVEL_S * rate)
    phases = int(P_PHASE_GAP_S * rate), int(P_MAX_S / 2 * rate)
    per_lead = [_wave_bounds(x, P_LEAD_MIN_MV, level, *phases) for x in detrended]
    found = [b for b in per_lead if b is not None]
    tol = AGREE_P_S * rate
    onsets = np.array([b[0] for b in found])
    first, agreeing = _combined(onsets, tol, latest=False)
    earliest = None if first is None else start + first
    if first is not None:
        # The earliest lead of the agreeing group is the noisiest estimate of where the group starts (the
        # tangent of a broad, low P wave reaches far back): the group's median lead gives the onset.
        first = float(np.median(onsets[(onsets >= first) & (onsets <= first + tol)]))
    last, offset_agreeing = _combined([b[1] for b in found], tol, latest=True)
    too_long = first is not None and last is not None and last - first > P_MAX_S * rate
    if too_long and irregular:
        # In an irregular rhythm a "P wave" longer than atrial depolarisation lasts (even with
        # interatrial block) is the average of T-wave tails after unequal cycles, not a P wave.
        return _PWave(False)
    if first is not None and last is not None and 0 < last - first <= P_MAX_S * rate:
        # Is the delineated wave itself locked to the QRS? Judged on the wave alone, so unrelated
        # activity elsewhere in the window (the previous T wave after a short RR) does not hide it.
        # A longer "wave" in a regular rhythm is a P fused with the T wave (long PR): then the whole
        # window is judged.
        wave = slice(max(0, int(first - edge)), int(last + edge) + 1)
        segments = segments[:, :, wave]
    if _coherence(segments) < P_COHERENCE:
        return _PWave(False)
    return _PWave(
        True,
        None if first is None else start + first,
        None if last is None else start + last,
        agreeing,
        offset_agreeing,
        first is not None and first < edge,
        earliest,
        np.array([np.nan if b is None else start + b[0] for b in per_lead]),
    )


def _qt_limit(mean_rr: float, qrs_s: float) -> float:
    """Longest physiological QT (s) for this RR: Bazett QTc QT_LIMIT_S, plus QRS widening past 120 ms."""
    return QT_LIMIT_S * math.sqrt(mean_rr) + QT_LIMIT_WIDE_QRS * max(0.0, qrs_s - 0.12)


def _morphology(median: _MedianBeat, rate: float, mean_rr: float, out: EcgMeasurements) -> None:
    """Fill interval, axis, voltage and ST fields from the median beat at ``rate``."""
    bounds = _qrs_fields(median.beat, rate, out)
    if bounds is None:
        return
    on, off = bounds.onset, bounds.offset
    # PR-segment baseline: the isoelectric reference for every amplitude below.
    pr_segment = slice(on - int(0.025 * rate), on - int(0.005 * rate))
    beat = median.beat - median.beat[:, pr_segment].mean(axis=1, keepdims=True)
    beats = median.beats - median.beats[:, :, pr_segment].mean(axis=2, keepdims=True)
    _amplitude_fields(beat[:, on:off], beat[:, off + int(ST_OFFSET_S * rate)], out)
    t_end = _qt_fields(beat, beats, rate, mean_rr, (on, off), out)
    irregular = bool(out.rr_irregular)
    on_time = ~median.premature
    if irregular and median.regular_between_premature and on_time.sum() >= MIN_BEATS:
        # Sinus rhythm made irregular by premature beats: a premature beat's P wave sits in the previous
        # T wave, so the P wave is delineated and judged on the beats on time.
        beats = beats[on_time]
        beat = np.median(beats, axis=0)
        irregular = False
    _pr_fields(beat, beats, rate, mean_rr, bounds, t_end, irregular, out)


def _qrs_fields(beat: np.ndarray, rate: float, out: EcgMeasurements) -> _QrsBounds | None:
    """QRS duration and its quality from the median beat (leads, samples); None (fields missing) without bounds."""
    bounds = _qrs_bounds(beat, rate, int(BEAT_PRE_S * rate))
    if bounds is None:
        out._mark_missing(_MORPHOLOGY_FIELDS, "QRS boundaries not found on the median beat")
        return None
    out.qrs_variants_ms = bounds.variants_ms
    out.qrs_duration_ms = (bounds.offset - bounds.onset) / rate * 1000.0
    if out.qrs_duration_ms < 50:
        out.low_confidence["qrs_duration_ms"] = "a QRS shorter than 50 ms is implausible"
    elif bounds.agreeing < MIN_AGREEING:
        out.low_confidence["qrs_duration_ms"] = f"QRS onset/offset agree in only {bounds.agreeing} lead(s)"
    return bounds


def _amplitude_fields(qrs: np.ndarray, st: np.ndarray, out: EcgMeasurements) -> None:
    """Axis, voltage criteria and ST deviation from the QRS (leads, samples) and the ST level (leads,) in mV."""
    r_amp, s_amp = np.clip(qrs.max(axis=1), 0, None), np.clip(-qrs.min(axis=1), 0, None)
    # Axis from the net QRS deflection (R - S) in I (0 deg) and aVF (+90 deg); it matched PTB-XL's
    # cardiologists better than net area on folds 1-9 (93% vs 92%).
    net_i, net_avf = r_amp[0] - s_amp[0], r_amp[5] - s_amp[5]
    if math.hypot(net_i, net_avf) >= 0.02:
        out.qrs_axis_deg = math.degrees(math.atan2(net_avf, net_i))
        out.qrs_axis_category = _axis_category_american(out.qrs_axis_deg)
    else:
        out._mark_missing(["qrs_axis_deg", "qrs_axis_category"], "net QRS deflection in I and aVF is ~0")
    out.sokolow_lyon_mv = float(s_amp[6] + max(r_amp[10], r_amp[11]))
    out.cornell_mv = float(r_amp[4] + s_amp[8])
    out.low_voltage = bool(np.all(np.ptp(qrs[_LIMB], axis=1) < 0.5))
    out.st_deviation_mv = {lead: float(st[i]) for i, lead in enumerate(STANDARD_LEADS)}


def _qt_fields(
    beat: np.ndarray, beats: np.ndarray, rate: float, mean_rr: float, qrs: tuple[int, int], out: EcgMeasurements
) -> int | None:
    """QT and QTc with their quality from the median beat (leads, samples) and its aligned beats (beats, leads,
    samples), both on the PR-segment baseline; returns the T end (sample) or None.

    The T-end search stops at the physiological QT limit for this RR and before the next beat's P wave
    (this beat's P onset one RR later), so it cannot take the next P for the T wave.
    """
    on, off = qrs
    rr = int(mean_rr * rate)
    first_p = _p_wave(beats, beat, rate, on, on - int(min(0.3, 0.45 * mean_rr) * rate))
    t_stop = min(beat.shape[1] - 1, on + int(_qt_limit(mean_rr, (off - on) / rate) * rate))
    if first_p.onset is not None:
        t_stop = min(t_stop, int(first_p.onset) + rr - int(NEXT_P_MARGIN_S * rate))
    out.qt_search_limit_ms = (t_stop - on) / rate * 1000.0
    t_start = off + int(0.06 * rate)
    tp = np.zeros(beat.shape[0])
    if first_p.onset is not None and first_p.onset >= 0.03 * rate:  # TP level: just before this beat's P
        tp = beat[:, int(first_p.onset - 0.03 * rate) : int(first_p.onset - 0.01 * rate)].mean(axis=1)
    t_end, agreeing = _t_end_leads(beat, rate, t_start, t_stop, tp)
    mag = np.sqrt((beat[_INDEPENDENT] ** 2).sum(axis=0))
    qt_names = ["qt_interval_ms", "qtc_bazett_ms", "qtc_fridericia_ms"]
    if t_end is None:
        t_end = _t_end(mag, rate, t_start, t_stop)
    if t_end is not None and t_end >= t_stop - BOUND_MARGIN_S * rate:
        out._mark_missing(qt_names, "T end not found before the search bound (next P wave or QT limit)")
        return None
    if t_end is None or t_end - on < 0.2 * rate:
        out._mark_missing(qt_names, "T-wave end not found")
        return None
    qt = (t_end - on) / rate
    out.qt_interval_ms = qt * 1000.0
    out.qtc_bazett_ms = qt / math.sqrt(mean_rr) * 1000.0
    out.qtc_fridericia_ms = qt / mean_rr ** (1 / 3) * 1000.0
    sinus_normal_rate = first_p.present and out.rr_irregular is False and 50 <= out.heart_rate_bpm <= 100
    implausible = out.qtc_bazett_ms > 600 and sinus_normal_rate
    if agreeing < MIN_AGREEING or implausible:  # weak or implausible: re-check with the area method
        area_end = _t_end_area(mag, rate, t_start, t_stop)
        if area_end is None or abs(area_end - t_end) > RECHECK_AGREE_S * rate:
            doubt = (
                "QTc above 600 ms in a regular rhythm with P waves at normal rate"
                if implausible
                else f"T end agrees in only {agreeing} lead(s)"
            ) + ", not confirmed by the area method"
            out.low_confidence.update(dict.fromkeys(qt_names, doubt))
    return t_end


def _pr_fields(
    beat: np.ndarray,
    beats: np.ndarray,
    rate: float,
    mean_rr: float,
    qrs: _QrsBounds,
    t_end: int | None,
    irregular: bool,
    out: EcgMeasurements,
) -> None:
    """P presence, PR and P duration with their quality; ``t_end``: T end (sample) or None; ``irregular``: the
    beats come from an irregular rhythm (atrial fibrillation possible)."""
    rr, on = int(mean_rr * rate), qrs.onset
    # P window: from after the previous beat's T wave (or P_SEARCH_S before the QRS) to the QRS.
    prev_t_end = (t_end if t_end is not None else on + int(0.3 * rate)) - rr + int(0.02 * rate)
    start = max(on - int(P_SEARCH_S * rate), int(prev_t_end))
    p = _p_wave(beats, beat, rate, on, start, irregular)
    out.p_wave_absent = not p.present
    if not p.present:
        out._mark_missing(["pr_interval_ms", "p_duration_ms"], "no consistent P wave")
        return
    if p.onset is None:
        out._mark_missing(["pr_interval_ms"], f"P onset agrees in only {p.agreeing} lead(s)")
    else:
        out.pr_interval_ms = (on - p.onset) / rate * 1000.0
        out.pr_variants_ms = _pr_variants(p, qrs, rate)
        if out.pr_interval_ms > 400:
            out.low_confidence["pr_interval_ms"] = "a PR interval above 400 ms is implausible"
        elif p.agreeing < MIN_AGREEING:
            out.low_confidence["pr_interval_ms"] = f"P onset agrees in only {p.agreeing} lead(s)"
        elif p.onset_at_window_start:
            # The search starts after the previous T wave: a P wave fused with it is cut, its onset unknown.
            out.low_confidence["pr_interval_ms"] = (
                "P onset at the end of the previous T wave (the P wave may begin in it)"
            )
        elif abs(out.pr_variants_ms.get("median_lead", out.pr_interval_ms) - out.pr_interval_ms) > PR_WAYS_MS:
            # The leads' own P-to-QRS intervals tell another story than the combined boundaries: either
            # boundary may sit on the wrong deflection, so the value is not stated.
            out.low_confidence["pr_interval_ms"] = (
                f"the leads' own PR (median {out.pr_variants_ms['median_lead']:.0f} ms) differs from the "
                f"combined PR by more than {PR_WAYS_MS:.0f} ms"
            )
    _p_duration_fields(p, rate, out)


def _pr_variants(p: _PWave, qrs: _QrsBounds, rate: float) -> dict[str, float]:
    """PR (ms) by other ways of combining the leads than the shipped one, for comparison (see EcgMeasurements)."""
    variants = {}
    if p.earliest_onset is not None and qrs.earliest_onset is not None:
        variants["global"] = (qrs.earliest_onset - p.earliest_onset) * 1000.0 / rate
    both = [(i, _INDEPENDENT.index(lead)) for i, lead in enumerate(_P_LEADS) if lead in _INDEPENDENT]
    per_lead = np.array([qrs.lead_onsets[q] - p.lead_onsets[i] for i, q in both])
    if not np.isnan(per_lead).all():
        variants["median_lead"] = float(np.nanmedian(per_lead)) * 1000.0 / rate
    return variants


def _p_duration_fields(p: _PWave, rate: float, out: EcgMeasurements) -> None:
    """P duration of a present P wave and its quality (an implausible one makes the PR doubtful too)."""
    if p.onset is None or p.offset is None or p.offset <= p.onset:
        out._mark_missing(["p_duration_ms"], "P onset or offset not found in enough leads")
        return
    out.p_duration_ms = (p.offset - p.onset) / rate * 1000.0
    if out.p_duration_ms > P_MAX_S * 1000.0:
        # No atrial depolarisation lasts this long: the onset sits in the previous T wave or in noise,
        # so the PR measured from it is as doubtful as the P wave itself.
        doubt = f"a P wave longer than {P_MAX_S * 1000:.0f} ms is implausible"
        out.low_confidence["p_duration_ms"] = doubt
        out.low_confidence.setdefault("pr_interval_ms", doubt)
    elif min(p.agreeing, p.offset_agreeing) < MIN_AGREEING:
        out.low_confidence["p_duration_ms"] = (
            f"P onset/offset agree in only {min(p.agreeing, p.offset_agreeing)} lead(s)"
        )


def measure_ecg(
    signal: np.ndarray, sampling_rate: float, lead_names: Sequence[str], ecg_id: int | str | None = None
) -> EcgMeasurements:
    """Measure one ECG.

    signal: (12, T) leads x time in millivolts, any lead order named by ``lead_names``; at least
    2 s at >= 100 Hz. Raises ValueError naming ``ecg_id`` for NaN/inf, wrong shape or unknown leads.
    """
    x = _standard_order(signal, sampling_rate, lead_names, ecg_id)
    rate = float(sampling_rate)
    out = EcgMeasurements()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neurokit2 warns on flat leads; failures are reported below
        clean = _clean(x, rate)
        peaks, reason = _consensus_r_peaks(clean, rate)
    if peaks is None:
        out._mark_missing(_MEASURED_FIELDS, reason)
        return out
    mean_rr = _rhythm(peaks, rate, out)

    if rate < WORK_RATE:
        ratio = Fraction(WORK_RATE / rate).limit_denominator(50)
        clean = resample_poly(clean, ratio.numerator, ratio.denominator, axis=1)
        peaks = np.round(peaks * ratio.numerator / ratio.denominator).astype(int)
        rate = rate * ratio.numerator / ratio.denominator
    median, reason = _median_beat(clean, peaks, rate)
    if median is None:
        out._mark_missing(_MORPHOLOGY_FIELDS, reason)
        return out
    _morphology(median, rate, mean_rr, out)
    return out


def _measure_one(args: tuple) -> EcgMeasurements:
    return measure_ecg(*args)


class MeasurePool:
    """The package's one pool of measuring processes (``measure_batch`` and the caption run use it).

    ``map`` returns results in input order; with ``num_workers <= 1`` it measures in this process.
    Use as a context manager or call ``close``.
    """

    def __init__(self, num_workers: int = 2) -> None:
        self.num_workers = max(1, int(num_workers))
        self._pool = None
        if self.num_workers > 1:
            # forkserver: safe when the caller has threads running (torch, datasets); neurokit2 loads once per worker.
            self._pool = ProcessPoolExecutor(max_workers=self.num_workers, mp_context=get_context("forkserver"))

    def map(
        self,
        signals: Sequence[np.ndarray],
        rates: Sequence[float],
        lead_names: Sequence[Sequence[str]],
        ecg_ids: Sequence[int | str | None],
    ) -> Iterator[EcgMeasurements]:
        """Measurements of the records, in order; in a pool they are computed while the caller iterates."""
        jobs = list(zip(signals, rates, lead_names, ecg_ids, strict=True))
        if self._pool is None or len(jobs) < 2:
            return iter([_measure_one(job) for job in jobs])
        chunksize = max(1, min(32, len(jobs) // (4 * self.num_workers)))
        return self._pool.map(_measure_one, jobs, chunksize=chunksize)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MeasurePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure_batch(
    signals: Sequence[np.ndarray] | np.ndarray,
    sampling_rate: float | Sequence[float],
    lead_names: Sequence[str] | Sequence[Sequence[str]],
    ecg_ids: Sequence[int | str] | None = None,
    num_workers: int = 2,
    pool: MeasurePool | None = None,
) -> list[EcgMeasurements]:
    """Measure many ECGs (each (12, T) mV) in a process pool; results keep the input order.

    ``sampling_rate`` and ``lead_names`` are shared by all records or given per record. ``pool``: an
    open MeasurePool to reuse (then ``num_workers`` is ignored); otherwise one is started and closed.
    """
    n = len(signals)
    rates = [sampling_rate] * n if np.isscalar(sampling_rate) else list(sampling_rate)
    names = [lead_names] * n if isinstance(lead_names[0], str) else list(lead_names)
    ids = list(ecg_ids) if ecg_ids is not None else [None] * n
    if not len(rates) == len(names) == len(ids) == n:
        raise ValueError(f"measure_batch: {n} signals but {len(rates)} rates, {len(names)} lead lists, {len(ids)} ids")
    if pool is not None:
        return list(pool.map(signals, rates, names, ids))
    with MeasurePool(num_workers if n >= 2 else 1) as own:
        return list(own.map(signals, rates, names, ids))
