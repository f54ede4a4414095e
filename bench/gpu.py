"""The GPU benchmark: alignlab vs TRL vs TRL + Liger on two real model shapes, one command.

    bash bench/gpu_wheels.sh                          # once, on a machine with internet: .whl/
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
        && export PYTHONPATH=/tmp/site:$PWD           # on the GPU machine (no network needed)
    python3 bench/gpu.py --check                      # versions and what is missing (seconds)
    python3 bench/gpu.py --json gpu.json              # everything, < 8 minutes on one H200
    python3 bench/gpu.py --only sft_full,grpo         # some jobs
    python3 bench/gpu.py --smoke                      # tiny sizes, CPU: checks the script (3-6 min on 2 cores)

Models: random-init, built offline with alignlab's tiny factory (`alignlab.tiny.make_tiny`, the
code behind `alignlab make-tiny`) at the sizes of alignlab/assets/model_configs.json:
- Gemma-3-1B shape (gemma3_text, vocab 262144, 26 layers, hidden 1152, 4 heads / 1 KV head,
  head_dim 256, sliding window 512, tied embeddings) for SFT;
- Qwen2.5-0.5B shape (qwen2, vocab 151936, 24 layers, hidden 896, 14 / 2 heads) for DPO and GRPO.
The factory's tokenizer has 512 tokens; the model's vocabulary is the real one. Training data are
random digit strings (one token per digit), so every id is a valid tokenizer id and every sequence
has exactly the stated length on both sides (no padding). Sampled ids above 511 decode to "".

Jobs (`--only`), each run in a fresh process, same model, data and batch for every side:
  sft_full   full SFT, Gemma-1B shape, seq 1024, batch 8, bf16 autocast over fp32 weights; alignlab
             with its torch modules, with model.kernels=liger (Liger's RMSNorm/GeGLU/RoPE) and with
             model.compile=true (the decoder under torch.compile; its compilation is in the warm-up steps)
  sft_lora   LoRA r=16 (alpha 32, no dropout, q,k,v,o,gate,up,down), same data, bf16 base
  qlora      alignlab QLoRA on the same: peak memory vs alignlab LoRA, and `alignlab plan`'s
             prediction for both (needs CUDA and bitsandbytes)
  dpo        sigmoid DPO, 0.5B shape, 8 pairs of 512-token sequences; alignlab with a precomputed
             and a live (frozen copy) reference, and with model.compile=true; TRL DPOTrainer with
             precompute_ref_log_probs
  grpo       GRPO, 0.5B shape, 8 prompts x 8 samples, 128 new tokens, HF backend; alignlab with
             sampling.hf_decode = generate, static and cuda_graphs; TRL GRPOTrainer (no Liger run:
             its kernels change TRL's loss, not the rollout that dominates the step)
TRL runs with gradient checkpointing off (its default is on; alignlab's is off), fp32 weights +
bf16 autocast for full training, a bf16 base for LoRA (as alignlab), and its own default
optimizer settings otherwise. "TRL + Liger" is the same run with `use_liger_kernel=True`.

Numbers: step time is the mean interval between consecutive optimizer-step ends (CUDA
synchronised) after `--warmup` steps, so it includes each side's per-step overhead and excludes
loading, reference precomputation, evaluation and saving (alignlab's final checkpoint is not
written). tokens/s = tokens per step (batch x seq) / step time. MFU = model FLOPs per step /
step time / the GPU's dense bf16 peak, with model FLOPs per token = k x N + 12 x sum over layers of
(heads x head_dim x attended context) (PaLM, arXiv:2204.02311 app. B; context = seq, or the
sliding window for Gemma's local layers; causal masking not discounted); k = 6 for full training,
4 for LoRA/QLoRA (no weight gradients for the frozen base); N = all parameters, the tied
embedding counted once (it is the LM-head matmul). DPO counts the policy's training FLOPs only.
Peak memory is torch.cuda.max_memory_allocated of the process (peak RSS on CPU). Ratios: speed =
baseline step time / this step time (> 1: faster), memory = this peak / baseline peak.
A run that cannot run or fails is reported as "not run: <reason>"; the others go on.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import run_child

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("sft_full", "sft_lora", "grpo", "dpo", "qlora")  # the order they run in: most wanted first
DEFAULT_PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (NVIDIA datasheet; 1979 is with 2:4 sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EOS = "<|im_end|>"  # the tiny tokenizer's EOS

# --------------------------------------------------------------------------------------------
# Child processes. Each prints one JSON line last; `finish` turns the step-end marks into times.
# --------------------------------------------------------------------------------------------

PRELUDE = r"""
import json, sys, time, resource, os, torch
a = json.loads(sys.argv[1])
DEV = a["device"]
ENDS = []
def mark():  # the end of an optimizer step
    if DEV == "cuda": torch.cuda.synchronize()
    ENDS.append(time.perf_counter())
