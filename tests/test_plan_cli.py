"""`alignlab plan` end to end: outputs, errors, fast start without torch, --measure."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignlab.plan.arch import load_catalog
from alignlab.plan.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_import_and_plan_do_not_import_torch():
    code = ("import sys; import alignlab.plan.cli as c; assert 'torch' not in sys.modules, 'import'; "
            "rc = c.main(['--model', 'google/gemma-3-1b-it', '--method', 'qlora', '--gpu', 'T4', '--json']); "
            "assert 'torch' not in sys.modules, 'plan'; "
            "assert 'transformers' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fits"] is True


def test_rich_table_names_every_term_and_the_peak_phase(capsys):
    rc, out, _ = run(capsys, "--model", "google/gemma-3-1b-it", "--method", "lora", "--task", "sft", "--gpu", "T4",
                     "--seq-len", "1024")
    assert rc == 0
    for text in ("weights (fp16)", "gradients", "optimizer states", "activations", "logits", "peak by phase",
                 "micro_batch", "grad_accum_steps", "lr", "warmup_ratio", "fp16", "fits"):
        assert text in out, text


def test_json_is_complete_and_consistent(capsys):
    rc, out, _ = run(capsys, "--model", "Qwen/Qwen3-0.6B", "--method", "full", "--gpu", "A100-80GB", "--seq-len", "2048",
                     "--json")
    d = json.loads(out)
    assert rc == 0 and d["fits"]
    assert d["peak_gib"] == max(p["gib"] for p in d["phases"]) <= d["budget_gib"]
    assert d["params"]["total"] == 596_049_920
    keys = {r["key"] for r in d["recommendations"]}
    assert {"micro_batch", "grad_accum_steps", "lr", "warmup_ratio", "schedule", "min_lr_ratio", "adam_betas",
            "weight_decay", "precision", "steps_per_epoch", "total_steps", "gradient_checkpointing"} <= keys
    assert all(r["reason"] for r in d["recommendations"])


def test_yaml_is_a_valid_sft_config(capsys, tmp_path):
    path = tmp_path / "plan.yaml"
    rc, _, err = run(capsys, "--model", "google/gemma-3-270m", "--method", "lora", "--gpu", "L4", "--yaml", str(path))
    assert rc == 0 and "wrote" in err
    data = yaml.safe_load(path.read_text())
    assert data["lora"]["enabled"] and data["training"]["global_batch_seqs"] % data["training"]["micro_batch"] == 0
    config = pytest.importorskip("alignlab.config")
    cfg = config.SFTConfig.model_validate(data)
    assert cfg.optim.lr == data["optim"]["lr"] and cfg.training.precision == "bf16"


@pytest.mark.parametrize("task", ["dpo", "grpo", "ppo"])
def test_yaml_loads_with_the_matching_command_schema(capsys, tmp_path, task):
    config = pytest.importorskip("alignlab.config")
    path = tmp_path / f"{task}.yaml"
    rc, _, _ = run(capsys, "--model", "Qwen/Qwen2.5-Math-1.5B", "--method", "lora", "--task", task, "--gpu", "A100-40GB",
                   "--yaml", str(path))
    assert rc == 0
    rc, out, _ = run(capsys, "--model", "Qwen/Qwen2.5-Math-1.5B", "--method", "lora", "--task", task, "--gpu", "A100-40GB",
                     "--json")
    rec = {r["key"]: r["value"] for r in json.loads(out)["recommendations"]}
    schema = {"dpo": config.DPOConfig, "grpo": config.GRPOConfig, "ppo": config.PPOConfig}[task]
    cfg = config.load_config(schema, path)  # strict: an unknown key would raise here
    eff = rec["micro_batch"] * rec["grad_accum_steps"]
    assert cfg.optim.lr == rec["lr"] and cfg.training.total_steps == rec["total_steps"]
    if task == "dpo":
        assert (cfg.training.global_batch_pairs, cfg.training.micro_batch) == (eff, rec["micro_batch"])
    elif task == "grpo":
        assert cfg.rl.prompts_per_step * cfg.rl.group_size == eff and cfg.training.micro_batch == rec["micro_batch"]
        assert cfg.rl.kl_coef == rec["kl_coef"] > 0  # the plan keeps a reference in memory, so the config uses it
        assert cfg.sampling.batch_size * cfg.rl.group_size == rec["rollout_batch"]
    else:
        assert (cfg.ppo.rollout_size, cfg.ppo.minibatch_seqs) == (eff, rec["micro_batch"])
        assert cfg.ppo.critic == "separate"  # the plan's default PPO memory includes a separate value model


def test_rl_and_dpo_plans(capsys):
    rc, out, _ = run(capsys, "--model", "Qwen/Qwen2.5-Math-1.5B", "--method", "lora", "--task", "grpo", "--gpu", "A100-40GB",
                     "--prompt-len", "256", "--gen-len", "1024", "--json")
    d = json.loads(out)
    rec = {r["key"]: r["value"] for r in d["recommendations"]}
    assert rc == 0 and rec["group_size"] == 8 and rec["rollout_batch"] >= 1
    assert rec["prompts_per_step"] * 8 == rec["micro_batch"] * rec["grad_accum_steps"]
    assert any(p["name"] == "rollout generation" for p in d["phases"])
    rc, out, _ = run(capsys, "--model", "Qwen/Qwen3-0.6B", "--method", "full", "--task", "dpo", "--gpu", "H100", "--yaml")
    assert rc == 0 and yaml.safe_load(out)["dpo"]["beta"] == 0.1


@pytest.mark.parametrize("argv,needle", [
    (["--model", "nope/model", "--gpu", "T4"], "unknown model 'nope/model'"),
    (["--model", "Qwen/Qwen3-0.6B", "--gpu", "Z80"], "unknown GPU 'Z80'; valid: T4"),
    (["--model", "Qwen/Qwen3-0.6B", "--gpu", "T4", "--precision", "bf16"], "bf16 is not supported on T4"),
    (["--model", "Qwen/Qwen3-0.6B", "--gpu", "A10", "--method", "dora"], "unknown --method 'dora'; valid: full, lora, qlora"),
    (["--model", "Qwen/Qwen3-0.6B", "--gpu", "CPU", "--method", "qlora"], "QLoRA"),
    (["--model", "Qwen/Qwen3-0.6B", "--gpu", "A10", "--lora-targets", "qkv"], "unknown LoRA target 'qkv'"),
])
def test_bad_input_exits_2_naming_the_value(capsys, argv, needle):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and needle in err, err


def test_missing_config_json_and_catalog_listing(capsys, tmp_path):
    rc, _, err = run(capsys, "--model", str(tmp_path), "--gpu", "T4")
    assert rc == 2 and "has no config.json" in err
    rc, _, err = run(capsys, "--model", "gemma-9b", "--gpu", "T4")
    assert rc == 2 and "google/gemma-3-1b-it" in err  # lists the catalog


def test_local_folder_and_config_json_match_the_catalog(capsys, tmp_path):
    entry = {k: v for k, v in load_catalog()["Qwen/Qwen3-0.6B"].items() if k not in ("aliases", "source", "confidence")}
    (tmp_path / "config.json").write_text(json.dumps(entry))
    outs = []
    for model in (str(tmp_path), str(tmp_path / "config.json"), "Qwen/Qwen3-0.6B"):
        rc, out, _ = run(capsys, "--model", model, "--method", "lora", "--gpu", "RTX4090", "--json")
        assert rc == 0
        outs.append(json.loads(out)["peak_gib"])
    assert outs[0] == outs[1] == outs[2]


def test_does_not_fit_exits_1(capsys):
    rc, out, _ = run(capsys, "--model", "google/gemma-3-27b-it", "--method", "full", "--gpu", "T4", "--json")
    d = json.loads(out)
    assert rc == 1 and not d["fits"] and d["warnings"]


def test_measure_on_cpu_prints_predicted_vs_measured(capsys, tmp_path):
    pytest.importorskip("torch")
    cfg = {"model_type": "qwen3", "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048,
           "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc, out, _ = run(capsys, "--model", str(tmp_path), "--method", "lora", "--gpu", "CPU", "--seq-len", "64",
                     "--target-batch", "4", "--micro-batch", "2", "--loss-impl", "full", "--measure")
    assert rc == 0
    assert "predicted vs measured" in out and "peak" in out
    errors = [float(x) for x in re.findall(r"peak\W+[\d.]+\W+[\d.]+\W+([+-]\d+\.\d)%", out)]
    assert len(errors) == 1 and abs(errors[0]) < 5, out


def test_vllm_rollout_plan_reserves_the_engine_and_writes_a_loadable_config(capsys, tmp_path):
    config = pytest.importorskip("alignlab.config")
    args = ["--model", "Qwen/Qwen2.5-Math-1.5B", "--method", "lora", "--task", "grpo", "--gpu", "H100",
            "--gen-len", "1024", "--rollout-backend", "vllm"]
    rc, out, _ = run(capsys, *args, "--json")
    d = json.loads(out)
    rec = {r["key"]: r["value"] for r in d["recommendations"]}
    util = rec["vllm_gpu_memory_utilization"]
    assert rc == 0 and 0 < util < 1 and not d["warnings"]
    phases = {p["name"]: p for p in d["phases"]}
    assert "rollout (vLLM engine)" in phases and "rollout generation" not in phases  # no KV cache in the trainer
    hf = json.loads(run(capsys, *args[:-2], "--json")[1])
    hf_rec = {r["key"]: r["value"] for r in hf["recommendations"]}
    assert rec["micro_batch"] <= hf_rec["micro_batch"]  # training shares the device with the engine
    assert d["peak_gib"] > hf["peak_gib"]
    path = tmp_path / "v.yaml"
    assert run(capsys, *args, "--yaml", str(path))[0] == 0
    cfg = config.load_config(config.GRPOConfig, path)
    assert cfg.sampling.backend == "vllm" and cfg.sampling.vllm.gpu_memory_utilization == util
    assert cfg.sampling.vllm.max_model_len == 256 + 1024


def test_vllm_plan_warns_when_the_engine_cannot_hold_the_step(capsys):
    rc, out, _ = run(capsys, "--model", "Qwen/Qwen2.5-Math-1.5B", "--method", "lora", "--task", "grpo", "--gpu", "T4",
                     "--gen-len", "4096", "--rollout-backend", "vllm", "--vllm-gpu-util", "0.3", "--json")
    d = json.loads(out)
    assert any("at a time" in w or "cannot hold" in w for w in d["warnings"]), d["warnings"]
    rc, _, err = run(capsys, "--model", "Qwen/Qwen3-0.6B", "--task", "grpo", "--gpu", "T4", "--rollout-backend", "vllm",
                     "--vllm-gpu-util", "1.5")
    assert rc == 2 and "--vllm-gpu-util 1.5" in err
    rc, _, err = run(capsys, "--model", "Qwen/Qwen3-0.6B", "--task", "grpo", "--gpu", "CPU", "--rollout-backend", "vllm")
    assert rc == 2 and "CUDA" in err
