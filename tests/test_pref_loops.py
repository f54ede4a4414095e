"""DPO, reward models, PPO and pipelines on tiny models through the CLI."""
import json
import math
import subprocess
import sys

import pytest
import torch

from alignlab import cli, tracking
from alignlab.data import DataError, load_pref_examples


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefs") / "p.jsonl"
    rows = [{"id": i, "prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + d)}
            for i, (a, b, d) in enumerate([(1, 2, 1), (13, 29, -10), (7, 40, 1), (3, 3, 2), (20, 5, -1), (9, 9, 10),
                                           (11, 4, 1), (30, 12, -2)])]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def base_args(tmp_path, model, name, data_file, **extra):
    kw = {"name": name, "out_dir": str(tmp_path), "model.path": str(model), "data.train": str(data_file),
          "data.eval": str(data_file), "training.total_steps": 3, "training.global_batch_pairs": 4,
          "training.micro_batch": 2, "training.eval_every": 0, "training.save_every": 0, "data.max_seq_len": 32}
    kw.update(extra)
    return [f"{k}={v}" for k, v in kw.items()]


def test_preference_lines_are_validated_with_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n" + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing 'rejected'"):
        load_pref_examples(str(p), "train", 0, 10)
    p.write_text(json.dumps({"prompt": "a", "chosen": "same", "rejected": "same"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 'chosen' and 'rejected' are identical"):
        load_pref_examples(str(p), "train", 0, 10)
    p.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                             "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"}) + "\n")
    assert load_pref_examples(str(p), "train", 0, 10)[0]["chosen"] == "hello"


def test_dpo_starts_at_log2_and_learns_the_preference(tmp_path, qwen_dir, prefs):
    args = base_args(tmp_path, qwen_dir, "dpo", prefs, **{"training.total_steps": 8, "optim.lr": 1e-2, "optim.warmup_ratio": 0,
                                                        "dpo.beta": 0.5, "training.micro_batch": 4})
    assert cli.main(["dpo", "-c", "dpo_tiny", *args]) == 0
    rows = tracking.read_metrics(tmp_path / "dpo")
    train = [r for r in rows if "loss/train" in r]
    assert train[0]["loss/train"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    assert rows[0]["eval/loss"] == pytest.approx(math.log(2), abs=1e-6)
    final = rows[-1]
    assert final["eval/rewards/accuracy"] > 0.5 and final["eval/loss"] < math.log(2)
    assert (tmp_path / "dpo/reference_logps.pt").exists()  # full fine-tuning: precomputed, one model in memory


@pytest.mark.parametrize("loss", ["cdpo", "ipo", "hinge", "simpo"])
def test_every_dpo_variant_runs(tmp_path, qwen_dir, prefs, loss):
    extra = {"dpo.loss": loss}
    if loss == "cdpo":
        extra["dpo.label_smoothing"] = 0.1
    assert cli.main(["dpo", "-c", "dpo_tiny", *base_args(tmp_path, qwen_dir, loss, prefs, **extra)]) == 0
    rows = [r for r in tracking.read_metrics(tmp_path / loss) if "loss/train" in r]
    assert len(rows) == 3 and all(math.isfinite(r["loss/train"]) for r in rows)


def test_lora_dpo_uses_the_adapter_disabled_base_and_freezes_it(tmp_path, qwen_dir, prefs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    args = base_args(tmp_path, qwen_dir, "ldpo", prefs, **{"lora.enabled": "true", "lora.r": 4, "optim.lr": 1e-2})
    assert cli.main(["dpo", "-c", "dpo_tiny", *args]) == 0
    assert not (tmp_path / "ldpo/reference_logps.pt").exists()
    first = [r for r in tracking.read_metrics(tmp_path / "ldpo") if "loss/train" in r][0]
    assert first["loss/train"] == pytest.approx(math.log(2), abs=1e-6)
    base = AutoModelForCausalLM.from_pretrained(qwen_dir)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    m = PeftModel.from_pretrained(base, tmp_path / "ldpo/checkpoints/step_3")
    for n, p in m.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, sd[n.replace("base_model.model.", "").replace(".base_layer", "")])


def test_packed_pairs_give_the_padded_log_probs_and_gradients(qwen_dir):
    """data.packing for DPO: chosen and rejected sequences of different lengths packed into shared rows
    (position_ids restart per sequence) give each sequence's summed log-prob and response length as the
    padded batch does, and the same gradient."""
    from alignlab import data, models
    from alignlab.config import LoRAConfig, ModelConfig, PrefDataConfig
    from alignlab.train import dpo

    model, tok, device, prec = models.load_policy(ModelConfig(path=str(qwen_dir), device="cpu"), LoRAConfig(), "fp32")
    rows = [{"prompt": "12+30=", "chosen": "42", "rejected": "43 is the sum"}, {"prompt": "1+1=", "chosen": "2",
            "rejected": "3"}, {"prompt": "a longer prompt: 7+8=", "chosen": "15", "rejected": "fifteen or so"}]
    rows = [{**r, "where": f"test:{i}"} for i, r in enumerate(rows)]
    pairs = data.encode_pairs(rows, tok, PrefDataConfig(max_seq_len=32))
    out = {}
    for pack in (None, 32):
        model.zero_grad()
        lp, n = dpo.pair_logps(model, pairs, tok.pad_token_id, device, prec, pack)
        (lp["c"].sum() - 0.5 * lp["r"].sum()).backward()
        out[pack] = (lp, n, {k: p.grad.clone() for k, p in model.named_parameters()})
        if pack:
            batch = data.collate_packed([c for c, _ in pairs] + [r for _, r in pairs], tok.pad_token_id, pack)
            assert batch["input_ids"].shape[0] < 2 * len(pairs)  # sequences really share rows
    (lp0, n0, g0), (lp1, n1, g1) = out[None], out[32]
    for k in ("c", "r"):
        torch.testing.assert_close(lp1[k], lp0[k], atol=1e-5, rtol=0)
        assert torch.equal(n1[k], n0[k])
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-5, rtol=1e-4)


