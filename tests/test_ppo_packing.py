"""PPO padding-free (`ppo.packing`) and token-budgeted micro-batches (`training.max_tokens_per_micro_batch`):
the same log-probs, values and gradients as the padded forward for every critic, and the same update."""
import pytest
import torch
from safetensors.torch import load_file

from alignlab import cli, critics, logprobs, models, rollout, tracking
from alignlab.config import PPOConfig, load_config

CRITIC_RUNS = {"shared": {}, "separate": {"ppo.critic": "separate"},
               "lora_adapters": {"ppo.critic": "lora_adapters", "lora.enabled": "true", "lora.r": 4}}


def ppo_args(tmp_path, model, name, **extra):
    kw = {"name": name, "out_dir": str(tmp_path), "model.path": str(model), "training.total_steps": 1,
          "ppo.rollout_size": 8, "ppo.minibatch_seqs": 8, "ppo.num_ppo_epochs": 2, "training.micro_batch": 4,
          "sampling.max_new_tokens": 6, "eval.max_examples": 4, "eval.max_new_tokens": 2, "training.eval_every": 0,
          "optim.lr": 1e-3, "reward.source": "heuristic",
          # Adam's first step is lr * g / (|g| + eps): with eps 1e-8, a gradient entry that is 0 up to fp32 rounding
          # moves by +-lr depending on the rounding; 1e-4 keeps the update a smooth function of the gradient
          "optim.eps": 1e-4,
          "ppo.critic_lr": 0.05,  # the head starts at 0: after one step it must be big enough to show the trunk's values
          "task.name": "math", "task.prompt": "question_only"}
    kw.update(extra)
    return ["ppo", "-c", "ppo_tiny", *[f"{k}={v}" for k, v in kw.items()]]


def ragged_batch(tok) -> dict:
    """Right-padded rollout tensors of six sequences of very different lengths (2 to 13 input tokens)."""
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, len(tok), (n,), generator=g).tolist()  # noqa: E731
    shapes = [(9, 5), (2, 2), (5, 1), (1, 3), (4, 4), (2, 1)]  # (prompt, completion) tokens
    ro = rollout.Rollout(prompts=[""] * 6, completions=[""] * 6, prompt_ids=[ids(p) for p, _ in shapes],
                         completion_ids=[ids(c) for _, c in shapes], n=1)
    return ro.tensors(tok.pad_token_id)


def continuous_positions(monkeypatch):
    """A broken packer: position_ids run on across a packed row instead of restarting per sequence."""
    init = logprobs.Packing.__init__

    def broken(self, attention_mask, pack_len=None):
        init(self, attention_mask, pack_len)
        self.position_ids = torch.arange(self.packed[1], device=self.position_ids.device).expand(self.packed).clone()

    monkeypatch.setattr(logprobs.Packing, "__init__", broken)


@pytest.mark.parametrize("broken", [False, True], ids=["restart", "broken_positions"])
@pytest.mark.parametrize("critic", list(CRITIC_RUNS))
def test_critic_forward_packed_equals_padded_with_gradients(tmp_path, qwen_dir, critic, broken, monkeypatch):
    """critics.forward(packed=True): log-probs, entropies and values at every real token equal the padded
    forward's, zeros on padding, and the policy's, the critic's and the head's gradients are the same. With
    position_ids that do not restart per sequence the comparison fails, so it can see a broken packer."""
    cfg = load_config(PPOConfig, "ppo_tiny", ppo_args(tmp_path, qwen_dir, critic, **CRITIC_RUNS[critic])[3:])
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, "fp32")
    crit = critics.build(cfg, policy, tok, "fp32", None, device)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a zero head sends the trunk no gradient; equal adapters would hide a wrong one
        crit.head.weight.normal_(generator=g)
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(generator=g)
    b = ragged_batch(tok)
    am, m = b["attention_mask"].bool(), b["response_mask"]
    lengths = b["attention_mask"].sum(-1)
    assert lengths.max() - lengths.min() >= 8 and len(logprobs.Packing(b["attention_mask"]).src[0]) == lengths.sum()
    assert logprobs.Packing(b["attention_mask"]).packed[0] < len(lengths)  # rows really are shared
    if broken:
        continuous_positions(monkeypatch)
    params = {f"policy.{n}": p for n, p in policy.named_parameters()}
    params |= {f"head.{n}": p for n, p in crit.head.named_parameters()}
    if crit.model is not policy:
        params |= {f"critic.{n}": p for n, p in crit.model.named_parameters()}
    res = {}
    for packed in (False, True):
        for p in params.values():
            p.grad = None
        out, values = critics.forward(policy, crit, b, 0.7, prec, device, entropy=True, packed=packed)
        crit.backward(-(out["log_probs"] * m).sum() - 0.1 * (out["token_entropy"] * m).sum(),
                      ((values - 1) ** 2 * m).sum())
        res[packed] = (out, values, {n: p.grad.clone() for n, p in params.items() if p.grad is not None})
    (pad, v_pad, g_pad), (pk, v_pk, g_pk) = res[False], res[True]
    assert any(n.startswith("head.") for n in g_pad) and len(g_pad) > 4
    checks = {k: torch.allclose(pk[k][am], pad[k][am], atol=1e-5, rtol=0) for k in ("log_probs", "token_entropy")}
    checks["values"] = torch.allclose(v_pk[am], v_pad[am], atol=1e-5, rtol=0)
    checks["grad keys"] = g_pk.keys() == g_pad.keys()
    # gradients are sums over tokens (up to ~1e4 here): compared to fp32 rounding of their largest entry
    checks |= {n: bool((g_pk[n] - g_pad[n]).abs().max() <= 1e-5 * g_pad[n].abs().max() + 1e-6)
               for n in g_pad if n in g_pk}
    if broken:  # the policy's log-probs and every critic's values see it
        assert not checks["log_probs"] and not checks["values"]
    else:
        assert all(checks.values()), [k for k, ok in checks.items() if not ok]
        assert all((pk[k][~am] == 0).all() for k in ("log_probs", "token_entropy"))


