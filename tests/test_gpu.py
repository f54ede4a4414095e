"""CUDA checks behind the `gpu` marker (skipped, with the reason, where no CUDA device exists).

On a GPU machine: `pytest -q -m gpu tests/test_gpu.py` (docs/benchmarks.md says how to bring the
missing packages as wheels to a bare one). Every loop in bf16 through the CLI, bf16 against fp32
over 20 steps, exact resume, the fused head's dtypes and gradients, and the graph-captured decode.
"""
import json
import math
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, for the resume test

import pytest  # noqa: E402
import torch  # noqa: E402

from alignlab import cli, rollout, tracking  # noqa: E402
from alignlab.data import tokenize_prompt_and_output  # noqa: E402
from alignlab.logprobs import get_response_log_probs, naive_response_log_probs  # noqa: E402
from conftest import StopAt, load_sft  # noqa: E402

pytestmark = pytest.mark.gpu
CUDA = {"model.device": "cuda", "training.precision": "bf16"}


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefs") / "p.jsonl"
    rows = [{"id": i, "prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
            for i, (a, b) in enumerate([(1, 2), (13, 29), (7, 40), (3, 3), (20, 5), (9, 9), (11, 4), (30, 12)])]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def _args(loop, tmp_path, model, prefs):
    common = {"name": loop, "out_dir": str(tmp_path), "model.path": str(model), **CUDA}
    per_loop = {
        "sft": {"training.total_steps": 3, "training.global_batch_seqs": 8, "training.micro_batch": 4,
                "training.eval_every": 0, "data.arithmetic.n_train": 64, "data.arithmetic.n_eval": 8,
                "eval.max_examples": 8, "eval.max_new_tokens": 4},
        "ei": {"training.total_steps": 1, "ei.questions_per_round": 8, "ei.group_size": 4, "ei.global_batch_seqs": 8,
               "training.micro_batch": 4, "eval.max_examples": 8, "task.arithmetic.n_eval": 8,
               "sampling.max_new_tokens": 4, "eval.max_new_tokens": 4},
        "dpo": {"data.train": str(prefs), "data.eval": str(prefs), "training.total_steps": 3,
                "training.global_batch_pairs": 4, "training.micro_batch": 2, "training.eval_every": 0,
                "data.max_seq_len": 32},
        "rm": {"data.train": str(prefs), "data.eval": str(prefs), "training.total_steps": 3,
               "training.global_batch_pairs": 4, "training.micro_batch": 2, "training.eval_every": 0,
               "data.max_seq_len": 32},
        "grpo": {"training.total_steps": 2, "rl.prompts_per_step": 4, "rl.group_size": 4, "training.micro_batch": 8,
                 "sampling.max_new_tokens": 4, "eval.max_examples": 8, "eval.max_new_tokens": 4,
                 "task.arithmetic.n_eval": 8},
        "ppo": {"training.total_steps": 2, "ppo.rollout_size": 8, "ppo.minibatch_seqs": 4, "ppo.num_ppo_epochs": 2,
                "sampling.max_new_tokens": 4, "eval.max_examples": 4, "eval.max_new_tokens": 4,
                "task.arithmetic.n_eval": 4, "training.eval_every": 0},
    }[loop]
    return [loop, "-c", f"{loop}_tiny", *[f"{k}={v}" for k, v in {**common, **per_loop}.items()]]


@pytest.mark.parametrize("loop", ["sft", "ei", "dpo", "rm", "grpo", "ppo"])
@pytest.mark.parametrize("lora", [False, True])
def test_every_loop_runs_on_cuda_in_bf16(tmp_path, qwen_dir, prefs, loop, lora):
    args = _args(loop, tmp_path, qwen_dir, prefs) + (["lora.enabled=true", "lora.r=4"] if lora else [])
    assert cli.main(args) == 0
    rows = tracking.read_metrics(tmp_path / loop)
    losses = [v for r in rows for k, v in r.items() if k.startswith("loss/")]
    assert losses and all(math.isfinite(v) for v in losses)
    peaks = [r["mem/peak_gb"] for r in rows if "mem/peak_gb" in r]
    assert peaks and max(peaks) > 0  # measured on the CUDA device, not the host


def test_bf16_and_fp32_losses_agree_over_20_steps(tmp_path, qwen_dir):
    """The same 20 SFT steps in bf16 autocast (fp32 master weights) and in fp32: each step's loss
    within 2% relative (bf16 keeps 8 mantissa bits; the drift compounds slowly over 20 updates)."""
    from alignlab.train import sft

    kw = {"training.total_steps": 20, "data.eval": "null", "training.save_every": 0, "model.device": "cuda"}
    runs = {}
    for prec in ("bf16", "fp32"):
        cfg = load_sft(tmp_path, qwen_dir, prec, **kw, **{"training.precision": prec})
        sft.main(cfg)
        runs[prec] = [r["loss/train"] for r in tracking.read_metrics(cfg.run_dir) if "loss/train" in r]
    assert len(runs["bf16"]) == len(runs["fp32"]) == 20
    for a, b in zip(runs["bf16"], runs["fp32"]):
        assert a == pytest.approx(b, rel=2e-2)
    assert runs["bf16"][-1] < runs["bf16"][0]  # and it trains


def test_resume_is_exact_on_cuda(tmp_path, qwen_dir):
    from safetensors.torch import load_file

    from alignlab.train import sft

    torch.use_deterministic_algorithms(True)
    try:
        kw = {"training.total_steps": 4, "training.save_every": 2, "data.eval": "null", **CUDA}
        straight, split = load_sft(tmp_path, qwen_dir, "s", **kw), load_sft(tmp_path, qwen_dir, "p", **kw)
        sft.main(straight)
        with pytest.raises(KeyboardInterrupt):
            sft.main(split, hooks=[StopAt(2)])
        sft.main(split)
    finally:
        torch.use_deterministic_algorithms(False)
    losses = lambda d: [r["loss/train"] for r in tracking.read_metrics(d) if "loss/train" in r]
    assert losses(straight.run_dir) == losses(split.run_dir)
    a = load_file(straight.run_dir / "checkpoints/step_4/model.safetensors")
    b = load_file(split.run_dir / "checkpoints/step_4/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_fused_head_on_cuda_runs_bf16_matmuls_and_matches_the_reference(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from test_numerics import _MatmulDtypes

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).cuda()
    tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    b = {k: v.cuda() for k, v in tokenize_prompt_and_output(
        ["12+3=", "7-9=", "think"], ["15<|im_end|>", "-2<|im_end|>", " hard"], tok).items()}
    vocab = model.get_output_embeddings().weight.shape[0]

    def run(autocast, fused=True):
        model.zero_grad()
        rec = _MatmulDtypes(vocab)
        with rec:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                if fused:
                    lp = get_response_log_probs(model, b["input_ids"], b["labels"], chunk_tokens=4)["log_probs"]
                else:
                    lp = naive_response_log_probs(model, b["input_ids"], b["labels"])
            (lp * b["response_mask"]).sum().backward()  # CUDA backward runs on autograd's own thread
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, rec.seen

    lp16, g16, seen = run(True)
    ref16, gref16, _ = run(True, fused=False)  # the same bf16 body, the naive head: only the head differs
    lp32, _, _ = run(False)
    assert seen and all(d == (torch.bfloat16, torch.bfloat16) for d in seen), seen
    torch.testing.assert_close(lp16, ref16, atol=1e-2, rtol=0)
    torch.testing.assert_close(lp16, lp32, atol=5e-2, rtol=0)
    assert g16.keys() == gref16.keys() and g16
    for n in gref16:
        assert g16[n].dtype == torch.float32, n
        assert ((g16[n] - gref16[n]).norm() / gref16[n].norm().clamp(min=1e-12)) < 1e-2, n


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])  # Gemma-3: sliding-window layers in the graphs too
@pytest.mark.parametrize("decode", ["static", "cuda_graphs"])
def test_static_decode_on_cuda_equals_generate(tiny_dirs, decode, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).cuda()
    tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    prompts = ["12+3=", "a much longer prompt here 7-3=", "9", "think about it"]
    ref = rollout.generate(model, tok, prompts, max_new_tokens=16, return_logprobs=True)
    ours = rollout.generate(model, tok, prompts, max_new_tokens=16, return_logprobs=True, decode=decode)
    assert ours.completion_ids == ref.completion_ids
    torch.manual_seed(0)
    ro = rollout.generate(model, tok, prompts, max_new_tokens=16, n=4, temperature=1.0, return_logprobs=True,
                          decode=decode)
    t = {k: v.cuda() for k, v in ro.tensors(tok.pad_token_id).items()}
    lp = get_response_log_probs(model, t["input_ids"], t["labels"], attention_mask=t["attention_mask"])["log_probs"]
    m = t["response_mask"]
    torch.testing.assert_close(lp[m], t["sampling_logps"][m], atol=1e-4, rtol=0)


