"""train.py's options: one dataclass per concern, parsed by `transformers.HfArgumentParser`.

Each option is declared once, here. Scripts that start a pretraining run from Python build these
objects and call `esi.train.pretrain.pretrain(...)`; `python train.py` takes the same fields as flags
(underscores and dashes both accepted: `--max-text-length` = `--max_text_length`; `--help` lists them) or
from one JSON file (`python train.py options.json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from esi.command_line import parse_command_line
from esi.data.windows import WindowArguments

# Chosen by measurement (benchmarks/bench_train.py --pool, `caption_tokens_cut_by_max_text_length` in its
# result file): the shortest measured length that reads >= 95% of the pool's template caption tokens
# (256 cut 5.8%, 320 cuts 1.0%). Remeasure when the caption template changes.
DEFAULT_MAX_TEXT_LENGTH = 320
TRUNCATION_WARNING_SHARE = 0.05


@dataclass
class DataArguments(WindowArguments):
    _argument_group_name = "data"

    signals: str = field(metadata={"help": "prepared ECG dataset folder (esi-prepare)"})
    captions: str = field(metadata={"help": "captioned dataset folder (cqa_generate.py), joined on ecg_id"})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "'none' to skip retrieval evaluation"})
    max_text_length: int = field(
        default=DEFAULT_MAX_TEXT_LENGTH,
        metadata={"help": "caption tokens read; the share cut off is logged, with a warning above 5%%"},
    )
    augment: bool = field(default=True, metadata={"help": "ECG augmentations (--no-augment turns them off)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    keep_in_memory: bool = field(
        default=False,
        metadata={
            "help": "copy the prepared signals into RAM; by default they are memory-mapped from disk, read row "
            "by row, so memory does not grow with the corpus"
        },
    )
    evaluation_records: str | None = field(
        default=None,
        metadata={
            "help": "prepared dataset folder the model will be evaluated on (e.g. PTB-XL's evaluation records): "
            "records or patients shared with the pretraining split are reported loudly"
        },
    )


@dataclass
class ModelArguments:
    _argument_group_name = "model"

    config: str = field(
        default="atto", metadata={"help": "ECG encoder size preset: atto, femto, pico, nano, tiny, base"}
    )
    text_model: str = field(
        default="default",
        metadata={"help": "BERT-family folder for the text tower and tokenizer; 'default' = offline all-MiniLM-L6-v2"},
    )
    random_text_tower: bool = field(
        default=False, metadata={"help": "keep the tokenizer but start the text tower from scratch"}
    )
    freeze_text_tower: bool = field(
        default=False, metadata={"help": "text tower frozen and in eval mode (no dropout): deterministic targets"}
    )
    cache_text_embeddings: bool = field(
        default=False,
        metadata={"help": "with --freeze-text-tower: embed each caption once and reuse it (the decoder still trains)"},
    )
    text_embeddings: str | None = field(
        default=None,
        metadata={
            "help": "with --freeze-text-tower: a .npz of precomputed text-tower embeddings (arrays `captions` and "
            "`embeddings`, each caption mean-pooled over its first --max-text-length tokens) used instead of running "
            "the tower. Embeddings narrower than the tower (e.g. reduced by PCA) get a placeholder tower of their "
            "width: the saved model then cannot embed new text"
        },
    )
    trim_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "keep only the tokens the training captions use (and the special tokens): the caption decoder's "
            "output layer, its embeddings, the tower's word embeddings and the saved tokenizer shrink alike; the "
            "training captions are split exactly as before, other text may hit [UNK] more often"
        },
    )
    projection_dim: int = 256
    decoder_layers: int = 4
    decoder_width: int = 256
    contrastive_loss_weight: float = 1.0
    caption_loss_weight: float = 2.0
    same_text_positives: bool = field(
        default=True,
        metadata={
            "help": "records whose captions have the same tokens are positives of each other in the contrastive "
            "loss, not negatives (--no-same-text-positives: CLIP's one positive per ECG)"
        },
    )

    def __post_init__(self) -> None:
        # A trained tower changes its embeddings: cached or precomputed ones would go stale.
        if self.cache_text_embeddings and not self.freeze_text_tower:
            raise ValueError(
                "--cache-text-embeddings needs --freeze-text-tower (a trained tower changes its embeddings)"
            )
        if self.text_embeddings and not self.freeze_text_tower:
            raise ValueError("--text-embeddings needs --freeze-text-tower (a trained tower changes its embeddings)")


@dataclass
class OptimizationArguments:
    _argument_group_name = "optimisation"

    per_device_batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 3e-4
    weight_decay: float = field(
        default=0.05, metadata={"help": "on weight matrices only (not norms, GRN, biases, embeddings, logit scale)"}
    )
    warmup_steps: int = 100
    num_epochs: int = 1
    max_steps: int | None = field(default=None, metadata={"help": "overrides --num-epochs"})
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "default: accelerate config"}
    )
    gradient_checkpointing: bool = False
    seed: int = 42


@dataclass
class RunArguments:
    _argument_group_name = "run"

    output_dir: str
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder, or 'latest'"})
    eval_steps: int | None = field(default=None, metadata={"help": "also evaluate every N steps (default: each epoch)"})
    logging_steps: int = 10
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker(s), or 'none'"})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push the model folder to"})
    hub_private: bool = False


ARGUMENT_CLASSES = (DataArguments, ModelArguments, OptimizationArguments, RunArguments)


def parse_args(
    argv: list[str] | None = None, description: str | None = None
) -> tuple[DataArguments, ModelArguments, OptimizationArguments, RunArguments]:
    """train.py's options from `argv`, or from one JSON file (`train.py options.json`)."""
    return parse_command_line(ARGUMENT_CLASSES, argv, description or __doc__)