def peak_gib():
    if DEV == "cuda": return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
def finish(**extra):
    w = a["warmup"]
    iv = [y - x for x, y in zip(ENDS[w - 1:], ENDS[w:])]
    print(json.dumps({"steps_done": len(ENDS), "step_s": sum(iv) / len(iv) if iv else None, "step_times": iv,
                      "peak_gib": peak_gib(), **extra}))
"""

ALIGNLAB = PRELUDE + r"""
from alignlab import checkpoint, tracking
checkpoint.save = lambda *x, **k: None  # the final checkpoint (12 GB for full 1B) is not what is measured
class Timer:
    def on_step_end(self, ctx, step, row): mark()
def rows_with(key):
    return [r for r in tracking.read_metrics(cfg.run_dir) if key in r]
common = [f"model.path={a['model']}", f"out_dir={a['out']}", f"name={a['name']}", f"model.device={DEV}",
          f"training.precision={a['precision']}", "training.eval_every=0", "training.save_every=0",
          "training.resume=never", "optim.schedule=constant", "optim.warmup_ratio=0", "optim.max_grad_norm=1.0"]
if a["kind"] == "sft":
    from alignlab.config import SFTConfig, load_config
    from alignlab.train import sft
    cfg = load_config(SFTConfig, "sft_tiny", common + [
        f"data.train={a['data']}", "data.eval=null", f"data.max_seq_len={a['seq']}", "data.format=plain",
        f"training.total_steps={a['steps']}", f"training.global_batch_seqs={a['batch']}",
        f"training.micro_batch={a['batch']}", "optim.lr=1e-5"] + a["overrides"])
    sft.main(cfg, hooks=[Timer()])
    own = [r["time/step"] for r in rows_with("time/step")]
elif a["kind"] == "dpo":
    from alignlab.config import DPOConfig, load_config
    from alignlab.train import dpo
    cfg = load_config(DPOConfig, "dpo_tiny", common + [
        f"data.train={a['data']}", "data.eval=null", f"data.max_seq_len={a['seq']}",
        f"training.total_steps={a['steps']}", f"training.global_batch_pairs={a['batch']}",
        f"training.micro_batch={a['batch']}", "optim.lr=5e-7", "dpo.loss=sigmoid", "dpo.beta=0.1"] + a["overrides"])
    dpo.main(cfg, hooks=[Timer()])
    own = [r["time/step"] for r in rows_with("time/step")]
else:
    from alignlab.config import GRPOConfig, load_config
    from alignlab.train import grpo
    cfg = load_config(GRPOConfig, "grpo_tiny", common + [
        f"training.total_steps={a['steps']}", f"rl.prompts_per_step={a['prompts']}", f"rl.group_size={a['group']}",
        f"training.micro_batch={a['prompts'] * a['group']}", "rl.loss_type=grpo_clip", "rl.aggregation=seq_mean",
        f"sampling.max_new_tokens={a['new_tokens']}", "sampling.temperature=1.0", "sampling.top_p=1.0",
        "eval.max_examples=1", "eval.max_new_tokens=1", "optim.lr=1e-6"] + a["overrides"])
    grpo.main(cfg, hooks=[Timer()])
    rows = rows_with("time/rollout")[a["warmup"]:]
    own = [r["time/rollout"] + r["time/score"] + r["time/train"] for r in rows_with("time/rollout")]
    n = max(1, len(rows))
    finish(own_step_s=own[a["warmup"]:], rollout_s=sum(r["time/rollout"] for r in rows) / n,
           train_s=sum(r["time/train"] for r in rows) / n,
           gen_len_mean=sum(r["response/len_mean"] for r in rows) / n)
    sys.exit(0)
finish(own_step_s=own[a["warmup"]:])
"""

TRL_COMMON = PRELUDE + r"""
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
class Timer(TrainerCallback):
    def on_step_end(self, args, state, control, **kw): mark()
tok = AutoTokenizer.from_pretrained(a["model"])
half = a.get("lora", False)  # a LoRA base is stored in bf16, as alignlab does
model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.bfloat16 if half and DEV == "cuda" else torch.float32)
peft_config = None
if a.get("lora"):
    from peft import LoraConfig
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=a["targets"], task_type="CAUSAL_LM")
common = dict(output_dir=a["out"] + "/" + a["name"], max_steps=a["steps"], lr_scheduler_type="constant", warmup_steps=0,
              max_grad_norm=1.0, gradient_checkpointing=False, bf16=a["precision"] == "bf16", fp16=False,
              use_liger_kernel=a["liger"], logging_steps=1, report_to=[], save_strategy="no", use_cpu=DEV == "cpu",
              seed=0, dataloader_num_workers=0, disable_tqdm=True)