def test_graph_decode_steps_neither_sync_nor_recompile(tiny_dirs, monkeypatch):
    """Between the finish checks, the cuda_graphs loop never waits for the GPU (a blocking copy or a
    read of a device value would serialise the CPU's launches with the GPU's work), and after the first
    batch no step is traced or captured again, on Gemma-3 too (sliding-window layers)."""
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.rollout import hf as rollout_hf

    monkeypatch.setattr(rollout_hf, "FINISH_CHECK_EVERY", 10**9)  # no finish check: no sync is expected at all
    for arch in ("qwen2", "gemma3_text"):
        model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).cuda()
        tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
        enc = tok(["12+3=", "a much longer prompt here 7-3="], return_tensors="pt", padding=True,
                  padding_side="left").to("cuda")
        u = torch.rand(4, 24, device="cuda")
        kw = dict(max_new_tokens=24, n=2, temperature=1.0, eos_id=-1, pad_id=tok.pad_token_id, graphs=True,
                  uniforms=u)
        first, _ = rollout_hf.decode_static(model, enc["input_ids"], enc["attention_mask"], **kw)  # traces, captures
        graphs = counters["stats"]["unique_graphs"]
        torch.cuda.synchronize()
        real_pick = rollout_hf._pick

        def pick(*a, **k):  # the first pick comes after the (eager) prefill: from here on, no sync is allowed
            torch.cuda.set_sync_debug_mode("error")
            return real_pick(*a, **k)

        monkeypatch.setattr(rollout_hf, "_pick", pick)
        try:
            again, _ = rollout_hf.decode_static(model, enc["input_ids"], enc["attention_mask"], **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            monkeypatch.setattr(rollout_hf, "_pick", real_pick)
        assert counters["stats"]["unique_graphs"] == graphs, arch
        assert torch.equal(first, again), arch


@pytest.mark.parametrize("loop", ["sft", "dpo", "grpo"])
def test_model_compile_on_cuda_trains_as_eager(tmp_path, qwen_dir, prefs, loop):
    """model.compile=true on CUDA (inductor's Triton kernels) in bf16: the run finishes, and its first step's
    loss equals the eager run's within bf16 rounding (the same rollouts for GRPO: same seed)."""
    key = "loss/train" if loop != "grpo" else "loss/policy"
    first = {}
    for c in ("false", "true"):
        out = tmp_path / c
        assert cli.main(_args(loop, out, qwen_dir, prefs) + [f"model.compile={c}"]) == 0
        first[c] = next(r for r in tracking.read_metrics(out / loop) if key in r)
    assert math.isfinite(first["true"][key])
    assert first["true"][key] == pytest.approx(first["false"][key], rel=2e-2, abs=2e-3)


def test_qlora_step_memory_is_below_lora_and_the_planner_predicts_it():
    """QLoRA saves what NF4 can save: LoRA's peak minus QLoRA's is at least 80% of the projection
    weights' bytes that 4-bit storage removes (bf16 2 B -> ~0.53 B per parameter), and the planner
    predicts QLoRA's peak within 5% (plan --measure builds the 4-bit model the way training loads it).
    (On H200, 2026-12-04: QLoRA 5.53 GiB vs LoRA 5.94 GiB, 0.93x; the 262k embedding stays bf16 and the
    activations do not shrink, so the issue's 0.9x is out of reach on this model; planner -4.9%.)"""
    pytest.importorskip("bitsandbytes")
    from dataclasses import replace

    from alignlab.plan.arch import arch_from_config
    from alignlab.plan.measure import measure
    from alignlab.plan.memory import Setup, estimate

    arch = arch_from_config(dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912,
                                 num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                                 vocab_size=262144, tie_word_embeddings=True))
    s = Setup(method="qlora", device="cuda", precision="bf16", micro_batch=4, seq_len=512, loss_impl="chunked")
    q, lo = measure(arch, s, device="cuda"), measure(arch, replace(s, method="lora"), device="cuda")
    projections = sum(x.d_in * x.d_out for x in arch.linears()) * arch.layers
    assert lo.peak - q.peak >= 0.8 * projections * (2 - 0.53)
    assert estimate(arch, s).peak == pytest.approx(q.peak, rel=0.05)


