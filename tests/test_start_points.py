"""Every loop starts from an earlier run's checkpoint: a LoRA adapter folder or a full model folder.

The staged workflow (SFT with LoRA, then DPO / RM / GRPO / PPO on top) once failed for SFT, DPO and
RM with "a folder without config.json": they read the tokenizer before the adapter was resolved.
Each run here is one short step; the check is that the model the loop starts from is the checkpoint
(base + adapter folded in, or the full weights), not merely that it runs.
"""
import json

import pytest
import torch

from alignlab import cli
from alignlab import config as C
from conftest import sft_overrides


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefs") / "p.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def starts(tmp_path_factory, qwen_dir):
    """{"adapter"|"full": (checkpoint folder, the causal-LM state dict a run starting there must begin with)}."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("starts")
    quick = {"training.total_steps": 2, "data.eval": "null", "optim.lr": 1e-2}
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(root, qwen_dir, "lsft", **quick, **{"lora.enabled": "true",
                                                                                               "lora.r": 4})]) == 0
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(root, qwen_dir, "fsft", **quick)]) == 0
    adapter, full = root / "lsft/checkpoints/step_2", root / "fsft/checkpoints/step_2"
    assert not (adapter / "config.json").exists() and (adapter / "adapter_config.json").exists()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), str(adapter)).merge_and_unload()
    base = AutoModelForCausalLM.from_pretrained(qwen_dir).state_dict()
    want_adapter = merged.state_dict()
    assert any(not torch.equal(base[k], want_adapter[k]) for k in base)  # the adapter changes something
    return {"adapter": (adapter, want_adapter), "full": (full, AutoModelForCausalLM.from_pretrained(full).state_dict())}


def loop_config(algo, tmp_path, start, prefs):
    common = [f"out_dir={tmp_path}", f"name={algo}", f"model.path={start}"]
    pref = [f"data.train={prefs}", "data.eval=null", "training.total_steps=1", "training.global_batch_pairs=2",
            "training.micro_batch=2", "data.max_seq_len=32"]
    rl = ["sampling.max_new_tokens=3", "eval.max_examples=2", "eval.max_new_tokens=3", "task.arithmetic.n_eval=2"]
    args = {
        "sft": ("SFTConfig", "sft_tiny", sft_overrides(tmp_path, start, "sft", **{"training.total_steps": 1,
                                                                                  "data.eval": "null"})),
        "ei": ("EIConfig", "ei_tiny", common + rl + ["training.total_steps=1", "ei.questions_per_round=2", "ei.group_size=2",
                                                     "ei.global_batch_seqs=2", "training.micro_batch=2"]),
        "dpo": ("DPOConfig", "dpo_tiny", common + pref),
        "rm": ("RMConfig", "rm_tiny", common + pref),
        "grpo": ("GRPOConfig", "grpo_tiny", common + rl + ["training.total_steps=1", "rl.prompts_per_step=2",
                                                           "rl.group_size=2", "training.micro_batch=4"]),
        "ppo": ("PPOConfig", "ppo_tiny", common + rl + ["training.total_steps=1", "ppo.rollout_size=2",
                                                        "ppo.minibatch_seqs=2", "ppo.num_ppo_epochs=1"]),
    }[algo]
    return C.load_config(getattr(C, args[0]), args[1], args[2])


MODULES = {"sft": "sft", "ei": "ei", "dpo": "dpo", "rm": "reward_model", "grpo": "grpo", "ppo": "ppo"}


@pytest.mark.parametrize("start", ["adapter", "full"])
@pytest.mark.parametrize("algo", list(MODULES))
def test_every_loop_starts_from_an_earlier_checkpoint(tmp_path, starts, prefs, algo, start):
    import importlib

    folder, want = starts[start]
    seen = {}

    class Probe:
        def on_start(self, ctx):
            seen.update({k: v.detach().clone() for k, v in ctx.model.state_dict().items()})

    cfg = loop_config(algo, tmp_path, folder, prefs)
    importlib.import_module(f"alignlab.train.{MODULES[algo]}").main(cfg, hooks=[Probe()])
    shared = [k for k in want if k in seen and not k.startswith("lm_head")]  # the RM has a score head instead
    assert len(shared) >= len([k for k in want if k.startswith("model.layers")])
    assert all(torch.allclose(seen[k], want[k], atol=1e-6) for k in shared), f"{algo} did not start from {folder}"
    assert any((tmp_path / algo / "checkpoints").iterdir())


def test_lora_on_a_lora_start_records_the_chain_and_pipeline_runs_it(tmp_path, qwen_dir, prefs):
    """SFT (LoRA) -> DPO (LoRA) in a pipeline. The DPO adapter was trained on SFT's folded result, so its
    adapter_config names the SFT adapter as its base, and loading it applies both."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignlab.eval.run import load_for_inference

    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"""
name: p
out_dir: {tmp_path}
stages:
  - {{name: sft, kind: sft, config: sft_tiny, overrides: [model.path={qwen_dir}, lora.enabled=true, lora.r=4,
      optim.lr=1e-2, training.total_steps=2, training.global_batch_seqs=4, training.micro_batch=4,
      data.arithmetic.n_train=16, data.eval=null]}}
  - {{name: dpo, kind: dpo, config: dpo_tiny, model_from: sft, overrides: [lora.enabled=true, lora.r=4, optim.lr=1e-2,
      data.train={prefs}, data.eval=null, training.total_steps=2, training.global_batch_pairs=2,
      training.micro_batch=2, data.max_seq_len=32]}}
""")
    assert cli.main(["pipeline", "-c", str(cfg)]) == 0
    sft, dpo = tmp_path / "p/sft/checkpoints/step_2", tmp_path / "p/dpo/checkpoints/step_2"
    assert json.loads((dpo / "adapter_config.json").read_text())["base_model_name_or_path"] == str(sft.resolve())
    model = AutoModelForCausalLM.from_pretrained(qwen_dir)
    model = PeftModel.from_pretrained(model, str(sft)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(dpo)).merge_and_unload()
    loaded, _ = load_for_inference(str(dpo))
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_ppo_scores_with_a_lora_reward_model_trained_from_a_lora_start(tmp_path, starts, prefs):
    """SFT (LoRA) -> RM (LoRA) -> PPO with that RM: the reward model is base + SFT adapter + RM adapter."""
    from alignlab.train import ppo, reward_model

    folder, _ = starts["adapter"]
    rm_cfg = loop_config("rm", tmp_path, folder, prefs).model_copy(
        update={"lora": C.LoRAConfig(enabled=True, r=4)})
    reward_model.main(rm_cfg)
    rm_dir = tmp_path / "rm/checkpoints/step_1"
    assert not (rm_dir / "config.json").exists()  # an adapter folder
    seen = {}

    class Probe:
        def on_step_end(self, ctx, step, row):
            seen.update(row)

    cfg = C.load_config(C.PPOConfig, "ppo_tiny", [f"out_dir={tmp_path}", "name=ppo", f"model.path={folder}",
                                                  "reward.source=rm", f"reward.rm_path={rm_dir}", "training.total_steps=1",
                                                  "ppo.rollout_size=2", "ppo.minibatch_seqs=2", "ppo.num_ppo_epochs=1",
                                                  "sampling.max_new_tokens=3", "eval.max_examples=2",
                                                  "eval.max_new_tokens=3", "task.arithmetic.n_eval=2"])
    ppo.main(cfg, hooks=[Probe()])
    assert "reward/score" in seen
