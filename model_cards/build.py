"""Regenerate the Hub cards in model_cards/ from the result files beside them; one command.

    python -m model_cards.build                 # rewrite every card from its inputs
    python -m model_cards.build --check         # exit 1 naming each card that is out of date (what tests run)
    python -m model_cards.build --captions-dir outputs/pool-captions
        # record a finished esi-cqa run's card inputs (run config, rows/bytes per split, sources), then rewrite
    python -m model_cards.build --model-dir outputs/esi_full/model --downstream outputs/esi_claim/model_summary.json
        # export the encoder release (esi-export-encoder) and record the full model's card inputs, then rewrite

One folder per published artefact, each holding its card (README.md) and the inputs it is generated from:
`esi-ecg-encoder/` is the encoder release itself (weights, code, preprocessor, LICENSE, release.json, results);
`esi/` the full model's card inputs (config, training summary, downstream results); `esi-ptbxl-captions/` the
caption dataset's (run config, split sizes, sources).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from esi.hub import scrub_local_paths

CARDS_DIR = Path(__file__).resolve().parent
HUB_IDS = {"encoder": "ORG/esi-ecg-encoder", "model": "ORG/esi", "dataset": "ORG/esi-ptbxl-captions"}
ENCODER_DIR = CARDS_DIR / "esi-ecg-encoder"
MODEL_DIR = CARDS_DIR / "esi"
DATASET_DIR = CARDS_DIR / "esi-ptbxl-captions"
INPUTS = "card_inputs.json"


def _inputs(folder: Path) -> dict:
    return json.loads((folder / INPUTS).read_text())


def _write_inputs(folder: Path, inputs: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INPUTS).write_text(json.dumps(scrub_local_paths(inputs), indent=2, sort_keys=True) + "\n")


def _model_card(folder: Path) -> str:
    from esi.train.model_card import render_model_card

    inputs = _inputs(folder)
    return render_model_card(
        inputs["summary"], inputs["config"], HUB_IDS["model"], inputs.get("downstream"), HUB_IDS["dataset"]
    )


def _dataset_card(folder: Path) -> str:
    from esi.cqa.dataset_card import render_dataset_card

    inputs = _inputs(folder)
    published_model = HUB_IDS["encoder"] if (ENCODER_DIR / "release.json").exists() else None
    return render_dataset_card(inputs["config"], inputs["stats"], model_repo_id=published_model)


def _encoder_card(folder: Path) -> str:
    from esi.train.model_card import encoder_card_text

    return encoder_card_text(folder)


# Each card: its folder, the file that says it exists, and how its text is rendered.
CARDS = (
    (ENCODER_DIR, "release.json", _encoder_card),
    (MODEL_DIR, INPUTS, _model_card),
    (DATASET_DIR, INPUTS, _dataset_card),
)


def expected_cards() -> dict[Path, str]:
    """README.md path -> the text its inputs generate, for every card whose inputs are committed."""
    return {folder / "README.md": render(folder) for folder, marker, render in CARDS if (folder / marker).exists()}


def record_captions(captions_dir: Path) -> None:
    """Card inputs of a finished esi-cqa output folder (its run config and what its Parquet files hold)."""
    from esi.cqa.run import output_stats
    from esi.cqa.run_state import caption_folder

    config = caption_folder(captions_dir).read_config()
    _write_inputs(DATASET_DIR, {"config": config, "stats": output_stats(captions_dir, config["dataset_dir"])})


def record_model(model_dir: Path, downstream_path: Path | None) -> None:
    """Export the encoder release of an esi-train output and record the full model's card inputs."""
    from esi.checksum import weights_sha256
    from esi.release import export_encoder, read_reference_record
    from esi.train.model_card import results_for_model

    downstream = json.loads(downstream_path.read_text()) if downstream_path else None
    export_encoder(
        model_dir,
        ENCODER_DIR,
        downstream,
        repo_id=HUB_IDS["encoder"],
        dataset_repo_id=HUB_IDS["dataset"],
        reference_signal=read_reference_record(),
    )
    summary_path = model_dir / "training_summary.json"
    _write_inputs(
        MODEL_DIR,
        {
            "config": json.loads((model_dir / "config.json").read_text()),
            "summary": json.loads(summary_path.read_text()) if summary_path.exists() else {},
            "downstream": results_for_model(downstream, weights_sha256(model_dir)),
            "weights_sha256": weights_sha256(model_dir),
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card is out of date")
    parser.add_argument("--captions-dir", type=Path, help="a finished esi-cqa output folder to record")
    parser.add_argument("--model-dir", type=Path, help="an esi-train output model folder to release")
    parser.add_argument("--downstream", type=Path, help="with --model-dir: the downstream summary of that model")
    args = parser.parse_args(argv)
    if args.captions_dir:
        record_captions(args.captions_dir)
    if args.model_dir:
        record_model(args.model_dir, args.downstream)
    cards, stale = expected_cards(), []
    for path, text in cards.items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        sys.exit("out of date (run python -m model_cards.build): " + ", ".join(str(p) for p in stale))
    for path in cards:
        print(f"{'rewrote' if path in stale else 'up to date'}: {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
