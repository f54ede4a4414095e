import math
import subprocess
import sys
import time

import pytest
import torch

from alignlab import optim
from alignlab.config import ConfigError, LoRAConfig, ModelConfig, OptimConfig
from alignlab.models import load_policy, pick_precision, resolve_model_path


def test_schedule_warmup_cosine_and_min_lr_ratio():
    f = lambda s, sched="cosine": optim.lr_multiplier(s, total_steps=110, warmup=10, schedule=sched, min_lr_ratio=0.1)
    assert [f(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert f(60, "linear") == pytest.approx(0.1 + 0.9 * 0.5) and f(35, "linear") == pytest.approx(0.1 + 0.9 * 0.75)
    assert f(100, "constant") == 1.0
    cos = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(cos, cos[1:]))  # monotone after warmup


def test_scheduler_drives_the_optimizer_lr():
    model = torch.nn.Linear(3, 3)
    opt, sched = optim.build(model, OptimConfig(lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.0), 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        model(torch.ones(1, 3)).sum().backward()
        optim.step(model, opt, sched, max_grad_norm=1.0)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_weight_decay_skips_biases_and_norms(qwen_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(qwen_dir)
    decay, no_decay = optim.param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)] or "bias" in names[id(p)] for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"]) and any("bias" in names[id(p)] for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0


def test_grad_clipping_bounds_the_update_norm():
    model = torch.nn.Linear(4, 1, bias=False)
    opt, sched = optim.build(model, OptimConfig(lr=1.0, weight_decay=0, warmup_steps=0, schedule="constant"), 1)
    (model(torch.full((1, 4), 100.0)).sum()).backward()
    norm = optim.step(model, opt, sched, max_grad_norm=1.0)
    assert norm == pytest.approx(200.0)


def test_precision_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    p = pick_precision("auto", "auto", cpu, lora=False)
    assert (p.weights, p.autocast, p.scaler) == (torch.float32, None, False)
    assert pick_precision("auto", "fp16", cuda, lora=False).scaler is True
    lora_half = pick_precision("auto", "fp16", cuda, lora=True)
    assert lora_half.weights == torch.float16 and lora_half.autocast == torch.float16
    assert pick_precision("bfloat16", "auto", cpu, lora=False).weights == torch.bfloat16


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ConfigError, match="cannot be reached.*tiny:qwen2"):
        resolve_model_path("google/gemma-3-270m-not-cached")
    assert time.time() - t < 5
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path("./no/such/folder")


def test_qlora_on_cpu_is_refused_clearly(qwen_dir):
    with pytest.raises(ConfigError, match="qlora=true needs a CUDA GPU"):
        load_policy(ModelConfig(path=str(qwen_dir), device="cpu"), LoRAConfig(enabled=True, qlora=True))


def test_liger_kernels_off_cuda_are_refused_naming_the_key_and_the_fix(qwen_dir):
    with pytest.raises(ConfigError, match=r"model.kernels=liger needs a CUDA device.*use model.kernels=torch"):
        load_policy(ModelConfig(path=str(qwen_dir), device="cpu", kernels="liger"), LoRAConfig())
    model, *_ = load_policy(ModelConfig(path=str(qwen_dir), device="cpu"), LoRAConfig())  # the default: torch
    assert type(model.model.norm).__module__.startswith("transformers.")


def test_qlora_keeps_the_unquantised_base_in_the_compute_dtype(qwen_dir, monkeypatch):
    """QLoRA's memory: the embedding, norms and head stay bf16 (peft's prepare_model_for_kbit_training
    upcast them to fp32, and with them the residual stream), only the adapters are fp32. The 4-bit
    load itself needs CUDA, so a bf16 model stands in for it; everything after the load is the real path."""
    from alignlab import models

    def fake_4bit_load(path, cfg, device, dtype, quantize_4bit=False):
        assert quantize_4bit and dtype == torch.bfloat16
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)

    monkeypatch.setattr(models, "load_causal_lm", fake_4bit_load)
    policy, _, _, prec = load_policy(ModelConfig(path=str(qwen_dir), device="cpu"),
                                     LoRAConfig(enabled=True, qlora=True, r=4), precision="bf16")
    frozen = {n: p.dtype for n, p in policy.named_parameters() if not p.requires_grad}
    trainable = {n: p.dtype for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and d == torch.float32 for n, d in trainable.items())
    assert frozen and set(frozen.values()) == {torch.bfloat16}, {n: d for n, d in frozen.items() if d != torch.bfloat16}
    seen = []
    layer = policy.get_base_model().model.layers[0]
    layer.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).dtype))
    with prec.autocast_ctx(torch.device("cpu")):
        policy(input_ids=torch.tensor([[1, 2, 3]]))
    assert seen == [torch.bfloat16]  # the residual stream is half precision, as with plain LoRA


def test_lora_targets_default_to_attention_and_mlp(qwen_dir):
    policy, *_ = load_policy(ModelConfig(path=str(qwen_dir)), LoRAConfig(enabled=True, r=2))
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in policy.named_parameters() if "lora_A" in n}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ConfigError, match="matches no module"):
        load_policy(ModelConfig(path=str(qwen_dir)), LoRAConfig(enabled=True, target_modules=["c_attn"]))


