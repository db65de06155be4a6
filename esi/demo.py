"""The main job end to end on a PTB-XL folder (by default the embedded 300-record sample).

    esi-demo --ptbxl_dir data/ptbxl_sample --output_dir outputs/demo

1. prepare the PTB-XL folder into a `datasets` folder (signals, metadata, labels);
2. write a CQA caption for every ECG (template backend: measured, retrieval-grounded,
   faithfulness-checked);
3. pretrain a small ESI model on the ECG-caption pairs (the all-MiniLM-L6-v2 text tower is
   kept frozen, its caption embeddings cached, so the demo fits a laptop CPU; `train.py` trains it by default);
4. save it as a Hub-ready folder and reload it with `AutoModel.from_pretrained(...,
   trust_remote_code=True)`, embedding one record through `AutoFeatureExtractor`;
5. when the checkout has the released encoder (model_cards/esi-ecg-encoder, pretrained on patients disjoint
   from PTB-XL's evaluation records), find the sample's records most similar to a test record with it.
Each step's output folder is printed; every step can be rerun alone with its own CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esi.command_line import parse_command_line
from esi.constants import DISCLAIMER, RELEASED_ENCODER_DIR
from esi.extras import require_extra
from esi.train.arguments import DEFAULT_MAX_TEXT_LENGTH

DEMO_STEPS = 12  # 1.6 passes over the sample's 240 training records: the losses visibly fall; see docs/training.md
DEMO_BATCH_SIZE = 32
DEMO_DECODER_LAYERS, DEMO_DECODER_WIDTH = 2, 128


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def pretraining_arguments(
    prepared_dir: Path,
    captions_dir: Path,
    output_dir: Path,
    steps: int = DEMO_STEPS,
    batch_size: int = DEMO_BATCH_SIZE,
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
) -> tuple:
    """The demo's pretraining recipe (`esi.train.pretrain.pretrain(*...)`); benchmarks/bench_train.py times it."""
    from esi.train.arguments import DataArguments, ModelArguments, OptimizationArguments, RunArguments

    return (
        DataArguments(signals=str(prepared_dir), captions=str(captions_dir), max_text_length=max_text_length),
        # The caption decoder of the CPU claim benchmark: over the tokens the captions use (--trim-vocabulary; the
        # output layer over all 30,522 tokens was most of a step), 2 layers 128 wide. See docs/training.md.
        ModelArguments(
            freeze_text_tower=True,
            cache_text_embeddings=True,
            trim_vocabulary=True,
            decoder_layers=DEMO_DECODER_LAYERS,
            decoder_width=DEMO_DECODER_WIDTH,
        ),
        OptimizationArguments(per_device_batch_size=batch_size, warmup_steps=5, max_steps=steps),
        RunArguments(
            output_dir=str(output_dir), checkpointing_steps=max(steps // 2, 1), resume_from_checkpoint="latest"
        ),
    )


@dataclass
class DemoArguments:
    """The PTB-XL folder the demo runs on, where it writes, and the size of its pretraining."""

    ptbxl_dir: str = field(default="data/ptbxl_sample", metadata={"help": "PTB-XL folder in PhysioNet's layout"})
    output_dir: str = field(default="outputs/demo", metadata={"help": "where every step writes its folder"})
    sampling_rate: int = field(default=100, metadata={"help": "rate of the prepared signals (Hz)"})
    pretrain_steps: int = field(default=DEMO_STEPS, metadata={"help": "optimizer steps of the pretraining"})
    batch_size: int = field(default=DEMO_BATCH_SIZE, metadata={"help": "ECG-caption pairs per step"})
    max_text_length: int = field(default=DEFAULT_MAX_TEXT_LENGTH, metadata={"help": "caption tokens read"})

    def __post_init__(self) -> None:
        if not (Path(self.ptbxl_dir) / "ptbxl_database.csv").is_file():
            raise ValueError(
                f"no PTB-XL folder at {self.ptbxl_dir}: run from a checkout of the repository or pass --ptbxl-dir"
            )


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_command_line((DemoArguments,), argv, __doc__.split("\n\n")[0])
    require_extra("esi-demo", "cqa")
    require_extra("esi-demo", "train")
    out = Path(args.output_dir)
    started = time.perf_counter()

    from esi.data.prepare_ptbxl import prepare_ptbxl
    from esi.data.ptbxl import summarize

    banner(f"1/5 prepare {args.ptbxl_dir} at {args.sampling_rate} Hz")
    prepared_dir = out / "prepared"
    prepared = prepare_ptbxl(args.ptbxl_dir, output_dir=prepared_dir, sampling_rate=args.sampling_rate)
    print(summarize(prepared))

    captions_dir = out / "captions"
    caption_with_template(prepared_dir, captions_dir)

    from esi.train.pretrain import pretrain

    banner(f"3/5 pretrain ESI for {args.pretrain_steps} steps")
    print(
        "NOTE: this is a demo, not a benchmark: it pretrains on the train folds of the same small sample it "
        "ships with. The released encoder (step 5) was pretrained on patients disjoint from PTB-XL's evaluation "
        "records; benchmarks/reports/esi_claim.md says what it was measured to do.",
        flush=True,
    )
    model_dir = pretrain(
        *pretraining_arguments(
            prepared_dir, captions_dir, out / "pretraining", args.pretrain_steps, args.batch_size, args.max_text_length
        )
    )

    embed_with_auto_classes(model_dir, prepared)
    similar_with_released_encoder(prepared)

    banner(f"done in {time.perf_counter() - started:.0f} s; outputs")
    for name, path in [
        ("prepared dataset", prepared_dir),
        ("captions (Parquet + card)", captions_dir),
        ("checkpoints + TensorBoard logs", out / "pretraining"),
        ("model folder (Hub-ready)", model_dir),
    ]:
        print(f"  {name:32s} {path}")
    print(DISCLAIMER)


def caption_with_template(prepared_dir: Path, captions_dir: Path) -> None:
    """Step 2: the Cardio Query Assistant captions the prepared sample (template backend); one caption is shown."""
    from esi.cqa.run import generate_captions
    from esi.data.torch_dataset import load_dataset_folder

    banner("2/5 Cardio Query Assistant captions (template backend)")
    generate_captions(prepared_dir, captions_dir, backend="template", resume=True)
    captions = load_dataset_folder(captions_dir)
    example = captions["train"][0]
    print(f"{sum(len(s) for s in captions.values())} captions; ecg_id {example['ecg_id']}:\n  {example['caption']}")


def embed_with_auto_classes(model_dir: Path, prepared) -> None:
    """Step 4: the pretrained folder reloads as a user loads it (remote code) and embeds one test record."""
    banner("4/5 reload with AutoModel + AutoFeatureExtractor (trust_remote_code)")
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    row = prepared["test"].with_format("numpy")[0]
    inputs = feature_extractor(
        row["signal"], sampling_rate=int(row["sampling_rate"]), lead_names=list(row["lead_names"]), return_tensors="pt"
    )
    with torch.no_grad():
        embedding = model.get_ecg_features(inputs["input_values"]).pooler_output[0].numpy()
    print(f"ecg_id {row['ecg_id']} -> embedding of {embedding.shape[0]} dims, norm {np.linalg.norm(embedding):.3f}")


def similar_with_released_encoder(prepared, k: int = 3) -> None:
    """Step 5: the released encoder embeds the prepared sample and names the records closest to one test record."""
    if not (RELEASED_ENCODER_DIR / "config.json").is_file():
        banner(f"5/5 skipped: this checkout has no released encoder in {RELEASED_ENCODER_DIR}")
        return
    banner(f"5/5 similar records with the released encoder ({RELEASED_ENCODER_DIR})")
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(RELEASED_ENCODER_DIR, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(RELEASED_ENCODER_DIR, trust_remote_code=True)
    rows = {split: prepared[split].with_format("numpy") for split in ("train", "test")}
    embeddings = {}
    for split, table in rows.items():
        inputs = extractor(
            list(table["signal"]),
            sampling_rate=int(table[0]["sampling_rate"]),
            lead_names=list(table[0]["lead_names"]),
            return_tensors="pt",
        )
        with torch.no_grad():
            embeddings[split] = torch.nn.functional.normalize(model(**inputs).ecg_embeds, dim=-1).numpy()

    def named(row) -> str:
        return f"ecg_id {row['ecg_id']} ({', '.join(s['text'] for s in row['statements'])})"

    scores = embeddings["train"] @ embeddings["test"][0]
    print(f"most similar to test {named(rows['test'][0])}:")
    for i in np.argsort(-scores)[:k]:
        print(f"  cosine {scores[i]:.3f}: train {named(rows['train'][int(i)])}")


if __name__ == "__main__":
    main()
