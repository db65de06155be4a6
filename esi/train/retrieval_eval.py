"""ECG <-> text retrieval evaluation for contrastive pretraining."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from esi.data.windows import mean_by_record


@torch.no_grad()
def embed_ecg_text(model, dataloader: Iterable, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ECG and text embeddings of a whole (sharded) dataloader, gathered from all
    processes in dataset order: two (N, projection_dim) tensors.

    A loader of evaluation windows (batches with `records`, from `EcgWindows`) gives one row per record:
    the mean of its windows' normalised ECG embeddings (renormalised) and its caption's embedding.
    """
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    ecg_parts, text_parts, record_parts = [], [], []
    for batch in dataloader:
        ecg = unwrapped.get_ecg_features(batch["input_values"], batch["ecg_attention_mask"]).pooler_output
        text = unwrapped.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        parts = (ecg.contiguous(), text.contiguous()) + ((batch["records"],) if "records" in batch else ())
        gathered = accelerator.gather_for_metrics(parts)
        ecg_parts.append(gathered[0].float())
        text_parts.append(gathered[1].float())
        record_parts.extend(gathered[2:])
    ecg = torch.nn.functional.normalize(torch.cat(ecg_parts), dim=-1)
    text = torch.nn.functional.normalize(torch.cat(text_parts), dim=-1)
    if record_parts:
        records = torch.cat(record_parts).cpu().numpy()
        num_records = int(records.max()) + 1
        # Every window of a record carries the same caption: its mean is that caption's embedding.
        ecg, text = (torch.from_numpy(mean_by_record(x.cpu().numpy(), records, num_records)) for x in (ecg, text))
        ecg = torch.nn.functional.normalize(ecg, dim=-1)
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
