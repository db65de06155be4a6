"""Raw agreement of esi.cqa.measurements with PTB-XL cardiologists' statements, QT search-window
position, plausibility counts, quality flags and speed; reconciliation with statements reported apart.

Raw means the detector's own output, before ``esi.cqa.consistency.reconcile_with_statements`` (which
only captions of labelled records get). Thresholds were tuned on folds 1-9; fold 10 is reported apart.

    python -m benchmarks.bench_measurements                       # all records at 100 Hz + records 1-500 at 500 Hz
    python -m benchmarks.bench_measurements --limit 300 --hr-limit 50   # quick look
    python -m benchmarks.bench_measurements --report-only benchmarks/results/measurements-<stamp>.json
    python -m benchmarks.bench_measurements --baseline <git rev>   # + that revision's code in the same run

Also: PR and QRS of NORM records against adult normal ranges, 1AVB/LPR sensitivity at fixed NORM
false-positive shares, QRS by other lead combinations, and the same recordings at 100 vs 500 Hz.

Writes benchmarks/results/measurements-<UTC stamp>.json (command, git commit, figures) and the
Markdown report benchmarks/reports/measurements.md generated from that JSON.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from benchmarks.provenance import git_commit, utc_timestamp
from esi.cqa.consistency import reconcile_with_statements
from esi.cqa.measurements import (
    INTERVAL_NAMES,
    EcgMeasurements,
    MeasurePool,
    axis_category_ptbxl,
    measure_batch,
    measure_ecg,
)

REPO = Path(__file__).resolve().parents[1]
# PTB-XL heart_axis codes in its German convention, grouped three ways.
AXIS_GROUPS = {
    "LAD": "left",
    "ALAD": "left",
    "AXL": "left",
    "MID": "normal",
    "RAD": "right",
    "ARAD": "right",
    "AXR": "right",
}
# Statements under which a QTc above 600 ms can be genuine: long QT or a wide-QRS rhythm.
LONG_QT_OR_WIDE_QRS = {"LNGQT", "CLBBB", "CRBBB", "IVCD", "WPW", "PACE", "ILBBB"}
SINUS = {"SR", "SBRAD", "STACH", "SARRH"}
WINDOW_BINS_MS = (0, 20, 35, 100)  # distance of the T end from the end of its search window
# Published adult normal ranges (ms) the NORM distributions are held against.
PR_NORMAL_MS, QRS_NORMAL_MS = (120.0, 200.0), (80.0, 110.0)
PERCENTILES = (5, 25, 50, 75, 95)
# Statements of slowed ventricular conduction: 1AVB/LPR records carrying one are reported apart.
CONDUCTION_DISEASE = ("CLBBB", "CRBBB", "ILBBB", "IRBBB", "LAFB", "LPFB", "IVCD")
ROC_FALSE_POSITIVES = (0.02, 0.04, 0.06, 0.08, 0.10)  # NORM shares at which the 1AVB/LPR sensitivity is read


def load(ptbxl_dir: Path, folds: list[int], limit: int | None, rate: int) -> tuple[pd.DataFrame, list, list]:
    """Metadata rows and (12, T) mV signals at ``rate`` (100 or 500 Hz), read with wfdb."""
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    db = db[db.strat_fold.isin(folds)].sort_values("ecg_id")
    if limit:
        db = db.head(limit)
    db = db.assign(codes=db.scp_codes.apply(ast.literal_eval)).reset_index(drop=True)
    column = "filename_lr" if rate == 100 else "filename_hr"
    signals, leads = [], []
    for path in db[column]:
        record = wfdb.rdrecord(str(ptbxl_dir / path))
        signals.append(record.p_signal.T.astype(np.float32))
        leads.append(list(record.sig_name))
    return db, signals, leads


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


def _values(ms: list[EcgMeasurements], name: str) -> np.ndarray:
    return np.array([np.nan if getattr(m, name) is None else float(getattr(m, name)) for m in ms])


def agreement(db: pd.DataFrame, ms: list[EcgMeasurements]) -> list[dict]:
    """Each check: share of records with the statement the measurement confirms (missing = disagreement),
    and the share of reference records (SR or NORM) the same rule flags (false positives)."""
    has = {
        code: db.codes.apply(lambda c, code=code: code in c).to_numpy()
        for code in ("SR", "NORM", "SBRAD", "STACH", "AFIB", "CLBBB", "CRBBB", "1AVB", "LPR")
    }
    hr, qrs, pr = _values(ms, "heart_rate_bpm"), _values(ms, "qrs_duration_ms"), _values(ms, "pr_interval_ms")
    irregular = np.array([m.rr_irregular is True for m in ms])
    no_p = np.array([m.p_wave_absent is True for m in ms])
    rows = []

    def row(name, predicted, positive, reference, ref_name, target):
        # A reference record that carries the statement itself is no false positive (PTB-XL gives some
        # records both NORM and 1AVB); the share over all reference records is kept for comparison.
        clean_reference = reference & ~positive
        rows.append(
            {
                "check": name,
                "agreement": _share(predicted[positive]),
                "n": int(positive.sum()),
                "flagged_reference": _share(predicted[clean_reference]),
                "n_reference": int(clean_reference.sum()),
                "flagged_reference_incl_positive": _share(predicted[reference]),
                "n_reference_incl_positive": int(reference.sum()),
                "reference": ref_name,
                "target": target,
            }
        )

    sr, norm = has["SR"], has["NORM"]
    row("SBRAD: HR < 60", hr < 60, has["SBRAD"], sr, "SR", ">= 95%")
    row("STACH: HR > 100", hr > 100, has["STACH"], sr, "SR", ">= 95%")
    row("AFIB: irregular and no consistent P", irregular & no_p, has["AFIB"], sr, "SR", ">= 90%, SR <= 3%")
    row("AFIB (part): RR irregular", irregular, has["AFIB"], sr, "SR", "")
    row("AFIB (part): P wave absent", no_p, has["AFIB"], sr, "SR", "")
    row("CLBBB/CRBBB: QRS >= 120 ms", qrs >= 120, has["CLBBB"] | has["CRBBB"], norm, "NORM", ">= 92%, NORM <= 1%")
    row("1AVB/LPR: PR > 200 ms", pr > 200, has["1AVB"] | has["LPR"], norm, "NORM", ">= 85%, NORM <= 4%")
    expected = db.heart_axis.map(AXIS_GROUPS).to_numpy()
    labelled = np.array([isinstance(e, str) for e in expected])
    measured = np.array([axis_category_ptbxl(m.qrs_axis_deg) if m.qrs_axis_deg is not None else None for m in ms])
    row("heart_axis: 3-way (left/normal/right)", measured == expected, labelled, np.zeros(len(ms), bool), "", ">= 90%")
    return rows


def _distribution(values: np.ndarray, normal: tuple[float, float]) -> dict:
    """Percentiles and shares below / within / above a normal range of the measured values (NaN: not measured)."""
    x = values[~np.isnan(values)]
    out = {"n": int(len(values)), "measured": int(len(x))}
    if len(x):
        out["percentiles_ms"] = {
            str(q): float(v) for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True)
        }
        out["below"], out["above"] = float((x < normal[0]).mean()), float((x > normal[1]).mean())
        out["within"] = 1.0 - out["below"] - out["above"]
    return out


def _statement(db: pd.DataFrame, *codes: str) -> np.ndarray:
    return db.codes.apply(lambda c: any(code in c for code in codes)).to_numpy()


def _variants(ms: list[EcgMeasurements], name: str, other_ways: str) -> dict[str, np.ndarray]:
    """The shipped value of ``name`` and the same interval by each other way of combining the leads."""
    out = {"shipped": _values(ms, name)}
    for way in sorted({k for m in ms for k in (getattr(m, other_ways) or {})}):
        out[way] = np.array([(getattr(m, other_ways) or {}).get(way, np.nan) for m in ms])
    return out


def norm_intervals(db: pd.DataFrame, ms: list[EcgMeasurements]) -> dict:
    """PR and QRS of NORM records against the adult normal ranges, with the statement checks beside them.

    PR: NORM records without 1AVB/LPR; QRS: NORM records without CLBBB/CRBBB. Shares of records over a
    limit count a missing value as not over it (as the agreement table does). PR and QRS are given for the
    shipped value and for each other way of combining the leads (median lead; global: earliest onset to
    earliest onset for PR, earliest onset to latest offset for QRS). The 1AVB/LPR sensitivity is also given
    apart for records with and without a conduction-disease statement (bundle branch or fascicular block).
    """
    avb, bbb = _statement(db, "1AVB", "LPR"), _statement(db, "CLBBB", "CRBBB")
    norm, conduction = _statement(db, "NORM"), _statement(db, *CONDUCTION_DISEASE)
    stated_pr = np.array([m.quality("pr_interval_ms")[0] == "measured" for m in ms])
    ref = norm & ~avb
    out: dict = {"pr_variants": {}}
    for name, pr in _variants(ms, "pr_interval_ms", "pr_variants_ms").items():
        out["pr_variants"][name] = {
            **_distribution(pr[ref], PR_NORMAL_MS),
            "over_200": _share(pr[ref] > 200),
            "avb_lpr_sensitivity": _share(pr[avb] > 200),
            "n_avb_lpr": int(avb.sum()),
            "avb_lpr_sensitivity_conduction_disease": _share(pr[avb & conduction] > 200),
            "n_avb_lpr_conduction_disease": int((avb & conduction).sum()),
            "avb_lpr_sensitivity_no_conduction_disease": _share(pr[avb & ~conduction] > 200),
            "operating_points": pr_operating_points(pr[ref], pr[avb]),
        }
    shipped = out["pr_variants"]["shipped"]
    pr = _values(ms, "pr_interval_ms")
    out["pr_norm"] = {k: v for k, v in shipped.items() if k != "operating_points"}
    out["pr_norm"]["over_200_stated"] = _share((pr > 200)[ref & stated_pr])
    out["pr_operating_points"] = shipped["operating_points"]
    ref = norm & ~bbb
    out["qrs_norm"] = {
        name: {
            **_distribution(q[ref], QRS_NORMAL_MS),
            "at_least_120": _share(q[ref] >= 120),
            "bbb_sensitivity": _share(q[bbb] >= 120),
            "n_bbb": int(bbb.sum()),
        }
        for name, q in _variants(ms, "qrs_duration_ms", "qrs_variants_ms").items()
    }
    return out


def pr_operating_points(reference: np.ndarray, positive: np.ndarray) -> list[dict]:
    """1AVB/LPR sensitivity at the PR threshold that flags a given share of NORM records, for every share
    in ROC_FALSE_POSITIVES: what any threshold could give, apart from the clinical 200 ms."""
    ref = np.nan_to_num(reference, nan=-np.inf)
    pos = np.nan_to_num(positive, nan=-np.inf)
    if not len(ref) or not len(pos):
        return []
    rows = []
    for fp in ROC_FALSE_POSITIVES:
        threshold = float(np.quantile(ref, 1 - fp))
        rows.append({"norm_flagged": fp, "threshold_ms": threshold, "sensitivity": float((pos > threshold).mean())})
    return rows


def qt_window(ms: list[EcgMeasurements]) -> dict:
    """Where measured QT values lie relative to the end of their T-end search window."""
    qt, limit = _values(ms, "qt_interval_ms"), _values(ms, "qt_search_limit_ms")
    gap = (limit - qt)[~np.isnan(qt)]
    edges = (-np.inf, *WINDOW_BINS_MS, np.inf)
    bins = {
        f"{lo:g}..{hi:g} ms": int(((gap >= lo) & (gap < hi)).sum()) for lo, hi in zip(edges, edges[1:], strict=False)
    }
    at_bound = sum("search bound" in m.missing.get("qt_interval_ms", "") for m in ms)
    return {
        "measured": int(len(gap)),
        "gap_to_window_end": bins,
        "within_35_ms": int((gap < 35).sum()),
        "rejected_at_bound": int(at_bound),
    }


def plausibility(db: pd.DataFrame, ms: list[EcgMeasurements]) -> dict:
    """Counts of implausible values, raw and among those the captions may state (quality 'measured')."""
    qtc, pr, qrs = _values(ms, "qtc_bazett_ms"), _values(ms, "pr_interval_ms"), _values(ms, "qrs_duration_ms")
    stated = {n: np.array([m.quality(n)[0] == "measured" for m in ms]) for n in INTERVAL_NAMES}
    long_or_wide = db.codes.apply(lambda c: bool(LONG_QT_OR_WIDE_QRS & set(c))).to_numpy()
    sinus = db.codes.apply(lambda c: bool(SINUS & set(c))).to_numpy()
    no_p = np.array([m.p_wave_absent is True for m in ms])
    high = qtc > 600
    return {
        "qtc_over_600": int(high.sum()),
        "qtc_over_600_with_long_qt_or_wide_qrs_statement": int((high & long_or_wide).sum()),
        "qtc_over_600_without_such_statement": int((high & ~long_or_wide).sum()),
        "qtc_over_600_sinus_statement": int((high & sinus).sum()),
        "qtc_over_600_called_p_absent": int((high & no_p).sum()),
        "qtc_over_600_stated": int((high & stated["qtc_bazett_ms"]).sum()),
        "qtc_over_600_stated_without_such_statement": int((high & stated["qtc_bazett_ms"] & ~long_or_wide).sum()),
        "pr_over_400": int((pr > 400).sum()),
        "pr_over_400_stated": int(((pr > 400) & stated["pr_interval_ms"]).sum()),
        "qrs_under_50": int((qrs < 50).sum()),
        "qrs_under_50_stated": int(((qrs < 50) & stated["qrs_duration_ms"]).sum()),
        "p_absent_in_sinus": _share(no_p[sinus]),
        "n_sinus": int(sinus.sum()),
    }


def quality_counts(ms: list[EcgMeasurements]) -> dict:
    out = {}
    for name in INTERVAL_NAMES:
        flags = pd.Series([m.quality(name)[0] for m in ms])
        out[name] = {flag: int(n) for flag, n in flags.value_counts().items()}
    return out


def reconciliation(db: pd.DataFrame, ms: list[EcgMeasurements]) -> dict:
    """The separate step captions of labelled records get: flags contradicting statements withheld."""
    rec = [reconcile_with_statements(m, c) for m, c in zip(ms, db.codes, strict=True)]
    changed = sum(r is not m for r, m in zip(rec, ms, strict=True))
    afib = db.codes.apply(lambda c: "AFIB" in c).to_numpy()
    flagged = np.array([r.rr_irregular is True and r.p_wave_absent is True for r in rec])
    return {"records_changed": int(changed), "afib_flagged_after": _share(flagged[afib])}


def evaluate(db: pd.DataFrame, ms: list[EcgMeasurements]) -> dict:
    splits = {
        "folds 1-9 (tuning)": db.strat_fold <= 9,
        "fold 10 (held out)": db.strat_fold == 10,
        "all": db.strat_fold > 0,
    }
    out = {}
    for name, sel in splits.items():
        if sel.sum() == 0:
            continue
        part = db[sel].reset_index(drop=True)
        part_ms = [m for m, s in zip(ms, sel, strict=True) if s]
        out[name] = {
            "n": int(sel.sum()),
            "raw_agreement": agreement(part, part_ms),
            "norm_intervals": norm_intervals(part, part_ms),
            "qt_window": qt_window(part_ms),
            "plausibility": plausibility(part, part_ms),
            "quality": quality_counts(part_ms),
            "reconciliation": reconciliation(part, part_ms),
        }
    return out


def baseline_source(rev: str) -> Path:
    """esi/cqa/measurements.py as of git revision ``rev``, written to a temporary file."""
    show = ["git", "show", f"{rev}:esi/cqa/measurements.py"]
    text = subprocess.run(show, cwd=REPO, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="measure-baseline-")) / "baseline_measurements.py"
    path.write_text(text)
    return path


_BASELINES: dict[str, object] = {}


def _baseline_module(path: str):
    if path not in _BASELINES:
        name = f"baseline_measurements_{len(_BASELINES)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _BASELINES[path] = module
    return _BASELINES[path]


def _measure_baseline(job: tuple) -> EcgMeasurements:
    """One record measured by the baseline code, returned as this code's dataclass (its fields are a subset)."""
    path, *args = job
    return EcgMeasurements(**vars(_baseline_module(path).measure_ecg(*args)))