def test_liger_kernels_keep_the_log_probs_and_run_the_sft_loop(tiny_dirs, tmp_path):
    """model.kernels=liger (RMSNorm, SwiGLU/GeGLU, RoPE from Liger) on both architectures: the same
    weights give the same log-probs as the torch modules within bf16 tolerance, and a LoRA and a full
    SFT run through the CLI finish with finite losses."""
    pytest.importorskip("liger_kernel")
    from alignlab.config import LoRAConfig, ModelConfig
    from alignlab.models import load_policy

    for arch in ("qwen2", "gemma3_text"):
        out = {}
        for kernels in ("torch", "liger"):
            model, tok, dev, _ = load_policy(ModelConfig(path=str(tiny_dirs[arch]), device="cuda", kernels=kernels),
                                             LoRAConfig(), precision="bf16")
            b = {k: v.cuda() for k, v in tokenize_prompt_and_output(["12+3=", "7-9="], ["15", "-2"], tok).items()}
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                out[kernels] = get_response_log_probs(model, b["input_ids"], b["labels"])["log_probs"]
            assert hasattr(model.model.norm, "casting_mode") == (kernels == "liger")  # Liger's RMSNorm patch
        torch.testing.assert_close(out["liger"], out["torch"], atol=5e-2, rtol=0)
    for lora in ("false", "true"):
        args = ["sft", "-c", "sft_tiny", f"out_dir={tmp_path}", f"name=liger-{lora}", f"model.path={tiny_dirs['qwen2']}",
                "model.device=cuda", "model.kernels=liger", "training.precision=bf16", "training.total_steps=3",
                f"lora.enabled={lora}", "data.arithmetic.n_train=64", "data.eval=null"]
        assert cli.main(args) == 0
        losses = [r["loss/train"] for r in tracking.read_metrics(tmp_path / f"liger-{lora}") if "loss/train" in r]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses)

