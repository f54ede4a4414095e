"""The plan's numerics against straightforward reference implementations."""
import math

import pytest
import torch

from alignlab.data import tokenize_prompt_and_output
from alignlab.logprobs import compute_entropy, get_response_log_probs, naive_response_log_probs
from alignlab.cs336 import sft_microbatch_train_step
from alignlab.losses import masked_mean, masked_normalize, sft_nll


def test_compute_entropy_matches_reference_and_is_stable():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    p = torch.softmax(logits, -1)
    ref = -(p * torch.log(p)).sum(-1)
    torch.testing.assert_close(compute_entropy(logits), ref, atol=1e-6, rtol=1e-6)
    uniform = compute_entropy(torch.zeros(2, 7))
    torch.testing.assert_close(uniform, torch.full((2,), math.log(7)))
    big = compute_entropy(torch.tensor([[1e4, 0.0, 0.0], [5e3, 5e3, -1e9]]))
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, torch.tensor([0.0, math.log(2)]), atol=1e-5, rtol=0)


def test_masked_normalize_and_mean_against_loops():
    torch.manual_seed(1)
    x = torch.randn(4, 6)
    m = torch.rand(4, 6) > 0.4
    m[:, 0] = True
    ref_sum_rows = torch.tensor([sum(x[i, j].item() for j in range(6) if m[i, j]) for i in range(4)])
    torch.testing.assert_close(masked_normalize(x, m, dim=1, normalize_constant=2.5), ref_sum_rows / 2.5)
    torch.testing.assert_close(masked_normalize(x, m), ref_sum_rows.sum())
    ref_cols = torch.tensor([sum(x[i, j].item() for i in range(4) if m[i, j]) for j in range(6)])
    torch.testing.assert_close(masked_normalize(x, m, dim=0), ref_cols)
    counts = m.sum(1).float()
    torch.testing.assert_close(masked_mean(x, m, dim=1), ref_sum_rows / counts)
    torch.testing.assert_close(masked_mean(x, m), ref_sum_rows.sum() / m.sum())
    # masked-out positions never leak, even when they hold inf/nan
    y = x.clone()
    y[~m] = float("nan")
    torch.testing.assert_close(masked_mean(y, m, dim=1), masked_mean(x, m, dim=1))


def test_sft_microbatch_train_step_value_and_accumulated_grad():
    torch.manual_seed(2)
    logits = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    loss, meta = sft_microbatch_train_step(logits, mask, gradient_accumulation_steps=2, normalize_constant=4.0)
    ref = -(logits.detach() * mask).sum(-1) / 4.0
    torch.testing.assert_close(loss, ref.mean() / 2)
    g1 = logits.grad.clone()
    torch.testing.assert_close(g1, -(mask.float() / 4.0) / 3 / 2)
    sft_microbatch_train_step(logits, mask, 2, 4.0)  # a second call accumulates: .grad doubles
    torch.testing.assert_close(logits.grad, 2 * g1)
    assert meta["n_tokens"] == mask.sum()


def test_sft_nll_micro_batches_sum_to_the_step_loss():
    torch.manual_seed(3)
    logps = -torch.rand(8, 7)
    mask = torch.rand(8, 7) > 0.3
    mask[:, 0] = True
    for normalizer in ("tokens", "sequences"):
        whole, _ = sft_nll(logps, mask, normalizer, n_tokens=mask.sum().item(), n_seqs=8)
        parts = sum(sft_nll(logps[i : i + 2], mask[i : i + 2], normalizer, mask.sum().item(), 8)[0] for i in range(0, 8, 2))
        torch.testing.assert_close(whole, parts)
    tok, _ = sft_nll(logps, mask, "tokens", mask.sum().item(), 8)
    torch.testing.assert_close(tok, -(logps * mask).sum() / mask.sum())
    seq, _ = sft_nll(logps, mask, "sequences", mask.sum().item(), 8)
    torch.testing.assert_close(seq, -((logps * mask).sum(1) / mask.sum(1)).mean())


def test_tokenize_prompt_and_output_contract(qwen_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen_dir)
    prompts, outputs = ["12+3=", "hello there, 4-40="], ["15", "-36<|im_end|>"]
    out = tokenize_prompt_and_output(prompts, outputs, tok)
    assert set(out) == {"input_ids", "labels", "response_mask"}
    seqs = [tok(p)["input_ids"] + tok(o, add_special_tokens=False)["input_ids"] for p, o in zip(prompts, outputs)]
    width = max(map(len, seqs))
    assert out["input_ids"].shape == (2, width - 1)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        full = s + [tok.pad_token_id] * (width - len(s))
        assert out["input_ids"][i].tolist() == full[:-1]
        assert out["labels"][i].tolist() == full[1:]
        n_p = len(tok(p)["input_ids"])
        expect = [n_p - 1 <= t < len(s) - 1 for t in range(width - 1)]
        assert out["response_mask"][i].tolist() == expect
        decoded = tok.decode(out["labels"][i][out["response_mask"][i]])
        assert decoded == outputs[i]


