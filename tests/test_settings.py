"""Every setting either does what it says or is refused at load time, naming the key.

`training.log_every`, `data.packing` for DPO/RM and `training.eval_every` for EI were once accepted
and silently ignored.
"""
import re

import pytest

from alignlab import cli, tracking
from alignlab import config as C
from conftest import sft_overrides


def test_log_every_sets_the_console_progress_cadence(tmp_path, qwen_dir, capsys):
    args = sft_overrides(tmp_path, qwen_dir, "le", **{"training.log_every": 3, "data.eval": "null"})
    assert cli.main(["sft", "-c", "sft_tiny", *args]) == 0
    lines = re.findall(r"^le (\d+)/4 ", capsys.readouterr().err, flags=re.M)
    assert lines == ["3", "4"]  # every 3rd step, and the last
    assert [r["step"] for r in tracking.read_metrics(tmp_path / "le")] == [1, 2, 3, 4]  # metrics: every step


@pytest.mark.parametrize("schema", ["SFTConfig", "EIConfig", "GRPOConfig", "DPOConfig", "RMConfig", "PPOConfig"])
def test_every_loop_takes_log_every(schema):
    cfg = C.load_config(getattr(C, schema), None, ["training.log_every=5", "training.total_steps=1"])
    assert cfg.training.log_every == 5


def test_packing_is_read_by_dpo_and_refused_by_reward_models():
    assert C.load_config(C.DPOConfig, "dpo_tiny", ["data.packing=true"]).data.packing is True
    with pytest.raises(C.ConfigError, match=r"data\.packing=true is not supported by reward models"):
        C.load_config(C.RMConfig, "rm_tiny", ["data.packing=true"])
    assert C.load_config(C.RMConfig, "rm_tiny", ["data.packing=false"]).data.packing is False


def test_expert_iteration_evaluates_every_eval_every_rounds(tmp_path, qwen_dir):
    args = ["ei", "-c", "ei_tiny", f"out_dir={tmp_path}", "name=ei", f"model.path={qwen_dir}", "training.total_steps=2",
            "ei.questions_per_round=2", "ei.group_size=2", "ei.global_batch_seqs=2", "training.micro_batch=2",
            "eval.max_examples=2", "task.arithmetic.n_eval=2", "sampling.max_new_tokens=3", "eval.max_new_tokens=3",
            "training.eval_every=2"]
    assert cli.main(args) == 0
    rows = tracking.read_metrics(tmp_path / "ei")
    assert [("eval/accuracy" in r) for r in rows] == [True, False, True]  # before training, round 2; not round 1
    assert "ei/kept_samples" in rows[1]
    assert not (tmp_path / "ei/samples/step_1.jsonl").exists() and (tmp_path / "ei/samples/step_2.jsonl").exists()
    assert C.load_config(C.EIConfig, "ei_tiny").training.eval_every == 1  # default: every round, as before
