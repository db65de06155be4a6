"""The options of `esi-finetune` (`finetune.py`), declared once; plain Python, so `--help` imports no model code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from esi.constants import TASKS
from esi.data.windows import WindowArguments

# Classification methods (`esi.eval.classification`) and the other evaluations.
METHODS = ("linear_probe", "lora", "full", "supervised_scratch")
OTHER_METHODS = ("subject_id", "zero_shot", "captioning")


@dataclass
class FinetuneArguments(WindowArguments):
    """finetune.py's options, each declared once (parsed by `HfArgumentParser`; call `run(FinetuneArguments(...))`
    from Python)."""

    model: str = field(metadata={"help": "ESI model folder (train.py output) or Hub id"})
    dataset: str = field(metadata={"help": "prepared dataset folder (esi-prepare)"})
    output_dir: str
    task: Literal[TASKS] = "superdiagnostic"
    method: Literal[METHODS + OTHER_METHODS] = "linear_probe"
    label_fraction: float = field(default=1.0, metadata={"help": "share of training patients: 0.01, 0.1, 1.0"})
    random_init: bool = field(default=False, metadata={"help": "randomly initialised encoder (baseline)"})
    seed: int = 0
    epochs: int | None = field(default=None, metadata={"help": "maximum epochs (default depends on --method)"})
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    patience: int | None = field(default=None, metadata={"help": "epochs without validation improvement"})
    eval_batch_size: int = 64
    bootstrap_samples: int = field(default=200, metadata={"help": "resamples for confidence intervals"})
    captions: str | None = field(
        default=None, metadata={"help": "captioning: CQA captions folder (cqa_generate.py output)"}
    )
    max_records: int | None = field(default=None, metadata={"help": "captioning: caption only the first N test ECGs"})
    max_new_tokens: int = 64
    num_beams: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        super().__post_init__()
        if self.method == "captioning" and not self.captions:
            raise ValueError("--method captioning needs --captions")


def parse_args(argv: list[str] | None = None, description: str | None = None) -> FinetuneArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(FinetuneArguments, description=description)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # __post_init__'s checks, reported as argparse reports a bad option
        parser.error(str(error))
    return args