@pytest.mark.parametrize("arch", ["gemma3_text", "qwen2", "qwen3", "llama"])
def test_chunked_log_probs_equal_naive_values_and_grads(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    b = tokenize_prompt_and_output(["12+3=", "7-9=", "think"], ["15<|im_end|>", "-2<|im_end|>", " hard"], tok)
    res = get_response_log_probs(model, b["input_ids"], b["labels"], return_token_entropy=True, chunk_tokens=5)
    ref = naive_response_log_probs(model, b["input_ids"], b["labels"])
    torch.testing.assert_close(res["log_probs"], ref, atol=1e-6, rtol=0)
    ent_ref = compute_entropy(model(b["input_ids"]).logits)
    torch.testing.assert_close(res["token_entropy"], ent_ref, atol=1e-5, rtol=0)
    # gradients through the checkpointed chunks equal the naive path's
    w = model.get_output_embeddings().weight
    (res["log_probs"] * b["response_mask"]).sum().backward()
    g_chunk = w.grad.clone()
    model.zero_grad()
    (naive_response_log_probs(model, b["input_ids"], b["labels"]) * b["response_mask"]).sum().backward()
    torch.testing.assert_close(g_chunk, w.grad, atol=1e-5, rtol=1e-4)


def test_logit_softcapping_is_applied(tiny_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["gemma3_text"])
    model.config.final_logit_softcapping = 0.5  # tiny cap so that it changes the values a lot
    tok = AutoTokenizer.from_pretrained(tiny_dirs["gemma3_text"])
    b = tokenize_prompt_and_output(["12+3="], ["15"], tok)
    ours = get_response_log_probs(model, b["input_ids"], b["labels"])["log_probs"]
    ref = naive_response_log_probs(model, b["input_ids"], b["labels"])
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
@pytest.mark.parametrize("lora", [False, True])
def test_fused_head_backward_equals_autograd(tiny_dirs, arch, lora):
    """The fused log-prob path (plain Linear head, entropy detached): values, detached entropy and
    every parameter's gradient equal the naive full-logits computation, tied embeddings included."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.logprobs import _FusedHeadLogProbs

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    b = tokenize_prompt_and_output(["12+3=", "7-9=", "think"], ["15<|im_end|>", "-2<|im_end|>", " hard"], tok)
    calls = []
    real = _FusedHeadLogProbs.apply
    _FusedHeadLogProbs.apply = lambda *a: calls.append(1) or real(*a)
    try:
        res = get_response_log_probs(model, b["input_ids"], b["labels"], chunk_tokens=4, temperature=0.7,
                                     return_token_entropy=True, entropy_grad=False)
    finally:
        _FusedHeadLogProbs.apply = real
    assert calls, "the fused path was not taken"
    (res["log_probs"] * b["response_mask"]).sum().backward()
    g_fused = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(b["input_ids"]).logits.float() / 0.7
    ref = torch.log_softmax(logits, -1).gather(-1, b["labels"][..., None]).squeeze(-1)
    torch.testing.assert_close(res["log_probs"], ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(res["token_entropy"], compute_entropy(logits), atol=1e-5, rtol=0)
    assert not res["token_entropy"].requires_grad
    (ref * b["response_mask"]).sum().backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert g_fused.keys() == g_ref.keys() and g_fused
    for n in g_ref:
        torch.testing.assert_close(g_fused[n], g_ref[n], atol=2e-5, rtol=1e-4)


class _MatmulDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the operand dtypes of every matmul whose output spans the vocabulary (the head's)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.seen = vocab, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            mats = [a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2][-2:]
            if self.vocab in mats[0].shape or self.vocab in mats[1].shape:
                self.seen.append((mats[0].dtype, mats[1].dtype))
        return out


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_fused_head_runs_its_matmuls_in_the_autocast_dtype(tiny_dirs, arch):
    """Under bf16 autocast the three head matmuls (logits, dh, dW) of forward and backward run in bf16,
    not fp32 (a custom Function's backward does not inherit autocast), while the log-probs and the fp32
    master weights' gradients stay fp32. Against the naive head (full logits through the model's own
    Linear, fp32 log-softmax) under the same autocast, so that only the head differs: log-probs within
    0.01 nats, each parameter's gradient within 1% of its norm. (Against an all-fp32 run the whole bf16
    body differs too, by a few % depending on the transformers version: not the head's doing.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    tok = AutoTokenizer.from_pretrained(tiny_dirs[arch])
    vocab = model.get_output_embeddings().weight.shape[0]
    b = tokenize_prompt_and_output(["12+3=", "7-9=", "think"], ["15<|im_end|>", "-2<|im_end|>", " hard"], tok)

    def run(autocast: bool, fused: bool = True):
        model.zero_grad()
        rec = _MatmulDtypes(vocab)
        with rec:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                if fused:
                    lp = get_response_log_probs(model, b["input_ids"], b["labels"], chunk_tokens=4)["log_probs"]
                else:
                    lp = naive_response_log_probs(model, b["input_ids"], b["labels"])
            # backward outside autocast, as every loop does (and as CUDA's autograd threads always are)
            (lp * b["response_mask"]).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, rec.seen

    lp16, g16, seen16 = run(True)
    ref16, gref16, _ = run(True, fused=False)
    lp32, g32, seen32 = run(False)
    # forward: one logits matmul per chunk; backward: logits, dh, dW per chunk
    assert len(seen16) >= 4 * 3 and all(d == (torch.bfloat16, torch.bfloat16) for d in seen16), seen16
    assert seen32 and all(d == (torch.float32, torch.float32) for d in seen32)
    assert lp16.dtype == torch.float32  # log-sum-exp and the returned log-probs stay fp32
    torch.testing.assert_close(lp16, ref16, atol=1e-2, rtol=0)
    torch.testing.assert_close(lp16, lp32, atol=5e-2, rtol=0)  # and bf16 as a whole stays near fp32
    assert g16.keys() == gref16.keys() == g32.keys() and g16
    for n in gref16:
        assert g16[n].dtype == torch.float32, n  # fp32 master weights get fp32 grads
        err = (g16[n] - gref16[n]).norm() / gref16[n].norm().clamp(min=1e-12)
        assert err < 1e-2, (n, float(err))
