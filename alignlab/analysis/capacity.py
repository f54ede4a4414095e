"""`alignlab analyze capacity`: memorisation capacity in bits per parameter (Morris et al., arXiv 2505.24832).

Protocol (research note §5), at small scale: N sequences of S tokens drawn i.i.d. uniform from a
vocabulary of V, so nothing can be generalised. The reference θ is the uniform distribution, so each
sequence has S_pred·log₂V bits (S_pred = S − 1: the first token is not predicted). A model θ̂ trained
on the set memorises, per sequence, mem(x) = max(0, S_pred·log₂V − NLL₂_θ̂(x)) bits (clipped, so that
sequences it fits worse than chance cannot cancel others); the set's total is Σ mem(x). Models of
several sizes are trained (AdamW, fp32, no dropout, full batch, cosine schedule) on growing N; the
capacity C(P) is the largest total over N and α = C / P bits per parameter (P counts every trainable
parameter once, tied embeddings once; also reported without the embedding).

`--model M --members F --heldout F`: the membership gap of a fine-tuned model, mean NLL in bits per
token on held-out text minus that on its training text (> 0: it fits what it saw better).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from . import common as C


def memorised_bits(nll_bits: torch.Tensor, n_pred: int, vocab: int) -> float:
    """Σ_x max(0, n_pred·log₂V − NLL₂(x)); nll_bits (N,) per sequence, in bits."""
    return float((n_pred * math.log2(vocab) - nll_bits.double()).clamp(min=0).sum())


@torch.no_grad()
def sequence_nll_bits(model, ids: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N,) −log₂ p(x_1..x_{S-1} | x_0) per sequence, in eval mode (no dropout)."""
    model.eval()
    out = []
    for i in range(0, ids.shape[0], batch):
        x = ids[i:i + batch]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()  # (B, S-1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        out.append(nll.view(x.shape[0], -1).sum(-1) / math.log(2))
    return torch.cat(out)


def random_sequences(n: int, seq_len: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq_len), generator=g)


