import subprocess
import sys

import pytest

from alignlab.config import ConfigError, SFTConfig, load_config, parse_override


def test_packaged_config_loads_and_overrides_apply():
    cfg = load_config(SFTConfig, "sft_tiny", ["optim.lr=1e-4", "lora.r=4", "lora.enabled=true",
                                              "lora.target_modules=[q_proj,v_proj]"])
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.lora.r == 4 and cfg.lora.enabled is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


def test_typo_names_key_and_suggests_closest():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, "sft_tiny", ["optim.lrr=1e-4"])
    assert "optim.lrr" in str(e.value) and "did you mean 'lr'" in str(e.value)


def test_typo_in_yaml_file_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("training:\n  total_steps: 3\n  micro_batch_sqs: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, p)
    msg = str(e.value)
    assert str(p) in msg and "training.micro_batch_sqs" in msg and "did you mean 'micro_batch'" in msg


def test_wrong_type_and_bad_enum_are_refused():
    with pytest.raises(ConfigError, match="lora.r"):
        load_config(SFTConfig, "sft_tiny", ["lora.r=abc"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(SFTConfig, "sft_tiny", ["optim.schedule=cosnie"])


def test_impossible_batch_arithmetic_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, "sft_tiny", ["training.global_batch_seqs=10", "training.micro_batch=4"])
    assert "not a multiple" in str(e.value) and "micro_batch=2" in str(e.value)


def test_unknown_section_and_malformed_override():
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        load_config(SFTConfig, "sft_tiny", ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(SFTConfig, "sft_tiny", ["optim.lr"])


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("optim:\n  lr: [1,\nmodel: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+"):
        load_config(SFTConfig, p)


def test_parse_override_types():
    assert parse_override("a.b=1e-4") == (["a", "b"], 1e-4)
    assert parse_override("a=3") == (["a"], 3)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=tiny:qwen2") == (["a"], "tiny:qwen2")


def test_cli_print_config_and_error_exit_code():
    out = subprocess.run([sys.executable, "-m", "alignlab.cli", "sft", "-c", "sft_tiny", "--print-config",
                          "optim.lr=0.5"], capture_output=True, text=True)
    assert out.returncode == 0 and "lr: 0.5" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "alignlab.cli", "sft", "-c", "sft_tiny", "optim.lrr=1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean 'lr'" in bad.stderr


RENAMED_IN = {"training.micro_batch_seqs": "SFTConfig", "training.micro_batch_pairs": "DPOConfig",
              "rl.micro_batch_seqs": "GRPOConfig", "ei.micro_batch_seqs": "EIConfig", "ei.n_ei_steps": "EIConfig"}


def test_the_rename_table_is_covered_and_points_at_real_keys():
    import alignlab.config as C

    assert set(C.RENAMED) == set(RENAMED_IN)
    for old, (new, _) in C.RENAMED.items():  # the new key exists in the schema that had the old one
        section, key = new.split(".")
        assert key in getattr(C, RENAMED_IN[old]).model_fields[section].annotation.model_fields, new


@pytest.mark.parametrize("old", sorted(RENAMED_IN))
def test_a_renamed_key_names_its_new_key_in_overrides_and_files(old, tmp_path):
    import alignlab.config as C

    schema, new = getattr(C, RENAMED_IN[old]), C.RENAMED[old][0]
    with pytest.raises(ConfigError) as e:
        load_config(schema, None, [f"{old}=4"])
    assert f"{old} was renamed {new}" in str(e.value) and f"write {new}=4" in str(e.value)
    section, key = old.split(".")
    p = tmp_path / "old.yaml"
    p.write_text(f"{section}:\n  {key}: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(schema, p)
    new_section, new_key = new.split(".")
    assert str(p) in str(e.value) and f"{old} was renamed {new}" in str(e.value)
    assert f"put {new_key}: 4 under {new_section}:" in str(e.value)
    packaged = {"SFTConfig": "sft_tiny", "DPOConfig": "dpo_tiny", "GRPOConfig": "grpo_tiny", "EIConfig": "ei_tiny"}
    loaded = load_config(schema, packaged[RENAMED_IN[old]], [f"{new}=4"])
    assert getattr(getattr(loaded, new_section), new_key) == 4  # the new key works


@pytest.mark.parametrize("schema", ["SFTConfig", "EIConfig", "GRPOConfig", "DPOConfig", "RMConfig", "PPOConfig"])
def test_every_loop_sizes_micro_batches_under_one_key_and_refuses_a_token_cap_it_does_not_read(schema):
    import alignlab.config as C

    cls, packaged = getattr(C, schema), schema.removesuffix("Config").lower() + "_tiny"
    assert load_config(cls, packaged, ["training.micro_batch=2"]).training.micro_batch == 2
    assert isinstance(cls().training, C.TrainingConfig)
    if "eval" in cls.model_fields:  # one eval section for every loop that generates
        assert cls.model_fields["eval"].annotation is C.EvalConfig
    else:  # DPO and RM score held-out pairs and generate nothing
        assert schema in ("DPOConfig", "RMConfig")
    cap = ["training.max_tokens_per_micro_batch=64"]
    if schema != "RMConfig":  # data.micro_batches / budget_micro_batches
        assert load_config(cls, packaged, cap).training.max_tokens_per_micro_batch == 64
    else:
        with pytest.raises(ConfigError, match="max_tokens_per_micro_batch is read by sft, ei, dpo, grpo and ppo only"):
            load_config(cls, packaged, cap)


def test_ppo_micro_batch_defaults_to_the_minibatch_and_must_divide_it():
    import alignlab.config as C

    assert load_config(C.PPOConfig, "ppo_tiny", ["ppo.minibatch_seqs=8"]).training.micro_batch == 8
    assert load_config(C.PPOConfig, None, ["ppo.minibatch_seqs=8", "training.micro_batch=2"]).training.micro_batch == 2
    with pytest.raises(ConfigError, match=r"ppo.minibatch_seqs=8 is not a multiple of training.micro_batch=3"):
        load_config(C.PPOConfig, None, ["ppo.minibatch_seqs=8", "training.micro_batch=3"])
