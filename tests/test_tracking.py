"""report_to: metrics rows copied to TensorBoard and W&B; metrics.jsonl stays the source of truth."""
from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from alignlab import cli, tracking
from conftest import sft_overrides


def test_tensorboard_gets_every_numeric_metric_row(tmp_path, qwen_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "tb"), "report_to=[tensorboard]"]) == 0
    rows = tracking.read_metrics(tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb/tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {(r["step"], k, v) for r in rows for k, v in r.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {k for _, k, _ in want} <= tags and "loss/train" in tags
    got = {(e.step, tag, e.value) for tag in tags for e in acc.Scalars(tag)}
    assert all(any(s == gs and k == gk and v == pytest.approx(gv, rel=1e-6) for gs, gk, gv in got) for s, k, v in want)


def test_wandb_run_follows_the_run_directory(tmp_path, qwen_dir, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, data, step):
            calls.append(("log", step, dict(data)))

        def finish(self):
            pass

    def init(**kw):
        calls.append(("init", kw))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(init=init))
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real_find(name, *a))
    args = ["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "wb"), "report_to=[wandb]"]
    assert cli.main(args) == 0
    inits = [c[1] for c in calls if c[0] == "init"]
    assert len(inits) == 1 and inits[0]["resume"] == "allow" and inits[0]["reinit"] == "finish_previous"
    assert inits[0]["config"]["report_to"] == ["wandb"] and inits[0]["name"] == "wb"
    logged = {(c[1], k) for c in calls if c[0] == "log" for k in c[2]}
    rows = tracking.read_metrics(tmp_path / "wb")
    assert {(r["step"], "loss/train") for r in rows if "loss/train" in r} <= logged
    calls.clear()  # a second run in the same folder continues the same W&B run id
    assert cli.main([*args, "training.total_steps=6"]) == 0
    assert [c[1]["id"] for c in calls if c[0] == "init"] == [inits[0]["id"]]


def test_a_missing_report_to_package_is_refused_before_anything_is_written(tmp_path, qwen_dir, monkeypatch, capsys):
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find(name, *a))
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "nowb"), "report_to=[wandb]"]) == 2
    assert "pip install -e '.[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "nowb").exists()
