"""ReLoRA and rank-1 merging: the numerics on small layers (research note lora-analysis-decoding.md §1.6,
§2.6), then the loops (SFT, DPO, GRPO, PPO) with resets and merges, exact resume through them."""
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import StopAt, load_sft

from alignlab import tracking
from alignlab.config import ConfigError, DPOConfig, GRPOConfig, PPOConfig, SFTConfig, load_config
from alignlab.lora import cycles, rank1, relora


class Toy(torch.nn.Module):
    def __init__(self, n_in=16, n_out=12):
        super().__init__()
        self.proj = torch.nn.Linear(n_in, n_out, bias=False)
        self.norm = torch.nn.LayerNorm(n_out)

    def forward(self, x):
        return self.norm(self.proj(x))


def toy_lora(n_in=16, n_out=12, r=2, alpha=4.0, dtype=torch.float64, rslora=False, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(Toy(n_in, n_out), LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], lora_dropout=0.0,
                                                        use_rslora=rslora))
    return model.to(dtype)


def layer_of(model):
    (_, layer), = cycles.lora_layers(model)
    return layer


# -- ReLoRA ------------------------------------------------------------------------------------

GOLDEN = {0: 0.0, 50: 0.5, 100: 1.0, 199: 0.97340, 200: 0.0, 205: 0.48362, 209: 0.87051, 210: 0.96723, 400: 0.0,
          410: 0.76126, 999: 0.1}


def test_jagged_schedule_reproduces_the_official_lambda():
    f = lambda t: relora.jagged_multiplier(t, 1000, 100, 10, 200, 0.1)  # noqa: E731
    for t, want in GOLDEN.items():
        assert f(t) == pytest.approx(want, abs=5e-6), t
    for t in range(100, 1000):  # never above the envelope after the first warm-up
        assert f(t) <= relora.envelope(t, 1000, 100, 0.1) + 1e-12


def test_reset_leaves_the_output_unchanged_and_moves_the_base_by_exactly_sBA():
    model = toy_lora(dtype=torch.float32)
    layer = layer_of(model)
    a, b = cycles.factors(layer)
    with torch.no_grad():
        b.normal_()  # a trained adapter: B != 0
    x = torch.randn(5, 16)
    before = model(x)
    w0 = layer.get_base_layer().weight.detach().clone()
    delta = (layer.scaling["default"] * b @ a).detach()
    relora.reset([("proj", layer)], torch.optim.AdamW(model.parameters()), 0.9, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)
    assert torch.equal(layer.get_base_layer().weight, w0 + delta)
    assert torch.count_nonzero(b) == 0 and a.abs().max() <= 1 / math.sqrt(16)  # A ~ U(-1/sqrt(in), 1/sqrt(in))


def test_reset_of_a_real_model_keeps_its_logits_and_lora_b_learns_after_it(qwen_dir):
    from alignlab import models
    from alignlab.config import LoRAConfig, ModelConfig

    policy, *_ = models.load_policy(ModelConfig(path=str(qwen_dir)), LoRAConfig(enabled=True, r=4, dropout=0.0), "fp32")
    layers = cycles.lora_layers(policy)
    with torch.no_grad():
        for _, layer in layers:
            cycles.factors(layer)[1].normal_(std=0.05)
    ids = torch.randint(3, 400, (2, 12))
    policy.eval()
    before = policy(input_ids=ids).logits
    relora.reset(layers, torch.optim.AdamW(policy.parameters()), 0.9, torch.Generator().manual_seed(1))
    after = policy(input_ids=ids).logits
    assert (after - before).abs().max() <= 1e-6 * before.abs().max()
    after.logsumexp(-1).sum().backward()
    for name, layer in layers:  # the issue-18 regression: with A and B both zero, B's gradient would be 0
        assert cycles.factors(layer)[1].grad.abs().sum() > 0, name


