"""The encoder-only release of a trained ESI model: `esi-export-encoder`.

    esi-export-encoder --model-dir out/run/model --output-dir model_cards/esi-ecg-encoder \
        [--downstream outputs/esi_claim/model_summary.json] [--dtype float32]

The folder keeps the ECG encoder and its projection (no text tower, no caption decoder) and is what the Hub repo
holds: weights (`model.safetensors`), config and remote code, the feature extractor's `preprocessor_config.json`,
LICENSE, `release.json` (the weights' sha256, the sha256 of the model they were exported from, a reference
embedding), the model's `training_summary.json`, the downstream results measured on that model
(`eval_results.json`, only those whose `weights_sha256` matches) and the card (README.md) generated from these files.
It loads with `AutoModel.from_pretrained(folder, trust_remote_code=True)` (an `EsiEcgModelWithProjection`) and with
`AutoModelForSequenceClassification` (an `EsiForEcgClassification` with a new head); `esi-publish --encoder-dir`
pushes it unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from esi.constants import RELEASED_ENCODER_DIR

DTYPES = ("float32", "bfloat16")
MAX_SIZE_BYTES = 20 * 1024 * 1024
# The record whose embedding `release.json` stores: a user (and a test) can check a download against it.
REFERENCE_RECORD = "data/ptbxl_sample/records100/00000/00001_lr"


def without_local_paths(value: object) -> object:
    """`value` with every absolute path string cut to its last component: a released folder names no folder of the
    machine that trained it (e.g. where the text tower was read from)."""
    if isinstance(value, dict):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        return Path(value).name
    return value


def export_encoder(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    downstream: dict | None = None,
    dtype: str = "float32",
    repo_id: str = "ORG/esi-ecg-encoder",
    dataset_repo_id: str | None = None,
    reference_signal: tuple | None = None,
) -> Path:
    """Write the encoder-only folder of the `esi-train` output `model_dir` to `output_dir` (replaced as a whole).

    `downstream`: a downstream summary (`benchmarks.esi_claim.report --model-summary`); only its results measured on
    `model_dir`'s weights reach the card. `reference_signal`: (signal (12, T) mV, sampling rate, lead names) whose
    embedding is stored in `release.json`. Raises `ValueError` when the weights exceed 20 MB (use bfloat16).
    """

    from esi.checksum import weights_sha256
    from esi.licence import write_licence
    from esi.train.model_card import results_for_model, write_encoder_card
    from modeling_esi import EsiEcgModelWithProjection, EsiFeatureExtractor

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    source_checksum = weights_sha256(model_dir)
    model = EsiEcgModelWithProjection.from_pretrained(model_dir).eval()
    feature_extractor = EsiFeatureExtractor.from_pretrained(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir.parent if output_dir.parent.exists() else None))
    try:
        size = _save_weights(model, dtype, staging, model_dir)
        feature_extractor.save_pretrained(staging)
        write_licence(staging)
        _copy_model_records(model_dir, staging, results_for_model(downstream, source_checksum))
        release = {
            "dtype": dtype,
            "parameters": sum(p.numel() for p in model.parameters()),
            "size_bytes": size,
            "weights_sha256": weights_sha256(staging),
            "source_weights_sha256": source_checksum,
            "repo_id": repo_id,
            "dataset_repo_id": dataset_repo_id,
        }
        if reference_signal is not None:
            release["reference_embedding"] = _reference_embedding(staging, *reference_signal)
        (staging / "release.json").write_text(json.dumps(release, indent=2) + "\n")
        write_encoder_card(staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _save_weights(model, dtype: str, staging: Path, model_dir: Path) -> int:
    """Save the encoder in `dtype`; its size in bytes, or `ValueError` when it is over the release's limit."""
    import torch

    model.to(getattr(torch, dtype)).save_pretrained(staging)
    size = (staging / "model.safetensors").stat().st_size
    if size > MAX_SIZE_BYTES:
        raise ValueError(
            f"{model_dir}: the encoder's weights take {size / 1e6:.1f} MB in {dtype}, over the release's "
            f"{MAX_SIZE_BYTES / 1e6:.0f} MB; export with --dtype bfloat16"
        )
    return size


def _copy_model_records(model_dir: Path, staging: Path, results: dict | None) -> None:
    """The model's training summary (without the training machine's paths) and its downstream results, if any."""
    summary_path = model_dir / "training_summary.json"
    summary = without_local_paths(json.loads(summary_path.read_text()) if summary_path.exists() else {})
    (staging / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if results:
        (staging / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")


def _reference_embedding(folder: Path, signal, sampling_rate: int, lead_names) -> dict:
    """The exported model's embedding of one record, as a user would compute it (fp32 inputs)."""
    import torch

    from modeling_esi import EsiEcgModelWithProjection, EsiFeatureExtractor

    model = EsiEcgModelWithProjection.from_pretrained(folder).eval()
    inputs = EsiFeatureExtractor.from_pretrained(folder)(
        signal, sampling_rate=sampling_rate, lead_names=list(lead_names), return_tensors="pt"
    )
    with torch.no_grad():
        embedding = model(**inputs).ecg_embeds[0].float()
    return {"record": REFERENCE_RECORD, "embedding": [round(v, 6) for v in embedding.tolist()]}


def read_reference_record(path: str | os.PathLike = REFERENCE_RECORD) -> tuple:
    """(signal (12, T) mV, sampling rate, lead names) of a WFDB record (the `wfdb` package, from the [data] extra)."""
    import wfdb

    record = wfdb.rdrecord(str(path))
    return record.p_signal.T, int(record.fs), record.sig_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="an esi-train output model folder")
    parser.add_argument(
        "--output-dir", type=Path, default=RELEASED_ENCODER_DIR, help=f"default: {RELEASED_ENCODER_DIR}"
    )
    parser.add_argument(
        "--downstream",
        type=Path,
        help="downstream summary JSON; only results whose weights_sha256 is --model-dir's reach the card",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the released weights")
    parser.add_argument("--repo-id", default="ORG/esi-ecg-encoder", help="the Hub repo the card names")
    parser.add_argument("--dataset-repo-id", default=None, help="the caption dataset the card links")
    parser.add_argument(
        "--reference-record", type=Path, default=Path(REFERENCE_RECORD), help="WFDB record embedded in release.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from esi.extras import require_extra

    require_extra("esi-export-encoder", "data")  # reading the reference record (WFDB)
    downstream = json.loads(args.downstream.read_text()) if args.downstream else None
    folder = export_encoder(
        args.model_dir,
        args.output_dir,
        downstream,
        args.dtype,
        args.repo_id,
        args.dataset_repo_id,
        read_reference_record(args.reference_record),
    )
    print(f"encoder folder: {folder}")


if __name__ == "__main__":
    main()