def first_step(tmp_path, name) -> tuple[dict, dict]:
    """(the first rollout step's metrics, {file:tensor} of the policy, the critic's folder and the value head)."""
    row = next(r for r in tracking.read_metrics(tmp_path / name) if "reward/score" in r)
    ckpt = tmp_path / name / "checkpoints/step_1"
    w = {f"{f.relative_to(ckpt)}:{k}": v for f in sorted(ckpt.rglob("*.safetensors")) for k, v in load_file(f).items()}
    head = torch.load(ckpt / "trainer_state.pt", weights_only=False)["extra"]["value_head"]
    return row, w | {f"head:{k}": v for k, v in head.items()}


@pytest.fixture
def spy(monkeypatch):
    """What the runs did: how many packings (padding-free forwards), and each minibatch's micro-batches
    as the token lengths of their sequences."""
    from alignlab import data

    seen = {"packings": 0, "shared_in_training": 0, "parts": []}
    init, budget = logprobs.Packing.__init__, data.budget_micro_batches

    def counting(self, *a, **kw):
        init(self, *a, **kw)
        seen["packings"] += 1
        # a training pass (with gradients) that put two sequences in one row
        seen["shared_in_training"] += torch.is_grad_enabled() and self.packed[0] < self.padded[0]

    def recording(idx, lengths, *a, **kw):
        out = budget(idx, lengths, *a, **kw)
        length = {i: n for i, (n,) in zip(idx, lengths)}
        seen["parts"].append([[length[i] for i in part] for part in out])
        return out

    monkeypatch.setattr(logprobs.Packing, "__init__", counting)
    monkeypatch.setattr(data, "budget_micro_batches", recording)
    return seen


RUNS = {  # name: overrides on top of the plain padded run; each must take the plain run's first step
    "packed": {"ppo.packing": "true"},
    "capped": {"training.max_tokens_per_micro_batch": 100},
    "packed_capped": {"ppo.packing": "true", "training.max_tokens_per_micro_batch": 80},
}
CASES = [("shared", r) for r in RUNS] + [("separate", "packed"), ("lora_adapters", "packed")]


@pytest.mark.parametrize("critic,run", CASES)
def test_ppo_packing_and_token_budget_change_memory_not_the_update(tmp_path, qwen_dir, ragged_questions, critic, run, spy):
    """Same rollouts (same seed, same start): the first rollout step's metrics and the weights (policy, critic,
    value head) after its two optimizer steps (2 epochs of one minibatch) match the padded run's, whose
    minibatch runs as 2 micro-batches of 4 sequences."""
    data = {"task.train": ragged_questions, "task.eval": ragged_questions}
    assert cli.main(ppo_args(tmp_path, qwen_dir, "plain", **data, **CRITIC_RUNS[critic])) == 0
    assert spy["packings"] == 0 and len(spy["parts"]) == 2 and all(len(mbs) == 2 for mbs in spy["parts"])
    spy["parts"].clear()
    assert cli.main(ppo_args(tmp_path, qwen_dir, run, **data, **CRITIC_RUNS[critic], **RUNS[run])) == 0
    if "ppo.packing" in RUNS[run]:  # old log-probs + values, then every training micro-batch; and the reference
        per_forward = 1 if critic == "shared" else 2  # the policy's; the critic's own trunk
        assert spy["packings"] == per_forward * (1 + sum(len(mbs) for mbs in spy["parts"])) + 1
        if "training.max_tokens_per_micro_batch" not in RUNS[run]:  # (sorted by length, rows rarely share)
            assert spy["shared_in_training"] >= per_forward
    else:
        assert spy["packings"] == 0
    if "training.max_tokens_per_micro_batch" in RUNS[run]:  # the budget cut the minibatches otherwise, and held
        cap, packed = RUNS[run]["training.max_tokens_per_micro_batch"], "ppo.packing" in RUNS[run]
        assert any(len(mbs) != 2 for mbs in spy["parts"])
        assert all((sum(mb) if packed else len(mb) * max(mb)) <= cap or len(mb) == 1
                   for mbs in spy["parts"] for mb in mbs)
    else:
        assert all(len(mbs) == 2 for mbs in spy["parts"])
    (plain, w_plain), (other, w_other) = first_step(tmp_path, "plain"), first_step(tmp_path, run)
    for k in ("reward/score", "loss/policy", "value/loss", "entropy/mean", "ppo/approx_kl", "clip/frac",
              "value/clip_frac", "kl/ref", "returns/mean", "value/explained_variance"):
        assert other[k] == pytest.approx(plain[k], rel=1e-4, abs=1e-5), k
    assert w_plain.keys() == w_other.keys()
    start = {f"model.safetensors:{k}": v for k, v in load_file(qwen_dir / "model.safetensors").items()}
    policy_moved = [k for k, v in w_plain.items() if k.startswith(("model.", "adapter_model."))  # LoRA's B starts at 0
                    and (not torch.equal(v, start[k]) if k in start else "lora_B" in k and v.abs().sum() > 0)]
    assert policy_moved and w_plain["head:weight"].abs().sum() > 0  # the steps did train policy and head
    bad = [k for k in w_plain if not torch.allclose(w_other[k], w_plain[k], atol=1e-5, rtol=1e-4)]
    assert not bad, bad[:5]