@pytest.mark.parametrize("k", [1, 3, 8, 10])
def test_rank_of_the_merged_update_grows_as_min_k_r_n(k):
    model = toy_lora(16, 16, r=2)
    layer = layer_of(model)
    w0 = layer.get_base_layer().weight.detach().clone()
    g = torch.Generator().manual_seed(k)
    for _ in range(k):
        with torch.no_grad():
            cycles.factors(layer)[1].normal_(generator=g)  # a cycle's trained B
        relora.reset([("proj", layer)], torch.optim.SGD(model.parameters()), 0.0, g)
    sv = torch.linalg.svdvals(layer.get_base_layer().weight.detach() - w0)
    assert int((sv > 1e-8 * sv[0]).sum()) == min(2 * k, 16)


def test_pruning_keeps_the_top_magnitudes_in_place_and_only_for_lora_params():
    model = toy_lora(250, 12, r=4, dtype=torch.float32)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad] + list(model.base_model.model.norm.parameters()))
    model(torch.randn(3, 250)).sum().backward()
    model.base_model.model.norm.weight.grad = torch.ones(12)
    opt.step()
    a = cycles.factors(layer_of(model))[0]
    st = opt.state[a]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    vals = torch.randperm(1000).float() + 1  # 1..1000, shuffled, with signs
    m.copy_((vals * torch.where(torch.rand(1000) < 0.5, -1.0, 1.0)).view(4, 250))
    v.copy_((vals ** 2).view(4, 250))  # the same order of magnitudes as the momentum
    norm_state = {k: t.clone() for k, t in opt.state[model.base_model.model.norm.weight].items()}
    step = st["step"].clone()
    relora.prune_optimizer_states(opt, [a], 0.9)
    assert st["exp_avg"] is m and st["exp_avg_sq"] is v  # the same tensor objects, changed in place
    kept = m.abs()[m != 0]
    assert kept.numel() == 100 and kept.min() == 901  # quantile 0.9 of 1..1000 is 900.1
    assert torch.equal(v != 0, m != 0)
    assert torch.equal(st["step"], step)
    for k, t in opt.state[model.base_model.model.norm.weight].items():
        assert torch.equal(t, norm_state[k])
    # a momentum entry whose second moment is pruned goes too: else m / (sqrt(0) + eps) right after a reset
    m.copy_(vals.view(4, 250))
    v.copy_((1001 - vals).view(4, 250))  # the largest momenta have the smallest second moments
    relora.prune_optimizer_states(opt, [a], 0.9)
    assert int((v != 0).sum()) == 100 and int((m != 0).sum()) == 0


def test_magnitude_pruning_keeps_the_top_share_in_place():
    vals = torch.randperm(1000).float() + 1
    t = vals * torch.where(torch.rand(1000) < 0.5, -1.0, 1.0)
    ref = t
    relora.magnitude_prune_(t, 0.9)
    assert t is ref and int((t != 0).sum()) == 100 and t.abs()[t != 0].min() == 901
    assert relora.quantile(torch.arange(1, 1001).float(), 0.9) == pytest.approx(900.1)
    x = torch.rand(5000)
    assert float(relora.quantile(x, 0.3)) == pytest.approx(float(torch.quantile(x, 0.3)), rel=1e-6)


def test_merging_into_a_bf16_base_is_refused():
    w = torch.tensor([0.02], dtype=torch.bfloat16)
    assert torch.equal(w + 5e-5, w)  # the increment a per-step merge adds vanishes in bf16
    model = toy_lora(dtype=torch.float32)
    layer = layer_of(model)
    layer.get_base_layer().weight.data = layer.get_base_layer().weight.data.bfloat16()
    with pytest.raises(RuntimeError, match="fp32 master"):
        cycles.merge_into_base(layer)
    cycles.use_fp32_masters([("proj", layer)])
    cycles.merge_into_base(layer)


# -- rank-1 merging ---------------------------------------------------------------------------


def least_squares(seed=0, tokens=10):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(tokens, 16, generator=g, dtype=torch.float64), torch.randn(tokens, 12, generator=g, dtype=torch.float64)
    return x, y


def full_gradient(model, x, y):
    """G = dL/dW of the base weight, on a copy (what full fine-tuning would use)."""
    w = layer_of(model).get_base_layer().weight.detach().clone().requires_grad_(True)
    loss = 0.5 * ((x @ w.T - y) ** 2).sum()
    loss.backward()
    return w.grad


