"""The memory model: monotonic, by phase, dtype-aware; and within 5% of a measured step on CPU."""
from dataclasses import replace

import pytest

from alignlab.plan.arch import arch_from_config, load_arch
from alignlab.plan.hardware import lookup_gpu
from alignlab.plan.memory import GiB, PlanError, Setup, estimate, weights_by_dtype
from alignlab.plan.recommend import Options, choose_precision, make_plan

GEMMA = load_arch("google/gemma-3-1b-it")
QWEN = load_arch("Qwen/Qwen3-0.6B")


def test_peak_grows_with_micro_batch_and_sequence():
    for method in ("full", "lora", "qlora"):
        s = Setup(method=method, micro_batch=1, seq_len=512)
        peaks = [estimate(GEMMA, replace(s, micro_batch=m)).peak for m in (1, 2, 4, 8)]
        assert peaks == sorted(peaks) and len(set(peaks)) == 4, method
        peaks = [estimate(GEMMA, replace(s, seq_len=t)).peak for t in (256, 512, 1024, 2048)]
        assert peaks == sorted(peaks) and len(set(peaks)) == 4, method


def test_peak_is_a_phase_not_the_sum_of_terms():
    e = estimate(GEMMA, Setup(method="full", micro_batch=4, seq_len=1024))
    assert e.peak == max(p.total for p in e.phases)
    assert e.peak < sum(t.bytes for t in e.terms.values())
    names = [p.name for p in e.phases]
    assert names[0].startswith("forward") and names[-1] == "optimizer step"


def test_weights_follow_dtype_and_quantisation():
    P = GEMMA.param_counts()["total"]
    full32 = estimate(GEMMA, Setup(method="full", precision="fp32", device="cpu"))
    assert full32.terms["weights"].bytes == 4 * P
    assert full32.terms["optimizer"].bytes >= 8 * P  # AdamW: two fp32 states per parameter
    pure = estimate(GEMMA, Setup(method="full", precision="bf16", weight_dtype="bf16", optim_impl="foreach"))
    assert pure.terms["weights"].bytes == 2 * P and pure.terms["optimizer"].bytes == 4 * P  # states follow params
    fused = estimate(GEMMA, Setup(method="full", precision="bf16", weight_dtype="bf16"))  # CUDA default: fused
    # fused AdamW keeps each tensor's step count as an fp32 scalar on the device: Gemma-3-1B has
    # 26 layers x (7 projections + 4 norms + q/k norms) + the tied embedding + the final norm = 340 tensors
    assert fused.terms["optimizer"].bytes - 4 * P == 4 * (26 * 13 + 2)
    g4 = load_arch("google/gemma-3-4b-it")
    lora = estimate(g4, Setup(method="lora", precision="bf16"))
    qlora = estimate(g4, Setup(method="qlora", precision="bf16"))
    # NF4 projections (~0.52 B/param) + embedding/norms kept in the bf16 compute dtype (not upcast to fp32)
    pc = g4.param_counts()
    lin = sum(x.d_in * x.d_out for x in g4.linears()) * g4.layers
    assert qlora.terms["weights"].bytes == pytest.approx(lin * (0.5 + 1 / 64 + 4 / 64 / 256) + (pc["total"] - lin) * 2)
    # the residual stream stays bf16, so QLoRA's activations are not above LoRA's over a bf16 base
    assert qlora.peak < lora.peak
    assert qlora.terms["weights"].bytes < 0.6 * lora.terms["weights"].bytes
    w = weights_by_dtype(GEMMA)
    assert w["fp32"] == 2 * w["bf16/fp16"]
    nf4 = [v for k, v in w.items() if k.startswith("nf4")][0]
    assert nf4 < w["bf16/fp16"]
    eight = estimate(GEMMA, Setup(method="full", optimizer="adamw_8bit")).terms["optimizer"].bytes
    assert eight < 0.3 * full32.terms["optimizer"].bytes


def test_checkpointing_accumulation_and_logits():
    s = Setup(method="lora", micro_batch=8, seq_len=1024)
    plain, ck = estimate(GEMMA, s), estimate(GEMMA, replace(s, grad_ckpt=True))
    assert ck.terms["act_layers"].bytes < 0.1 * plain.terms["act_layers"].bytes
    assert ck.peak < plain.peak
    acc = estimate(GEMMA, replace(s, method="full", grad_accum=4))
    one = estimate(GEMMA, replace(s, method="full", grad_accum=1))
    assert acc.phase("forward (at the loss)").total - one.phase("forward (at the loss)").total == pytest.approx(
        one.terms["grads"].bytes)
    # the full-vocabulary loss of a 262k vocabulary is the largest single transient
    full = estimate(GEMMA, replace(s, loss_impl="full"))
    assert full.terms["logits"].bytes > full.terms["act_final_norm"].bytes * 10
    assert full.terms["logits"].bytes >= 8 * 1024 * 262_144 * 2


