"""Plain helpers and constants shared by test modules (pytest fixtures live in conftest.py).

Test modules import from here, never from one another. Heavy imports (torch, transformers, the model) stay inside
the functions, so a light test module that only needs a path does not load them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    from esi.cqa.measurements import EcgMeasurements
    from esi.cqa.prompts import CaptionInputs
    from modeling_esi import EsiConfig, EsiModel

REPO_ROOT = Path(__file__).resolve().parent.parent
PTBXL_SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"
# Real data beside the repository on the development machine; tests that need it skip where it is absent.
SHARED = REPO_ROOT.parent / "shared"
MIMIC_LAYOUT = REPO_ROOT / "tests" / "fixtures" / "mimic_iv_ecg_layout"
SAMPLE_RECORD = "records100/00000/00547_lr"  # ecg_id 547 of the embedded sample

# `accelerate launch` of two processes; on a machine without CUDA, train.py turns them into gloo CPU processes.
TWO_PROCESS_LAUNCHER = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip

TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


# ---- Tiny models ------------------------------------------------------------------------------------------------


def save_tiny_esi(folder: Path, classifier_labels: list[str] | None = None) -> Path:
    """Save a tiny randomly initialised EsiModel as train.py saves one (weights, preprocessor, tokenizer);
    with `classifier_labels`, also an `EsiForEcgClassification` head in `folder/classifier`."""
    import torch
    from transformers import AutoTokenizer, BertConfig

    from esi.text_encoder import default_text_model_path
    from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiForEcgClassification, EsiModel, EsiProcessor

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    config = EsiConfig(
        ecg_config={"depths": [1, 1], "hidden_sizes": [16, 32]},
        text_config=BertConfig(vocab_size=tokenizer.vocab_size, **TINY_TOWER).to_dict(),
        decoder_config={**TINY_TOWER, "max_position_embeddings": 64},
        projection_dim=32,
    )
    EsiModel(config).save_pretrained(folder)
    EsiFeatureExtractor().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    EsiProcessor(EsiFeatureExtractor(), tokenizer, max_text_length=64).save_pretrained(folder)
    if classifier_labels:
        # A config of its own: EsiModel resolved `config`'s attention to SDPA, which the classifier (no attention)
        # does not declare.
        EsiForEcgClassification.from_pretrained(
            folder,
            num_labels=len(classifier_labels),
            id2label=dict(enumerate(classifier_labels)),
            label2id={label: i for i, label in enumerate(classifier_labels)},
            problem_type="multi_label_classification",
        ).save_pretrained(folder / "classifier")
    return folder


def build_tiny_model(folder: Path, with_classifier: bool = False) -> Path:
    """The shared tiny ESI folder, with the app's superclass `classifier/` head when asked."""
    from esi.app.inference import SUPERCLASSES

    return save_tiny_esi(folder, list(SUPERCLASSES) if with_classifier else None)


def tiny_esi_model() -> EsiModel:
    """An in-memory tiny EsiModel (full BERT vocabulary, dropout on) for the training recipe's checks."""
    import torch
    from transformers import BertConfig

    from modeling_esi import EsiConfig, EsiModel

    torch.manual_seed(0)
    config = EsiConfig(
        ecg_config={"depths": [1, 1], "hidden_sizes": [16, 32]},
        text_config=BertConfig(vocab_size=30522, hidden_dropout_prob=0.5, **TINY_TOWER).to_dict(),
        decoder_config={**TINY_TOWER, "max_position_embeddings": 64},
        projection_dim=32,
    )
    return EsiModel(config)


def tiny_config(**overrides) -> EsiConfig:
    """A small model for tests: atto ECG encoder, 2-layer 64-wide text tower and decoder, no dropout."""
    from modeling_esi import EsiConfig

    kwargs = dict(
        ecg_config=dict(size="atto"),
        text_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        decoder_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        projection_dim=32,
    )
    kwargs.update(overrides)
    return EsiConfig(**kwargs)