"""

TRL_SFT = TRL_COMMON + r"""
from trl import SFTConfig, SFTTrainer
rows = [json.loads(l) for l in open(a["data"])]
ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["response"] + a["eos"]} for r in rows])
args = SFTConfig(**common, per_device_train_batch_size=a["batch"], learning_rate=1e-5, max_length=a["seq"], packing=False)
trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config, callbacks=[Timer()])
lens = sorted({len(x) for x in trainer.train_dataset["input_ids"]})
trainer.train()
finish(seq_lens=lens)
"""

TRL_DPO = TRL_COMMON + r"""
from trl import DPOConfig, DPOTrainer
rows = [json.loads(l) for l in open(a["data"])]
ds = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"] + a["eos"], "rejected": r["rejected"] + a["eos"]}
                        for r in rows])
args = DPOConfig(**common, per_device_train_batch_size=a["batch"], learning_rate=5e-7, max_length=a["seq"], beta=0.1,
                 loss_type=["sigmoid"], precompute_ref_log_probs=True, disable_dropout=True)
trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
trainer.train()
finish()
"""

TRL_GRPO = TRL_COMMON + r"""
from trl import GRPOConfig, GRPOTrainer
from alignlab.config import TaskConfig
from alignlab import tasks
from alignlab.tasks.arithmetic import arithmetic_reward
task = tasks.load(TaskConfig(name="arithmetic"), seed=0)  # alignlab's prompts, in alignlab's order
rows = [ex for step in range(a["steps"]) for ex in task.sample_train(a["prompts"], step)]
ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
def reward(completions, answer, **kw):
    return [arithmetic_reward(c.replace(a["eos"], ""), g)["reward"] for c, g in zip(completions, answer)]
GEN = []
generate = model.generate
def timed_generate(*x, **k):  # TRL calls the (unwrapped) model's generate once per step
    if DEV == "cuda": torch.cuda.synchronize()
    t = time.perf_counter(); out = generate(*x, **k)
    if DEV == "cuda": torch.cuda.synchronize()
    GEN.append(time.perf_counter() - t); return out
model.generate = timed_generate
tok.padding_side = "left"
args = GRPOConfig(**common, per_device_train_batch_size=a["prompts"] * a["group"], num_generations=a["group"],
                  max_completion_length=a["new_tokens"], learning_rate=1e-6, beta=0.0, loss_type="grpo",
                  scale_rewards="group", num_iterations=1, temperature=1.0, top_p=1.0, top_k=0, disable_dropout=True,
                  shuffle_dataset=False)
trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
trainer.train()
lens = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h][a["warmup"]:]
g = GEN[a["warmup"]:]
finish(rollout_s=sum(g) / len(g) if g else None, gen_len_mean=sum(lens) / len(lens) if lens else None)
"""

PROBE = r"""
import json, platform, sys, importlib
out = {"python": platform.python_version()}
for m in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "pydantic", "pydantic_core", "math_verify",
          "liger_kernel", "bitsandbytes", "triton", "numpy", "pandas", "pyarrow", "huggingface_hub", "rich", "yaml"):
    try:
        mod = importlib.import_module(m)
        out[m] = getattr(mod, "__version__", "present")
    except Exception as e:
        out[m] = None
        out.setdefault("import_errors", {})[m] = f"{type(e).__name__}: {e}"[:300]