def test_dpo_token_budget_and_packing_change_memory_not_the_update(tmp_path, qwen_dir, prefs):
    """A token cap that splits micro-batches and packing both leave DPO's losses as they were."""
    losses = {}
    for name, extra in (("plain", {}), ("capped", {"training.max_tokens_per_micro_batch": 24}),
                        ("packed", {"data.packing": "true", "training.max_tokens_per_micro_batch": 24})):
        args = base_args(tmp_path, qwen_dir, name, prefs, **{"training.micro_batch": 4, "optim.lr": 1e-2, **extra})
        assert cli.main(["dpo", "-c", "dpo_tiny", *args]) == 0
        losses[name] = [r["loss/train"] for r in tracking.read_metrics(tmp_path / name) if "loss/train" in r]
    assert len(losses["plain"]) == 3
    assert losses["capped"] == pytest.approx(losses["plain"], abs=1e-5)
    assert losses["packed"] == pytest.approx(losses["plain"], abs=1e-5)


def test_dpo_config_refuses_bad_wiring():
    from alignlab.config import ConfigError, DPOConfig, load_config

    with pytest.raises(ConfigError, match="needs lora.enabled=true"):
        load_config(DPOConfig, "dpo_tiny", ["dpo.reference=adapter"])
    with pytest.raises(ConfigError, match="cdpo needs dpo.label_smoothing"):
        load_config(DPOConfig, "dpo_tiny", ["dpo.loss=cdpo"])


