"""The vLLM rollout backend without a GPU: weight naming and LoRA merging against peft, the
output conversion, and the loops' wiring through a CPU stand-in engine (tests/fake_vllm.py) that
holds its own copy of the weights, so a missing or wrong push shows up as a log-prob mismatch."""
from __future__ import annotations

import copy
import sys
from types import SimpleNamespace

import pytest
import torch

from alignlab import cli, rollout, tracking
from alignlab.config import ConfigError
from alignlab.rollout import vllm as rollout_vllm

import fake_vllm
from test_rl_loops import grpo_args


@pytest.fixture
def model_tok(qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(qwen_dir).eval(), AutoTokenizer.from_pretrained(qwen_dir)


@pytest.fixture
def fake_engine(monkeypatch):
    """`import vllm` gives the stand-in; the CUDA check passes (nothing else sees a GPU)."""
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setattr(rollout_vllm, "_cuda_available", lambda: True)
    fake_vllm.instances.clear()
    return fake_vllm


def _lora(model, r=4):
    from alignlab.config import LoRAConfig
    from alignlab.models import apply_lora

    peft_model = apply_lora(model, LoRAConfig(enabled=True, r=r, dropout=0.0))
    with torch.no_grad():  # lora_B starts at 0 (delta = 0): give the adapters something to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return peft_model


def test_full_model_weights_are_the_hf_parameters_by_name(model_tok):
    model, _ = model_tok
    pushed = dict(rollout_vllm.vllm_weights(model))
    params = dict(model.named_parameters())
    assert pushed.keys() == params.keys()
    assert all(torch.equal(pushed[k], params[k]) for k in params)


def test_lora_weights_equal_peft_merge_and_leave_the_policy_untouched(model_tok):
    model, _ = model_tok
    policy = _lora(model)
    base_before = {k: v.clone() for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    pushed = dict(rollout_vllm.vllm_weights(policy))
    merged = dict(copy.deepcopy(policy).merge_and_unload().named_parameters())
    assert pushed.keys() == merged.keys()  # HF names: no base_model.model., .base_layer or lora_ parts
    for k in merged:
        torch.testing.assert_close(pushed[k], merged[k], rtol=0, atol=1e-6)
    assert any(not torch.equal(pushed[k], base_before[k.replace("q_proj.", "q_proj.base_layer.")])
               for k in pushed if "q_proj.weight" in k)  # the adapters did change the pushed weights
    base_after = {k: v for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # nothing merged in place


def test_pushed_names_load_into_a_fresh_hf_model(model_tok, qwen_dir):
    from transformers import AutoModelForCausalLM

    policy = _lora(model_tok[0])
    fresh = AutoModelForCausalLM.from_pretrained(qwen_dir)
    missing, unexpected = fresh.load_state_dict(dict(rollout_vllm.vllm_weights(policy)), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}  # tied to the embedding


def test_request_seeds_give_each_sample_its_own_seed():
    seeds = rollout_vllm.request_seeds(5, n_prompts=4, n=3)
    per_sample = [s + k for s in seeds for k in range(3)]  # vLLM: sample k of a request gets seed + k
    assert len(set(per_sample)) == 12
    assert rollout_vllm.request_seeds(5, 4, 3) == seeds and rollout_vllm.request_seeds(6, 4, 3) != seeds
    assert rollout_vllm.request_seeds(None, 2, 3) == [None, None]


def test_to_rollout_cuts_like_the_hf_backend_and_orders_by_index(model_tok):
    _, tok = model_tok
    pid = tok("1+1=")["input_ids"]
    answer = tok("2</answer> and more")["input_ids"]
    eos = [tok.eos_token_id]
    outs = [SimpleNamespace(outputs=[
        SimpleNamespace(index=1, token_ids=tuple(answer), logprobs=[{t: SimpleNamespace(logprob=-0.1 * (i + 1))}
                                                                   for i, t in enumerate(answer)]),
        SimpleNamespace(index=0, token_ids=tuple(answer[:1] + eos), logprobs=[{answer[0]: SimpleNamespace(logprob=-1.0)},
                                                                             {eos[0]: SimpleNamespace(logprob=-2.0)}]),
    ])]
    ro = rollout_vllm.to_rollout(outs, ["1+1="], [pid], tok, n=2, stop=["</answer>"], return_logprobs=True)
    assert ro.completion_ids[0] == answer[:1] + eos and ro.sampling_logps[0] == [-1.0, -2.0]
    cut = rollout.cut(list(answer), tok, ["</answer>"])
    assert ro.completion_ids[1] == cut and len(cut) < len(answer)
    assert ro.completions[1].endswith("</answer>") and ro.sampling_logps[1] == pytest.approx([-0.1 * (i + 1) for i in range(len(cut))])
    assert ro.prompt_ids == [pid, pid]
    with pytest.raises(RuntimeError, match="expected 3"):
        rollout_vllm.to_rollout(outs, ["1+1="], [pid], tok, n=3, stop=None, return_logprobs=False)


def test_vllm_without_cuda_or_without_vllm_is_a_clear_error(tmp_path, qwen_dir, monkeypatch, capsys):
    monkeypatch.setattr(rollout_vllm, "_cuda_available", lambda: False)
    monkeypatch.setattr(rollout_vllm, "_vllm_cpu_build", lambda: False)
    assert cli.main(grpo_args(tmp_path, qwen_dir, "nocuda", **{"sampling.backend": "vllm"})) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "sampling.backend=hf" in err
    assert not (tmp_path / "nocuda").exists()  # refused before the run directory or a model
    monkeypatch.setattr(rollout_vllm, "_cuda_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    assert cli.main(grpo_args(tmp_path, qwen_dir, "novllm", **{"sampling.backend": "vllm"})) == 2
    assert "pip install -e '.[vllm]'" in capsys.readouterr().err
    assert cli.main(["eval", "--model", str(qwen_dir), "--task", "arithmetic", "--backend", "vllm",
                     "--out", str(tmp_path / "ev")]) == 2


def test_grpo_on_the_vllm_backend_pushes_weights_every_step(tmp_path, qwen_dir, fake_engine):
    assert cli.main(grpo_args(tmp_path, qwen_dir, "v", **{"sampling.backend": "vllm", "training.total_steps": 3})) == 0
    (llm,) = fake_engine.instances
    assert llm.kw["logprobs_mode"] == "processed_logprobs"
    # pushes: before the first eval (the engine starts from the folder), before the rollouts of steps 2
    # and 3 (an update happened), before the final eval; never twice for the same weights
    assert llm.events.count("push") == 4 and llm.events[:3] == ["push", "reset_prefix_cache", "generate"]
    assert llm.events[3:6] == ["generate", "push", "reset_prefix_cache"]  # step 1 rollout, then step 2's push
    train = [r for r in tracking.read_metrics(tmp_path / "v") if "reward/mean" in r]
    assert len(train) == 3
    for r in train:  # the engine's own copy followed the policy: its samples are on-policy
        assert r["mismatch/logp_abs_max"] < 1e-5 and r["ratio/mean"] == 1.0


def test_a_missing_weight_push_is_caught_by_the_mismatch_metrics(tmp_path, qwen_dir, fake_engine, monkeypatch):
    from alignlab.tasks import arithmetic

    # an untrained model never answers right (no gradient); reward odd-length outputs so the policy moves
    monkeypatch.setattr(arithmetic, "arithmetic_reward",
                        lambda c, a: {"format_reward": 1.0, "answer_reward": 0.0, "reward": float(len(c) % 2)})
    monkeypatch.setattr(rollout_vllm.VLLMSampler, "sync", lambda self: None)  # a backend that forgets to sync
    assert cli.main(grpo_args(tmp_path, qwen_dir, "stale", **{"sampling.backend": "vllm", "training.total_steps": 3,
                                                              "optim.lr": 1e-2})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "stale") if "reward/mean" in r]
    assert train[0]["mismatch/logp_abs_max"] < 1e-5  # step 1 still samples from the starting weights
    assert train[-1]["mismatch/logp_abs_max"] > 1e-3


def test_lora_grpo_with_sleep_mode_on_the_vllm_backend(tmp_path, qwen_dir, fake_engine):
    args = grpo_args(tmp_path, qwen_dir, "vl", **{"sampling.backend": "vllm", "sampling.vllm.sleep": "true",
                                                  "lora.enabled": "true", "lora.r": 4, "optim.lr": 1e-2})
    assert cli.main(args) == 0
    (llm,) = fake_engine.instances
    assert llm.kw["enable_sleep_mode"] is True
    # every rollout: wake the weights, push (sleep wiped them), wake the KV cache, generate, sleep again
    i = llm.events.index("sleep")
    assert llm.events[i + 1 : i + 6] == ["wake:weights", "push", "reset_prefix_cache", "wake:kv_cache", "generate"]
    train = [r for r in tracking.read_metrics(tmp_path / "vl") if "reward/mean" in r]
    assert all(r["mismatch/logp_abs_max"] < 1e-5 for r in train)  # merged LoRA weights = the policy


def test_truncated_importance_sampling_reweights_top_p_samples(tmp_path, qwen_dir):
    # top-p sampling draws from a renormalised nucleus: the sampler's log-probs exceed the trainer's
    args = grpo_args(tmp_path, qwen_dir, "tis", **{"sampling.top_p": 0.7, "rl.tis_cap": 2.0})
    assert cli.main(args) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "tis") if "reward/mean" in r]
    assert all(r["mismatch/logp_abs_max"] > 1e-3 for r in train)
    assert all(0 < r["tis/weight_mean"] < 1 for r in train)  # p_train / p_sampler < 1 inside the nucleus


def test_expert_iteration_and_eval_on_the_vllm_backend(tmp_path, qwen_dir, fake_engine):
    args = ["ei", "-c", "ei_tiny", f"out_dir={tmp_path}", "name=ei", f"model.path={qwen_dir}", "training.total_steps=2",
            "ei.questions_per_round=8", "ei.group_size=4", "ei.global_batch_seqs=8", "training.micro_batch=4",
            "eval.max_examples=8", "task.arithmetic.n_eval=8", "sampling.max_new_tokens=4", "eval.max_new_tokens=4",
            "sampling.backend=vllm"]
    assert cli.main(args) == 0
    assert fake_engine.instances[0].events.count("generate") == 5  # eval + 2 x (rollout + eval)
    fake_engine.instances.clear()
    assert cli.main(["eval", "--model", str(qwen_dir), "--task", "arithmetic", "--backend", "vllm", "--max-examples", "8",
                     "--out", str(tmp_path / "ev"), "--resamples", "100"]) == 0
    (llm,) = fake_engine.instances
    assert "push" not in llm.events  # a saved full model: the engine's own weights are the model
    assert (tmp_path / "ev/eval/arithmetic.jsonl").exists()


@pytest.mark.parametrize("critic", ["shared", "lora_adapters"])
def test_ppo_on_the_vllm_backend_pushes_the_policy_not_the_value_adapter(tmp_path, qwen_dir, fake_engine, critic):
    from test_pref_loops import ppo_args

    extra = {"sampling.backend": "vllm", "training.total_steps": 2, "ppo.critic": critic}
    if critic == "lora_adapters":
        extra.update({"lora.enabled": "true", "lora.r": 4})
    assert cli.main(ppo_args(tmp_path, qwen_dir, "pv", **extra)) == 0
    (llm,) = fake_engine.instances
    assert llm.events.count("push") >= 2  # the start, then after the first update
    train = [r for r in tracking.read_metrics(tmp_path / "pv") if "reward/score" in r]
    assert len(train) == 2 and all(r["mismatch/logp_abs_max"] < 1e-5 for r in train)