def build_model(hidden: int, layers: int, vocab: int, seq_len: int, arch: str = "gemma3_text", seed: int = 0):
    """A tiny real architecture sized for the experiment (heads of 16 dims, MLP 2x hidden)."""
    from transformers import AutoModelForCausalLM

    from ..tiny import tiny_config

    heads = max(1, hidden // 16)
    cfg = tiny_config(arch, vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, head_dim=16,
                      max_position_embeddings=max(seq_len, 32))
    cfg.pad_token_id = cfg.bos_token_id = cfg.eos_token_id = 0  # random tokens: no special ids needed
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def count_params(model) -> tuple[int, int]:
    """(all trainable parameters, tied counted once; the same without the input embedding)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total, total - model.get_input_embeddings().weight.numel()


def train(model, ids: torch.Tensor, steps: int, lr: float = 1e-3, batch: int = 256, seed: int = 0,
          log_every: int = 0) -> list[float]:
    """AdamW (wd 0), 5% warmup then cosine to 0, fp32; returns the training loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step in range(steps):
        idx = torch.randperm(ids.shape[0], generator=g)[:batch]
        x = ids[idx]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
    return losses


def run_grid(hiddens: list[int], layers: int, n_seqs: list[int], seq_len: int, vocab: int, steps: int, lr: float,
             arch: str, seed: int = 0, log=print) -> dict:
    runs, caps = [], []
    bits_per_seq = (seq_len - 1) * math.log2(vocab)
    for h in hiddens:
        best = None
        for n in n_seqs:
            ids = random_sequences(n, seq_len, vocab, seed)
            model = build_model(h, layers, vocab, seq_len, arch, seed)
            P, P_ne = count_params(model)
            losses = train(model, ids, steps, lr, seed=seed)
            mem = memorised_bits(sequence_nll_bits(model, ids), seq_len - 1, vocab)
            row = {"hidden": h, "params": P, "params_no_embed": P_ne, "n_seqs": n, "dataset_bits": n * bits_per_seq,
                   "memorised_bits": mem, "frac_of_dataset": mem / (n * bits_per_seq), "bits_per_param": mem / P,
                   "final_loss": losses[-1], "steps": steps}
            runs.append(row)
            log(f"hidden {h:>4} P {P:>8} N {n:>6}: {mem:10.0f} of {n * bits_per_seq:10.0f} bits "
                f"({row['frac_of_dataset']:.1%}), {mem / P:.3f} bits/param, loss {losses[-1]:.3f}")
            if best is None or mem > best["memorised_bits"]:
                best = row
        caps.append({"hidden": h, "params": best["params"], "params_no_embed": best["params_no_embed"],
                     "capacity_bits": best["memorised_bits"], "alpha": best["memorised_bits"] / best["params"],
                     "alpha_no_embed": best["memorised_bits"] / max(1, best["params_no_embed"]),
                     "at_n_seqs": best["n_seqs"], "saturated": best["n_seqs"] != max(n_seqs)})
    return {"protocol": {"vocab": vocab, "seq_len": seq_len, "layers": layers, "steps": steps, "lr": lr, "arch": arch,
                         "precision": "fp32", "bits_per_sequence": bits_per_seq},
            "runs": runs, "capacity": caps}


def grid_figure(res: dict):
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for cap in res["capacity"]:
        rows = [r for r in res["runs"] if r["hidden"] == cap["hidden"]]
        ax.plot([r["dataset_bits"] for r in rows], [r["memorised_bits"] for r in rows], marker="o",
                label=f"P={cap['params']:,} (α={cap['alpha']:.2f})")
    top = max(r["dataset_bits"] for r in res["runs"])
    ax.plot([0, top], [0, top], "k:", lw=0.8, label="all memorised")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("dataset entropy H (bits)"), ax.set_ylabel("memorised bits")
    ax.set_title("memorisation saturates at capacity", fontsize=9), ax.legend(fontsize=7)
    return fig


def membership_gap(path: str, members: list[str], heldout: list[str], max_tokens: int = 256) -> dict:
    """Mean NLL in bits per predicted token on held-out text minus on training text."""
    model, tok = C.load_model(path), C.load_tokenizer(path)

    def bits_per_token(texts):
        nll, n = 0.0, 0
        for t in texts:
            ids = tok(t, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
            if ids.shape[1] < 2:
                continue
            nll += float(sequence_nll_bits(model, ids)[0])
            n += ids.shape[1] - 1
        if not n:
            raise C.AnalysisError("no text of at least 2 tokens to score")
        return nll / n

    m, h = bits_per_token(members), bits_per_token(heldout)
    return {"model": path, "members_bits_per_token": m, "heldout_bits_per_token": h, "gap_bits_per_token": h - m,
            "n_members": len(members), "n_heldout": len(heldout)}


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x]
    except ValueError:
        raise C.AnalysisError(f"{s!r}: expected a comma-separated list of integers") from None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze capacity", description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="32,64", help="model widths to train (comma list)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--n-seqs", default="16,64,256,1024", help="dataset sizes N (comma list)")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--arch", default="gemma3_text", choices=("gemma3_text", "qwen2", "qwen3", "llama"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", help="membership gap of this fine-tuned model instead (with --members, --heldout)")
    ap.add_argument("--members", help="JSONL/text the model was trained on")
    ap.add_argument("--heldout", help="JSONL/text of the same distribution it never saw")
    ap.add_argument("--max-texts", type=int, default=200)
    ap.add_argument("--out", help="output folder (default runs/analysis/capacity)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else C.default_out("capacity", args.model)
    if args.model:
        if not (args.members and args.heldout):
            raise C.AnalysisError("--model needs --members FILE and --heldout FILE (its training text and unseen text)")
        res = membership_gap(args.model, C.read_prompts(args.members, args.max_texts),
                             C.read_prompts(args.heldout, args.max_texts))
        C.write_json(out, "membership.json", res)
        print(f"members {res['members_bits_per_token']:.3f} bits/token, held-out {res['heldout_bits_per_token']:.3f}: "
              f"gap {res['gap_bits_per_token']:+.3f} bits/token; wrote {out}/membership.json")
        return 0
    if args.seq_len < 2 or args.vocab < 2:
        raise C.AnalysisError("--seq-len and --vocab must be at least 2")
    res = run_grid(_ints(args.hidden), args.layers, _ints(args.n_seqs), args.seq_len, args.vocab, args.steps, args.lr,
                   args.arch, args.seed)
    C.write_json(out, "capacity.json", res)
    C.figure(out, "capacity.png", grid_figure(res))
    for c in res["capacity"]:
        flag = "" if c["saturated"] else " (not saturated: the largest N was still fitted; α is a lower bound)"
        print(f"P={c['params']:,}: capacity {c['capacity_bits']:.0f} bits, α = {c['alpha']:.3f} bits/param "
              f"({c['alpha_no_embed']:.3f} without embeddings){flag}")
    print(f"wrote {out}/capacity.json and capacity.png")
    return 0
