"""DPO family, Bradley-Terry and the PPO value loss: closed forms, symmetry, gradient direction."""
import math

import pytest
import torch

from alignlab import losses as L


def rand(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(n, generator=g) * 5 for _ in range(4)]


def test_dpo_is_log2_when_policy_equals_reference():
    pc, pr, _, _ = rand()
    loss, stats = L.dpo_sigmoid(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    torch.testing.assert_close(loss, torch.full((5,), math.log(2)))
    assert torch.all(stats["rewards/margin"] == 0)


def test_dpo_closed_form_symmetry_and_gradient_direction():
    pc, pr, rc, rr = rand(seed=1)
    beta = 0.3
    h = (pc - rc) - (pr - rr)
    loss, stats = L.dpo_sigmoid(pc, pr, rc, rr, beta)
    torch.testing.assert_close(loss, torch.log1p(torch.exp(-beta * h)))
    swapped, _ = L.dpo_sigmoid(pr, pc, rr, rc, beta)  # swapping chosen and rejected flips the margin
    torch.testing.assert_close(swapped, torch.log1p(torch.exp(beta * h)))
    torch.testing.assert_close(stats["rewards/chosen"], beta * (pc - rc))
    c = pc.clone().requires_grad_()
    L.dpo_sigmoid(c, pr, rc, rr, beta)[0].sum().backward()
    assert torch.all(c.grad < 0)  # raising log p(chosen) lowers the loss


def test_cdpo_ipo_hinge_simpo_closed_forms():
    pc, pr, rc, rr = rand(seed=2)
    beta, eps = 0.2, 0.1
    h = (pc - rc) - (pr - rr)
    cdpo, _ = L.dpo_sigmoid(pc, pr, rc, rr, beta, label_smoothing=eps)
    sig = torch.sigmoid(beta * h)
    torch.testing.assert_close(cdpo, -(1 - eps) * torch.log(sig) - eps * torch.log(1 - sig))
    ipo, _ = L.dpo_ipo(pc, pr, rc, rr, beta, 1.0, 1.0)
    torch.testing.assert_close(ipo, (h - 1 / (2 * beta)) ** 2)
    hinge, _ = L.dpo_hinge(pc, pr, rc, rr, beta)
    torch.testing.assert_close(hinge, torch.clamp(1 - beta * h, min=0))
    simpo, st = L.simpo(pc / 3, pr / 4, beta=2.0, gamma=0.5)
    torch.testing.assert_close(simpo, -torch.log(torch.sigmoid(2.0 * (pc / 3 - pr / 4) - 0.5)))
    assert st["rewards/accuracy"].tolist() == ((pc / 3) > (pr / 4)).float().tolist()


def test_bradley_terry_closed_form_centering_and_accuracy():
    rc = torch.tensor([2.0, 0.0, -1.0])
    rr = torch.tensor([1.0, 0.5, -3.0])
    loss, stats = L.bradley_terry(rc, rr)
    assert loss.item() == pytest.approx(torch.log1p(torch.exp(-(rc - rr))).mean().item())
    assert stats["accuracy"].item() == pytest.approx(2 / 3)
    centred, _ = L.bradley_terry(rc, rr, center_coef=0.1)
    assert centred.item() == pytest.approx(loss.item() + 0.1 * ((rc + rr) ** 2).mean().item())
    assert L.bradley_terry(torch.zeros(4), torch.zeros(4))[0].item() == pytest.approx(math.log(2))


def test_value_loss_clip_by_hand():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    v = torch.tensor([[0.5, -0.1, 2.0]])
    ret = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, st = L.value_loss_clipped(v, old, ret, mask, clip=0.2, n_tokens=2)
    # token 0: unclipped (0.5-1)^2=0.25, clipped (0.2-1)^2=0.64 -> max 0.64; token 1: (-1.1)^2 both -> 1.21
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert st["value/clip_frac"].item() == pytest.approx(0.5)


# One pair by hand: chosen 2 tokens, rejected 3; log pi(c) = -4, log pi(r) = -9, ref: -5 and -6.
HAND = dict(lp={"c": torch.tensor([-4.0]), "r": torch.tensor([-9.0])}, ref={"c": torch.tensor([-5.0]), "r": torch.tensor([-6.0])},
            n={"c": torch.tensor([2.0]), "r": torch.tensor([3.0])})


def _dpo_loss(**section):
    from alignlab.config import DPOSection
    from alignlab.train.dpo import LOSSES

    cfg = DPOSection(**section)
    return LOSSES[cfg.loss](HAND["lp"], HAND["ref"], HAND["n"], cfg)[0].item()


def test_ipo_uses_the_per_token_margin_by_default_and_the_summed_one_on_request():
    # mean (the paper's results, TRL): h = (-4+5)/2 - (-9+6)/3 = 0.5 + 1 = 1.5; beta 0.5: (1.5 - 1)^2 = 0.25
    assert _dpo_loss(loss="ipo", beta=0.5) == pytest.approx(0.25)
    # sum: h = 1 - (-3) = 4; (4 - 1)^2 = 9
    assert _dpo_loss(loss="ipo", beta=0.5, ipo_margin="sum") == pytest.approx(9.0)
    from alignlab.config import ConfigError, DPOConfig, load_config

    with pytest.raises(ConfigError, match="dpo.ipo_margin only applies to dpo.loss=ipo"):
        load_config(DPOConfig, "dpo_tiny", ["dpo.ipo_margin=sum"])


def test_simpo_and_cdpo_against_their_papers_by_hand():
    # SimPO (arXiv:2405.14734, eq. 6): -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma)
    # = -log sigmoid(2 * (-4/2) - 2 * (-9/3) - 0.5) = -log sigmoid(1.5): gamma is not scaled by beta
    assert _dpo_loss(loss="simpo", beta=2.0, simpo_gamma=0.5) == pytest.approx(math.log1p(math.exp(-1.5)))
    # cDPO (Mitchell 2023, "A note on DPO with noisy preferences"): -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h),
    # h summed over tokens as in DPO: h = 4, beta 0.5 -> beta h = 2
    want = -0.9 * math.log(1 / (1 + math.exp(-2))) - 0.1 * math.log(1 / (1 + math.exp(2)))
    assert _dpo_loss(loss="cdpo", beta=0.5, label_smoothing=0.1) == pytest.approx(want)