def caption_batch(batch: int = 4, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style ids `[CLS] w... [SEP] [PAD]...` with different lengths per row, and their attention mask."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        end = length - 1 - (row % 3)  # rows 1, 2 get padding
        ids[row, 0], ids[row, end] = 101, 102
        ids[row, end + 1 :], mask[row, end + 1 :] = 0, 0
    return ids, mask


# Shapes of the common-contract inputs (`make_inputs`): batch, ECG samples, caption tokens, BERT vocabulary.
BATCH, T, TEXT_LEN, VOCAB = 3, 1000, 9, 30522


def make_config(architecture: str = "convnextv2", **overrides) -> EsiConfig:
    """Two ECG stages, 2-layer text tower and decoder, no dropout (so train-mode passes are deterministic)."""
    from modeling_esi import EsiConfig

    kwargs = dict(
        ecg_config=dict(architecture=architecture, depths=[1, 1], hidden_sizes=[16, 32]),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=32),
        projection_dim=16,
        num_labels=4,
    )  # fmt: skip
    kwargs.update(overrides)
    return EsiConfig(**kwargs)


def make_inputs(model_class: type, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs for `model_class`; ECG row 1 is padded after 704 samples and caption row 2 after 6 tokens."""
    import torch

    from modeling_esi import EsiForEcgCaptioning, EsiForEcgClassification

    generator = torch.Generator().manual_seed(seed)
    ecg = torch.randn(BATCH, 12, T, generator=generator)
    ecg_mask = torch.ones(BATCH, T, dtype=torch.long)
    ecg_mask[1, 704:] = 0
    ids = torch.randint(1000, 20000, (BATCH, TEXT_LEN), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    ids[2, 6], ids[2, 7:], mask[2, 7:] = 102, 0, 0
    if model_class is EsiForEcgClassification:
        return {"input_values": ecg, "ecg_attention_mask": ecg_mask, "labels": torch.tensor([[1.0, 0, 0, 1]] * BATCH)}
    inputs = {"input_values": ecg, "ecg_attention_mask": ecg_mask, "input_ids": ids, "attention_mask": mask}
    if model_class is EsiForEcgCaptioning:
        inputs["labels"] = ids.masked_fill(mask == 0, -100)
    return inputs


def model_heads() -> tuple[type, ...]:
    """Every ESI head class the common contracts run on."""
    from modeling_esi import EsiForEcgCaptioning, EsiForEcgClassification, EsiModel

    return (EsiModel, EsiForEcgClassification, EsiForEcgCaptioning)


# ---- Training and fine-tuning in this process -------------------------------------------------------------------


def tiny_train_args(signals: Path, captions: Path, text_model: Path, output_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for a seconds-long run with tiny towers (used by several test modules)."""
    return [
        "--signals", str(signals), "--captions", str(captions), "--output-dir", str(output_dir),
        "--text-model", str(text_model), "--random-text-tower", "--config", "atto",
        "--decoder-layers", "1", "--decoder-width", "64", "--projection-dim", "32",
        "--per-device-batch-size", "8", "--max-text-length", "64", "--warmup-steps", "1",
        "--report-to", "none", "--seed", "7", *extra,
    ]  # fmt: skip


def pretrain_in_process(argv: list[str]) -> Path:
    """`train.py ARGV` in this process; returns the saved model folder."""
    from esi.train.arguments import parse_args
    from esi.train.pretrain import pretrain

    return pretrain(*parse_args(argv))


def finetune_in_process(argv: list[str]) -> dict:
    """`finetune.py ARGV` in this process; returns its results."""
    from esi.eval.arguments import parse_args
    from esi.eval.finetune import run

    return run(parse_args(argv))


# ---- Records ----------------------------------------------------------------------------------------------------


def copy_challenge_records(records: dict[Path, list[str]], folder: Path) -> Path:
    """Copy real Challenge records (`.hea` + `.mat`) from each source folder into `folder`."""
    import shutil

    for source, names in records.items():
        for name in names:
            for suffix in (".hea", ".mat"):
                shutil.copyfile(source / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


def write_record(
    folder: Path, rate: int = 500, seconds: float = 10, names: tuple[str, ...] | None = None
) -> list[Path]:
    """A real PTB-XL signal, resampled by repetition to `rate`, written as WFDB (.hea + .dat); `names` defaults to
    the 12 standard leads."""
    import numpy as np
    import wfdb

    from esi.constants import STANDARD_LEADS
    from esi.data.ptbxl import read_signal

    names = STANDARD_LEADS if names is None else names
    real = read_signal(PTBXL_SAMPLE, 547, SAMPLE_RECORD, 100)  # (12, 1000) mV
    samples = int(rate * seconds)
    signal = real[:, (np.arange(samples) * 100 // rate) % real.shape[1]].T.astype(np.float64)
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp("rec", fs=rate, units=["mV"] * len(names), sig_name=list(names), p_signal=signal[:, : len(names)],
                fmt=["16"] * len(names), adc_gain=[1000.0] * len(names), baseline=[0] * len(names),
                write_dir=str(folder))  # fmt: skip
    return [folder / "rec.hea", folder / "rec.dat"]


def read_shared_ptbxl(ecg_id: int, rate: int = 100) -> tuple[np.ndarray, list[str]]:
    """A record of the full PTB-XL evaluation set in `SHARED`: its (leads, samples) signal in mV and lead names."""
    import wfdb

    folder, suffix = ("records100", "lr") if rate == 100 else ("records500", "hr")
    path = SHARED / "ptb-xl" / folder / f"{ecg_id // 1000 * 1000:05d}" / f"{ecg_id:05d}_{suffix}"
    record = wfdb.rdrecord(str(path))
    return record.p_signal.T, list(record.sig_name)


# ---- Captions ---------------------------------------------------------------------------------------------------


def caption_measurements(**overrides) -> EcgMeasurements:
    """Plausible measurements of a sinus-rhythm ECG with a left axis and ST depression in V5/V6."""
    from esi.cqa.measurements import EcgMeasurements

    values = dict(
        heart_rate_bpm=72.4,
        rr_std_ms=31.0,
        rr_irregular=False,
        p_wave_absent=False,
        pr_interval_ms=164.0,
        qrs_duration_ms=96.0,
        qt_interval_ms=380.0,
        qtc_bazett_ms=417.0,
        qtc_fridericia_ms=404.0,
        qrs_axis_deg=-35.0,
        qrs_axis_category="left",
        sokolow_lyon_mv=2.1,
        cornell_mv=1.3,
        low_voltage=False,
        st_deviation_mv={"I": 0.02, "V5": -0.14, "V6": -0.11},
    )
    values.update(overrides)
    return EcgMeasurements(**values)


def caption_inputs(
    descriptions: dict[str, str], codes=("SR", "IMI"), age=63.0, report="sinusrhythmus", **measurements
) -> CaptionInputs:
    """The captioner's inputs for record 17 with the statements `codes` (described by `descriptions`)."""
    from esi.cqa.prompts import CaptionInputs, Statement
    from esi.cqa.retrieval import RetrievedPassage

    passages = [
        RetrievedPassage(
            f"scp:{c}", descriptions[c], f"{descriptions[c].capitalize()} is a statement.", 1.0, f"statement {c}"
        )
        for c in codes
    ]
    return CaptionInputs(
        ecg_id=17,
        age=age,
        sex="male",
        report=report,
        statements=[Statement(c, descriptions[c], 100.0 if c != "SR" else 0.0) for c in codes],
        measurements=caption_measurements(**measurements),
        passages=passages,
    )


# A caption every fact of which `caption_inputs()` supports.
FAITHFUL_CAPTION = (
    "A 63-year-old male patient. Heart rate 72 bpm with regular RR intervals; PR interval 164 ms, QRS duration "
    "96 ms, QTc 417 ms. The QRS axis is -35 degrees. ST depression of 0.14 mV in V5. The statements are sinus "
    "rhythm and inferior myocardial infarction; there are no signs of atrial fibrillation."
)
