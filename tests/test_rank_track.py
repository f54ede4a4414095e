"""analysis.rank_every: the effective rank of ΔW = W_t − W_0 logged during training, and its plot."""
import json

import pytest
import torch
from conftest import load_sft

from alignlab import tracking
from alignlab.analysis import cli as analysis_cli
from alignlab.analysis import rank_track


def test_measure_counts_the_rank_of_the_update_not_of_the_weight():
    g = torch.Generator().manual_seed(0)
    w0 = {"model.layers.0.mlp.up_proj.weight": torch.randn(48, 32, generator=g),
          "model.layers.1.mlp.up_proj.weight": torch.randn(48, 32, generator=g),
          "model.embed_tokens.weight": torch.randn(300, 32, generator=g)}
    u, v = torch.randn(48, 3, generator=g), torch.randn(3, 32, generator=g)
    now = {k: w.clone() for k, w in w0.items()}
    now["model.layers.0.mlp.up_proj.weight"] += 0.1 * u @ v  # rank 3
    rows = rank_track.measure(w0, now, max_dim=100, lowrank=0)
    by_name = {r["name"]: r for r in rows}
    assert by_name["model.layers.0.mlp.up_proj.weight"]["numerical_rank"] == 3
    assert by_name["model.layers.1.mlp.up_proj.weight"]["erank"] == 0.0  # untouched: ΔW = 0
    assert "skipped" in by_name["model.embed_tokens.weight"]  # a side above max_dim
    agg = rank_track.by_module(rows)
    assert agg["rank/up_proj/numerical_rank"] == 1.5 and "rank/embed_tokens/erank" not in agg

    now["model.embed_tokens.weight"] += torch.randn(300, 2, generator=g) @ torch.randn(2, 32, generator=g)
    approx = {r["name"]: r for r in rank_track.measure(w0, now, max_dim=100, lowrank=8)}["model.embed_tokens.weight"]
    exact = {r["name"]: r for r in rank_track.measure(w0, now, max_dim=1000, lowrank=0)}["model.embed_tokens.weight"]
    assert approx["approx"] and approx["numerical_rank"] == exact["numerical_rank"] == 2
    assert approx["stable_rank"] == pytest.approx(exact["stable_rank"], rel=1e-6)
    assert approx["erank"] == pytest.approx(exact["erank"], rel=1e-4)  # exact also counts the fp32 rounding floor


def test_full_and_lora_runs_log_rank_rows_and_the_plot_reads_them(tmp_path, qwen_dir, capsys):
    from alignlab.train import sft

    kw = {"data.eval": "null", "analysis.rank_every": 2}
    full = load_sft(tmp_path, qwen_dir, "full", **kw)
    lora = load_sft(tmp_path, qwen_dir, "lora", **kw, **{"lora.enabled": "true", "lora.r": 2,
                                                         "lora.target_modules": "[q_proj,v_proj]"})
    for cfg in (full, lora):
        sft.main(cfg)
    rf = [r for r in tracking.read_metrics(full.run_dir) if "rank/q_proj/erank" in r]
    assert [r["step"] for r in rf] == [2, 4]
    assert {"rank/down_proj/k90", "rank/embed_tokens/stable_rank", "time/rank"} <= set(rf[-1])
    assert rf[-1]["rank/q_proj/numerical_rank"] > 2  # full fine-tuning: ΔW is not low rank
    rl = [r for r in tracking.read_metrics(lora.run_dir) if "rank/q_proj/erank" in r][-1]
    assert 1 <= rl["rank/q_proj/numerical_rank"] <= 2 and rl["rank/k_proj/erank"] == 0.0  # ≤ r; frozen: 0
    step = json.loads((lora.run_dir / "analysis/rank/steps/step_4.json").read_text())
    assert len(step["matrices"]) > 10 and all("module" in m for m in step["matrices"])

    out = tmp_path / "fig"
    assert analysis_cli.main(["rank", str(full.run_dir), str(lora.run_dir), "--labels", "full,lora", "--out", str(out)]) == 0
    data = json.loads((out / "rank_trajectory.json").read_text())
    assert set(data["runs"]) == {"full", "lora"} and data["runs"]["lora"]["q_proj"][0][0] == 2
    assert (out / "rank_trajectory.png").stat().st_size > 1000
    assert analysis_cli.main(["rank", str(full.run_dir)]) == 0  # default: the run's analysis/rank, which report shows
    from alignlab.analysis import report

    page = report.render(full.run_dir)
    assert "erank of ΔW at the last measured step" in page and "rank/rank_trajectory.png" in page
    assert analysis_cli.main(["rank", str(tmp_path / "nothing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
