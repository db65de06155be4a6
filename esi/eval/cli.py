"""Downstream evaluation of an ESI model on a prepared PTB-XL dataset (folds 1-8 train, 9 validation, 10 test).

Classification (macro AUROC on the test fold, early stopping on validation macro AUROC):

    python finetune.py --model MODEL --dataset PREPARED_DIR --task superdiagnostic --method linear_probe \
        --label-fraction 0.1 --seed 0 --output-dir OUT

  --method linear_probe        frozen encoder, embeddings computed once, linear head trained
  --method lora                PEFT LoRA on the encoder's Linear and ungrouped Conv1d layers, head in full
  --method full                every weight trained
  --method supervised_scratch  `full` from a randomly initialised encoder (same architecture)
  --random-init                randomly initialised encoder under any method (the baseline)

Other evaluations:

  --method subject_id   patients with >= 2 records (all splits): earliest record as gallery, the others as
                        probes; top-1 / top-5 accuracy by cosine similarity of encoder embeddings
  --method zero_shot    class prompts from the CQA knowledge base (esi/knowledge), macro AUROC on test
  --method captioning   captions generated from test ECGs, scored against the CQA captions (--captions DIR)
                        with token F1 and ROUGE-L

Label fractions are whole patients sampled from the training folds, stratified over their label sets
(iterative stratification), seeded, with at least one positive patient per class. Classes with no
positive record in train or test are dropped and listed in the results.

Outputs in OUT: results.json, results.md, and depending on the method roc.png, test_scores.npz,
model/ (linear_probe, full, supervised_scratch) or adapter/ (lora: a PEFT sequence-classification adapter whose
README.md gives the `AutoPeftModelForSequenceClassification.from_pretrained` call that reloads it with its labels).

Research software, not a diagnostic device.
"""

from __future__ import annotations

from esi.disk_errors import exit_on_full_disk
from esi.eval.arguments import parse_args
from esi.extras import require_extra


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`esi-finetune`, `finetune.py`); programmatic callers use
    `esi.eval.finetune.run(parse_args(argv))`."""
    args = parse_args(argv, description=__doc__)
    require_extra("esi-finetune", "train")
    from esi.eval.finetune import run  # torch, PEFT, datasets: imported once the arguments are valid

    with exit_on_full_disk("esi-finetune"):
        run(args)


if __name__ == "__main__":
    main()