import torch
out["cuda"] = torch.cuda.is_available()
if out["cuda"]:
    out["gpu"] = torch.cuda.get_device_name(0)
    out["cuda_version"] = torch.version.cuda
    out["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
print(json.dumps(out))
"""

BUILD = r"""
import json, sys
a = json.loads(sys.argv[1])
from pathlib import Path
from alignlab.tiny import make_tiny
if not (Path(a["out"]) / "config.json").exists():
    make_tiny(a["arch"], a["out"], seed=0, **a["sizes"])
from transformers import AutoConfig, AutoTokenizer
cfg = AutoConfig.from_pretrained(a["out"])
tok = AutoTokenizer.from_pretrained(a["out"])
import torch
from transformers import AutoModelForCausalLM
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(cfg)
n = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
counts = [len(tok(p)["input_ids"]) + len(tok(r + tok.eos_token, add_special_tokens=False)["input_ids"]) for p, r in a["check"]]
print(json.dumps({"n_params": n, "tokenizer_len": len(tok), "eos": tok.eos_token, "layer_types": getattr(cfg, "layer_types", None),
                  "sliding_window": getattr(cfg, "sliding_window", None), "check_tokens": counts}))
"""

PLAN = [sys.executable, "-m", "alignlab.cli", "plan"]


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------

def shapes(smoke: bool) -> dict:
    """The two model shapes, read from alignlab's catalogue of real configs (smoke: tiny ones)."""
    if smoke:
        return {"gemma": dict(arch="gemma3_text", vocab_size=4096, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                              sliding_window=32, max_position_embeddings=1024),
                "qwen": dict(arch="qwen2", vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)}
    cat = json.loads((ROOT / "alignlab/assets/model_configs.json").read_text())
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings")
    g, q = cat["google/gemma-3-1b-it"], cat["Qwen/Qwen2.5-0.5B"]
    return {"gemma": dict(arch=g["model_type"], **{k: g[k] for k in keys}, sliding_window=g["sliding_window"]),
            "qwen": dict(arch=q["model_type"], **{k: q[k] for k in keys})}


def settings(smoke: bool) -> dict:
    if smoke:
        return dict(sft_seq=128, sft_batch=2, dpo_seq=64, dpo_pairs=2, prompts=2, group=2, new_tokens=8, warmup=1, timed=2)
    return dict(sft_seq=1024, sft_batch=8, dpo_seq=512, dpo_pairs=8, prompts=8, group=8, new_tokens=128, warmup=2, timed=4)


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def write_data(work: Path, s: dict, n_rows: int) -> dict:
    """SFT rows and DPO pairs of exactly sft_seq / dpo_seq tokens (prompt + response + EOS)."""
    rng = random.Random(0)
    sft_p, dpo_p = 32 if s["sft_seq"] >= 256 else 8, 64 if s["dpo_seq"] >= 256 else 8
    sft = [{"prompt": digits(rng, sft_p), "response": digits(rng, s["sft_seq"] - sft_p - 1)} for _ in range(n_rows)]
    dpo = [{"prompt": digits(rng, dpo_p), "chosen": digits(rng, s["dpo_seq"] - dpo_p - 1),
            "rejected": digits(rng, s["dpo_seq"] - dpo_p - 1)} for _ in range(n_rows)]
    paths = {"sft": work / "sft.jsonl", "dpo": work / "dpo.jsonl"}
    for k, rows in (("sft", sft), ("dpo", dpo)):
        paths[k].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"paths": paths, "check_sft": [sft[0]["prompt"], sft[0]["response"]],
            "check_dpo": [dpo[0]["prompt"], dpo[0]["chosen"]]}


def flops_per_token(shape: dict, seq: int, k: int, n_params: int, layer_types) -> float:
    """k x N + attention: 12 x heads x head_dim x context per layer (context = window on local layers)."""
    hd = shape["num_attention_heads"] * shape["head_dim"]
    types = layer_types or ["full_attention"] * shape["num_hidden_layers"]
    win = shape.get("sliding_window") or seq
    ctx = sum(min(seq, win) if t == "sliding_attention" else seq for t in types)
    return k * n_params + 12 * hd * ctx


def peak_tflops(gpu: str | None, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    if not gpu:
        return None, "no GPU"
    cat = json.loads((ROOT / "alignlab/assets/gpus.json").read_text())
    for name, entry in cat.items():
        if name.startswith("_"):
            continue
        names = [name, *entry.get("aliases", [])]
        if any(n.lower().split("-")[0] in gpu.lower() for n in names) and entry.get("bf16_tflops"):
            return float(entry["bf16_tflops"]), f"alignlab/assets/gpus.json {name}"
    for name, v in PEAK_TFLOPS.items():
        if name.lower() in gpu.lower():
            return v, f"bench/gpu.py PEAK_TFLOPS[{name!r}] (NVIDIA datasheet, dense bf16)"
    return DEFAULT_PEAK_TFLOPS, f"unknown GPU {gpu!r}: assumed H100/H200 dense bf16 {DEFAULT_PEAK_TFLOPS:g}"


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, budget_s: float, timeout_s: float):
        self.t0, self.budget, self.timeout = time.time(), budget_s, timeout_s

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def run(self, code: str, spec: dict) -> dict:
        """A child's result, or {"not_run": reason}; never raises."""
        left = self.left()
        if left < 20:
            return {"not_run": f"over the --budget of {self.budget:.0f} s"}
        t = time.time()
        try:
            out = run_child(code, spec, timeout=min(self.timeout, left))
        except subprocess.TimeoutExpired:
            return {"not_run": f"timed out after {min(self.timeout, left):.0f} s"}
        except SystemExit as e:  # run_child's failure: the child's stderr
            lines = [ln for ln in str(e.code).strip().splitlines() if ln.strip()]
            err = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "failed")
            return {"not_run": f"failed: {err.strip()[:300]}", "stderr_tail": str(e.code)[-3000:]}
        except Exception as e:  # a malformed last line, say
            return {"not_run": f"failed: {type(e).__name__}: {e}"[:300]}
        out["wall_s"] = round(time.time() - t, 1)
        return out


