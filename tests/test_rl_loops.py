"""Rollouts, tasks and the GRPO / expert-iteration loops on tiny models through the CLI."""
import json

import pytest
import torch

from alignlab import cli, rollout, tasks, tracking
from alignlab.config import GRPOConfig, TaskConfig, load_config
from alignlab.data import DataError
from alignlab.logprobs import get_response_log_probs
from alignlab.tasks.arithmetic import arithmetic_reward
from conftest import sft_overrides


@pytest.fixture(scope="module")
def model_tok(qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(qwen_dir), AutoTokenizer.from_pretrained(qwen_dir)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_log_probs_equal_the_training_recompute(model_tok, temperature):
    model, tok = model_tok
    torch.manual_seed(0)
    ro = rollout.generate(model, tok, ["12+3=", "a longer prompt 44-1="], max_new_tokens=6, n=3,
                          temperature=temperature, return_logprobs=True)
    assert len(ro.completions) == 6 and ro.n == 3
    b = ro.tensors(tok.pad_token_id)
    lp = get_response_log_probs(model, b["input_ids"], b["labels"], attention_mask=b["attention_mask"],
                                temperature=temperature)["log_probs"]
    m = b["response_mask"]
    assert m.sum() == sum(len(c) for c in ro.completion_ids)
    torch.testing.assert_close(lp[m], b["sampling_logps"][m], atol=1e-5, rtol=0)
    for i, ids in enumerate(ro.completion_ids):  # completion tokens sit exactly under the mask
        assert b["labels"][i][m[i]].tolist() == ids


def test_packed_log_probs_equal_the_padded_ones(model_tok):
    """rl.packing's forward (logprobs.packed_response_log_probs): rollouts of different lengths packed
    into shared rows give the padded batch's log-probs and entropies at every real position, zeros on
    padding, and the same gradient."""
    from alignlab.logprobs import packed_response_log_probs

    model, tok = model_tok
    torch.manual_seed(0)
    ro = rollout.generate(model, tok, ["1=", "a longer prompt 44-1=", "7+8="], max_new_tokens=6, n=2, temperature=1.0)
    b = ro.tensors(tok.pad_token_id)
    assert len(set(b["attention_mask"].sum(-1).tolist())) > 2  # really different lengths
    out = {}
    for packed in (False, True):
        model.zero_grad()
        kw = dict(temperature=0.7, return_token_entropy=True, entropy_grad=False)
        if packed:
            r = packed_response_log_probs(model, b["input_ids"], b["labels"], b["attention_mask"], **kw)
        else:
            r = get_response_log_probs(model, b["input_ids"], b["labels"], attention_mask=b["attention_mask"], **kw)
        (r["log_probs"] * b["response_mask"]).sum().backward()
        out[packed] = (r, {k: p.grad.clone() for k, p in model.named_parameters()})
    (pad, gpad), (pk, gpk) = out[False], out[True]
    am = b["attention_mask"].bool()
    for k in ("log_probs", "token_entropy"):
        torch.testing.assert_close(pk[k][am], pad[k][am], atol=1e-5, rtol=0)
        assert (pk[k][~am] == 0).all()
    for k in gpad:
        torch.testing.assert_close(gpk[k], gpad[k], atol=1e-5, rtol=1e-4)


def test_top_p_filter_keeps_the_nucleus():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(rollout.top_p_filter(z, 0.8))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(rollout.top_p_filter(z, 0.81)).sum() == 3
    assert torch.isfinite(rollout.top_p_filter(z, 0.01)).sum() == 1  # always the most likely token


def test_greedy_generation_is_deterministic_and_batch_independent(model_tok):
    model, tok = model_tok
    prompts = ["1+1=", "a much longer prompt here 7-3=", "9+9="]
    together = rollout.generate(model, tok, prompts, max_new_tokens=5, batch_size=3).completions
    alone = [rollout.generate(model, tok, [p], max_new_tokens=5).completions[0] for p in prompts]
    assert together == alone


def test_stop_strings_cut_the_completion(model_tok):
    _, tok = model_tok
    ids = tok("7 </answer> 8 9", add_special_tokens=False)["input_ids"]
    cut = rollout.cut(ids, tok, ["</answer>"])
    assert tok.decode(cut) == "7 </answer>"
    assert rollout.cut(ids + [tok.eos_token_id, tok.pad_token_id], tok, None)[-1] == tok.eos_token_id


def test_arithmetic_reward_edge_cases():
    assert arithmetic_reward(" 12", "12")["reward"] == 1.0
    assert arithmetic_reward("-5", "-5")["reward"] == 1.0
    for bad in ("--5", "1 2", "", "12abc", "١٢"):
        assert arithmetic_reward(bad, "12") == {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}
    assert arithmetic_reward("13", "12") == {"format_reward": 1.0, "answer_reward": 0.0, "reward": 0.0}
    assert arithmetic_reward("x </think> <answer> 12 </answer>", "12")["reward"] == 1.0


def test_math_loaders_accept_math_and_gsm8k_and_name_bad_lines(tmp_path):
    from alignlab.tasks.math import load_file

    p = tmp_path / "m.jsonl"
    p.write_text("\n".join([
        json.dumps({"problem": "1/2+1/2?", "solution": "It is $\\boxed{1}$."}),
        json.dumps({"question": "2+3?", "answer": "2 plus 3\n#### 5"}),
        json.dumps({"question": "2+3?", "answer": "5"}),
    ]) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:3: GSM8K 'answer' must end with '#### "):
        load_file(p)
    p.write_text(p.read_text().splitlines()[0] + "\n" + p.read_text().splitlines()[1] + "\n")
    rows = load_file(p)
    assert [r["answer"] for r in rows] == ["1", "5"]
    p.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:1: unrecognised line"):
        load_file(p)


def test_one_task_registry_for_training_and_evaluation():
    """tasks.TASKS is the only list of tasks: the config's trainable tasks, `alignlab eval --task` and the
    eval loaders all follow it, and math's built-in held-out set is one file whichever path reads it."""
    import typing

    from alignlab.eval import data as eval_data
    from alignlab.eval.run import main as eval_main

    trainable = {n for n, t in tasks.TASKS.items() if t.trainable}
    assert set(typing.get_args(TaskConfig.model_fields["name"].annotation)) == trainable == {"arithmetic", "math"}
    assert set(eval_data.TASKS) == {n for n, t in tasks.TASKS.items() if t.held_out}
    held = tasks.load(TaskConfig(name="math", prompt="r1_zero")).eval
    assert sorted(e["id"] for e in held) == sorted(e["id"] for e in eval_data.load_examples("math", "builtin:math"))
    assert [e["answer"] for e in sorted(held, key=lambda e: e["id"])] == [
        e["reference"] for e in sorted(eval_data.load_examples("math"), key=lambda e: e["id"])]
    with pytest.raises(SystemExit):  # argparse refuses a task the registry does not list
        eval_main(["--model", "x", "--task", "poetry"])
    with pytest.raises(ValueError, match="no reward to train on"):
        tasks.load(TaskConfig.model_construct(name="safety"))


def test_builtin_math_task_r1_zero_and_question_only():
    t = tasks.load(TaskConfig(name="math", prompt="r1_zero"))
    assert t.train and t.eval and t.stop == ["</answer>"]
    assert t.train[0]["prompt"].endswith("Assistant: <think>")
    ok = t.reward(f"think </think> <answer> {t.eval[0]['answer']} </answer>", t.eval[0])
    assert ok == {"format_reward": 1.0, "answer_reward": 1.0, "reward": 1.0}
    q = tasks.load(TaskConfig(name="math", prompt="question_only"))
    assert q.train[0]["prompt"] == q.train[0]["question"]
    assert q.reward(f"so the answer is {q.eval[0]['answer']}", q.eval[0])["reward"] == 1.0


def grpo_args(tmp_path, model_dir, name, **extra):
    base = {"name": name, "out_dir": str(tmp_path), "model.path": str(model_dir), "training.total_steps": 2,
            "rl.prompts_per_step": 4, "rl.group_size": 4, "training.micro_batch": 8, "sampling.max_new_tokens": 4,
            "eval.max_examples": 8, "eval.max_new_tokens": 4, "task.arithmetic.n_eval": 8, "optim.lr": 1e-3}
    base.update(extra)
    return ["grpo", "-c", "grpo_tiny", *[f"{k}={v}" for k, v in base.items()]]


GRPO_KEYS = {"reward/mean", "reward/std", "reward/format", "reward/answer", "adv/mean", "adv/std", "entropy/mean",
             "response/len_mean", "clip/frac", "clip/low_frac", "clip/high_frac", "kl/ref", "ratio/mean",
             "mismatch/logp_abs_mean", "mismatch/logp_abs_max", "mismatch/ratio_mean", "groups/no_signal_frac",
             "time/rollout", "time/score", "time/train", "tokens/per_s", "loss/policy", "grad/norm", "lr", "mem/peak_gb"}


def test_grpo_cli_run_is_on_policy_and_logs_every_key(tmp_path, qwen_dir):
    from transformers import AutoModelForCausalLM

    assert cli.main(grpo_args(tmp_path, qwen_dir, "g")) == 0
    rows = tracking.read_metrics(tmp_path / "g")
    train = [r for r in rows if "reward/mean" in r]
    assert len(train) == 2 and all(GRPO_KEYS <= set(r) for r in train)
    for r in train:
        assert r["ratio/mean"] == 1.0 and r["clip/frac"] == 0.0  # one epoch: exactly on-policy
        assert r["mismatch/logp_abs_max"] < 1e-5
    assert "eval/accuracy" in rows[0] and rows[0]["step"] == 0
    before = AutoModelForCausalLM.from_pretrained(qwen_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "g/checkpoints/step_2").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_grpo_off_policy_epochs_clip_and_kl_with_lora_reference(tmp_path, qwen_dir, monkeypatch):
    from alignlab.tasks import arithmetic

    # an untrained model never answers right (all advantages 0); reward odd-length outputs instead
    monkeypatch.setattr(arithmetic, "arithmetic_reward",
                        lambda c, a: {"format_reward": 1.0, "answer_reward": 0.0, "reward": float(len(c) % 2)})
    args = grpo_args(tmp_path, qwen_dir, "gl", **{"rl.epochs_per_rollout_batch": 3, "lora.enabled": "true",
                                                   "lora.r": 4, "rl.kl_coef": 0.1, "optim.lr": 0.05,
                                                   "rl.eps_high": 0.28, "rl.entropy_coef": 0.01})
    assert cli.main(args) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "gl") if "reward/mean" in r]
    assert all("loss/policy_last_epoch" in r for r in train)
    assert train[-1]["kl/ref"] > 0  # the adapters moved away from the base
    assert any(r["clip/frac_last_epoch"] > 0 for r in train)