def test_rl_phases_kv_cache_and_reference():
    e = estimate(QWEN, Setup(method="full", task="grpo", rollout_batch=64, prompt_len=256, gen_len=768))
    assert {"rollout generation", "scoring old/ref log-probs"} <= {p.name for p in e.phases}
    kv = 2 * 64 * 1024 * QWEN.kv_dim * 2 * QWEN.layers
    assert e.terms["kv_cache"].bytes == kv
    assert e.terms["ref_weights"].bytes == QWEN.param_counts()["total"] * 2
    assert estimate(QWEN, Setup(method="lora", task="grpo")).terms["ref_weights"].bytes == 0  # adapters off
    ppo = estimate(QWEN, Setup(method="full", task="ppo"))
    assert ppo.terms["value_model"].bytes > ppo.terms["weights"].bytes
    dpo = estimate(QWEN, Setup(method="lora", task="dpo", micro_batch=2))
    sft = estimate(QWEN, Setup(method="lora", task="sft", micro_batch=4))
    assert dpo.terms["act_layers"].bytes == sft.terms["act_layers"].bytes  # 2 pairs = 4 sequences


def test_precision_by_gpu():
    t4, a100 = lookup_gpu("T4"), lookup_gpu("A100-80GB")
    assert choose_precision(t4, "auto", GEMMA)[0] == "fp16"
    assert "overflow" in choose_precision(t4, "auto", GEMMA)[1]
    assert choose_precision(a100, "auto", GEMMA)[0] == "bf16"
    with pytest.raises(ValueError, match="bf16 is not supported on T4"):
        choose_precision(t4, "bf16", GEMMA)
    with pytest.raises(ValueError, match="unknown GPU 'K80'.*T4"):
        lookup_gpu("K80")


def test_recommendations_fit_and_explain():
    gpu = lookup_gpu("T4")
    s = Setup(method="lora", precision="fp16", seq_len=1024)
    plan = make_plan(GEMMA, gpu, s, Options(target_batch=32))
    assert plan.fits and plan.est.peak <= plan.budget
    m, acc = plan.rec("micro_batch"), plan.rec("grad_accum_steps")
    assert m * acc == 32
    bigger = [d for d in (2 * m, 32) if 32 % d == 0 and d > m]
    if bigger:  # the next divisor would not fit
        assert estimate(GEMMA, replace(plan.setup, micro_batch=bigger[0], grad_accum=32 // bigger[0])).peak > plan.budget
    assert all(r.reason for r in plan.recs)
    lr_sqrt = plan.rec("lr")
    lin = make_plan(GEMMA, gpu, s, Options(target_batch=32, lr_scaling="linear")).rec("lr")
    assert lr_sqrt == pytest.approx(2e-4 * (32 / 16) ** 0.5, rel=1e-2) and lin == pytest.approx(4e-4, rel=1e-2)
    big = make_plan(load_arch("google/gemma-3-27b-it"), gpu, replace(s, method="full"), Options())
    assert not big.fits and "does not fit" in big.recs[1].reason


TINY = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=48, vocab_size=4096)


@pytest.mark.parametrize("model_type,method,loss_impl", [
    ("gemma3_text", "full", "full"), ("qwen3", "lora", "full"), ("llama", "full", "chunked"), ("qwen2", "lora", "chunked")])
def test_prediction_within_5_percent_of_a_measured_cpu_step(model_type, method, loss_impl):
    pytest.importorskip("torch")
    from alignlab.plan.measure import measure

    arch = arch_from_config(dict(model_type=model_type, **TINY, tie_word_embeddings=model_type != "llama"))
    s = Setup(method=method, device="cpu", precision="fp32", micro_batch=2, seq_len=96, loss_impl=loss_impl,
              chunk_tokens=64, lora_r=8, lora_alpha=16)
    pred = estimate(arch, s)
    meas = measure(arch, s, device="cpu")
    for ph in ("forward", "backward", "optimizer"):
        assert pred.peak_of(ph) == pytest.approx(meas.phases[ph], rel=0.05), ph
    assert pred.peak == pytest.approx(meas.peak, rel=0.05)


@pytest.mark.parametrize("sleep", [False, True])
def test_vllm_engine_is_held_in_every_phase_unless_it_sleeps(sleep):
    eng = 10 * GiB
    s = Setup(method="lora", task="grpo", device="cuda", precision="bf16", rollout_batch=64, micro_batch=4,
              rollout_backend="vllm", vllm_engine_bytes=eng, vllm_sleep=sleep)
    e = estimate(QWEN, s)
    names = {p.name for p in e.phases}
    assert "rollout (vLLM engine)" in names and not names & {"rollout generation", "rollout prefill"}
    assert "kv_cache" not in e.terms
    assert e.phase("rollout (vLLM engine)").parts["vllm_engine"] == eng
    train = [p for p in e.phases if p.name.startswith(("forward", "backward", "optimizer"))]
    assert train and all(("vllm_engine" in p.parts) is (not sleep) for p in train)
    hf = estimate(QWEN, Setup(method="lora", task="grpo", device="cuda", precision="bf16", rollout_batch=64, micro_batch=4))
    train_peak = max(p.total for p in train)
    hf_train_peak = max(p.total for p in hf.phases if p.name.startswith(("forward", "backward", "optimizer")))
    assert train_peak == pytest.approx(hf_train_peak + (0 if sleep else eng), rel=1e-9)


def test_qlora_measurement_says_what_it_needs_instead_of_a_generic_refusal():
    import torch

    from alignlab.plan.measure import _random_4bit_model

    arch = arch_from_config(dict(model_type="qwen2", **TINY, tie_word_embeddings=True))
    with pytest.raises(PlanError, match=r"needs a CUDA device and bitsandbytes \(device cpu, bitsandbytes"):
        _random_4bit_model(arch, Setup(method="lora"), torch.device("cpu"), torch.bfloat16)
