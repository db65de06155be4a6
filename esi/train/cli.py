"""Pretrain ESI on ECG-caption pairs with a contrastive + captioning loss.

Runs unchanged on one CPU, several CPU processes (gloo), one or many GPUs and nodes:

    python train.py --signals PREPARED_DIR --captions CAPTIONS_DIR --output-dir OUT --max-steps 100
    accelerate launch --multi_gpu --num_processes 2 train.py --signals ... --captions ... --output-dir OUT

(without CUDA, those processes train on CPUs and talk over gloo). From Python, build the argument
dataclasses of `esi.train.arguments` and call `pretrain(data, model, optim, run)`.

Pretrain and evaluate on records of disjoint patients. Pass `--evaluation-records PREPARED_EVAL_DIR` and the
run checks that, warning loudly (log, training_summary.json, model card) when the pretraining split holds
evaluation records or patients.

The contrastive loss gathers embeddings from every process, so the number of negatives
per ECG is `per_device_batch_size x num_processes - 1`. Gradient accumulation does NOT
add negatives: each micro-batch is contrasted only with itself (and its peers on other
processes); it only averages gradients over micro-batches.
"""

from __future__ import annotations

from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra
from esi.train.arguments import parse_args


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`esi-train`, `train.py`); its return value would become the exit status.

    Programmatic callers use `esi.train.pretrain.pretrain(*parse_args(argv))`, which returns the saved model folder.
    """
    args = parse_args(argv, description=__doc__)
    require_extra("esi-train", "train")
    from esi.train.pretrain import pretrain  # torch and Accelerate: imported once the arguments are valid

    with exit_on_full_disk("esi-train", "rerun the same command with --resume-from-checkpoint latest"):
        pretrain(*args)


if __name__ == "__main__":
    main()