def test_lora_skips_the_fp32_input_copy_under_autocast_with_the_same_numbers(qwen_dir):
    """Under autocast, alignlab's LoRA layers skip peft's cast of their input to fp32 (models.
    skip_lora_input_cast_under_autocast): the same log-probs and gradients, bit for bit (the fp32 round
    trip of a bf16 tensor is exact), and less saved for backward (lora_A saves the input the base layer
    already saved, not a copy per target). Without autocast the cast still happens, so a bf16 input
    reaches the fp32 adapter without a dtype error."""
    from alignlab.logprobs import get_response_log_probs
    from alignlab.models import _CastUnlessAutocast

    policy, tok, *_ = load_policy(ModelConfig(path=str(qwen_dir), dtype="bfloat16"),
                                  LoRAConfig(enabled=True, r=4, dropout=0.0), precision="bf16")
    lora_layers = [m for m in policy.modules() if hasattr(m, "lora_A")]
    assert len(lora_layers) >= 7 and all(isinstance(m.cast_input_dtype_enabled, _CastUnlessAutocast) for m in lora_layers)
    layer = lora_layers[0]
    assert layer.base_layer.weight.dtype == torch.bfloat16 and layer.lora_A["default"].weight.dtype == torch.float32
    for n, p in policy.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)  # the adapters change the output, and every one gets a gradient
    ids = tok(["12+30=42", "7-9=-2"], return_tensors="pt", padding=True)
    runs = {}
    for switch in (_CastUnlessAutocast(), True):  # alignlab's, then peft's default (always cast)
        for m in lora_layers:
            m.cast_input_dtype_enabled = switch
        saved = []
        policy.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16), \
                torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            lp = get_response_log_probs(policy, ids["input_ids"][:, :-1], ids["input_ids"][:, 1:],
                                        attention_mask=ids["attention_mask"][:, :-1])["log_probs"]
        lp.sum().backward()
        saved_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())
        runs[switch is True] = (lp.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad},
                                saved_bytes)
    (lp_skip, g_skip, b_skip), (lp_cast, g_cast, b_cast) = runs[False], runs[True]
    assert torch.equal(lp_skip, lp_cast)
    assert g_cast and all(torch.equal(g_skip[n], g) for n, g in g_cast.items())
    assert b_skip < b_cast, (b_skip, b_cast)
    # the switch reads the autocast state: cast outside autocast, skip inside
    assert bool(_CastUnlessAutocast())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not bool(_CastUnlessAutocast())
    layer.cast_input_dtype_enabled = _CastUnlessAutocast()
    x = torch.randn(2, layer.in_features, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16  # no autocast: peft casts to fp32 for the adapter, then back


def test_gradient_checkpointing_gives_the_same_gradients(qwen_dir):
    from alignlab.logprobs import get_response_log_probs

    grads = []
    for gc in (False, True):
        policy, tok, *_ = load_policy(ModelConfig(path=str(qwen_dir), gradient_checkpointing=gc), LoRAConfig())
        ids = tok(["12+30=42", "7-9=-2"], return_tensors="pt", padding=True)
        policy.train()
        lp = get_response_log_probs(policy, ids["input_ids"][:, :-1], ids["input_ids"][:, 1:],
                                    attention_mask=ids["attention_mask"][:, :-1])["log_probs"]
        lp.sum().backward()
        grads.append(policy.model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_tiny_models_load_with_plain_transformers(tiny_dirs):
    code = ("import sys, json, transformers as t\n"
            "for d in sys.argv[1:]:\n"
            "    m = t.AutoModelForCausalLM.from_pretrained(d); k = t.AutoTokenizer.from_pretrained(d)\n"
            "    assert k.pad_token_id is not None and k.eos_token_id is not None and k.chat_template\n"
            "    out = m.generate(**k(['1+1='], return_tensors='pt'), max_new_tokens=3, do_sample=False)\n"
            "    print(m.config.model_type, out.shape[1])\n"
            "assert 'alignlab' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, tiny_dirs.values())], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(line.split()[0] for line in out.stdout.splitlines()) == sorted(tiny_dirs)


def test_gemma3_tiny_config_is_consistent(tiny_dirs):
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_dirs["gemma3_text"])
    assert c.query_pre_attn_scalar == c.head_dim
    assert set(c.layer_types) == {"sliding_attention", "full_attention"} and c.layer_types[-1] == "full_attention"
    assert c.rope_parameters["full_attention"]["rope_theta"] > c.rope_parameters["sliding_attention"]["rope_theta"]


def test_tokenizer_splits_digits_and_keeps_markers(qwen_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen_dir)
    assert tok.convert_ids_to_tokens(tok("12345")["input_ids"]) == list("12345")
    text = "<think> 1 </think> <answer> 1 </answer>"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_make_tiny_cli(tmp_path):
    from alignlab import cli

    assert cli.main(["make-tiny", "--arch", "llama", "--out", str(tmp_path / "m"), "--hidden-size", "64",
                     "--num-hidden-layers", "2", "--head-dim", "16"]) == 0
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert m.config.hidden_size == 64 and m.config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".tmp-m-*"))  # the temporary folder was renamed into place


def test_demo_end_to_end_fast(tmp_path, capsys):
    """Every stage of the demo runs and writes what the README promises (numbers are meaningless in --fast)."""
    import json

    from alignlab import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--fast"]) == 0
    err = capsys.readouterr().err
    assert "held-out arithmetic" in err and "grpo" in err and "paired comparison" in err
    for stage in ("base", "sft", "ei", "grpo"):
        summary = json.loads((out / stage / "eval/arithmetic.summary.json").read_text())
        acc = summary["metrics"]["accuracy"]
        assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"] and acc["n"] == 16
    assert (out / "compare/report.md").exists() and (out / "compare/report.html").exists()
    png = out / "stages.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
