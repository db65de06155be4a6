"""Assemble the model and dataset folders exactly as they are uploaded, and push them.

    python -m esi.publish --model-dir outputs/demo/pretraining/model \\
        --captions-dir outputs/demo/captions --signals-dir outputs/demo/prepared \\
        --downstream outputs/esi_claim/model_summary.json --output-dir outputs/publish \\
        [--model-repo-id you/esi-atto --dataset-repo-id you/esi-ptbxl-captions --token hf_...]

Without repo ids nothing leaves the machine: the folders under --output-dir are what would be
uploaded, and they load offline with `AutoModel.from_pretrained(folder, trust_remote_code=True)`
and `datasets.load_dataset(folder)`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from esi.checksum import weights_sha256
from esi.extras import require_extra
from esi.hub import push_folder

# What a captions folder holds for users; its `.cqa/` journal is for resuming runs only.
DATASET_FILES = ("README.md", "LICENSE.txt", "data")


def assemble_model_folder(
    model_dir: Path,
    output_dir: Path,
    repo_id: str,
    downstream: dict | None = None,
    dataset_repo_id: str | None = None,
) -> Path:
    """Copy an `esi-train` model folder and refill its card: repo id, caption dataset link, and the downstream
    results measured on this model's weights (see `results_for_model`)."""
    from esi.train.model_card import results_for_model, write_model_card

    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no config.json)")
    downstream = results_for_model(downstream, weights_sha256(model_dir))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    shutil.copytree(model_dir, output_dir)
    summary_path = output_dir / "training_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    write_model_card(output_dir, summary, repo_id=repo_id, downstream=downstream, dataset_repo_id=dataset_repo_id)
    return output_dir


def assemble_dataset_folder(
    captions_dir: Path, output_dir: Path, signals_dir: Path | None = None, model_repo_id: str | None = None
) -> Path:
    """Copy the captioned dataset; with `signals_dir`, add the prepared signals as a second config.

    The card is rendered again for what the folder holds (the signals config, the model link), so its text and
    its `configs` always agree.
    """
    import datasets

    from esi.cqa.dataset_card import write_dataset_card
    from esi.cqa.run import output_stats
    from esi.cqa.run_state import read_run_config

    missing = [name for name in DATASET_FILES if not (captions_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{captions_dir} lacks {missing}: is it a finished esi-cqa output?")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    for name in DATASET_FILES:
        source = captions_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, output_dir / name)
    signal_splits: list[str] = []
    if signals_dir is not None:
        signals = datasets.load_from_disk(str(signals_dir))
        (output_dir / "signals").mkdir()
        for split, part in signals.items():
            part.to_parquet(str(output_dir / "signals" / f"{split}-00000-of-00001.parquet"))
        signal_splits = list(signals)
    config = read_run_config(captions_dir)
    stats = output_stats(output_dir, config["dataset_dir"])
    write_dataset_card(output_dir, config, stats, signal_splits, model_repo_id)
    return output_dir


def check_encoder_folder(folder: Path) -> Path:
    """An encoder release folder (`esi-export-encoder`) as it must be pushed: weights matching `release.json`, and
    the card its files generate. Raises `ValueError` naming what is out of date."""
    from esi.train.model_card import encoder_card_text

    if not (folder / "release.json").exists():
        raise FileNotFoundError(f"{folder} has no release.json: export it with esi-export-encoder")
    release = json.loads((folder / "release.json").read_text())
    if weights_sha256(folder) != release["weights_sha256"]:
        raise ValueError(f"{folder}/model.safetensors is not the file release.json names; export it again")
    if (folder / "README.md").read_text() != encoder_card_text(folder):
        raise ValueError(f"{folder}/README.md is out of date with the files beside it; export the folder again")
    return folder


def assemble_and_push(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse `esi-publish` arguments, assemble the folders and push those given a repo id; returns the folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="a train.py output model folder")
    parser.add_argument("--captions-dir", type=Path, help="a cqa_generate.py output folder")
    parser.add_argument("--signals-dir", type=Path, help="the prepared dataset, published as the 'signals' config")
    parser.add_argument(
        "--downstream",
        type=Path,
        help="downstream summary JSON (benchmarks.esi_claim.report --model-summary); only its results whose "
        "weights_sha256 matches --model-dir's model.safetensors reach the card",
    )
    parser.add_argument(
        "--encoder-dir",
        type=Path,
        help="an encoder release folder (esi-export-encoder output, e.g. model_cards/esi-ecg-encoder): pushed as it is",
    )
    parser.add_argument("--encoder-repo-id", default=None)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/publish"))
    parser.add_argument("--model-repo-id", default=None)
    parser.add_argument("--dataset-repo-id", default=None)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    if not (args.model_dir or args.captions_dir or args.encoder_dir):
        parser.error("give --model-dir, --captions-dir and/or --encoder-dir")

    folders: dict[str, Path] = {}
    if args.encoder_dir:
        folders["encoder"] = check_encoder_folder(args.encoder_dir)
    if args.model_dir or args.captions_dir:
        require_extra("esi-publish", "cqa")  # dataset folders, cards and their licences
    if args.model_dir:
        downstream = json.loads(args.downstream.read_text()) if args.downstream else None
        repo_id = args.model_repo_id or "ORG/esi"
        folders["model"] = assemble_model_folder(
            args.model_dir, args.output_dir / "model", repo_id, downstream, args.dataset_repo_id
        )
    if args.captions_dir:
        folders["dataset"] = assemble_dataset_folder(
            args.captions_dir, args.output_dir / "dataset", args.signals_dir, args.model_repo_id
        )
    repo_ids = {"model": args.model_repo_id, "dataset": args.dataset_repo_id, "encoder": args.encoder_repo_id}
    for kind, folder in folders.items():
        if repo_ids[kind]:
            repo_type = "dataset" if kind == "dataset" else "model"
            print(f"pushed {kind}: {push_folder(folder, repo_ids[kind], repo_type, args.private, args.token)}")
    for kind, folder in folders.items():
        print(f"{kind} folder: {folder}")
    return folders


def main(argv: list[str] | None = None) -> None:
    """Console entry point (its return value would become the exit status)."""
    assemble_and_push(argv)


if __name__ == "__main__":
    main()