def cpu_per_record(signals: list, leads: list, rate: int, ids: list, baseline: Path, rounds: int = 3) -> dict:
    """CPU ms per record of this code and the baseline on the same records in this one process.

    The two alternate round by round (the order flips each round) so a change in machine load hits both;
    each one's median round is reported, and their ratio.
    """
    measure = {"this": measure_ecg, "baseline": _baseline_module(str(baseline)).measure_ecg}
    times: dict[str, list[float]] = {name: [] for name in measure}
    for r in range(rounds):
        for name in list(measure)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.process_time()
            for signal, names, ecg_id in zip(signals, leads, ids, strict=True):
                measure[name](signal, rate, names, ecg_id)
            times[name].append((time.process_time() - t0) / len(signals) * 1000.0)
    median = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "records": len(signals),
        "rounds": rounds,
        "cpu_ms_per_record": median,
        "cpu_ms_per_record_rounds": times,
        "ratio_this_to_baseline": median["this"] / median["baseline"],
    }


def rate_agreement(low: dict, high: dict) -> dict:
    """The same recordings measured at 100 and 500 Hz ({ecg_id: EcgMeasurements} each): per interval, the
    difference 100 - 500 Hz (mean, SD, share beyond 20 ms); its spread is measurement noise, not physiology."""
    ids = sorted(set(low) & set(high))
    out: dict = {"records": len(ids)}
    for name in ("pr_interval_ms", "qrs_duration_ms", "qt_interval_ms"):
        pairs = [(getattr(low[i], name), getattr(high[i], name)) for i in ids]
        d = np.array([a - b for a, b in pairs if a is not None and b is not None])
        out[name] = {"n": int(len(d))}
        if len(d) > 1:
            out[name] |= {"mean_ms": float(d.mean()), "sd_ms": float(d.std(ddof=1)), "over_20_ms": _share(abs(d) > 20)}
    return out


