"""Fill the dataset card template (`dataset_card.md`) for a captioned-dataset output folder.

The card's YAML header declares the Parquet files of each split under ``configs:``, so the
Hub viewer and ``datasets.load_dataset`` agree on the splits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from string import Template

import yaml
from datasets import Value

from esi.cqa.backends import TEMPLATE_MODEL_ID
from esi.cqa.faithfulness import TOLERANCES
from esi.cqa.provenance import LEGACY_SOURCE, SOURCE_NAMES, licence_front_matter, licence_section, sources_title
from esi.cqa.schema import output_features
from esi.knowledge import load_knowledge_base
from esi.run_folder import write_text_atomic

TEMPLATE = Path(__file__).with_name("dataset_card.md")
NO_SIGNALS_NOTE = "The signals are not repeated here: join on `ecg_id` with the prepared dataset (or the source files)."
SIGNALS_NOTE = (
    "The `signals` config holds the 12-lead signals the captions describe (`signal`: leads x time, millivolts, "
    "PTB-XL lead order) with demographics, statements, labels and folds; join it on `ecg_id`:\n\n"
    '```python\nsignals = load_dataset(repo, "signals")\n```\n'
)

_FIXED_COLUMNS = {
    "ecg_id": ("int32", "the prepared dataset's `ecg_id` (PTB-XL: its own); join key to the signals"),
    "split": (
        "string",
        "train (strat_fold 1-8), validation (9) or test (10), as recommended by PTB-XL (other sources: hashed folds)",
    ),
    "caption": ("string", "machine-generated English description (see above)"),
    "statements": (
        "list of string",
        "the record's statement codes in their own coding system (PTB-XL: SCP-ECG; Challenge: SNOMED-CT or CinC "
        "2020 labels); empty for free text such as MIMIC-IV-ECG machine report lines",
    ),
    "statement_descriptions": (
        "list of string",
        "their readable text as the source gives it (PTB-XL: `scp_statements.csv` descriptions)",
    ),
    "retrieved_passage_ids": ("list of string", "ids of the knowledge-base passages in the prompt"),
    "backend": ("string", "caption backend of the run (template, transformers or vllm)"),
    "model_id": ("string", "model that wrote the text (the template writer's id for the template backend)"),
    "prompt_hash": ("string", "sha256 of the rendered chat messages"),
    "faithfulness": ("string", "pass, pass_after_retry or template_fallback (template text replaced a failing one)"),
    "faithfulness_issues": ("list of string", "why rejected attempts failed the check; empty when the first passed"),
}
_MEASUREMENT_NOTES = {
    "heart_rate_bpm": "heart rate from R-R intervals",
    "rr_std_ms": "standard deviation of R-R intervals",
    "rr_irregular": "R-R rhythm judged irregular",
    "p_wave_absent": "no consistent P wave found",
    "pr_interval_ms": "PR interval on the median beat",
    "p_duration_ms": "P-wave duration on the median beat (earliest to latest agreeing lead)",
    "qrs_duration_ms": "QRS duration on the median beat",
    "qt_interval_ms": "QT interval on the median beat",
    "qtc_bazett_ms": "QT corrected with Bazett's formula",
    "qtc_fridericia_ms": "QT corrected with Fridericia's formula",
    "qrs_axis_deg": "frontal-plane QRS axis",
    "qrs_axis_category": "axis group: normal, left, right or extreme",
    "sokolow_lyon_mv": "Sokolow-Lyon index (S V1 + max R V5/V6)",
    "cornell_mv": "Cornell voltage (R aVL + S V3)",
    "low_voltage": "low-QRS-voltage criterion met",
    "measurement_missing": "JSON object: measurement -> reason it could not be made",
    "qt_search_limit_ms": "end of the T-end search window after QRS onset (diagnostic)",
    "measurement_quality": "JSON object: interval -> {flag: measured/low_confidence/not_measurable, reason}; "
    "captions state only measured values",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _column_table() -> str:
    rows = []
    for name, feature in output_features().items():
        if name in _FIXED_COLUMNS:
            dtype, note = _FIXED_COLUMNS[name]
        else:
            dtype = getattr(feature, "dtype", "list")
            lead = name.removeprefix("st_deviation_").removesuffix("_mv")
            note = _MEASUREMENT_NOTES.get(name, f"ST deviation in lead {lead} (mV)")
            note = f"computed from the signal by `esi/cqa/measurements.py`: {note}; null when not measurable"
        rows.append(f"| `{name}` | {dtype} | {note} |")
    return "\n".join(rows)


def _dataset_info(splits: Sequence[str], stats: dict) -> str:
    """The card's `dataset_info` block: features and split sizes of the default config, as the Hub lists them
    (`num_bytes`: the split's Arrow data in memory; `download_size`: its Parquet files)."""
    per_split, num_bytes = stats["rows_per_split"], stats.get("bytes_per_split", {})
    info = {
        "features": [{"name": name, **_feature_yaml(feature)} for name, feature in output_features().items()],
        "splits": [{"name": s, "num_bytes": num_bytes.get(s, 0), "num_examples": per_split[s]} for s in splits],
        "download_size": sum(stats.get("parquet_bytes_per_split", {}).get(s, 0) for s in splits),
        "dataset_size": sum(num_bytes.get(s, 0) for s in splits),
    }
    return yaml.safe_dump({"dataset_info": info}, sort_keys=False).rstrip()


def _feature_yaml(feature) -> dict:
    if isinstance(feature, Value):
        return {"dtype": feature.dtype}
    return {"list": feature.feature.dtype}  # List(Value(...)): the only other kind in the schema


def render_dataset_card(
    config: dict, stats: dict, signal_splits: Sequence[str] = (), model_repo_id: str | None = None
) -> str:
    """Card text for a run's config (``.cqa/run.json``) and stats (rows per split, faithfulness counts).

    `signal_splits`: splits of a `signals` config published beside the captions (`esi-publish --signals-dir`).
    `model_repo_id`: the ESI model pretrained on these captions, linked from the card.
    """

    per_split = stats["rows_per_split"]
    splits = [s for s in config["splits"] if s in per_split]
    total = sum(per_split.values())
    outcomes = stats["faithfulness"]
    if config["backend"] == "template":
        backend_note = "A deterministic writer, no language model: every caption is template text."
    else:
        backend_note = (
            f"Language-model text sampled at temperature {config['temperature']} (top-p {config['top_p']}), "
            f"at most {config['max_new_tokens']} new tokens, from the model's chat template."
        )
    # Runs finished before sources were recorded captioned PTB-XL, the only source then.
    sources = stats.get("sources") or {LEGACY_SOURCE: {SOURCE_NAMES[LEGACY_SOURCE]: total}}
    values = {
        "license_front_matter": licence_front_matter(sources),
        "title": sources_title(sources),
        "sources_text": _sources_text(sources),
        "source_tags": "".join(f"- {s}\n" for s in sources if s in ("ptb-xl", "mimic-iv-ecg")),
        "source_datasets": "source_datasets:\n- extended|ptb-xl\n" if "ptb-xl" in sources else "",
        "licence_section": licence_section(sources),
        "size_category": _size_category(total),
        "data_files": "\n".join(f"  - split: {s}\n    path: data/{s}-*.parquet" for s in splits),
        "split_table": "\n".join(f"| {s} | {per_split[s]:,} |" for s in splits),
        "split_names": ", ".join(splits),
        "backend": config["backend"],
        "model_id": config.get("model_id") or _model_id(config),
        "backend_note": backend_note,
        "retrieval_k": config["retrieval_k"],
        "knowledge_size": len(load_knowledge_base()),
        # Only the folder's name: the card must not reveal (or depend on) a path on the machine that made it.
        "encoder": Path(config["encoder_path"]).name
        if config["encoder_path"] not in (None, "default")
        else ("all-MiniLM-L6-v2" if config["encoder_path"] == "default" else "none (BM25 only)"),
        "tolerances": ", ".join(f"{v:g} {u}" for u, v in TOLERANCES.items()),
        "max_retries": config["max_retries"],
        "outcomes": ", ".join(
            f"{name} {count:,} ({100 * count / total:.1f}%)" if total else f"{name} 0"
            for name, count in outcomes.items()
        ),
        "column_table": _column_table(),
        "extra_configs": _signals_config(signal_splits),
        "dataset_info": _dataset_info(splits, stats),
        "signals_note": SIGNALS_NOTE if signal_splits else NO_SIGNALS_NOTE,
        "model_note": _model_note(model_repo_id),
    }
    return Template(TEMPLATE.read_text()).substitute(values)


def _sources_text(sources: dict[str, dict[str, int]]) -> str:
    links = {
        "ptb-xl": "[PTB-XL](https://physionet.org/content/ptb-xl/)",
        "challenge": "the [PhysioNet/CinC Challenge](https://physionet.org/content/challenge-2021/) data",
        "mimic-iv-ecg": "[MIMIC-IV-ECG](https://physionet.org/content/mimic-iv-ecg/)",
        "wfdb-folder": "a user's own WFDB records",
    }
    return " and ".join(links.get(s, s) for s in sources)


def _model_id(config: dict) -> str:
    return TEMPLATE_MODEL_ID if config["backend"] == "template" else Path(config["model"]).name


def _model_note(model_repo_id: str | None) -> str:
    if not model_repo_id:
        return ""
    return f"\nAn ESI model pretrained on these captions: [{model_repo_id}](https://huggingface.co/{model_repo_id}).\n"


def _signals_config(signal_splits: Sequence[str]) -> str:
    if not signal_splits:
        return ""
    files = "\n".join(f"  - split: {s}\n    path: signals/{s}-*.parquet" for s in signal_splits)
    return f"- config_name: signals\n  data_files:\n{files}\n"


def write_dataset_card(
    output_dir: str | os.PathLike,
    config: dict,
    stats: dict,
    signal_splits: Sequence[str] = (),
    model_repo_id: str | None = None,
) -> Path:
    path = Path(output_dir) / "README.md"
    write_text_atomic(path, render_dataset_card(config, stats, signal_splits, model_repo_id))
    return path
