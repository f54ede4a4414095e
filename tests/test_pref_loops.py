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
          "training.micro_batch_pairs": 2, "training.eval_every": 0, "training.save_every": 0, "data.max_seq_len": 32}
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
                                                        "dpo.beta": 0.5, "training.micro_batch_pairs": 4})
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


def test_ppo_resume_is_exact(tmp_path, qwen_dir):
    class Stop:
        def on_save(self, ctx, step, path):
            if step == 1:
                raise KeyboardInterrupt

    from alignlab.config import PPOConfig, load_config
    from alignlab.train import ppo

    mk = lambda name: load_config(PPOConfig, "ppo_tiny", ppo_args(tmp_path, qwen_dir, name, **{
        "training.save_every": 1, "optim.lr": 1e-3})[3:])
    ppo.main(mk("s"))
    with pytest.raises(KeyboardInterrupt):
        ppo.main(mk("p"), hooks=[Stop()])
    ppo.main(mk("p"))
    get = lambda d: [(r["reward/score"], r["value/loss"]) for r in tracking.read_metrics(tmp_path / d) if "reward/score" in r]
    assert get("s") == get("p")


def test_pipeline_sft_rm_ppo_then_resumes_stage_by_stage(tmp_path, qwen_dir, prefs):
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"""
name: p
out_dir: {tmp_path}
stages:
  - {{name: sft, kind: sft, config: sft_tiny, overrides: [model.path={qwen_dir}, training.total_steps=2,
      training.global_batch_seqs=8, training.micro_batch_seqs=8, data.arithmetic.n_train=16, data.eval=null]}}
  - {{name: rm, kind: rm, config: rm_tiny, model_from: sft, overrides: [data.train={prefs}, data.eval=null,
      training.total_steps=2, training.global_batch_pairs=4, training.micro_batch_pairs=4, data.max_seq_len=32]}}
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