def run(args: argparse.Namespace, rate: int, limit: int | None, pool: MeasurePool) -> tuple[dict, dict]:
    """Result of one sampling rate, and {code: {ecg_id: EcgMeasurements}} for this code (and the baseline)."""
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    db, signals, leads = load(args.ptbxl_dir.resolve(), args.folds, limit, rate)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ms = measure_batch(signals, rate, leads, ecg_ids=db.ecg_id.tolist(), pool=pool)
    t_measure = time.perf_counter() - t0
    by_id = {"this": dict(zip(db.ecg_id.tolist(), ms, strict=True))}
    out = {
        "rate_hz": rate,
        "records": len(db),
        "first_ecg_id": int(db.ecg_id.min()),
        "last_ecg_id": int(db.ecg_id.max()),
        "splits": evaluate(db, ms),
        "speed": {
            "measure_s": t_measure,
            "records_per_s": len(db) / t_measure,
            "read_s": t_load,
            "workers": args.workers,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
    }
    if args.baseline:
        path = str(args.baseline_source)
        jobs = [(path, *job) for job in zip(signals, [rate] * len(db), leads, db.ecg_id.tolist(), strict=True)]
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("forkserver")) as old:
            old_ms = list(old.map(_measure_baseline, jobs, chunksize=32))
        n = min(args.timing_records, len(db))
        load_before = os.getloadavg()[0]
        timing = cpu_per_record(signals[:n], leads[:n], rate, db.ecg_id.tolist()[:n], args.baseline_source)
        out["baseline"] = {
            "rev": args.baseline,
            "splits": evaluate(db, old_ms),
            "timing": {**timing, "load_average_before": load_before, "load_average_after": os.getloadavg()[0]},
        }
        by_id["baseline"] = dict(zip(db.ecg_id.tolist(), old_ms, strict=True))
    return out, by_id


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render(result: dict) -> str:
    """Markdown report from a result JSON."""
    out = [
        "# esi.cqa.measurements vs PTB-XL statements (raw detector output)",
        "",
        f"Generated from `{result['json']}` by `{result['command']}` at git commit `{result['git_commit']}` "
        f"({result['date']}). Machine: {result['cpus']} CPUs.",
        "",
        "Raw: the detector's output before reconciliation with the statements (reported apart). Agreement: "
        "share of records carrying the statement that the measurement confirms (a missing value counts as "
        "disagreement); flagged reference: share of SR or NORM records without the statement that the same rule "
        "flags (false positives); flagged incl. labelled: the same share over all SR or NORM records, "
        "including those that also carry the statement. "
        "Thresholds were tuned on folds 1-9; fold 10 is held out. Research software, not a diagnostic device.",
        "",
    ]
    for ds in result["datasets"]:
        out += [f"## {ds['rate_hz']} Hz: {ds['records']} records (ecg_id {ds['first_ecg_id']}-{ds['last_ecg_id']})", ""]
        for split, r in ds["splits"].items():
            out += _render_split(split, r, ds.get("baseline", {}).get("splits", {}).get(split))
        out += _render_speed(ds)
    for code, r in result.get("rate_agreement", {}).items():
        out.append(
            f"Same recordings at 100 and 500 Hz ({r['records']} records), {code} code, difference 100 - 500 Hz: "
            + "; ".join(
                f"{name}: mean {r[name]['mean_ms']:.1f} ms, SD {r[name]['sd_ms']:.1f} ms, "
                f"beyond 20 ms {_pct(r[name]['over_20_ms'])} (n {r[name]['n']})"
                for name in ("pr_interval_ms", "qrs_duration_ms", "qt_interval_ms")
                if "sd_ms" in r[name]
            )
            + "."
        )
    return "\n".join(out)


