"""Run under `accelerate launch`: build train.py's training loader exactly as `pretrain` does and record
which ECGs this process reads in each epoch (tests/train/test_streaming.py).

    accelerate launch ... tests/train/read_shards_worker.py OUT_DIR EPOCHS TRAIN_PY_ARGS...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

from esi.data.torch_dataset import is_memory_mapped
from esi.train.arguments import parse_args
from esi.train.data import build_data
from esi.train.pretrain import make_accelerator
from modeling_esi import EsiFeatureExtractor


def main() -> None:
    out, epochs, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    data_args, model_args, optim_args, run_args = parse_args(argv)
    accelerator = make_accelerator(optim_args, run_args)
    tokenizer = AutoTokenizer.from_pretrained(model_args.text_model)
    data = build_data(data_args, optim_args, EsiFeatureExtractor(), tokenizer)
    loader = accelerator.prepare(data.train_loader)
    seen = []
    for epoch in range(epochs):
        data.train_set.set_epoch(epoch)
        loader.set_epoch(epoch)
        seen.append([int(i) for batch in loader for i in batch["ecg_ids"]])
    report = {
        "process_index": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "backend": str(accelerator.state.backend),
        "memory_mapped": is_memory_mapped(data.train_set.signals),
        "epochs": seen,
    }
    (out / f"process-{accelerator.process_index}.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