def test_reward_model_trains_and_loads_with_plain_transformers(tmp_path, qwen_dir, prefs):
    args = base_args(tmp_path, qwen_dir, "rm", prefs, **{"training.total_steps": 10, "optim.lr": 3e-3})
    assert cli.main(["rm", "-c", "rm_tiny", *args]) == 0
    rows = tracking.read_metrics(tmp_path / "rm")
    assert "eval/pairwise_accuracy" in rows[0] and "eval/pairwise_accuracy" in rows[-1]
    assert rows[-1]["eval/pairwise_accuracy"] >= 0.75  # 8 pairs, memorised
    code = ("import sys, transformers as t; m = t.AutoModelForSequenceClassification.from_pretrained(sys.argv[1]); "
            "assert m.config.num_labels == 1 and 'alignlab' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "rm/checkpoints/step_10")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]


PPO_KEYS = {"reward/score", "returns/mean", "value/loss", "value/explained_variance", "ppo/approx_kl", "clip/frac",
            "value/clip_frac", "kl/ref", "kl/coef", "entropy/mean", "loss/policy", "time/rollout", "time/train"}


def ppo_args(tmp_path, model, name, **extra):
    kw = {"name": name, "out_dir": str(tmp_path), "model.path": str(model), "training.total_steps": 2,
          "ppo.rollout_size": 8, "ppo.minibatch_seqs": 4, "ppo.num_ppo_epochs": 2, "sampling.max_new_tokens": 4,
          "eval.max_examples": 4, "eval.max_new_tokens": 4, "task.arithmetic.n_eval": 4, "training.eval_every": 0}
    kw.update(extra)
    return ["ppo", "-c", "ppo_tiny", *[f"{k}={v}" for k, v in kw.items()]]


def test_ppo_cli_run_logs_every_key_and_saves_the_value_head(tmp_path, qwen_dir):
    assert cli.main(ppo_args(tmp_path, qwen_dir, "ppo", **{"ppo.adaptive_kl": "true", "optim.lr": 1e-3})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "ppo") if "reward/score" in r]
    assert len(train) == 2 and all(PPO_KEYS <= set(r) for r in train)
    assert train[0]["kl/ref"] == pytest.approx(0.0, abs=1e-6)  # the first rollout comes from the reference itself
    assert train[1]["kl/coef"] != 0.1  # the adaptive controller moved it
    state = torch.load(tmp_path / "ppo/checkpoints/step_2/trainer_state.pt", weights_only=False)
    assert set(state["extra"]) == {"value_head", "kl_coef"}


def test_ppo_with_lora_and_the_heuristic_reward(tmp_path, qwen_dir):
    assert cli.main(ppo_args(tmp_path, qwen_dir, "lppo", **{"lora.enabled": "true", "lora.r": 4,
                                                             "reward.source": "heuristic"})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "lppo") if "reward/score" in r]
    assert "reward/heuristic" in train[0]


def test_ppo_micro_batching_changes_memory_not_the_update(tmp_path, qwen_dir):
    """A minibatch run in micro-batches of 2 takes the same optimizer step as in one forward: its token
    count is fixed before the micro-batches, and every loss term is a sum over it."""
    rows = {}
    for micro in (8, 2):
        assert cli.main(ppo_args(tmp_path, qwen_dir, f"m{micro}", **{
            "training.total_steps": 1, "ppo.minibatch_seqs": 8, "ppo.num_ppo_epochs": 1, "optim.lr": 1e-3,
            "training.micro_batch": micro})) == 0
        rows[micro] = [r for r in tracking.read_metrics(tmp_path / f"m{micro}") if "reward/score" in r][0]
    for k in ("reward/score", "loss/policy", "value/loss", "entropy/mean", "ppo/approx_kl", "value/clip_frac"):
        assert rows[2][k] == pytest.approx(rows[8][k], rel=1e-5, abs=1e-7), k
    a, b = weights(tmp_path / "m8/checkpoints/step_1"), weights(tmp_path / "m2/checkpoints/step_1")
    start = {k.split(":", 1)[1]: v for k, v in weights(qwen_dir).items()}
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(v, start[k.split(":", 1)[1]]) for k, v in a.items())  # the step did move the policy


