"""The options of a CQA captioning run, declared once: `cqa_generate.py` parses them with `HfArgumentParser`."""

from __future__ import annotations

from dataclasses import dataclass, field

# Declared here, the lowest CQA module (plain Python), so that parsing options imports no model code.
BACKENDS = ("template", "transformers", "vllm")
TEXT_VARIANTS = ("full", "no_knowledge", "statements_only", "measurements_only")
# The environment variable naming the interpreter that has vllm (the vllm backend's worker subprocess).
VLLM_PYTHON_ENV = "ESI_VLLM_PYTHON"
# Most passages per record: a record states up to nine statements (PTB-XL); eight keep every statement's own
# passage for all but a handful of records, and fewer are returned whenever fewer fit.
DEFAULT_K = 8
# Sampling of the LLM backends: the options' defaults and the backends' own (a retry after a greedy pass samples
# at DEFAULT_TEMPERATURE).
DEFAULT_MAX_NEW_TOKENS = 384
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95

# Options that change what a unit contains: a resumed run or a merge must agree on all of them.
IDENTITY_KEYS = (
    "dataset",
    "splits",
    "num_samples",
    "records_per_file",
    "backend",
    "model",
    "model_id",
    "max_new_tokens",
    "temperature",
    "top_p",
    "max_retries",
    "retrieval_k",
    "encoder_path",
    "text_variant",
    "num_shards",
)


@dataclass
class GenerationOptions:
    """How captions are written (backend, sampling, retrieval) and how the run is cut (splits, shards, workers)."""

    backend: str = field(default="template", metadata={"help": "caption writer", "choices": list(BACKENDS)})
    model: str | None = field(
        default=None, metadata={"help": "local model folder for the transformers and vllm backends"}
    )
    model_id: str | None = field(
        default=None, metadata={"help": "model id recorded in the rows (default: the model folder's name)"}
    )
    splits: list[str] | None = field(default=None, metadata={"help": "splits to caption (default: all)", "nargs": "+"})
    num_samples: int | None = field(default=None, metadata={"help": "caption only the first N records of each split"})
    records_per_file: int = field(default=500, metadata={"help": "records per Parquet shard (one unit of work)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per backend call"})
    max_new_tokens: int = field(
        default=DEFAULT_MAX_NEW_TOKENS, metadata={"help": "LLM backends: tokens per caption at most"}
    )
    temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={"help": "LLM backends: 0 for greedy decoding"})
    top_p: float = field(default=DEFAULT_TOP_P, metadata={"help": "LLM backends: nucleus sampling mass"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm only: GPUs per engine"})
    max_model_len: int = field(default=4096, metadata={"help": "vllm only: context length"})
    vllm_python: str | None = field(
        default=None,
        metadata={
            "help": f"interpreter with vllm for the worker subprocess (default: ${VLLM_PYTHON_ENV}, else .venv-vllm)"
        },
    )
    max_retries: int = field(default=2, metadata={"help": "regenerations per unfaithful caption"})
    retrieval_k: int = field(
        default=DEFAULT_K, metadata={"help": "most knowledge passages per record (only passages that fit it)"}
    )
    text_variant: str = field(
        default="full",
        metadata={
            "help": "template captions for ablations: full, no_knowledge, statements_only, measurements_only",
            "choices": list(TEXT_VARIANTS),
        },
    )
    encoder_path: str | None = field(
        default="default", metadata={"help": "dense retrieval encoder folder; 'default' (offline MiniLM) or 'none'"}
    )
    num_shards: int = field(default=1, metadata={"help": "split the work across this many jobs"})
    shard_index: int = field(default=0, metadata={"help": "which job this is (0-based)"})
    num_workers: int = field(default=2, metadata={"help": "processes measuring the signals"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run in the output folder"})
    scp_statements: str | None = field(
        default=None,
        metadata={"help": "PTB-XL scp_statements.csv (default: next to the dataset, else the packaged one)"},
    )
    ptbxl_license: str | None = field(
        default=None, metadata={"help": "licence file copied into the output (default: the dataset's, else PTB-XL's)"}
    )

    def __post_init__(self) -> None:
        if self.encoder_path in ("", "none"):
            self.encoder_path = None