def rank1_layer(seed=0, alpha=2.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(16, 12, bias=False)),
                           LoraConfig(r=1, lora_alpha=alpha, target_modules=["0"], lora_dropout=0.0)).double()
    layer = layer_of(model)
    rank1.gaussian_(layer, torch.Generator().manual_seed(seed))
    return model, layer


def test_one_sgd_step_then_merge_is_the_closed_form():
    model, layer = rank1_layer()
    x, y = least_squares()
    a, b = cycles.factors(layer)
    G, s, eta = full_gradient(model, x, y), layer.scaling["default"], 0.1
    w0 = layer.get_base_layer().weight.detach().clone()
    (0.5 * ((model(x) - y) ** 2).sum()).backward()
    assert torch.equal(a.grad, torch.zeros_like(a))  # ∇a = s·bᵀG = 0 with b = 0
    torch.optim.SGD([a, b], lr=eta).step()
    cycles.merge_into_base(layer)
    want = w0 - eta * s ** 2 * G @ a.detach().T @ a.detach()
    assert (layer.get_base_layer().weight - want).abs().max() < 1e-12


def test_a_fresh_adams_first_step_is_projected_sign_sgd():
    model, layer = rank1_layer(seed=3)
    x, y = least_squares(3)
    a, b = cycles.factors(layer)
    G, s, eta = full_gradient(model, x, y), layer.scaling["default"], 0.01
    w0 = layer.get_base_layer().weight.detach().clone()
    (0.5 * ((model(x) - y) ** 2).sum()).backward()
    torch.optim.Adam([a, b], lr=eta, eps=1e-30).step()
    cycles.merge_into_base(layer)
    want = w0 - eta * s * torch.sign(s * G @ a.detach().T) @ a.detach()
    assert (layer.get_base_layer().weight - want).abs().max() < 1e-12


def merge_k(k: int, fixed_rank: int | None = None, seed=0):
    """k rank-1 SGD steps, each merged; varying data, or a gradient of fixed rank."""
    model, layer = rank1_layer(seed)
    w0 = layer.get_base_layer().weight.detach().clone()
    g = torch.Generator().manual_seed(seed + 100)
    fixed = None
    if fixed_rank:
        fixed = (torch.randn(12, fixed_rank, generator=g, dtype=torch.float64)
                 @ torch.randn(fixed_rank, 16, generator=g, dtype=torch.float64))
    for i in range(k):
        a, b = cycles.factors(layer)
        if fixed is None:
            x, y = least_squares(seed * 1000 + i)
            (0.5 * ((model(x) - y) ** 2).sum()).backward()
        else:  # a linear loss <G, W_eff>: its weight gradient is G at every step
            (fixed * (layer.get_base_layer().weight + layer.get_delta_weight("default"))).sum().backward()
        torch.optim.SGD([a, b], lr=0.01).step()
        cycles.merge_into_base(layer)
        rank1.gaussian_(layer, g)
        a.grad = b.grad = None
    return layer.get_base_layer().weight.detach() - w0, fixed


def test_rank1_merges_reach_rank_k_and_saturate_at_the_gradients_rank():
    for k in (1, 5, 12):
        delta, _ = merge_k(k)
        assert int(torch.linalg.matrix_rank(delta)) == min(k, 12)
    delta, _ = merge_k(30, fixed_rank=3)
    sv = torch.linalg.svdvals(delta)
    assert int((sv > 1e-8 * sv[0]).sum()) == 3


def test_rank1_merges_are_unbiased_towards_the_full_gradient_step():
    cos = []
    for k in (1, 10, 1000):
        delta, fixed = merge_k(k, fixed_rank=10, seed=1)
        cos.append(float((delta * -fixed).sum() / (delta.norm() * fixed.norm())))
    assert cos[0] < cos[1] < cos[2] and cos[2] > 0.95