def weights(folder):
    """{name: tensor} of every *.safetensors file in a checkpoint folder (not its subfolders)."""
    from safetensors.torch import load_file

    return {f"{f.name}:{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


CRITIC_RUNS = {"shared": {}, "separate": {"ppo.critic": "separate"},
               "lora_adapters": {"ppo.critic": "lora_adapters", "lora.enabled": "true", "lora.r": 4}}


@pytest.mark.parametrize("critic", list(CRITIC_RUNS))
def test_ppo_resume_is_exact(tmp_path, qwen_dir, critic):
    class Stop:
        def on_save(self, ctx, step, path):
            if step == 2:
                raise KeyboardInterrupt

    from alignlab.config import ConfigError, PPOConfig, load_config
    from alignlab.train import ppo

    mk = lambda name, **kw: load_config(PPOConfig, "ppo_tiny", ppo_args(tmp_path, qwen_dir, name, **{  # noqa: E731
        "training.total_steps": 4, "training.save_every": 2, "optim.lr": 1e-3, "reward.source": "heuristic",
        **CRITIC_RUNS[critic], **kw})[3:])
    ppo.main(mk("s"))
    with pytest.raises(KeyboardInterrupt):
        ppo.main(mk("p"), hooks=[Stop()])
    ppo.main(mk("p"))
    get = lambda d: [(r["reward/score"], r["value/loss"], r["loss/policy"])  # noqa: E731
                     for r in tracking.read_metrics(tmp_path / d) if "reward/score" in r]
    assert len(get("s")) == 4 and get("s") == get("p")
    sub = {"shared": None, "separate": "critic", "lora_adapters": "value"}[critic]
    for d in ([""] if sub is None else ["", sub]):  # the policy, then the critic model or value adapter
        a, b = weights(tmp_path / "s/checkpoints/step_4" / d), weights(tmp_path / "p/checkpoints/step_4" / d)
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), d
    heads = [torch.load(tmp_path / f"{d}/checkpoints/step_4/trainer_state.pt", weights_only=False)["extra"]["value_head"]
             for d in ("s", "p")]
    assert heads[0]["weight"].abs().sum() > 0 and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    other = "shared" if critic != "shared" else "separate"
    with pytest.raises(ConfigError, match=f"written with ppo.critic={critic}"):  # another critic layout is refused
        ppo.main(mk("p", **{"ppo.critic": other, "training.total_steps": 6}))


def test_ppo_lora_adapters_train_both_adapters_and_the_policy_still_loads_alone(tmp_path, qwen_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert cli.main(ppo_args(tmp_path, qwen_dir, "two", **{
        "ppo.critic": "lora_adapters", "lora.enabled": "true", "lora.r": 4, "reward.source": "heuristic",
        "optim.lr": 1e-3, "training.total_steps": 1})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "two") if "reward/score" in r]
    assert len(train) == 1 and PPO_KEYS <= set(train[0])
    ckpt = tmp_path / "two/checkpoints/step_1"
    policy, value = weights(ckpt), weights(ckpt / "value")
    assert policy.keys() == value.keys()  # the same LoRA layout, saved apart
    for w in (policy, value):  # B starts at 0 in both adapters: one PPO step moved each
        assert all(v.abs().sum() > 0 for k, v in w.items() if "lora_B" in k)
    assert not any(torch.equal(policy[k], value[k]) for k in policy)
    base = AutoModelForCausalLM.from_pretrained(qwen_dir)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    m = PeftModel.from_pretrained(base, ckpt)  # plain peft: the root is the policy adapter alone
    assert list(m.peft_config) == ["default"]
    for n, p in m.named_parameters():
        if "lora_" not in n:  # the shared base is frozen
            assert torch.equal(p, sd[n.replace("base_model.model.", "").replace(".base_layer", "")])
    m.load_adapter(str(ckpt / "value"), adapter_name="value")  # and the critic's adapter loads beside it
    assert set(m.peft_config) == {"default", "value"}


