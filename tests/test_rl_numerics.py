"""GRPO-family numerics against slow references and closed forms."""
import itertools
import math

import pytest
import torch

from alignlab import advantages as A
from alignlab import cs336 as C
from alignlab import losses as L


def test_group_normalize_matches_a_loop_and_uses_unbiased_std():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 1.0, 2.0, 0.0])
    adv = A.group_normalize(r, group_size=4, normalize_by_std=True, advantage_eps=1e-6)
    for g in range(3):
        x = r[4 * g : 4 * g + 4].tolist()
        mean = sum(x) / 4
        std = math.sqrt(sum((v - mean) ** 2 for v in x) / 3)  # n - 1
        for i in range(4):
            assert adv[4 * g + i].item() == pytest.approx((x[i] - mean) / (std + 1e-6), abs=1e-5)
    assert torch.all(adv[4:8] == 0)  # a constant group carries no signal
    no_std = A.group_normalize(r, 4, normalize_by_std=False)
    torch.testing.assert_close(no_std[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_compute_group_normalized_rewards_interface():
    fn = lambda resp, gt: {"reward": float(resp == gt), "format_reward": 1.0, "answer_reward": float(resp == gt)}
    adv, raw, meta = A.compute_group_normalized_rewards(fn, ["4", "5", "4", "4", "1", "2"], ["4"] * 3 + ["9"] * 3,
                                                        group_size=3, advantage_eps=1e-6, normalize_by_std=True)
    torch.testing.assert_close(raw, torch.tensor([1.0, 0, 1, 0, 0, 0]))
    assert torch.all(adv[3:] == 0) and adv[0] > 0 > adv[1]
    assert meta["reward/mean"] == pytest.approx(2 / 6) and meta["groups/no_signal_frac"] == 0.5
    with pytest.raises(ValueError):
        A.compute_group_normalized_rewards(fn, ["1"] * 5, ["1"] * 5, 3, 1e-6, True)


def test_leave_one_out_against_brute_force():
    r = torch.tensor([1.0, 0.0, 2.0, 5.0, 1.0, 1.0])
    adv = A.leave_one_out(r, 3)
    for i in range(6):
        g = (i // 3) * 3
        others = [r[j].item() for j in range(g, g + 3) if j != i]
        assert adv[i].item() == pytest.approx(r[i].item() - sum(others) / 2)


def test_naive_pg_loss_and_clip_inactive_at_ratio_one():
    torch.manual_seed(0)
    logp = (-torch.rand(3, 5)).requires_grad_()
    adv = torch.tensor([1.0, -2.0, 0.5])
    naive = C.compute_naive_policy_gradient_loss(adv[:, None], logp)
    torch.testing.assert_close(naive, -adv[:, None] * logp)
    clip, meta = C.compute_grpo_clip_loss(adv[:, None], logp, logp.detach(), cliprange=0.2)
    torch.testing.assert_close(clip, -adv[:, None] * torch.ones_like(logp))  # ratio 1: loss = -A
    (g_naive,) = torch.autograd.grad(naive.sum(), logp)
    (g_clip,) = torch.autograd.grad(clip.sum(), logp)
    torch.testing.assert_close(g_clip, g_naive)  # d(ratio)/d(logp) = 1 at ratio 1
    assert not meta["clipped"].any()


def test_clip_values_and_flags_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[0.5, 0.9, 1.1, 1.5]])).requires_grad_()
    pos, meta = C.compute_grpo_clip_loss(torch.tensor([2.0]), logp, old, cliprange=0.2)
    torch.testing.assert_close(pos.detach(), -2.0 * torch.tensor([[0.5, 0.9, 1.1, 1.2]]))
    assert meta["clipped"].tolist() == [[False, False, False, True]]
    neg, meta = C.compute_grpo_clip_loss(torch.tensor([-1.0]), logp, old, cliprange=0.2)
    torch.testing.assert_close(neg.detach(), torch.tensor([[0.8, 0.9, 1.1, 1.5]]))
    assert meta["clipped"].tolist() == [[True, False, False, False]]
    (g,) = torch.autograd.grad(pos.sum(), logp)
    assert g[0, 3] == 0 and g[0, 0] != 0  # a clipped token gets no gradient


def test_clip_higher_is_asymmetric():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 0.75]]))
    loss, meta = L.pg_clip_asymmetric(torch.tensor([1.0]), logp, old, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-1.25, -0.75]]))  # 1.25 < 1.28: not clipped
    assert not meta["clipped_high"].any()
    loss, meta = L.pg_clip_asymmetric(torch.tensor([1.0]), torch.log(torch.tensor([[1.5, 1.0]])), old, 0.2, 0.28)
    assert loss[0, 0].item() == pytest.approx(-1.28) and meta["clipped_high"][0, 0]