def have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def baseline_reason(liger: bool, device: str) -> str | None:
    if not have("trl"):
        return "TRL not installed"
    if not have("datasets"):
        return "datasets not installed (TRL needs it)"
    if liger and device != "cuda":
        return "needs CUDA"
    if liger and not have("liger_kernel"):
        return "liger-kernel not installed"
    return None


def liger_reason(device: str) -> str | None:
    if device != "cuda":
        return "needs CUDA"
    return None if have("liger_kernel") else "liger-kernel not installed"


def fmt(x, spec=".3f", none="-"):
    return none if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(JOBS), help=f"comma-separated jobs: {','.join(JOBS)}")
    ap.add_argument("--json", default=None, metavar="OUT", help="write every result and the set-up here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 3 steps, CPU: checks that the script works")
    ap.add_argument("--check", action="store_true", help="print versions and what is missing, then exit")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available; --smoke: cpu)")
    ap.add_argument("--work", default=None, help="models, data and run folders (default /tmp/alignlab-gpu-bench[-smoke])")
    ap.add_argument("--warmup", type=int, default=None, help="steps excluded from timing (default 2; smoke 1; >= 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default 4, GRPO half; smoke 2)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per run before it is killed (default 240)")
    ap.add_argument("--budget", type=float, default=None,
                    help="total seconds; runs not started by then are reported as not run (default 470; smoke 600)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU name)")
    args = ap.parse_args()
    jobs = [j.strip() for j in args.only.split(",") if j.strip()]
    bad = [j for j in jobs if j not in JOBS]
    if bad:
        ap.error(f"unknown job(s) {', '.join(bad)}; choose from {', '.join(JOBS)}")
    # Children import alignlab from this checkout, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    started = time.time()

    env = run_child(PROBE, {})
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("import_errors",) and v is not None))
    for m, e in (env.get("import_errors") or {}).items():
        print(f"  missing {m}: {e}")
    if args.check:
        return
    device = args.device or ("cpu" if args.smoke or not env["cuda"] else "cuda")
    if device == "cuda" and not env["cuda"]:
        raise SystemExit("--device cuda but torch sees no CUDA device")
    if device == "cpu" and not args.smoke:
        print("WARNING: no CUDA; these are CPU numbers at full size and will be slow. Use --smoke to check the script.")
    s = settings(args.smoke)
    warmup = args.warmup if args.warmup is not None else s["warmup"]
    if warmup < 1:
        ap.error("--warmup must be >= 1 (step time is measured between step ends)")
    timed = args.steps or s["timed"]
    grpo_timed = args.steps or max(2, timed // 2)
    grpo_warmup = args.warmup or 1  # every GRPO step is long; the first holds the one-off costs (graph capture)
    precision = "bf16"
    peak, peak_src = peak_tflops(env.get("gpu"), args.peak_tflops) if device == "cuda" else (None, "CPU: no MFU")
    runner = Runner(args.budget or (600 if args.smoke else 470), args.timeout)
    work = Path(args.work or f"/tmp/alignlab-gpu-bench{'-smoke' if args.smoke else ''}")
    work.mkdir(parents=True, exist_ok=True)
    shp = shapes(args.smoke)
    n_rows = max(64, (warmup + timed) * max(s["sft_batch"], s["dpo_pairs"]))
    data = write_data(work, s, n_rows)

    # Build the models this selection needs (cached in --work).
    built = {}
    need = {"gemma"} if {"sft_full", "sft_lora", "qlora"} & set(jobs) else set()
    need |= {"qwen"} if {"dpo", "grpo"} & set(jobs) else set()
    for key in sorted(need):
        sizes = {k: v for k, v in shp[key].items() if k != "arch"}
        t = time.time()
        check = data["check_sft"] if key == "gemma" else data["check_dpo"]
        built[key] = run_child(BUILD, {"arch": shp[key]["arch"], "out": str(work / f"model-{key}"), "sizes": sizes,
                                       "check": [check]}, timeout=900)
        want = s["sft_seq"] if key == "gemma" else s["dpo_seq"]
        got = built[key]["check_tokens"][0]
        if got != want:
            raise SystemExit(f"data check: a {key} row tokenises to {got} tokens, not {want}; fix write_data")
        print(f"model {key}: {shp[key]['arch']}, {built[key]['n_params'] / 1e6:.1f}M parameters, vocab "
              f"{shp[key]['vocab_size']} (tokenizer {built[key]['tokenizer_len']}), built/loaded in {time.time() - t:.0f} s")

    results: dict = {}

    def base_spec(key: str, name: str, steps: int) -> dict:
        return dict(model=str(work / f"model-{key}"), out=str(work / "runs"), name=name, device=device, warmup=warmup,
                    steps=steps, precision=precision, eos=EOS, targets=LORA_TARGETS)

    def report(job: str, name: str, r: dict) -> None:
        results.setdefault(job, {})[name] = r
        if "not_run" in r:
            print(f"[{job}] {name}: not run: {r['not_run']}")
        else:
            extra = f", rollout {r['rollout_s']:.3f} s" if r.get("rollout_s") else ""
            print(f"[{job}] {name}: {fmt(r['step_s'])} s/step{extra}, peak {r['peak_gib']:.2f} GiB ({r['wall_s']} s)")
        sys.stdout.flush()

    shutil.rmtree(work / "runs", ignore_errors=True)
    lora_ov = ["lora.enabled=true", "lora.r=16", "lora.alpha=32", "lora.dropout=0.0"]
    sft_steps, sft_common = warmup + timed, dict(seq=s["sft_seq"], batch=s["sft_batch"], data=str(data["paths"]["sft"]))
    for job in jobs:
        if job in ("sft_full", "sft_lora"):
            lora = job == "sft_lora"
            spec = {**base_spec("gemma", job, sft_steps), **sft_common, "kind": "sft", "lora": lora}
            report(job, "alignlab", runner.run(ALIGNLAB, {**spec, "name": job + "-alignlab",
                                                          "overrides": lora_ov if lora else []}))
            why = liger_reason(device)
            report(job, "alignlab + Liger kernels", {"not_run": why} if why else runner.run(
                ALIGNLAB, {**spec, "name": job + "-alignlab-liger",
                           "overrides": (lora_ov if lora else []) + ["model.kernels=liger"]}))
            report(job, "alignlab + compile", runner.run(ALIGNLAB, {**spec, "name": job + "-alignlab-compile",
                                                                    "overrides": (lora_ov if lora else []) + ["model.compile=true"]}))
            for name, liger in (("TRL", False), ("TRL + Liger", True)):
                why = baseline_reason(liger, device)
                r = {"not_run": why} if why else runner.run(TRL_SFT, {**spec, "name": f"{job}-trl{'-liger' * liger}",
                                                                     "liger": liger})
                report(job, name, r)
        elif job == "qlora":
            spec = {**base_spec("gemma", job, sft_steps), **sft_common, "kind": "sft"}
            why = "needs CUDA" if device != "cuda" else (None if have("bitsandbytes") else "bitsandbytes not installed")
            r = {"not_run": why} if why else runner.run(ALIGNLAB, {**spec, "name": "qlora-alignlab",
                                                                  "overrides": lora_ov + ["lora.qlora=true"]})
            report(job, "alignlab QLoRA", r)
            if not why and "step_s" not in results.get("sft_lora", {}).get("alignlab", {}):  # the LoRA to compare with
                report(job, "alignlab LoRA", runner.run(ALIGNLAB, {**spec, "name": "qlora-alignlab-lora",
                                                                   "overrides": lora_ov}))
            results[job]["plan"] = plan_predictions(work / "model-gemma", s, device == "cuda")
        elif job == "dpo":
            spec = {**base_spec("qwen", job, warmup + timed), "kind": "dpo", "seq": s["dpo_seq"],
                    "batch": s["dpo_pairs"], "data": str(data["paths"]["dpo"])}
            for name, ref in (("alignlab (precomputed ref)", "precomputed"), ("alignlab (live ref)", "copy")):
                report(job, name, runner.run(ALIGNLAB, {**spec, "name": f"dpo-alignlab-{ref}",
                                                        "overrides": [f"dpo.reference={ref}"]}))
            why = liger_reason(device)
            report(job, "alignlab + Liger kernels (precomputed ref)", {"not_run": why} if why else runner.run(
                ALIGNLAB, {**spec, "name": "dpo-alignlab-liger", "overrides": ["dpo.reference=precomputed",
                                                                                "model.kernels=liger"]}))
            report(job, "alignlab + compile (precomputed ref)", runner.run(
                ALIGNLAB, {**spec, "name": "dpo-alignlab-compile", "overrides": ["dpo.reference=precomputed",
                                                                                  "model.compile=true"]}))
            for name, liger in (("TRL", False), ("TRL + Liger", True)):
                why = baseline_reason(liger, device)
                report(job, name, {"not_run": why} if why else runner.run(
                    TRL_DPO, {**spec, "name": f"dpo-trl{'-liger' * liger}", "liger": liger}))
        elif job == "grpo":
            spec = {**base_spec("qwen", job, grpo_warmup + grpo_timed), "warmup": grpo_warmup, "kind": "grpo",
                    "prompts": s["prompts"],
                    "group": s["group"], "new_tokens": s["new_tokens"]}
            for decode in ("generate", "static", "cuda_graphs"):
                name = f"alignlab ({decode})"
                if decode == "cuda_graphs" and device != "cuda":
                    report(job, name, {"not_run": "needs CUDA"})
                    continue
                report(job, name, runner.run(ALIGNLAB, {**spec, "name": f"grpo-alignlab-{decode}",
                                                        "overrides": [f"sampling.hf_decode={decode}"]}))
            for name, liger in (("TRL", False),):  # Liger changes TRL's loss, not its generate(): not run
                why = baseline_reason(liger, device)
                report(job, name, {"not_run": why} if why else runner.run(
                    TRL_GRPO, {**spec, "name": f"grpo-trl{'-liger' * liger}", "liger": liger}))

    # Derived numbers and the table.
    meta = {"date": _dt.date.today().isoformat(), "device": device, "gpu": env.get("gpu"), "versions": env,
            "smoke": args.smoke, "warmup_steps": {"sft/dpo": warmup, "grpo": grpo_warmup}, "timed_steps": {"sft/dpo": timed, "grpo": grpo_timed},
            "peak_bf16_tflops": peak, "peak_source": peak_src, "shapes": shp, "settings": s,
            "models": built, "precision": precision, "total_s": round(time.time() - started, 1),
            "flops_formula": "per token: k*N + 12*sum_layers(heads*head_dim*context); k=6 full, 4 LoRA/QLoRA; "
                             "N = all parameters (tied embedding once); context = seq or sliding window; "
                             "DPO: policy training FLOPs only"}
    rows = derive(results, built, shp, s, peak, device)
    print_table(rows, meta)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "jobs": results, "table": rows}, indent=1, default=str))
        print(f"wrote {args.json}")