@pytest.mark.parametrize("broken", [False, True], ids=["restart", "broken_positions"])
def test_grpo_packing_and_token_budget_change_memory_not_the_update(tmp_path, qwen_dir, ragged_questions, broken,
                                                                   monkeypatch):
    """rl.packing and training.max_tokens_per_micro_batch regroup and unpad the training passes (and the
    KL reference's); the first step's loss, gradient norm and metrics (same rollouts: same seed, same
    starting policy) stay the same. Math questions of very different lengths, so packed rows really hold
    several sequences; with position_ids that run on across a row instead of restarting, they differ.
    Random weights earn no reward: the entropy bonus gives the step its gradient."""
    from alignlab import logprobs

    kw = {"training.total_steps": 1, "task.name": "math", "task.prompt": "question_only", "task.train": ragged_questions,
          "task.eval": ragged_questions, "rl.prompts_per_step": 8, "rl.group_size": 2, "training.micro_batch": 16,
          "rl.kl_coef": 0.1, "rl.entropy_coef": 0.05, "sampling.max_new_tokens": 6}
    shared = []
    init = logprobs.Packing.__init__

    def counting(self, *a, **k):
        init(self, *a, **k)
        if broken:  # position ids that run on across the packed row
            self.position_ids = torch.arange(self.packed[1]).expand(self.packed).clone()
        shared.append(self.packed[0] < self.padded[0])

    monkeypatch.setattr(logprobs.Packing, "__init__", counting)
    first, packings = {}, {}
    for name, extra in (("plain", {}), ("packed", {"rl.packing": "true"}),
                        ("capped", {"rl.packing": "true", "training.max_tokens_per_micro_batch": 120})):
        shared.clear()
        assert cli.main(grpo_args(tmp_path, qwen_dir, name, **kw, **extra)) == 0
        first[name] = next(r for r in tracking.read_metrics(tmp_path / name) if "reward/mean" in r)
        packings[name] = list(shared)
    # one micro-batch: the reference pass and the training pass, each packed with rows holding several sequences;
    # the cap cuts the step into more (sorted by length, so those rows rarely share)
    assert packings["plain"] == [] and packings["packed"] == [True, True] and len(packings["capped"]) > 2
    assert first["plain"]["grad/norm"] > 0 and first["plain"]["entropy/mean"] > 0
    for name in ("packed",) if broken else ("packed", "capped"):  # (capped rows hold one sequence each)
        same = [first[name][k] == pytest.approx(first["plain"][k], abs=1e-5, rel=1e-5)
                for k in ("loss/policy", "grad/norm", "entropy/mean", "kl/ref", "reward/mean")]
        assert all(same) != broken, (name, first[name], first["plain"])


