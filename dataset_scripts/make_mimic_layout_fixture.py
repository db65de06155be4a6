"""Write a MIMIC-IV-ECG *layout* fixture from real PTB-XL 500 Hz records (no MIMIC file is available here).

The fixture follows MIMIC-IV-ECG's published layout: `record_list.csv`, `machine_measurements.csv`
with the documented columns, and WFDB records under `files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY`
written in MIMIC's header form (500 Hz, 5000 samples, 200 units/mV, MIMIC's lead order I, II, III,
aVR, aVF, aVL, V1-V6). Signals are PTB-XL's (CC BY 4.0); ids are invented; report lines restate each
PTB-XL record's own statements; interval values are placeholders that exercise parsing, not
measurements of these signals.

    python dataset_scripts/make_mimic_layout_fixture.py --ptbxl-dir path/to/ptb-xl \
        --output-dir tests/fixtures/mimic_iv_ecg_layout
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import wfdb

MIMIC_LEAD_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
# (PTB-XL ecg_id, invented subject_id, invented study_id, report lines from the record's PTB-XL statements,
#  placeholder intervals: rr, p_onset, p_end, qrs_onset, qrs_end, t_end, p_axis, qrs_axis, t_axis)
RECORDS = [
    (1, 19990001, 49990001, ["Sinus rhythm", "Low QRS voltages"], [1000, 40, 150, 190, 280, 590, 60, 30, 40]),
    (2, 19990002, 49990002, ["Sinus bradycardia", "Normal ECG"], [1200, 38, 146, 180, 272, 600, 45, 60, 35]),
    (3, 19990002, 49990003, ["Sinus rhythm", "Normal ECG"], [29999, 29999, 29999, 184, 276, 29999, 29999, 55, 29999]),
]
INTERVALS = ["rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    record_rows, measurement_rows = [], []
    for ecg_id, subject, study, report, intervals in RECORDS:
        signal, fields = wfdb.rdsamp(str(args.ptbxl_dir / f"records500/00000/{ecg_id:05d}_hr"))
        by_name = {name.upper(): i for i, name in enumerate(fields["sig_name"])}
        folder = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        (out / folder).mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
            str(study),
            fs=500,
            units=["mV"] * 12,
            sig_name=MIMIC_LEAD_ORDER,
            p_signal=signal[:, [by_name[name.upper()] for name in MIMIC_LEAD_ORDER]],
            fmt=["16"] * 12,
            adc_gain=[200.0] * 12,
            baseline=[0] * 12,
            write_dir=str(out / folder),
        )
        time = "2180-01-04 13:13:00"
        record_rows.append(
            {
                "subject_id": subject,
                "study_id": study,
                "file_name": study,
                "ecg_time": time,
                "path": str(folder / str(study)),
            }
        )
        reports = {f"report_{i}": report[i] if i < len(report) else "" for i in range(18)}
        measurement_rows.append(
            {
                "subject_id": subject,
                "study_id": study,
                "cart_id": 6848296,
                "ecg_time": time,
                **reports,
                "bandwidth": "0.005-150 Hz",
                "filtering": "60 Hz notch Baseline filter",
                **dict(zip(INTERVALS, intervals, strict=True)),
            }
        )
    for name, rows in (("record_list.csv", record_rows), ("machine_measurements.csv", measurement_rows)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    shutil.copyfile(args.ptbxl_dir / "LICENSE.txt", out / "LICENSE.txt")


if __name__ == "__main__":
    main()