def test_greedy_init_takes_the_top_singular_direction_and_the_exact_gradient():
    model, layer = rank1_layer(seed=5)
    x, y = least_squares(5, tokens=30)
    G, s, eta = full_gradient(model, x, y), layer.scaling["default"], 0.1
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=eta)
    cfg = SimpleNamespace(rank1=SimpleNamespace(merge_every=2, init="greedy", power_iters=50), seed=0,
                          updates_per_step=lambda: 1)
    action = rank1.Rank1(cfg, model, opt, fresh=True)
    w0 = layer.get_base_layer().weight.detach().clone()
    a, b = cycles.factors(layer)
    a0 = a.detach().clone()
    (0.5 * ((model(x) - y) ** 2).sum()).backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1e-3)  # what optim.step does
    opt.step()
    best = rank1.top_right_singular(G, a0, 50)
    assert torch.allclose(a.detach(), best, atol=1e-12, rtol=0) and abs(best.norm() - 1) < 1e-12
    assert abs(float(best.flatten() @ torch.linalg.svd(G)[2][0])) > 0.9999  # the top right-singular vector
    assert layer.get_base_layer().weight.grad is None  # used, then dropped
    action.end_step(2, 4)
    dw = layer.get_base_layer().weight.detach() - w0
    want = -(G @ best.T @ best)  # the rank-1 step along the greedy a, scaled by the same clip as the rest
    assert (dw / dw.norm() - want / want.norm()).abs().max() < 1e-9


def test_power_iterations_find_the_top_right_singular_vector():
    u, _, vh = torch.linalg.svd(torch.randn(12, 16, dtype=torch.float64))
    g = u[:, :3] @ torch.diag(torch.tensor([5.0, 1.0, 0.5], dtype=torch.float64)) @ vh[:3]
    a = rank1.top_right_singular(g, torch.randn(1, 16, dtype=torch.float64), 20)
    assert abs(float(a.flatten() @ vh[0])) > 1 - 1e-12


# -- config errors before any compute -----------------------------------------------------------

LORA = ["lora.enabled=true", "lora.r=4"]