def test_grpo_full_finetune_kl_uses_a_frozen_reference(tmp_path, qwen_dir):
    assert cli.main(grpo_args(tmp_path, qwen_dir, "gk", **{"rl.kl_coef": 0.1, "rl.epochs_per_rollout_batch": 2})) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "gk") if "reward/mean" in r]
    assert train[0]["kl/ref"] == pytest.approx(0.0, abs=1e-6)  # step 1 is sampled from the reference itself
    assert all(r["ratio/mean"] == 1.0 for r in train)  # epoch 0 of every step: old log-probs from the same micro-batches
    assert train[1]["kl/ref"] > 0


@pytest.mark.parametrize("override", ["rl.loss_type=no_baseline", "rl.loss_type=reinforce_with_baseline",
                                      "rl.loss_type=gspo", "rl.advantage=rloo", "rl.normalize_by_std=false",
                                      "rl.aggregation=token_mean", "rl.aggregation=constant",
                                      "rl.dynamic_sampling=true"])
def test_each_ablation_is_one_override(tmp_path, qwen_dir, override):
    k, v = override.split("=")
    assert cli.main(grpo_args(tmp_path, qwen_dir, "abl", **{k: v, "training.total_steps": 1})) == 0
    cfg = load_config(GRPOConfig, tmp_path / "abl/config.yaml")
    assert str(getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])).lower() == v


