"""Assemble the model and dataset folders exactly as they are uploaded, and push them.

    esi-publish --model_dir outputs/demo/pretraining/model \\
        --captions_dir outputs/demo/captions --signals_dir outputs/demo/prepared \\
        --downstream outputs/esi_claim/model_summary.json --output_dir outputs/publish \\
        [--model_repo_id you/esi-atto --dataset_repo_id you/esi-ptbxl-captions --hub_token hf_...]

Without repo ids nothing leaves the machine: the folders under --output-dir are what would be
uploaded, and they load offline with `AutoModel.from_pretrained(folder, trust_remote_code=True)`
and `datasets.load_dataset(folder)`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from esi.checksum import weights_sha256
from esi.command_line import parse_command_line
from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra
from esi.hub import push_folder

# What a captions folder holds for users; its `.cqa/` journal is for resuming runs only.
DATASET_FILES = ("README.md", "LICENSE.txt", "data")
# Left in every folder esi-publish writes (never uploaded): only a folder carrying it is ever replaced.
PUBLISH_MARK = ".esi-publish"


def refuse_overlap(output_dir: Path, inputs: Sequence[Path | None]) -> None:
    """Raise ValueError when `output_dir` is, contains or lies inside one of `inputs`: replacing it would
    delete or overwrite what is being published."""
    out = output_dir.resolve()
    for given in (p for p in inputs if p is not None):
        source = given.resolve()
        if out == source or out in source.parents or source in out.parents:
            raise ValueError(
                f"--output-dir {output_dir} overlaps the input {given}: publishing would overwrite or delete it. "
                "Choose an output folder outside every input folder."
            )


def refuse_symlinks(folder: Path) -> None:
    """Raise ValueError when `folder` holds a symbolic link: publishing copies files, and a link would carry
    whatever it points at (any file on this machine) into the upload."""
    links = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_symlink())
    if links:
        raise ValueError(
            f"{folder} holds symbolic links ({', '.join(links[:5])}); publishing refuses them. "
            "Replace each link by the file it stands for, or remove it."
        )


@contextmanager
def staged_folder(output_dir: Path) -> Iterator[Path]:
    """A new empty folder beside `output_dir` to assemble in; once the block succeeds it replaces
    `output_dir` by renames, and on failure it is removed, so an interrupted publish leaves the last one whole.

    An existing `output_dir` is replaced only if esi-publish wrote it (it carries `PUBLISH_MARK`).
    """
    if output_dir.exists() and not (output_dir / PUBLISH_MARK).is_file():
        raise FileExistsError(
            f"{output_dir} exists and was not written by esi-publish; choose a new --output-dir or remove it"
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.staging-", dir=output_dir.parent))
    try:
        yield staging
        (staging / PUBLISH_MARK).write_text("assembled by esi-publish; not uploaded\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = staging.with_name(staging.name.replace(".staging-", ".previous-"))
    if output_dir.exists():
        output_dir.rename(previous)
    staging.rename(output_dir)
    shutil.rmtree(previous, ignore_errors=True)


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
    refuse_overlap(output_dir, [model_dir])
    refuse_symlinks(model_dir)
    downstream = results_for_model(downstream, weights_sha256(model_dir))
    with staged_folder(output_dir) as staging:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
        summary_path = staging / "training_summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        write_model_card(staging, summary, repo_id=repo_id, downstream=downstream, dataset_repo_id=dataset_repo_id)
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
    from esi.cqa.run_state import caption_folder

    missing = [name for name in DATASET_FILES if not (captions_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{captions_dir} lacks {missing}: is it a finished esi-cqa output?")
    refuse_overlap(output_dir, [captions_dir, signals_dir])
    refuse_symlinks(captions_dir)
    with staged_folder(output_dir) as staging:
        for name in DATASET_FILES:
            source = captions_dir / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, staging / name)
        signal_splits: list[str] = []
        if signals_dir is not None:
            signals = datasets.load_from_disk(str(signals_dir))
            (staging / "signals").mkdir()
            for split, part in signals.items():
                part.to_parquet(str(staging / "signals" / f"{split}-00000-of-00001.parquet"))
            signal_splits = list(signals)
        config = caption_folder(captions_dir).read_config()
        stats = output_stats(staging, config["dataset_dir"])
        write_dataset_card(staging, config, stats, signal_splits, model_repo_id)
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


@dataclass
class PublishArguments:
    """What `esi-publish` assembles, where, and the Hub repos it pushes to (none: nothing leaves the machine)."""

    model_dir: Path | None = field(default=None, metadata={"help": "a train.py output model folder"})
    captions_dir: Path | None = field(default=None, metadata={"help": "a cqa_generate.py output folder"})
    signals_dir: Path | None = field(
        default=None, metadata={"help": "the prepared dataset, published as the 'signals' config"}
    )
    downstream: Path | None = field(
        default=None,
        metadata={
            "help": "downstream summary JSON (benchmarks.esi_claim.report --model-summary); only its results whose "
            "weights_sha256 matches --model-dir's model.safetensors reach the card"
        },
    )
    encoder_dir: Path | None = field(
        default=None,
        metadata={
            "help": "an encoder release folder (esi-export-encoder output, e.g. model_cards/esi-ecg-encoder): "
            "pushed as it is"
        },
    )
    output_dir: Path = field(default=Path("outputs/publish"), metadata={"help": "where the folders are assembled"})
    model_repo_id: str | None = field(default=None, metadata={"help": "Hub model repo for --model-dir's folder"})
    dataset_repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo for --captions-dir's"})
    encoder_repo_id: str | None = field(default=None, metadata={"help": "Hub model repo for --encoder-dir"})
    hub_private_repo: bool = field(
        default=False, metadata={"help": "create the Hub repos as private", "aliases": ["--private"]}
    )
    hub_token: str | None = field(
        default=None,
        metadata={"help": "Hub token (default: the environment's, or `hf auth login`'s)", "aliases": ["--token"]},
    )

    def __post_init__(self) -> None:
        for name in ("model_dir", "captions_dir", "signals_dir", "downstream", "encoder_dir", "output_dir"):
            if getattr(self, name) is not None:  # a JSON options file gives text
                setattr(self, name, Path(getattr(self, name)))
        if not (self.model_dir or self.captions_dir or self.encoder_dir):
            raise ValueError("give --model-dir, --captions-dir and/or --encoder-dir")
        # Checked before anything is written: no input may be replaced, whichever folder comes first.
        refuse_overlap(self.output_dir, [self.model_dir, self.captions_dir, self.signals_dir, self.downstream])


def assemble_and_push(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse `esi-publish` arguments, assemble the folders and push those given a repo id; returns the folders."""
    (args,) = parse_command_line((PublishArguments,), argv, __doc__.split("\n\n")[0])
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
            pushed = push_folder(
                folder, repo_ids[kind], repo_type, args.hub_private_repo, args.hub_token, ignore_patterns=[PUBLISH_MARK]
            )
            print(f"pushed {kind}: {pushed}")
    for kind, folder in folders.items():
        print(f"{kind} folder: {folder}")
    return folders


def main(argv: list[str] | None = None) -> None:
    """Console entry point (its return value would become the exit status)."""
    with exit_on_full_disk("esi-publish"):
        assemble_and_push(argv)


if __name__ == "__main__":
    main()
