"""Caption a prepared ECG dataset with the Cardio Query Assistant (CQA): `cqa_generate.py` / `esi-cqa`.

Examples:

    # deterministic template captions for the embedded sample (no model needed)
    esi-cqa --dataset outputs/ptbxl-100 --output_dir outputs/captions --backend template

    # an LLM through vLLM on 4 GPUs, split across two nodes, then merged
    esi-cqa --dataset D --output_dir out0 --backend vllm --model /models/llm \\
        --tensor_parallel_size 4 --num_shards 2 --shard_index 0
    esi-cqa --dataset D --output_dir out1 ... --num_shards 2 --shard_index 1
    esi-cqa --merge out0 out1 --output_dir outputs/captions

    # continue an interrupted run (same options plus --resume)
    esi-cqa --dataset D --output_dir outputs/captions --backend template --resume

    # one clinical file (WFDB .hea, Philips XML, DICOM, CSV): the caption as JSON on stdout
    esi-cqa --ecg_file ecg.xml --age 61 --sex female

Options accept dashes or underscores (`--output-dir` = `--output_dir`), or come from one JSON file
(`esi-cqa options.json`). The output folder holds Parquet
shards (`data/{split}-NNNNN-of-NNNNN.parquet`), a dataset card (README.md) and the source's licence, and
loads with `datasets.load_dataset(OUTPUT_DIR)`. Research software: the captions are machine-generated and
not diagnoses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from esi.command_line import parse_command_line
from esi.cqa.options import GenerationOptions
from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra


@dataclass
class CqaArguments:
    """Where the run reads and writes, and what happens to a finished output."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "output folder; must be empty unless --resume (--ecg_file: also NAME.json there)"},
    )
    dataset: str | None = field(default=None, metadata={"help": "prepared dataset folder (esi-prepare output)"})
    ecg_file: str | None = field(
        default=None,
        metadata={"help": "caption one ECG file instead (WFDB .hea, Philips .xml, DICOM .dcm, .csv); JSON to stdout"},
    )
    age: float | None = field(default=None, metadata={"help": "--ecg_file: age in years (replaces the file's)"})
    sex: str | None = field(default=None, metadata={"help": "--ecg_file: male or female (replaces the file's)"})
    merge: list[str] | None = field(
        default=None,
        metadata={
            "help": "instead of generating, join the outputs of --num_shards jobs into --output_dir",
            "nargs": "+",
        },
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "upload the finished dataset to this Hub dataset repo"}
    )
    private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    plot: int | None = field(
        default=None,
        metadata={"help": "also draw the first N captioned ECGs with their captions into OUTPUT_DIR/plots"},
    )

    def __post_init__(self) -> None:
        if self.ecg_file:
            if self.dataset or self.merge:
                raise ValueError("--ecg_file captions one file: leave out --dataset and --merge")
            return
        if (self.age, self.sex) != (None, None):
            raise ValueError("--age and --sex go with --ecg_file (a prepared dataset carries its own)")
        if not self.merge and not self.dataset:
            raise ValueError("--dataset is required unless --merge or --ecg_file is given")
        if not self.output_dir:
            raise ValueError("--output_dir is required with --dataset or --merge")


def parse_args(argv: list[str] | None = None) -> tuple[CqaArguments, GenerationOptions]:
    return parse_command_line((CqaArguments, GenerationOptions), argv, __doc__.split("\n\n")[0], epilog=__doc__)


def run_command(args: CqaArguments, options: GenerationOptions) -> dict:
    """Generate (or merge), then optionally plot and push; returns the run summary. With --ecg_file: the caption."""
    # The pipeline (measurements, retrieval, datasets) is imported here, not for `--help`.
    from esi.cqa.run import generate_captions, merge_outputs, push_captions

    if args.ecg_file:
        return _caption_file(args, options)
    if args.merge:
        summary = merge_outputs(args.merge, args.output_dir)
        complete = True
    else:
        summary = generate_captions(args.dataset, args.output_dir, options)
        complete = summary["complete"]
    print(json.dumps(summary, indent=2))
    if args.plot:
        if not complete or not args.dataset:
            raise SystemExit("--plot needs a finished (or merged) output and --dataset for the signals")
        from esi.plot.captions import plot_records_with_captions

        paths = plot_records_with_captions(args.output_dir, args.dataset, args.plot, Path(args.output_dir) / "plots")
        print(f"wrote {len(paths)} plot(s) to {Path(args.output_dir) / 'plots'}")
    if args.push_to_hub:
        if not complete:
            raise SystemExit("not pushing: this output is one shard of a sharded run; merge the shards first")
        print(f"pushed to {args.push_to_hub}: {push_captions(args.output_dir, args.push_to_hub, args.private)}")
    return summary


def _caption_file(args: CqaArguments, options: GenerationOptions) -> dict:
    from esi.cqa.single_file import caption_ecg_file
    from esi.data.ecg_file import EcgFileError
    from esi.data.schema import RecordError

    try:
        result = caption_ecg_file(args.ecg_file, options, args.age, args.sex)
    except (EcgFileError, RecordError) as err:
        raise SystemExit(f"error: {err}") from None
    text = json.dumps(result, indent=2)
    print(text)
    if args.output_dir:
        path = Path(args.output_dir) / f"{Path(args.ecg_file).stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    """Console entry point (its return value becomes the exit status, so it returns nothing; see `run_command`)."""
    args = parse_args(argv)
    require_extra("esi-cqa", "cqa")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from esi.run_folder import RunFolderError

    with exit_on_full_disk("esi-cqa", "rerun the same command with --resume"):
        try:
            run_command(*args)
        except (RunFolderError, FileExistsError, ValueError) as err:  # the folder or options cannot take this run
            raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
