"""The parts of a training step that several loops share: moving a batch to the device, the
micro-batch's log-prob forward under autocast, and SFT's accumulated micro-step (forward, masked
log-probs, loss, backward with a normaliser fixed for the whole optimizer step). Loops import these
from here, never from each other. Arguments run (model, batch, device, precision) everywhere."""
from __future__ import annotations

import torch

from . import data, losses, models
from .logprobs import get_response_log_probs


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def make_batch(items: list[data.Encoded], pad_id: int, packing_len: int | None = None) -> dict:
    if packing_len:
        return data.collate_packed(items, pad_id, packing_len)
    return data.collate(items, pad_id)


def micro_logps(model, batch: dict, device: torch.device, prec: models.Precision) -> torch.Tensor:
    """(B, T) log-probs of a batch's labels under autocast; the model's gradients flow if enabled."""
    with prec.autocast_ctx(device):
        return get_response_log_probs(
            model, batch["input_ids"], batch["labels"],
            attention_mask=batch.get("attention_mask"), position_ids=batch.get("position_ids"),
        )["log_probs"]  # (B, T)


def accumulate_step(model, items: list[data.Encoded], pad_id: int, device, prec, *, micro_batch_seqs: int,
                    normalizer: str = "tokens", bucket: bool = True, packing_len: int | None = None, scaler=None,
                    max_tokens: int | None = None, step_items: list[data.Encoded] | None = None):
    """Forward/backward every micro-batch of one optimizer step; grads accumulate in `.grad`.
    The normaliser (the step's response tokens or sequences) is fixed before the first micro-batch.
    `step_items`: the whole step's examples when `items` is one data-parallel rank's share of them
    (the normaliser counts the whole step). Returns (this share's loss, tokens processed). SFT and
    expert iteration both step with it."""
    whole = items if step_items is None else step_items
    n_tokens = sum(e.n_response for e in whole)
    step_loss, n_seen = 0.0, 0
    for mb in data.micro_batches(items, micro_batch_seqs, bucket, max_tokens, packed=packing_len is not None):
        batch = to_device(make_batch(mb, pad_id, packing_len), device)
        logps = micro_logps(model, batch, device, prec)
        loss, _ = losses.sft_nll(logps, batch["response_mask"], normalizer, n_tokens, len(whole))
        (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.item()
        n_seen += batch["input_ids"].numel()
    return step_loss, n_seen
