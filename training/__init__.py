"""Training utilities shared by `train.py` (pretraining) and `finetune.py` (downstream)."""
