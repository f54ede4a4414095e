"""A small trainable reward model: a 3-layer transformer encoder over the policy tokenizer's ids.

For when a second language model is too expensive to use as the reward model. It reads
``prompt ids + [SEP] + response ids`` (SEP = the tokenizer's EOS id), and returns one scalar:

    token embedding (vocab of the policy tokenizer) + learned position embedding
    -> nn.TransformerEncoder (n_layers=3, pre-LayerNorm, GELU, padding masked out of attention)
    -> final LayerNorm -> masked mean over the real tokens -> Linear(d_model, 1)

Trained with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952;
as used for RLHF reward models, arXiv:2203.02155), via `alignlab.losses.bradley_terry`.

    model, metrics = train_encoder_rm(pairs, tokenizer, seed=0)   # pairs: {"prompt","chosen","rejected"}
    scores = model.score(tokenizer, prompts, responses)           # (B,) float tensor, no grad
    model.save("runs/rm"); EncoderRewardModel.load("runs/rm")     # config.json + model.safetensors

Prompts and responses are strings or chat message lists ([{"role", "content"}, ...]); message lists
are rendered with the tokenizer's chat template (a prompt with add_generation_prompt=True).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..losses import bradley_terry
from ..tasks.preferences import split_pairs

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "alignlab_encoder_rm"


@dataclass
class EncoderRMConfig:
    vocab_size: int
    pad_token_id: int
    sep_token_id: int
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 128
    n_layers: int = 3
    max_len: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        for k in ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "max_len"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class EncoderRewardModel(nn.Module):
    def __init__(self, config: EncoderRMConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.pos = nn.Embedding(c.max_len, c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the same (dense) code path in train and eval mode.
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, 1)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, T) with T <= max_len -> scores (B,).
        Padding never changes a score (masked in attention and in the pooling); a row with no real
        token scores head(mean of nothing = 0), i.e. the head's bias."""
        B, T = input_ids.shape
        if T > self.config.max_len:
            raise ValueError(f"sequence length {T} exceeds the reward model's max_len={self.config.max_len}")
        mask = attention_mask.bool()                                                 # (B, T)
        x = self.embed(input_ids) + self.pos(torch.arange(T, device=input_ids.device))[None]  # (B, T, D)
        # An all-padding row would make attention softmax over nothing (nan): let it attend to its
        # padding instead; the pooling below still ignores every padded position.
        key_pad = ~mask & mask.any(dim=1, keepdim=True)
        h = self.norm(self.encoder(x, src_key_padding_mask=key_pad))                 # (B, T, D)
        m = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)                            # (B, D)
        return self.head(pooled).squeeze(-1)                                         # (B,)

    @torch.no_grad()
    def score(self, tokenizer, prompts: list, responses: list, batch_size: int = 64) -> torch.Tensor:
        """Scores (B,) for prompt/response pairs, in eval mode, without gradients."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        try:
            for i in range(0, len(prompts), batch_size):
                ids = [encode_pair(tokenizer, p, r, self.config.max_len)
                       for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
                input_ids, attention_mask = pad_batch(ids, self.config.pad_token_id)
                out.append(self(input_ids.to(dev), attention_mask.to(dev)).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """A plain folder: config.json (model_type + EncoderRMConfig fields) and model.safetensors.
        Written to a temporary folder next to out_dir, then renamed into place."""
        from safetensors.torch import save_file

        from alignlab.atomic import atomic_dir

        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps({"model_type": MODEL_TYPE, **asdict(self.config)}, indent=1))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp / WEIGHTS_NAME))
        return out

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "EncoderRewardModel":
        from safetensors.torch import load_file

        d = Path(model_dir)
        cfg_path = d / CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{model_dir}: no {CONFIG_NAME}; not an encoder reward model folder")
        raw = json.loads(cfg_path.read_text())
        if raw.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{cfg_path}: model_type is not {MODEL_TYPE!r}; not an encoder reward model")
        model = cls(EncoderRMConfig(**raw))
        model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return model.to(device).eval()


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------


def _as_text(x, tokenizer, is_prompt: bool) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(x, tokenize=False, add_generation_prompt=is_prompt)
        return "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in x)
    raise TypeError(f"expected a string or a list of chat messages, got {type(x).__name__}")


def encode_pair(tokenizer, prompt, response, max_len: int) -> list[int]:
    """prompt ids + [EOS as separator] + response ids, at most max_len ids.

    When too long, the prompt keeps its last tokens (at most max_len // 2 of them when the
    response needs the room) and the response keeps its first tokens."""
    p = tokenizer.encode(_as_text(prompt, tokenizer, True), add_special_tokens=False)
    r = tokenizer.encode(_as_text(response, tokenizer, False), add_special_tokens=False)
    sep = tokenizer.eos_token_id
    if sep is None:
        raise ValueError("the tokenizer has no eos_token_id (used as the prompt/response separator)")
    room = max_len - 1
    if len(p) + len(r) > room:
        keep_p = min(len(p), max(room // 2, room - len(r)))
        p = p[len(p) - keep_p:]
        r = r[: room - keep_p]
    return p + [sep] + r


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest -> (input_ids, attention_mask), both (B, T) long."""
    T = max((len(s) for s in seqs), default=1) or 1
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Fraction of pairs with r_chosen > r_rejected; a tie counts one half (chance = 0.5)."""
    if chosen.numel() == 0:
        return float("nan")
    return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean().item()


def _encode_pairs(pairs, tokenizer, max_len):
    out = []
    for i, ex in enumerate(pairs):
        for k in ("prompt", "chosen", "rejected"):
            if k not in ex:
                raise ValueError(f"preference pair {i} ({ex.get('id', 'no id')}) has no '{k}'")
        out.append((encode_pair(tokenizer, ex["prompt"], ex["chosen"], max_len),
                    encode_pair(tokenizer, ex["prompt"], ex["rejected"], max_len)))
    return out


def _pair_batch(enc, idx, pad_id):
    ids, mask = pad_batch([enc[i][0] for i in idx] + [enc[i][1] for i in idx], pad_id)
    return ids, mask, len(idx)


@torch.no_grad()
def evaluate_pairs(model: EncoderRewardModel, enc, batch_size: int = 128, center_coef: float = 0.0) -> dict:
    """Held-out metrics on encoded pairs: accuracy (ties = 1/2), Bradley-Terry loss, mean margin."""
    was = model.training
    model.eval()
    rc, rr = [], []
    for s in range(0, len(enc), batch_size):
        ids, mask, n = _pair_batch(enc, range(s, min(s + batch_size, len(enc))), model.config.pad_token_id)
        r = model(ids, mask)
        rc.append(r[:n]), rr.append(r[n:])
    model.train(was)
    if not rc:
        return {"accuracy": float("nan"), "loss": float("nan"), "margin": float("nan"), "n": 0}
    rc, rr = torch.cat(rc), torch.cat(rr)
    loss, stats = bradley_terry(rc, rr, center_coef=center_coef)
    return {"accuracy": pairwise_accuracy(rc, rr), "loss": loss.item(), "margin": stats["margin"].item(),
            "n": len(enc), "chosen": rc, "rejected": rr}


def train_encoder_rm(pairs: list[dict], tokenizer, *, eval_pairs: list[dict] | None = None,
                     eval_fraction: float = 0.2, epochs: int = 20, lr: float = 1e-3, batch_size: int = 32,
                     weight_decay: float = 0.01, warmup_frac: float = 0.1, grad_clip: float = 1.0,
                     center_coef: float = 0.0, seed: int = 0, d_model: int = 64, n_heads: int = 4, d_ff: int = 128,
                     n_layers: int = 3, max_len: int = 128, dropout: float = 0.0,
                     device: str | torch.device = "cpu") -> tuple[EncoderRewardModel, dict]:
    """Train an EncoderRewardModel on preference pairs with the Bradley-Terry loss.

    Held-out pairs: eval_pairs when given; otherwise `tasks.preferences.split_pairs(pairs, eval_fraction, seed)`
    (eval_fraction=0 trains on all and reports no held-out metrics). AdamW, linear warmup over
    warmup_frac of the steps then cosine decay to 0, gradient-norm clipping; chosen and rejected
    of a batch go through the model together. Deterministic given seed (model init, split and
    batch order are all seeded; the global torch RNG is restored afterwards).

    -> (model in eval mode, metrics) with metrics keys: train/loss, train/accuracy (last epoch,
    running), eval/accuracy, eval/loss, eval/margin, n_train, n_eval, n_params, steps, time/s, and
    history (one dict per epoch)."""
    t0 = time.perf_counter()
    pairs = list(pairs)
    if eval_pairs is None:
        pairs, eval_pairs = split_pairs(pairs, eval_fraction, seed)
    if not pairs:
        raise ValueError("no training pairs")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad_token_id")
    cfg = EncoderRMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          sep_token_id=tokenizer.eos_token_id, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                          n_layers=n_layers, max_len=max_len, dropout=dropout)
    train_enc = _encode_pairs(pairs, tokenizer, max_len)
    eval_enc = _encode_pairs(eval_pairs, tokenizer, max_len)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncoderRewardModel(cfg).to(device)
        gen = torch.Generator().manual_seed(seed)
        # weight decay on the encoder's and the head's matrices; none on embeddings, biases, norms
        is_embedding = lambda n: n.split(".")[0] in ("embed", "pos")  # noqa: E731
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not is_embedding(n)]
        no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not is_embedding(n))]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        steps_per_epoch = math.ceil(len(train_enc) / batch_size)
        total = max(1, epochs * steps_per_epoch)
        warm = max(1, int(warmup_frac * total))

        def lr_at(step):  # step counts from 1
            if step <= warm:
                return step / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s + 1))
        history, step = [], 0
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(train_enc), generator=gen).tolist()
            loss_sum, correct, seen = 0.0, 0.0, 0
            for s in range(0, len(perm), batch_size):
                ids, mask, n = _pair_batch(train_enc, perm[s:s + batch_size], cfg.pad_token_id)
                r = model(ids.to(device), mask.to(device))                              # (2n,)
                loss, stats = bradley_terry(r[:n], r[n:], center_coef=center_coef)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                sched.step()
                step += 1
                loss_sum += loss.item() * n
                correct += pairwise_accuracy(r[:n].detach(), r[n:].detach()) * n
                seen += n
            row = {"epoch": epoch + 1, "train/loss": loss_sum / seen, "train/accuracy": correct / seen}
            if eval_enc:
                ev = evaluate_pairs(model, eval_enc, center_coef=center_coef)
                row.update({"eval/accuracy": ev["accuracy"], "eval/loss": ev["loss"]})
            history.append(row)
    model.eval()
    ev = evaluate_pairs(model, eval_enc, center_coef=center_coef) if eval_enc else {}
    metrics = {
        "train/loss": history[-1]["train/loss"] if history else float("nan"),
        "train/accuracy": history[-1]["train/accuracy"] if history else float("nan"),
        "eval/accuracy": ev.get("accuracy", float("nan")), "eval/loss": ev.get("loss", float("nan")),
        "eval/margin": ev.get("margin", float("nan")), "n_train": len(train_enc), "n_eval": len(eval_enc),
        "n_params": sum(p.numel() for p in model.parameters()), "steps": step,
        "time/s": time.perf_counter() - t0, "history": history,
    }
    return model, metrics


# ----------------------------------------------------------------------------------------------
# The built-in preference sets: recipes, measured in docs/rewards.md
# ----------------------------------------------------------------------------------------------

# Safety: 81 hand-written pairs; the training part is recombined (tasks.preferences.recombine_pairs,
# k=10) because 65 pairs are too few for a from-scratch encoder on a 512-token BPE vocabulary.
SAFETY_RECIPE = dict(epochs=2, lr=1e-3, batch_size=32, max_len=128)
SAFETY_RECOMBINE_K = 10
# Arithmetic: fresh generated pairs (9,000 from the task's train split: each problem twice, with
# different wrong answers), scored on 400 pairs of problems from the held-out split.
ARITHMETIC_RECIPE = dict(epochs=5, lr=2e-3, batch_size=64, max_len=16)
ARITHMETIC_N_TRAIN, ARITHMETIC_N_EVAL = 9000, 400


def _by_group(pairs, scores_c, scores_r, key) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for p, c, r in zip(pairs, scores_c.tolist(), scores_r.tolist()):
        groups.setdefault(str(p.get(key)), []).append(1.0 if c > r else 0.5 if c == r else 0.0)
    return {f"eval/accuracy/{g}": sum(v) / len(v) for g, v in sorted(groups.items())}


def train_builtin(name: str, tokenizer=None, seed: int = 0, *, train_pairs=None, eval_pairs=None, **overrides):
    """Train the encoder RM on a built-in set with its recipe -> (model, metrics), metrics also
    holding held-out accuracy per group (eval/accuracy/<error kind> for arithmetic,
    eval/accuracy/<rejected_type> for safety).

    name="safety": held-out = split_pairs(all, 0.2, seed) unless train_pairs/eval_pairs are given;
    the training part is recombined. name="arithmetic": arithmetic_pairs from the train and the
    held-out ("eval") splits."""
    from ..tasks import preferences as bp

    if tokenizer is None:
        from ..tiny import build_tokenizer

        tokenizer = build_tokenizer()
    if name == "safety":
        if train_pairs is None or eval_pairs is None:
            train_pairs, eval_pairs = bp.split_pairs(bp.safety_pairs(), 0.2, seed)
        train = bp.recombine_pairs(train_pairs, SAFETY_RECOMBINE_K, seed)
        recipe, key = SAFETY_RECIPE, "rejected_type"
    elif name == "arithmetic":
        train = train_pairs if train_pairs is not None else bp.arithmetic_pairs(ARITHMETIC_N_TRAIN, seed, "train")
        eval_pairs = eval_pairs if eval_pairs is not None else bp.arithmetic_pairs(ARITHMETIC_N_EVAL, seed, "eval")
        recipe, key = ARITHMETIC_RECIPE, "error"
    else:
        raise ValueError(f"unknown built-in preference set {name!r}: safety or arithmetic")
    model, metrics = train_encoder_rm(train, tokenizer, eval_pairs=eval_pairs, seed=seed, **{**recipe, **overrides})
    ev = evaluate_pairs(model, _encode_pairs(eval_pairs, tokenizer, model.config.max_len))
    metrics.update(_by_group(eval_pairs, ev["chosen"], ev["rejected"], key))
    return model, metrics


def cross_validate_safety(tokenizer=None, folds: int = 5, seed: int = 0, **overrides) -> dict:
    """k-fold cross-validation of the safety recipe: every pair of the built-in safety set is held
    out exactly once (folds = a seeded shuffle, taken every k-th), each fold's model trained with
    train_builtin("safety"). -> {"accuracy" (over all pairs), "fold_accuracy": [...],
    "accuracy/<rejected_type>", "n", "time_per_model_s"}."""
    import random

    from ..tasks import preferences as bp

    if tokenizer is None:
        from ..tiny import build_tokenizer

        tokenizer = build_tokenizer()
    pairs = bp.safety_pairs()
    order = list(range(len(pairs)))
    random.Random(f"cv-{seed}").shuffle(order)
    hits: dict[str, list[float]] = {}
    fold_acc, times = [], []
    for f in range(folds):
        held = set(order[f::folds])
        tr = [p for i, p in enumerate(pairs) if i not in held]
        ev = [p for i, p in enumerate(pairs) if i in held]
        model, m = train_builtin("safety", tokenizer, seed, train_pairs=tr, eval_pairs=ev, **overrides)
        res = evaluate_pairs(model, _encode_pairs(ev, tokenizer, model.config.max_len))
        for p, c, r in zip(ev, res["chosen"].tolist(), res["rejected"].tolist()):
            v = 1.0 if c > r else 0.5 if c == r else 0.0
            hits.setdefault("all", []).append(v)
            hits.setdefault(p["rejected_type"], []).append(v)
        fold_acc.append(m["eval/accuracy"])
        times.append(m["time/s"])
    out = {"accuracy": sum(hits["all"]) / len(hits["all"]), "fold_accuracy": fold_acc, "n": len(pairs),
           "time_per_model_s": sum(times) / len(times)}
    out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(hits.items()) if k != "all"})
    out.update({f"n/{k}": len(v) for k, v in sorted(hits.items()) if k != "all"})
    return out


def _bench(argv=None) -> None:
    """python -m alignlab.rewards.encoder_rm [--folds 5] [--seed 0] [--threads N]: held-out
    pairwise accuracy of the encoder RM on both built-in sets (safety: k-fold cross-validation,
    every pair held out once; arithmetic: pairs from the task's held-out split), with time per model."""
    import argparse

    from ..tiny import build_tokenizer

    ap = argparse.ArgumentParser(prog="python -m alignlab.rewards.encoder_rm")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), seed {args.seed}")
    cv = cross_validate_safety(tok, args.folds, args.seed)
    groups = ", ".join(f"{k.split('/')[1]} {v:.2f} (n={cv['n/' + k.split('/')[1]]})"
                       for k, v in cv.items() if k.startswith("accuracy/"))
    print(f"safety {args.folds}-fold held-out pairwise accuracy: {cv['accuracy']:.3f} over {cv['n']} pairs "
          f"(folds: {', '.join(f'{a:.2f}' for a in cv['fold_accuracy'])}); {groups}; "
          f"{cv['time_per_model_s']:.1f} s per model")
    _, m = train_builtin("arithmetic", tok, args.seed)
    kinds = ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in m.items() if k.startswith("eval/accuracy/"))
    print(f"arithmetic held-out pairwise accuracy: {m['eval/accuracy']:.3f} on {m['n_eval']} pairs "
          f"(train {m['n_train']} pairs, {m['steps']} steps, {m['time/s']:.1f} s); by error kind: {kinds}")


if __name__ == "__main__":
    _bench()