def test_ppo_separate_critic_gets_its_own_lora_and_saves_it_beside_the_policy(tmp_path, qwen_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert cli.main(ppo_args(tmp_path, qwen_dir, "sep", **{
        "ppo.critic": "separate", "ppo.critic_path": str(qwen_dir), "ppo.critic_lr": 1e-2, "lora.enabled": "true",
        "lora.r": 4, "reward.source": "heuristic", "optim.lr": 1e-3})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "sep") if "reward/score" in r]
    assert len(train) == 2 and all(PPO_KEYS <= set(r) for r in train)
    ckpt = tmp_path / "sep/checkpoints/step_2"
    assert all(v.abs().sum() > 0 for k, v in weights(ckpt / "critic").items() if "lora_B" in k)
    for folder in (ckpt, ckpt / "critic"):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), folder)


@pytest.mark.parametrize("critic", ["separate", "lora_adapters"])
def test_each_ppo_loss_reaches_only_its_own_model(tmp_path, qwen_dir, critic):
    """The policy loss never updates the critic, the value loss never the policy (gradient routing)."""
    from alignlab import critics, models, optim
    from alignlab.config import PPOConfig, load_config

    cfg = load_config(PPOConfig, "ppo_tiny", ppo_args(tmp_path, qwen_dir, critic, **CRITIC_RUNS[critic])[3:])
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, "fp32")
    crit = critics.build(cfg, policy, tok, "fp32", None, device)
    torch.nn.init.normal_(crit.head.weight)  # a zero head would send the trunk no gradient at all
    trainable, opt, sched = critics.build_optimizer(policy, crit, cfg, 10)
    critic_params = crit.parameters()
    ids = torch.randint(3, len(tok), (2, 6), generator=torch.Generator().manual_seed(0))
    mb = {"input_ids": ids, "labels": ids.roll(-1, 1), "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():  # the KL reference (lora_adapters: both adapters off, which freezes all but the active one)
        critics.reference_logps(policy, None if critic == "lora_adapters" else policy, mb, 1.0, crit)
    in_critic = {id(p) for p in critic_params}
    policy_params = [p for p in trainable.parameters() if p.requires_grad and id(p) not in in_critic]
    assert policy_params and len(critic_params) > 2 and all(p.requires_grad for p in critic_params)
    for loss_of, moved, kept in (("policy", policy_params, critic_params), ("value", critic_params, policy_params)):
        before = [p.detach().clone() for p in kept]
        out, values = critics.forward(policy, crit, mb, 1.0, prec, device, entropy=False)
        loss = -out["log_probs"].mean() if loss_of == "policy" else ((values - 1) ** 2).mean()
        loss.backward()
        assert all(p.grad is None for p in kept), loss_of
        assert sum(p.grad.abs().sum() for p in moved if p.grad is not None) > 0, loss_of
        optim.step(trainable, opt, sched, 1.0)
        assert all(torch.equal(a, p) for a, p in zip(before, kept)), loss_of
    if critic == "lora_adapters":
        assert policy.active_adapter == "default"


def test_lora_adapters_value_gradient_is_exact_under_activation_checkpointing(tmp_path, qwen_dir):
    """Checkpointing recomputes the value forward during backward: it must run with the value adapter."""
    from alignlab import critics, models
    from alignlab.config import PPOConfig, load_config

    cfg = load_config(PPOConfig, "ppo_tiny", ppo_args(tmp_path, qwen_dir, "gc", **CRITIC_RUNS["lora_adapters"],
                                                      **{"model.gradient_checkpointing": "true"})[3:])
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, "fp32")
    crit = critics.build(cfg, policy, tok, "fp32", None, device)
    with torch.no_grad():  # the two adapters must differ, or the wrong one gives the same activations
        for n, p in policy.named_parameters():
            if "lora_B.default" in n:
                p.normal_(generator=torch.Generator().manual_seed(1))
    torch.nn.init.normal_(crit.head.weight)
    ids = torch.randint(3, len(tok), (2, 6), generator=torch.Generator().manual_seed(0))
    mb = {"input_ids": ids, "labels": ids.roll(-1, 1), "attention_mask": torch.ones_like(ids)}

    def grads(training: bool) -> dict:  # transformers checkpoints layers in training mode only
        policy.train(training)
        policy.zero_grad(set_to_none=True)
        out, values = critics.forward(policy, crit, mb, 1.0, prec, device, entropy=False)
        crit.backward(-out["log_probs"].mean(), ((values - 1) ** 2).mean())
        return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    checkpointed, plain = grads(True), grads(False)
    assert checkpointed.keys() == plain.keys() and any(critics.is_value_adapter(n) for n in plain)
    assert all(torch.allclose(checkpointed[n], plain[n], rtol=1e-4, atol=1e-6) for n in plain)