def test_gspo_gradient_at_ratio_one_is_the_sequence_mean_policy_gradient():
    torch.manual_seed(1)
    logp = (-torch.rand(2, 4)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5])
    gspo, _ = L.gspo_loss(adv, logp, logp.detach(), mask, 0.2, 0.2)
    (g1,) = torch.autograd.grad(L.aggregate(gspo, mask, "seq_mean", mask.sum(), 2), logp)
    ref = L.aggregate(C.compute_naive_policy_gradient_loss(adv, logp), mask, "seq_mean", mask.sum(), 2)
    (g2,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(g1, g2)
    # the sequence ratio is clipped as a whole: a far-off-policy sequence gets no gradient
    far, meta = L.gspo_loss(adv, logp, logp.detach() - 1.0, mask, 0.2, 0.2)
    (g3,) = torch.autograd.grad(L.aggregate(far, mask, "seq_mean", mask.sum(), 2), logp)
    assert torch.all(g3[0] == 0) and meta["clipped"][0, :3].all()


def test_compute_policy_gradient_loss_dispatch():
    logp = -torch.rand(2, 3)
    r = torch.tensor([[1.0], [0.0]])
    a = torch.tensor([[0.5], [-0.5]])
    torch.testing.assert_close(C.compute_policy_gradient_loss(logp, "no_baseline", raw_rewards=r)[0], -r * logp)
    torch.testing.assert_close(C.compute_policy_gradient_loss(logp, "reinforce_with_baseline", advantages=a)[0], -a * logp)
    loss, meta = C.compute_policy_gradient_loss(logp, "grpo_clip", advantages=a, old_log_probs=logp, cliprange=0.2)
    assert "clipped" in meta and loss.shape == logp.shape
    with pytest.raises(ValueError, match="needs"):
        C.compute_policy_gradient_loss(logp, "grpo_clip", advantages=a)
    with pytest.raises(ValueError, match="unknown loss_type"):
        C.compute_policy_gradient_loss(logp, "ppo", advantages=a)


def test_grpo_microbatch_train_step_value_and_accumulation():
    torch.manual_seed(2)
    logp = (-torch.rand(3, 4)).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([[1.0], [-1.0], [2.0]])
    loss, _ = C.grpo_microbatch_train_step(logp, mask, 4, "reinforce_with_baseline", advantages=adv)
    per_seq = [(-adv[i, 0] * logp[i][mask[i]]).mean() for i in range(3)]
    assert loss.item() == pytest.approx((sum(per_seq) / 3 / 4).item(), rel=1e-6)
    g1 = logp.grad.clone()
    C.grpo_microbatch_train_step(logp, mask, 4, "reinforce_with_baseline", advantages=adv)
    torch.testing.assert_close(logp.grad, 2 * g1)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean", "constant"])
def test_aggregate_micro_batches_sum_to_the_step(mode):
    torch.manual_seed(3)
    x = torch.randn(8, 6)
    m = torch.rand(8, 6) > 0.3
    m[:, 0] = True
    kw = dict(n_tokens=m.sum().item(), n_seqs=8, constant=6)
    whole = L.aggregate(x, m, mode, **kw)
    parts = sum(L.aggregate(x[i : i + 2], m[i : i + 2], mode, **kw) for i in range(0, 8, 2))
    torch.testing.assert_close(whole, parts)
    ref = {"token_mean": (x * m).sum() / m.sum(), "seq_mean": ((x * m).sum(1) / m.sum(1)).mean(),
           "constant": (x * m).sum() / (6 * 8)}[mode]
    torch.testing.assert_close(whole, ref)


def test_kl_estimators_closed_forms_and_unbiasedness():
    lp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    log_r = ref - lp
    torch.testing.assert_close(L.kl_estimate(lp, ref, "k1"), -log_r)
    torch.testing.assert_close(L.kl_estimate(lp, ref, "k2"), 0.5 * log_r**2)
    torch.testing.assert_close(L.kl_estimate(lp, ref, "k3"), log_r.exp() - 1 - log_r)
    assert L.kl_estimate(lp, lp, "k3").abs().max() == 0 and (L.kl_estimate(lp, ref, "k3") >= 0).all()
    # E_{x~p}[k1] = E_{x~p}[k3] = KL(p || q) exactly, on a small categorical
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    kl = (p * (p / q).log()).sum()
    for kind in ("k1", "k3"):
        expect = (p * L.kl_estimate(p.log(), q.log(), kind)).sum()
        torch.testing.assert_close(expect, kl)


def test_gae_against_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last position is padding
    g, lam = 0.9, 0.8
    d2 = 1.0 + 0 - 0.7
    d1 = 0.0 + g * 0.7 - 0.6
    d0 = 0.0 + g * 0.6 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = A.gae(rewards, values, mask, g, lam)
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.7, 0.0]]))


def test_whiten_masked():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    w = A.whiten(x, m)
    assert w[0, :3].mean().abs() < 1e-6 and w[0, :3].pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    assert w[0, 3] == 0


def test_zero_signal_groups():
    assert A.zero_signal_groups(torch.tensor([1.0, 1, 0, 1, 0, 0]), 2).tolist() == [True, False, True]


def test_truncated_is_weights_closed_form_and_no_grad():
    train = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    sampler = torch.tensor([[-1.0, -1.0, -2.0]])
    w = L.truncated_is_weights(train, sampler, cap=2.0)
    # exp(0) = 1; exp(-1) = 0.368; exp(1.5) = 4.48 capped at 2
    torch.testing.assert_close(w, torch.tensor([[1.0, math.exp(-1.0), 2.0]]))
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap > 0"):
        L.truncated_is_weights(train, sampler, cap=0.0)


def test_vllm_section_is_strict():
    from alignlab.config import ConfigError, GRPOConfig, load_config

    cfg = load_config(GRPOConfig, "grpo_tiny", ["sampling.backend=vllm", "sampling.vllm.gpu_memory_utilization=0.5"])
    assert cfg.sampling.vllm.gpu_memory_utilization == 0.5 and cfg.sampling.vllm.sleep is False
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_config(GRPOConfig, "grpo_tiny", ["sampling.vllm.gpu_memory_utilization=1.5"])
    with pytest.raises(ConfigError, match="sleep"):
        load_config(GRPOConfig, "grpo_tiny", ["sampling.vllm.slep=true"])