def plan_predictions(model_dir: Path, s: dict, cuda: bool) -> dict:
    """`alignlab plan`'s peak-memory prediction (its `peak_gib`: live tensor bytes, comparable with
    max_memory_allocated) for LoRA and QLoRA on this model and batch. The GPU name only sets the
    memory budget, which a fixed micro-batch does not use."""
    out = {}
    for method in ("lora", "qlora"):
        cmd = PLAN + ["--model", str(model_dir), "--method", method, "--task", "sft", "--gpu", "H200" if cuda else "CPU",
                      "--seq-len", str(s["sft_seq"]), "--micro-batch", str(s["sft_batch"]), "--target-batch",
                      str(s["sft_batch"]), "--grad-ckpt", "off", "--lora-r", "16", "--lora-alpha", "32",
                      "--lora-dropout", "0", "--precision", "bf16", "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            out[method] = {"error": (p.stderr or p.stdout).strip()[-500:]}
            continue
        try:
            out[method] = json.loads(p.stdout)
        except json.JSONDecodeError:
            out[method] = {"error": "plan printed no JSON: " + p.stdout[-300:]}
    return out


def plan_peak_gib(plan: dict) -> float | None:
    x = plan.get("peak_gib")
    return float(x) if isinstance(x, (int, float)) else None


def derive(results: dict, built: dict, shp: dict, s: dict, peak: float | None, device: str) -> list[dict]:
    rows = []
    for job, runs in results.items():
        runs = {k: v for k, v in runs.items() if k != "plan"}
        key = "gemma" if job in ("sft_full", "sft_lora", "qlora") else "qwen"
        base = runs.get("TRL", {}) if "step_s" in runs.get("TRL", {}) else None
        liger = runs.get("TRL + Liger", {}) if "step_s" in runs.get("TRL + Liger", {}) else None
        for name, r in runs.items():
            row = {"job": job, "run": name}
            if "not_run" in r or r.get("step_s") is None:
                row["not_run"] = r.get("not_run", "no timed steps")
                rows.append(row)
                continue
            row.update(step_s=r["step_s"], peak_gib=r["peak_gib"])
            if job == "grpo":
                n_seq = s["prompts"] * s["group"]
                if r.get("gen_len_mean"):
                    row["gen_tokens_per_s"] = n_seq * r["gen_len_mean"] / r["step_s"]
                if r.get("rollout_s"):
                    row["rollout_s"] = r["rollout_s"]
                    row["ms_per_decode_step"] = 1000 * r["rollout_s"] / s["new_tokens"]
            else:
                seq = s["sft_seq"] if key == "gemma" else s["dpo_seq"]
                tokens = s["sft_batch"] * seq if key == "gemma" else 2 * s["dpo_pairs"] * seq
                k = 4 if job in ("sft_lora", "qlora") else 6
                info = built.get(key, {})
                row["tokens_per_s"] = tokens / r["step_s"]
                if peak and info:
                    f = flops_per_token(shp[key], seq, k, info["n_params"], info.get("layer_types"))
                    row["mfu"] = tokens * f / r["step_s"] / (peak * 1e12)
            for bname, b, own in (("trl", base, "TRL"), ("trl_liger", liger, "TRL + Liger")):
                if b and name != own:
                    row[f"speed_vs_{bname}"] = b["step_s"] / r["step_s"]
                    row[f"mem_vs_{bname}"] = r["peak_gib"] / b["peak_gib"]
            rows.append(row)
        if job == "qlora":
            q = runs.get("alignlab QLoRA", {})
            lora = results.get("sft_lora", {}).get("alignlab", {})
            lora = lora if "peak_gib" in lora else runs.get("alignlab LoRA", {})
            plan = results[job].get("plan", {})
            row = {"job": job, "run": "QLoRA peak / LoRA peak"}
            if "peak_gib" in q and "peak_gib" in lora:
                row["ratio"] = q["peak_gib"] / lora["peak_gib"]
            for m, measured in (("lora", lora), ("qlora", q)):
                pred = plan_peak_gib(plan.get(m, {}))
                row[f"plan_{m}_gib"] = pred
                if pred and "peak_gib" in measured and device == "cuda":  # CPU peaks are RSS: not comparable
                    row[f"plan_{m}_error"] = pred / measured["peak_gib"] - 1
            rows.append(row)
    return rows


def print_table(rows: list[dict], meta: dict) -> None:
    v = meta["versions"]
    print(f"\n{meta['date']} · {meta['gpu'] or 'CPU'} · torch {v.get('torch')} · transformers {v.get('transformers')} · "
          f"peft {v.get('peft')} · TRL {v.get('trl')} · liger-kernel {v.get('liger_kernel')} · "
          f"bitsandbytes {v.get('bitsandbytes')}" + (" · SMOKE RUN (tiny sizes, not a measurement)" if meta["smoke"] else ""))
    print(f"MFU peak: {fmt(meta['peak_bf16_tflops'], 'g')} TFLOP/s ({meta['peak_source']}); FLOPs {meta['flops_formula']}")
    w = meta["warmup_steps"]
    print(f"step times exclude {w['sft/dpo']} warm-up step(s) ({w['grpo']} for GRPO); total {meta['total_s']} s\n")
    print("| job | run | s/step | tokens/s | MFU | peak GiB | speed vs TRL | mem vs TRL | speed vs TRL+Liger | "
          "mem vs TRL+Liger | GRPO rollout s | ms/decode step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    x = lambda r, k, spec: fmt(r.get(k), spec)  # noqa: E731
    for r in rows:
        if r["run"] == "QLoRA peak / LoRA peak":
            plan = ", ".join(f"plan {m}: {fmt(r.get(f'plan_{m}_gib'), '.2f')} GiB ({fmt(r.get(f'plan_{m}_error'), '+.1%')})"
                             for m in ("lora", "qlora"))
            ratio = fmt(r.get("ratio"), ".2f") + ("x" if r.get("ratio") else "")
            print(f"| {r['job']} | {r['run']} | {ratio} · {plan} |||||||||||")
            continue
        if "not_run" in r:
            print(f"| {r['job']} | {r['run']} | not run: {r['not_run']} |||||||||||")
            continue
        tps = r.get("tokens_per_s") or r.get("gen_tokens_per_s")
        tps_s = "-" if tps is None else f"{tps:,.0f}" + (" gen" if "gen_tokens_per_s" in r else "")
        print(f"| {r['job']} | {r['run']} | {r['step_s']:.3f} | {tps_s} | {x(r, 'mfu', '.1%')} | {r['peak_gib']:.2f} | "
              f"{x(r, 'speed_vs_trl', '.2f')} | {x(r, 'mem_vs_trl', '.2f')} | {x(r, 'speed_vs_trl_liger', '.2f')} | "
              f"{x(r, 'mem_vs_trl_liger', '.2f')} | {x(r, 'rollout_s', '.3f')} | {x(r, 'ms_per_decode_step', '.1f')} |")


if __name__ == "__main__":
    main()
