"""Peak memory and time of chunked vs naive token log-probs for a large-vocabulary LM head.

    python bench/logprobs_memory.py                       # 262,144-token vocabulary (Gemma-3), CPU
    python bench/logprobs_memory.py --device cuda --batch 8 --seq 1024

Baseline ("naive"): `log_softmax(model(ids).logits.float()).gather(labels)`, the obvious way.
alignlab: `get_response_log_probs`, LM head applied ~256 MiB of logits at a time (checkpointed
in backward). Each variant runs in a fresh process; on CPU "peak" is the rise in peak RSS over the
process's RSS just before the call, on CUDA `torch.cuda.max_memory_allocated` over the baseline.
Both modes are measured: no-grad (reference / old log-probs) and train (forward + backward).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time, psutil, torch
from transformers import AutoModelForCausalLM
from alignlab.tiny import tiny_config
from alignlab.logprobs import get_response_log_probs, naive_response_log_probs
a = json.loads(sys.argv[1])
torch.manual_seed(0)
cfg = tiny_config("gemma3_text", vocab_size=a["vocab"], hidden_size=a["hidden"], intermediate_size=2 * a["hidden"],
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=a["hidden"] // 4,
                  max_position_embeddings=max(512, a["seq"]))
dev = torch.device(a["device"])
model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).to(dev)
ids = torch.randint(0, a["vocab"], (a["batch"], a["seq"] + 1), device=dev)
x, y = ids[:, :-1], ids[:, 1:]
def run():
    if a["variant"] == "naive":
        lp = naive_response_log_probs(model, x, y)
    else:
        lp = get_response_log_probs(model, x, y)["log_probs"]
    if a["mode"] == "train":
        lp.sum().backward()
    return lp.detach()
ctx = torch.no_grad() if a["mode"] == "no_grad" else torch.enable_grad()
with ctx:
    run()  # warm-up (allocator, kernels); peak is measured on the second call
    model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    t = time.perf_counter(); lp = run()
    if dev.type == "cuda":
        torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    dt = time.perf_counter() - t
torch.save(lp.cpu(), a["out"])
print(json.dumps({"peak_gib": peak / 2**30, "seconds": dt}))
"""


def measure(args, variant: str, mode: str, out: str) -> dict:
    spec = dict(vocab=args.vocab, hidden=args.hidden, batch=args.batch, seq=args.seq, device=args.device,
                variant=variant, mode=mode, out=out)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}/{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=262_144)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch
    from rich.console import Console
    from rich.table import Table

    tokens = args.batch * args.seq
    table = Table(title=f"token log-probs, vocab {args.vocab:,}, batch {args.batch} x seq {args.seq} "
                        f"({tokens:,} tokens; full fp32 logits = {tokens * args.vocab * 4 / 2**30:.2f} GiB), {args.device}")
    for col in ("mode", "naive peak", "alignlab peak", "memory", "naive s", "alignlab s", "time", "max |Δlogp|"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("no_grad", "train"):
            r = {v: measure(args, v, mode, os.path.join(tmp, f"{v}-{mode}.pt")) for v in ("naive", "alignlab")}
            diff = (torch.load(os.path.join(tmp, f"naive-{mode}.pt")) - torch.load(os.path.join(tmp, f"alignlab-{mode}.pt"))).abs().max().item()
            n, c = r["naive"], r["alignlab"]
            table.add_row(mode, f"{n['peak_gib']:.2f} GiB", f"{c['peak_gib']:.2f} GiB",
                          f"{n['peak_gib'] / max(c['peak_gib'], 1e-9):.1f}x less", f"{n['seconds']:.2f}",
                          f"{c['seconds']:.2f}", f"{c['seconds'] / n['seconds']:.2f}x", f"{diff:.1e}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