def _render_split(split: str, r: dict, baseline: dict | None) -> list[str]:
    """One split's agreement table, QT window, plausibility, quality flags and NORM intervals."""
    out = [
        f"### {split}: {r['n']} records",
        "",
        "| check | agreement | n | flagged reference | n reference | flagged incl. labelled | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["raw_agreement"]:
        out.append(
            f"| {row['check']} | {_pct(row['agreement'])} | {row['n']} | "
            f"{_pct(row['flagged_reference']) if row['reference'] else ''} | "
            f"{str(row['n_reference']) + ' ' + row['reference'] if row['reference'] else ''} | "
            f"{_pct(row.get('flagged_reference_incl_positive')) if row['reference'] else ''} | "
            f"{row['target']} |"
        )
    w, p = r["qt_window"], r["plausibility"]
    out += [
        "",
        f"QT vs its search window: {w['measured']} measured; distance of the T end from the window "
        f"end: "
        + ", ".join(f"{k}: {v}" for k, v in w["gap_to_window_end"].items())
        + f"; within 35 ms: {w['within_35_ms']}; rejected at the bound (not measurable): "
        f"{w['rejected_at_bound']}.",
        "",
        f"Plausibility: QTc (Bazett) > 600 ms in {p['qtc_over_600']} records "
        f"({p['qtc_over_600_with_long_qt_or_wide_qrs_statement']} with a long-QT or wide-QRS statement, "
        f"{p['qtc_over_600_without_such_statement']} without, "
        f"{p['qtc_over_600_sinus_statement']} with a sinus-rhythm statement, "
        f"{p['qtc_over_600_called_p_absent']} called P-absent); stated as fact in captions: "
        f"{p['qtc_over_600_stated']} ({p['qtc_over_600_stated_without_such_statement']} without such a "
        f"statement). PR > 400 ms: {p['pr_over_400']} (stated {p['pr_over_400_stated']}). QRS < 50 ms: "
        f"{p['qrs_under_50']} (stated {p['qrs_under_50_stated']}). P called absent in "
        f"{_pct(p['p_absent_in_sinus'])} of {p['n_sinus']} sinus-rhythm records.",
        "",
        "Quality flags: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(q.items())) for name, q in r["quality"].items()
        )
        + ".",
        "",
        "Reconciliation (separate step, captions of labelled records only): "
        f"{r['reconciliation']['records_changed']} records get a withheld flag; "
        f"AFIB flagged after it: {_pct(r['reconciliation']['afib_flagged_after'])}.",
        "",
    ]
    if "norm_intervals" in r:
        out += _render_norm_intervals(r["norm_intervals"], baseline)
    return out


