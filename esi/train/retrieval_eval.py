"""ECG <-> text retrieval evaluation for contrastive pretraining."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


@torch.no_grad()
def embed_ecg_text(model, dataloader: Iterable, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ECG and text embeddings of a whole (sharded) dataloader, gathered from all
    processes in dataset order: two (N, projection_dim) tensors."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    ecg_parts, text_parts = [], []
    for batch in dataloader:
        ecg = unwrapped.get_ecg_features(batch["input_values"])
        text = unwrapped.get_text_features(batch["input_ids"], batch["attention_mask"])
        ecg, text = accelerator.gather_for_metrics((ecg.contiguous(), text.contiguous()))
        ecg_parts.append(ecg.float())
        text_parts.append(text.float())
    ecg = torch.nn.functional.normalize(torch.cat(ecg_parts), dim=-1)
    text = torch.nn.functional.normalize(torch.cat(text_parts), dim=-1)
    return ecg, text


def retrieval_recall(ecg: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k for ECG->text and text->ECG retrieval where row i of each is a pair.

    Ties are broken pessimistically (an equally scored wrong item ranks first), so a model
    that maps everything to one point scores chance, not 100%.
    """
    similarity = ecg @ text.T  # (N, N)
    metrics = {}
    for name, scores in (("ecg_to_text", similarity), ("text_to_ecg", similarity.T)):
        correct = scores.diagonal().unsqueeze(1)
        rank = (scores >= correct).sum(dim=1) - 1  # 0 = retrieved first
        for k in ks:
            metrics[f"{name}_recall@{k}"] = (rank < k).float().mean().item()
    return metrics
