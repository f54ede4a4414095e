"""Generation: one interface, Hugging Face `generate` with KV cache, batched by prompt length."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Rollout:
    prompts: list[str]
    completions: list[str]  # len = len(prompts) * n, grouped by prompt (n consecutive per prompt)
    completion_ids: list[list[int]] = field(default_factory=list)
    n: int = 1


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
             top_p: float = 1.0, stop: list[str] | None = None, batch_size: int = 64) -> Rollout:
    """Sample `n` completions per prompt (greedy when temperature == 0). Prompts are sorted by
    length and left-padded per batch to keep padding small; output order follows the input."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[list[str]] = [[] for _ in prompts]
    ids_out: list[list[list[int]]] = [[] for _ in prompts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=not _starts_with_bos(tokenizer, prompts[idx[0]])).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
            else:
                kwargs.update(do_sample=False)
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            for j, row in enumerate(new.tolist()):
                i = idx[j // n]
                row = _strip_after_eos(row, tokenizer)
                text = tokenizer.decode(row, skip_special_tokens=True)
                if stop:
                    text = _cut_at_stop(text, stop)
                texts[i].append(text)
                ids_out[i].append(row)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return Rollout(prompts=list(prompts), completions=[t for ts in texts for t in ts],
                   completion_ids=[r for rs in ids_out for r in rs], n=n)


def _starts_with_bos(tokenizer, text: str) -> bool:
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)


def _strip_after_eos(row: list[int], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos in row:
        return row[: row.index(eos) + 1]
    return [t for t in row if t != tokenizer.pad_token_id]


def _cut_at_stop(text: str, stop: list[str]) -> str:
    """Keep text up to and including the first stop string (e.g. '</answer>')."""
    cut = len(text)
    for s in stop:
        k = text.find(s)
        if k != -1:
            cut = min(cut, k + len(s))
    return text[:cut]