def _render_speed(ds: dict) -> list[str]:
    """Throughput of one sampling rate and, with a baseline, the same-run CPU time ratio."""
    s = ds["speed"]
    out = [
        f"Speed: measure_batch with {s['workers']} worker processes, {ds['records']} records in "
        f"{s['measure_s']:.1f} s = **{s['records_per_s']:.1f} records/s** (reading WFDB not included: "
        f"{s['read_s']:.1f} s); load average before/after: {s.get('load_average_before', float('nan')):.1f}/"
        f"{s['load_average_after']:.1f} (shared machine).",
        "",
    ]
    if "baseline" in ds:
        t = ds["baseline"]["timing"]
        out += [
            f"CPU time per record, same run, one process, {t['records']} records x {t['rounds']} alternating "
            f"rounds: this code {t['cpu_ms_per_record']['this']:.1f} ms, baseline `{ds['baseline']['rev']}` "
            f"{t['cpu_ms_per_record']['baseline']:.1f} ms: ratio **{t['ratio_this_to_baseline']:.2f}** "
            f"(load average {t['load_average_before']:.1f}/{t['load_average_after']:.1f}).",
            "",
        ]
    return out


def _dist_cells(d: dict) -> str:
    p = d.get("percentiles_ms", {})
    pct = " / ".join(f"{p[str(q)]:.0f}" for q in PERCENTILES) if p else "n/a"
    shares = " | ".join(_pct(d.get(k)) for k in ("below", "within", "above"))
    return f"{d['measured']} of {d['n']} | {pct} | {shares}"


