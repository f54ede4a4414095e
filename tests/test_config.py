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
    assert str(p) in msg and "training.micro_batch_sqs" in msg and "micro_batch_seqs" in msg


def test_wrong_type_and_bad_enum_are_refused():
    with pytest.raises(ConfigError, match="lora.r"):
        load_config(SFTConfig, "sft_tiny", ["lora.r=abc"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(SFTConfig, "sft_tiny", ["optim.schedule=cosnie"])


def test_impossible_batch_arithmetic_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, "sft_tiny", ["training.global_batch_seqs=10", "training.micro_batch_seqs=4"])
    assert "not a multiple" in str(e.value) and "micro_batch_seqs=2" in str(e.value)


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