def test_ppo_critic_options_are_checked(tmp_path):
    from alignlab.config import ConfigError, PPOConfig, load_config

    with pytest.raises(ConfigError, match="ppo.critic=lora_adapters needs lora.enabled=true"):
        load_config(PPOConfig, "ppo_tiny", ["ppo.critic=lora_adapters"])
    with pytest.raises(ConfigError, match="ppo.critic_path only applies to ppo.critic=separate"):
        load_config(PPOConfig, "ppo_tiny", ["ppo.critic_path=tiny:qwen2"])
    with pytest.raises(ConfigError, match="ppo.critic"):
        load_config(PPOConfig, "ppo_tiny", ["ppo.critic=value_head"])
    cfg = load_config(PPOConfig, "ppo_tiny", ["ppo.critic=lora_adapters", "lora.enabled=true"])
    assert cfg.ppo.critic == "lora_adapters" and load_config(PPOConfig, "ppo_tiny", []).ppo.critic == "shared"


def test_pipeline_sft_rm_ppo_then_resumes_stage_by_stage(tmp_path, qwen_dir, prefs):
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"""
name: p
out_dir: {tmp_path}
stages:
  - {{name: sft, kind: sft, config: sft_tiny, overrides: [model.path={qwen_dir}, training.total_steps=2,
      training.global_batch_seqs=8, training.micro_batch=8, data.arithmetic.n_train=16, data.eval=null]}}
  - {{name: rm, kind: rm, config: rm_tiny, model_from: sft, overrides: [data.train={prefs}, data.eval=null,
      training.total_steps=2, training.global_batch_pairs=4, training.micro_batch=4, data.max_seq_len=32]}}
  - {{name: ppo, kind: ppo, config: ppo_tiny, model_from: sft, reward_from: rm, overrides: [training.total_steps=1,
      ppo.rollout_size=4, ppo.minibatch_seqs=4, ppo.num_ppo_epochs=1, eval.max_examples=2, task.arithmetic.n_eval=2,
      sampling.max_new_tokens=3, eval.max_new_tokens=3]}}
""")
    assert cli.main(["pipeline", "-c", str(cfg)]) == 0
    for stage, step in (("sft", 2), ("rm", 2), ("ppo", 1)):
        assert (tmp_path / f"p/{stage}/checkpoints/step_{step}").exists()
    saved = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "p/ppo/config.yaml").read_text())))
    assert saved["reward"]["rm_path"].endswith("rm/checkpoints/step_2") and saved["reward"]["source"] == "rm"
    before = (tmp_path / "p/sft/metrics.jsonl").read_text()
    assert cli.main(["pipeline", "-c", str(cfg)]) == 0  # a second run finds every stage finished
    assert (tmp_path / "p/sft/metrics.jsonl").read_text() == before


def test_pipeline_refuses_bad_wiring_before_running(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: b\nstages:\n  - {name: ppo, kind: ppo, config: ppo_tiny, reward_from: rm}\n")
    assert cli.main(["pipeline", "-c", str(cfg)]) == 2
