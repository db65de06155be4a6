"""Caption generation with a pretrained ESI model, scored against the CQA captions with token F1 and ROUGE-L
(`esi-finetune --method captioning`)."""

from __future__ import annotations

import json
from pathlib import Path

import evaluate
import torch

from esi.data.torch_dataset import join_captions, load_dataset_folder
from esi.eval.arguments import FinetuneArguments
from esi.eval.classification import METRICS_DIR, make_window_loader
from esi.eval.report import DISCLAIMER
from esi.eval.text_model import load_pretrained
from modeling_esi import EsiFeatureExtractor


@torch.no_grad()
def caption_ecgs(model, tokenizer, loader, max_new_tokens: int = 64, num_beams: int = 1) -> list[str]:
    """Captions generated from each ECG of `loader`, decoded without special tokens."""
    model.eval()
    captions = []
    for batch in loader:
        ids = model.generate_caption(
            batch["input_values"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            ecg_attention_mask=batch["ecg_attention_mask"],
        )
        captions.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return captions


def run_captioning(args: FinetuneArguments, out: Path) -> dict:
    """Caption the test ECGs and score them; writes OUT/captions.jsonl and OUT/results.md."""
    test = load_dataset_folder(args.dataset)["test"]
    if args.max_records:
        test = test.select(range(min(args.max_records, len(test))))
    references = join_captions(test, load_dataset_folder(args.captions), "test")
    model, tokenizer = load_pretrained(args.model)
    # One caption per record: generated from its first window.
    loader = make_window_loader(test, EsiFeatureExtractor.from_pretrained(args.model), args.eval_batch_size, 1)
    generated = caption_ecgs(model, tokenizer, loader, args.max_new_tokens, args.num_beams)
    overlap = evaluate.load(str(METRICS_DIR / "caption_overlap"))
    metrics = overlap.compute(predictions=generated, references=references)
    with open(out / "captions.jsonl", "w") as f:
        for ecg_id, gen, ref in zip(test["ecg_id"], generated, references, strict=True):
            f.write(json.dumps({"ecg_id": ecg_id, "generated": gen, "reference": ref}) + "\n")
    result = {"method": "captioning", "records": len(generated), "num_beams": args.num_beams, **metrics}
    (out / "results.md").write_text(
        f"Captioning on {len(generated)} test ECGs (beams: {args.num_beams}): token F1 {metrics['token_f1']:.3f}, "
        f"ROUGE-L {metrics['rouge_l']:.3f} against the CQA captions. Example:\n\n> {generated[0]}\n\n{DISCLAIMER}\n"
    )
    return result