@pytest.mark.parametrize("schema,cfg,overrides,match", [
    (SFTConfig, "sft_tiny", [*LORA, "relora.enabled=true", "relora.reset_every=20", "optim.warmup_steps=50"],
     "shorter than the lr warm-up"),
    (SFTConfig, "sft_tiny", [*LORA, "relora.enabled=true", "relora.reset_every=10", "relora.restart_warmup_steps=10",
                             "optim.warmup_steps=5"], "must be smaller than relora.reset_every"),
    (SFTConfig, "sft_tiny", ["relora.enabled=true"], "needs lora.enabled=true"),
    (SFTConfig, "sft_tiny", [*LORA, "rank1.enabled=true"], "set lora.r=1"),
    (SFTConfig, "sft_tiny", [*LORA, "relora.enabled=true", "rank1.enabled=true"], "exclusive"),
    (SFTConfig, "sft_tiny", [*LORA, "relora.enabled=true", "relora.reset_every=500", "training.watchdog.grad_spike.action=rollback"],
     "cannot undo"),
    (SFTConfig, "sft_tiny", [*LORA, "relora.enabled=true", "training.total_steps=null", "training.epochs=1"],
     "needs training.total_steps"),
    (GRPOConfig, "grpo_tiny", [*LORA, "relora.enabled=true", "relora.reset_every=10", "optim.warmup_steps=40", "relora.restart_warmup_steps=2",
                               "rl.epochs_per_rollout_batch=2"], r"10 steps \(20 updates\) is shorter"),
    (DPOConfig, "dpo_tiny", [*LORA, "rank1.enabled=true", "lora.r=1", "dpo.reference=adapter"], "stops being the reference"),
    (PPOConfig, "ppo_tiny", [*LORA, "rank1.enabled=true", "lora.r=1", "ppo.critic=lora_adapters"], "share one base"),
    (PPOConfig, "ppo_tiny", [*LORA, "rank1.enabled=true", "lora.r=1", "ppo.early_stop_kl=0.1"], "early_stop_kl"),
])
def test_bad_settings_are_refused_at_load_time(schema, cfg, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(schema, cfg, overrides)


# -- the loops ------------------------------------------------------------------------------------


def rows(run_dir, key):
    return [(r["step"], r[key]) for r in tracking.read_metrics(run_dir) if key in r]


def weights_of(ckpt):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(ckpt.rglob("*.safetensors")):
        out.update({f"{f.relative_to(ckpt)}:{k}": v for k, v in load_file(f).items()})
    return out


RELORA = {"lora.enabled": "true", "lora.r": 4, "lora.dropout": 0.0, "relora.enabled": "true", "relora.reset_every": 3,
          "relora.restart_warmup_steps": 1, "optim.warmup_steps": 1, "data.eval": "null", "training.total_steps": 6,
          "training.save_every": 5, "analysis.rank_every": 3}


def test_relora_sft_resumes_exactly_across_resets_and_its_checkpoint_is_the_merged_model(tmp_path, qwen_dir):
    from transformers import AutoModelForCausalLM

    from alignlab.train import sft

    straight = load_sft(tmp_path, qwen_dir, "straight", **RELORA)
    sft.main(straight)
    split = load_sft(tmp_path, qwen_dir, "split", **RELORA)
    with pytest.raises(KeyboardInterrupt):  # stops at step 5: one reset merged (step 3), B != 0 again
        sft.main(split, hooks=[StopAt(5)])
    ckpt = split.run_dir / "checkpoints/step_5"
    from safetensors.torch import load_file

    assert any(v.abs().sum() > 0 for k, v in load_file(ckpt / "lora_cycle/adapter_model.safetensors").items() if "lora_B" in k)
    sft.main(split)
    for key in ("loss/train", "lr", "relora/reset", "rank/q_proj/erank", "rank/q_proj/numerical_rank"):
        assert rows(split.run_dir, key) == rows(straight.run_dir, key), key  # bit for bit
    assert [s for s, _ in rows(straight.run_dir, "relora/reset")] == [3, 6]
    assert [v for _, v in rows(straight.run_dir, "rank/q_proj/numerical_rank")] == [4, 8]  # min(K·r, n)
    lrs = [v for _, v in rows(straight.run_dir, "lr")]
    assert lrs[2] == lrs[5] == 0.0 and min(lrs[3:5]) > 0  # lr restarts at 0 after each reset
    wa, wb = weights_of(straight.run_dir / "checkpoints/step_6"), weights_of(split.run_dir / "checkpoints/step_6")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # the root is the trained model: plain transformers gives the run's own logits
    from alignlab import models

    plain = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    policy, *_ = models.load_policy(split.model, split.lora, "fp32", resume_from=ckpt)
    ids = torch.randint(3, 400, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, policy.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert (split.run_dir / "analysis/rank/steps/step_3.json").is_file()


@pytest.mark.parametrize("init", ["gaussian", "greedy"])
def test_rank1_sft_resumes_exactly_through_merges(tmp_path, qwen_dir, init):
    from alignlab.train import sft

    kw = {"lora.enabled": "true", "lora.r": 1, "lora.alpha": 1.0, "lora.dropout": 0.0, "rank1.enabled": "true",
          "rank1.init": init, "data.eval": "null", "training.total_steps": 4, "training.save_every": 2,
          "analysis.rank_every": 2, "optim.lr": 3e-3}
    straight = load_sft(tmp_path, qwen_dir, "s" + init, **kw)
    sft.main(straight)
    split = load_sft(tmp_path, qwen_dir, "p" + init, **kw)
    with pytest.raises(KeyboardInterrupt):
        sft.main(split, hooks=[StopAt(2)])
    sft.main(split)
    for key in ("loss/train", "rank1/merges", "rank/q_proj/erank", "rank/q_proj/numerical_rank"):
        assert rows(split.run_dir, key) == rows(straight.run_dir, key), key
    assert [v for _, v in rows(straight.run_dir, "rank1/merges")] == [1, 2, 3, 4]
    assert [v for _, v in rows(straight.run_dir, "rank/q_proj/numerical_rank")] == [2, 4]  # one rank per merge
    losses = [v for _, v in rows(straight.run_dir, "loss/train")]
    assert losses[-1] < losses[0]
    wa, wb = weights_of(straight.run_dir / "checkpoints/step_4"), weights_of(split.run_dir / "checkpoints/step_4")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_relora_dpo_uses_a_precomputed_reference_and_resets(tmp_path, qwen_dir):
    import json

    from alignlab import cli

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"id": i, "prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)}) + "\n"
                         for i in range(8)))
    args = ["dpo", "-c", "dpo_tiny", f"out_dir={tmp_path}", "name=dpo", f"model.path={qwen_dir}", f"data.train={p}",
            f"data.eval={p}", "training.total_steps=4", "training.global_batch_pairs=4", "training.micro_batch=4",
            "data.max_seq_len=32", "lora.enabled=true", "lora.r=4", "relora.enabled=true", "relora.reset_every=2",
            "relora.restart_warmup_steps=0", "optim.warmup_steps=0", "optim.lr=1e-2"]
    assert cli.main(args) == 0
    assert (tmp_path / "dpo/reference_logps.pt").exists()  # not the adapters-off base, which the resets move
    assert [s for s, _ in rows(tmp_path / "dpo", "relora/reset")] == [2, 4]
    assert (tmp_path / "dpo/checkpoints/step_4/lora_cycle/base_linears.safetensors").is_file()