def _render_norm_intervals(r: dict, baseline: dict | None) -> list[str]:
    """NORM PR/QRS distributions, the 1AVB/LPR operating points and the PR/QRS variants (with the baseline's)."""
    rows = [("this code", r)] + ([("baseline", baseline["norm_intervals"])] if baseline else [])
    pcts = "/".join(map(str, PERCENTILES))
    out = [
        f"NORM records against adult normal ranges (PR {PR_NORMAL_MS[0]:.0f}-{PR_NORMAL_MS[1]:.0f} ms without "
        f"1AVB/LPR, QRS {QRS_NORMAL_MS[0]:.0f}-{QRS_NORMAL_MS[1]:.0f} ms without CLBBB/CRBBB):",
        "",
        f"| interval | code | measured | P{pcts} ms | below | within | above | over limit (NORM) | "
        "stated over limit | sensitivity (statement) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for code, x in rows:
        pr = x["pr_norm"]
        out.append(
            f"| PR | {code} | {_dist_cells(pr)} | > 200 ms: {_pct(pr['over_200'])} | {_pct(pr['over_200_stated'])} | "
            f"1AVB/LPR {_pct(pr['avb_lpr_sensitivity'])} (n {pr['n_avb_lpr']}) |"
        )
        for name, v in x.get("pr_variants", {}).items():
            if name != "shipped":
                out.append(
                    f"| PR {name} | {code} | {_dist_cells(v)} | > 200 ms: {_pct(v['over_200'])} | | "
                    f"1AVB/LPR {_pct(v['avb_lpr_sensitivity'])} (n {v['n_avb_lpr']}) |"
                )
    for code, x in rows:
        for name, q in x["qrs_norm"].items():
            out.append(
                f"| QRS {name} | {code} | {_dist_cells(q)} | >= 120 ms: {_pct(q['at_least_120'])} | | "
                f"CLBBB/CRBBB {_pct(q['bbb_sensitivity'])} (n {q['n_bbb']}) |"
            )
    out += [
        "",
        "1AVB/LPR sensitivity at the PR threshold that flags a given share of NORM records (any threshold):",
        "",
    ]
    for code, x in rows:
        ways = x.get("pr_variants") or {"shipped": {"operating_points": x["pr_operating_points"]}}
        for name, v in ways.items():
            points = ", ".join(
                f"NORM {_pct(p['norm_flagged'])}: {_pct(p['sensitivity'])} (> {p['threshold_ms']:.0f} ms)"
                for p in v["operating_points"]
            )
            out.append(f"- {code}, PR {name}: {points or 'n/a'}")
    out += _render_conduction(rows)
    if baseline:
        out += ["", "Baseline agreement on the same records:", ""]
        out += [
            f"- {row['check']}: {_pct(row['agreement'])}"
            + (f"; {row['reference']} flagged {_pct(row['flagged_reference'])}" if row["reference"] else "")
            for row in baseline["raw_agreement"]
        ]
    return out + [""]


def _render_conduction(rows: list[tuple[str, dict]]) -> list[str]:
    """1AVB/LPR sensitivity of each PR variant apart for records with and without a conduction-disease statement."""
    lines = [
        f"- {code}, PR {name}: with {_pct(v['avb_lpr_sensitivity_conduction_disease'])} "
        f"(n {v['n_avb_lpr_conduction_disease']}), without {_pct(v['avb_lpr_sensitivity_no_conduction_disease'])} "
        f"(n {v['n_avb_lpr'] - v['n_avb_lpr_conduction_disease']})"
        for code, x in rows
        for name, v in x.get("pr_variants", {}).items()
    ]
    if not lines:
        return []
    return ["", "1AVB/LPR with PR > 200 ms, records with and without a conduction-disease statement:", "", *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, default=REPO / ".." / "shared" / "ptb-xl")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--limit", type=int, default=None, help="first N records (by ecg_id) at 100 Hz")
    parser.add_argument("--hr-limit", type=int, default=500, help="first N records (by ecg_id) at 500 Hz; 0: none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--baseline",
        default=None,
        help="git revision whose measurements.py is measured in the same run (agreement and CPU time per record)",
    )
    parser.add_argument("--timing-records", type=int, default=300, help="records per rate for the CPU-time ratio")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--report", type=Path, default=REPO / "benchmarks" / "reports" / "measurements.md")
    parser.add_argument("--report-only", type=Path, default=None, help="re-render the report from this JSON")
    args = parser.parse_args()
    if args.report_only:
        result = json.loads(args.report_only.read_text())
    else:
        if args.baseline:
            args.baseline_source = baseline_source(args.baseline)
        stamp = utc_timestamp(for_file_name=True)
        path = args.results_dir / f"measurements-{stamp}.json"
        result = {
            "command": "python -m benchmarks.bench_measurements " + " ".join(sys.argv[1:]),
            "git_commit": git_commit(),
            "date": stamp,
            "cpus": os.cpu_count(),
            "baseline_rev": args.baseline,
            "seed": None,  # deterministic: nothing is drawn at random
            "json": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        }
        with MeasurePool(args.workers) as pool:  # one pool for both sampling rates
            low, low_ms = run(args, 100, args.limit, pool)
            result["datasets"] = [low]
            if args.hr_limit:
                high, high_ms = run(args, 500, args.hr_limit, pool)
                result["datasets"].append(high)
                result["rate_agreement"] = {code: rate_agreement(low_ms[code], high_ms[code]) for code in high_ms}
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    text = render(result)
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text + "\n")


if __name__ == "__main__":
    main()
