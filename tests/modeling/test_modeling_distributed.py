"""Two gloo processes with batch B give the loss and (DDP-averaged) gradients of one process with batch 2B."""

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_esi import EsiModel
from modeling_esi.modeling_esi import contrastive_loss
from tests.helpers import caption_batch, tiny_config

WORLD, PER_RANK = 2, 3


def _model_and_batch() -> tuple[EsiModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = EsiModel(tiny_config(ecg_config=dict(depths=[1, 1], hidden_sizes=[16, 32])))
    ecg = torch.randn(WORLD * PER_RANK, 12, 1000, generator=torch.Generator().manual_seed(2))
    # Equal-length captions: each rank then averages the caption loss over the same number of tokens.
    ids, mask = caption_batch(batch=WORLD * PER_RANK, length=10)
    ids[:, -1], mask[:] = 102, 1
    # Same-text positives across processes (row 4 on rank 1 repeats row 0 on rank 0) and within one (1 and 2).
    ids[4], ids[2] = ids[0], ids[1]
    return model, ecg, ids, mask


def _worker(rank: int, store: str, result_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model, ecg, ids, mask = _model_and_batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    out = model(ecg[rows], ids[rows], mask[rows])
    out.loss.backward()
    # What DDP does: average gradients and (for reporting) losses over processes.
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    for tensor in [*grads.values(), out.loss.detach(), out.contrastive_loss.detach()]:
        dist.all_reduce(tensor)
        tensor /= WORLD
    if rank == 0:
        torch.save(
            {
                "loss": out.loss.detach(),
                "contrastive_loss": out.contrastive_loss.detach(),
                "logits_shape": tuple(out.logits_per_ecg.shape),
                "grads": grads,
            },
            result_path,
        )
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_loss_and_gradients_match_single_process(tmp_path: Path):
    result_path = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(result_path)), nprocs=WORLD, join=True)
    distributed = torch.load(result_path)

    model, ecg, ids, mask = _model_and_batch()
    out = model(ecg, ids, mask)
    out.loss.backward()
    one_positive = contrastive_loss(out.ecg_embeds, out.text_embeds, model.clamped_logit_scale())[0]
    assert not torch.isclose(one_positive, out.contrastive_loss)  # the repeated captions count as positives
    assert distributed["logits_shape"] == (PER_RANK, WORLD * PER_RANK)
    torch.testing.assert_close(distributed["contrastive_loss"], out.contrastive_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distributed["loss"], out.loss.detach(), rtol=1e-5, atol=1e-6)
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == distributed["grads"].keys()
    for name, grad in grads.items():
        torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _inference_worker(rank: int, store: str, result_path: str) -> None:
    # A short timeout: a collective that rank 1 never joins fails within seconds instead of hanging the test.
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=20)
    )
    torch.set_num_threads(1)
    if rank == 0:
        model, ecg, ids, mask = _model_and_batch()
        with torch.no_grad():
            out = model.eval()(ecg[:PER_RANK], ids[:PER_RANK], mask[:PER_RANK], return_loss=False)
        torch.save({"logits_shape": tuple(out.logits_per_ecg.shape), "loss": out.loss}, result_path)
    # Rank 1 never calls the model: it goes straight to the shutdown barrier (a gloo collective of its own).
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_inference_without_loss_enters_no_collective(tmp_path: Path):
    """Inside a process group, `return_loss=False` must not all-gather: here only rank 0 runs the model."""
    result_path = tmp_path / "rank0.pt"
    mp.spawn(_inference_worker, args=(str(tmp_path / "store"), str(result_path)), nprocs=WORLD, join=True)
    result = torch.load(result_path)
    assert result["logits_shape"] == (PER_RANK, PER_RANK) and result["loss"] is None