def test_grpo_resume_2_plus_2_equals_4(tmp_path, qwen_dir):
    from safetensors.torch import load_file

    from alignlab.train import grpo

    class Stop:
        def on_save(self, ctx, step, path):
            if step == 2:
                raise KeyboardInterrupt

    kw = {"training.total_steps": 4, "training.save_every": 2}
    straight = load_config(GRPOConfig, "grpo_tiny", grpo_args(tmp_path, qwen_dir, "s", **kw)[3:])
    split = load_config(GRPOConfig, "grpo_tiny", grpo_args(tmp_path, qwen_dir, "p", **kw)[3:])
    grpo.main(straight)
    with pytest.raises(KeyboardInterrupt):
        grpo.main(split, hooks=[Stop()])
    grpo.main(split)
    r = lambda d: [m["reward/mean"] for m in tracking.read_metrics(d) if "reward/mean" in m]
    assert r(tmp_path / "s") == r(tmp_path / "p")
    a, b = load_file(tmp_path / "s/checkpoints/step_4/model.safetensors"), load_file(tmp_path / "p/checkpoints/step_4/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_expert_iteration_cli_run(tmp_path, qwen_dir):
    args = ["ei", "-c", "ei_tiny", f"out_dir={tmp_path}", "name=ei", f"model.path={qwen_dir}", "training.total_steps=2",
            "ei.questions_per_round=8", "ei.group_size=4", "ei.global_batch_seqs=8", "training.micro_batch=4",
            "eval.max_examples=8", "task.arithmetic.n_eval=8", "sampling.max_new_tokens=4", "eval.max_new_tokens=4"]
    assert cli.main(args) == 0
    rows = tracking.read_metrics(tmp_path / "ei")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert {"ei/questions_with_correct_frac", "ei/kept_samples", "eval/accuracy", "reward/mean"} <= set(r)
    assert (tmp_path / "ei/checkpoints/step_2/model.safetensors").exists()


@pytest.mark.parametrize("broken", [False, True], ids=["restart", "broken_positions"])
def test_expert_iteration_packing_changes_memory_not_the_update(tmp_path, qwen_dir, ragged_questions, broken,
                                                                monkeypatch):
    """ei.packing runs a round's SFT padding-free: the same round loss and weights as the padded run, on kept
    samples of very different lengths (every sample is kept: the reward is patched to 1), whose packed rows
    hold several samples; with position ids that run on across a row they differ."""
    from safetensors.torch import load_file

    from alignlab import data

    real = tasks.Task.reward
    monkeypatch.setattr(tasks.Task, "reward", lambda self, c, ex: {**real(self, c, ex), "reward": 1.0})
    collate = data.collate_packed
    shared = []

    def spy(items, pad_id, max_len):
        out = collate(items, pad_id, max_len)
        if broken:
            out["position_ids"] = torch.arange(out["input_ids"].shape[1]).expand_as(out["input_ids"]).clone()
        shared.append(out["input_ids"].shape[0] < len(items))
        return out

    monkeypatch.setattr(data, "collate_packed", spy)
    common = {"training.total_steps": 1, "task.name": "math", "task.prompt": "question_only",
              "task.train": ragged_questions, "task.eval": ragged_questions, "ei.questions_per_round": 8,
              "ei.group_size": 2, "ei.global_batch_seqs": 16, "training.micro_batch": 16, "ei.dedupe": "false",
              "sampling.max_new_tokens": 4, "eval.max_examples": 4, "eval.max_new_tokens": 2, "optim.lr": 1e-3,
              "training.eval_every": 0,
              # Adam's first step is lr * g / (|g| + eps): with eps 1e-8 an entry whose gradient is 0 up to fp32
              # rounding moves by +-lr; 1e-4 keeps the update a smooth function of the gradient
              "optim.eps": 1e-4}
    for name, extra in (("plain", {}), ("packed", {"ei.packing": "true"})):
        args = ["ei", "-c", "ei_tiny", f"out_dir={tmp_path}", f"name={name}", f"model.path={qwen_dir}",
                *[f"{k}={v}" for k, v in {**common, **extra}.items()]]
        assert cli.main(args) == 0
    assert shared and all(shared)  # the packed run's micro-batch shared rows
    row = {n: next(r for r in tracking.read_metrics(tmp_path / n) if "ei/kept_samples" in r) for n in ("plain", "packed")}
    assert row["plain"]["ei/kept_samples"] == row["packed"]["ei/kept_samples"] == 16
    w = {n: load_file(tmp_path / n / "checkpoints/step_1/model.safetensors") for n in ("plain", "packed")}
    same_loss = row["packed"]["loss/train"] == pytest.approx(row["plain"]["loss/train"], rel=1e-5)
    same_weights = all(torch.allclose(w["packed"][k], v, atol=1e-5, rtol=1e-4) for k, v in w["plain"].items())
    assert (same_loss and same_weights) != broken, (row["plain"]["loss/train"], row["packed"]["loss/train"])


def test_expert_iteration_keeps_only_correct_distinct_samples(model_tok):
    from alignlab.train.ei import kept_examples

    _, tok = model_tok
    ro = rollout.Rollout(prompts=["1+1="], completions=["2", "3", "2"], prompt_ids=[[1, 2]] * 3,
                         completion_ids=[[5, 3], [6, 3], [5, 3]], n=3)
    scores = [{"reward": 1.0}, {"reward": 0.0}, {"reward": 1.0}]
    kept = kept_examples([{"id": "q", "answer": "2"}], ro, scores, dedupe=True)
    assert len(kept) == 1 and kept[0].ids == [1, 2, 5, 3] and kept[0].n_prompt == 2
    assert len(kept_examples([{"id": "q", "answer": "2"}], ro, scores, dedupe=False)) == 2


def test_grpo_trains_in_training_mode_so_gradient_checkpointing_applies(tmp_path, qwen_dir):
    from alignlab.train import grpo

    seen = []

    class Probe:
        def on_step_end(self, ctx, step, row):
            seen.append((ctx.model.training, ctx.model.is_gradient_checkpointing, row["ratio/mean"]))

    cfg = load_config(GRPOConfig, "grpo_tiny", grpo_args(tmp_path, qwen_dir, "ck", **{"model.gradient_checkpointing": "true"})[3:])
    grpo.main(cfg, hooks=[Probe()])
    # from_pretrained returns eval mode, where transformers skips checkpointing; dropout is off, so ratio stays 1
    assert seen and all(s == (True, True, 1.0) for s in seen)


def test_rl_starts_from_a_lora_sft_checkpoint_folded_into_its_base(tmp_path, qwen_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignlab.config import LoRAConfig, ModelConfig
    from alignlab.models import load_policy

    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "sl", **{"lora.enabled": "true",
                                                                                          "lora.r": 4})]) == 0
    adapter = tmp_path / "sl/checkpoints/step_4"  # adapter_config.json, no config.json
    policy, *_ = load_policy(ModelConfig(path=str(adapter)), LoRAConfig(enabled=False))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), str(adapter)).merge_and_unload()
    want = merged.state_dict()
    assert all(torch.allclose(v, want[k], atol=1e-6) for k, v in policy.state_dict().items())
    assert any(not torch.equal(want[k], v) for k, v in AutoModelForCausalLM.from_pretrained(qwen_dir).state_dict().items())
    # GRPO with fresh adapters on the folded model: its reference (adapters off) is the SFT result
    args = grpo_args(tmp_path, adapter, "gl", **{"lora.enabled": "true", "lora.r": 4, "rl.kl_coef": 0.1})
    assert cli.main(args) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "gl") if "reward/mean" in r]
    assert train[0]["kl/ref"] == pytest.approx(0.0, abs=1e-6)