def test_relora_grpo_with_kl_uses_a_frozen_copy_and_resets(tmp_path, qwen_dir, monkeypatch):
    from alignlab import cli, models

    loaded = []
    real = models.load_frozen_reference
    monkeypatch.setattr(models, "load_frozen_reference", lambda *a, **k: loaded.append(1) or real(*a, **k))
    args = ["grpo", "-c", "grpo_tiny", f"out_dir={tmp_path}", "name=g", f"model.path={qwen_dir}", "training.total_steps=2",
            "rl.prompts_per_step=4", "rl.group_size=4", "training.micro_batch=16", "sampling.max_new_tokens=4",
            "eval.max_examples=4", "eval.max_new_tokens=4", "task.arithmetic.n_eval=4", "rl.kl_coef=0.1",
            "rl.epochs_per_rollout_batch=2", "lora.enabled=true", "lora.r=4", "relora.enabled=true",
            "relora.reset_every=2", "relora.restart_warmup_steps=1", "optim.lr=1e-3"]
    assert cli.main(args) == 0
    assert loaded  # the reference is a frozen copy, not the base the resets merge into
    assert [s for s, _ in rows(tmp_path / "g", "relora/reset")] == [2]
    assert [v for _, v in rows(tmp_path / "g", "lr")] == [1e-3, 0.0]  # the update after the reset runs at lr 0


PPO_RUNS = {  # the shared critic with rank-1 merges; ReLoRA with a separate critic (its own LoRA is not merged)
    "rank1-shared": ["lora.r=1", "rank1.enabled=true"],
    "relora-separate": ["lora.r=4", "relora.enabled=true", "relora.reset_every=1", "relora.restart_warmup_steps=0",
                        "ppo.critic=separate"],
}


@pytest.mark.parametrize("kind", list(PPO_RUNS))
def test_ppo_merges_the_policy_adapter_only(tmp_path, qwen_dir, kind):
    from alignlab import cli

    args = ["ppo", "-c", "ppo_tiny", f"out_dir={tmp_path}", "name=ppo", f"model.path={qwen_dir}", "training.total_steps=2",
            "ppo.rollout_size=8", "ppo.minibatch_seqs=4", "ppo.num_ppo_epochs=1", "sampling.max_new_tokens=4",
            "eval.max_examples=4", "eval.max_new_tokens=4", "task.arithmetic.n_eval=4", "reward.source=heuristic",
            "lora.enabled=true", "analysis.rank_every=1", "optim.lr=1e-3", *PPO_RUNS[kind]]
    assert cli.main(args) == 0
    key = "rank1/merges" if kind.startswith("rank1") else "relora/reset"
    assert [v for _, v in rows(tmp_path / "ppo", key)] == [1, 2]
    per_merge = 1 if kind.startswith("rank1") else 4  # the policy's rank per merge
    assert [v for _, v in rows(tmp_path / "ppo", "rank/q_proj/numerical_rank")] == [per_merge, 2 * per_merge]
    if kind.endswith("separate"):  # the critic's own adapter folder, next to the merged policy
        assert (tmp_path / "ppo/checkpoints/step_2/critic/adapter_config.json").is_file()
