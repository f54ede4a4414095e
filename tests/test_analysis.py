"""alignlab analyze / report: known answers on tiny models, refusals of bad input, the HTML page in a browser."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from alignlab.analysis import rank as R
from alignlab.analysis.attention import attention_stats, check_attention
from alignlab.analysis.common import AnalysisError
from alignlab.cli import main as cli


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A 6-layer tiny Gemma-3 (5 sliding layers, 1 global) with a window of 8 tokens, and a copy with
    only layer 3 perturbed."""
    from transformers import AutoModelForCausalLM

    from alignlab.tiny import make_tiny

    root = tmp_path_factory.mktemp("an")
    base = make_tiny("gemma3_text", root / "base", num_hidden_layers=6, hidden_size=64, intermediate_size=128,
                     head_dim=16, sliding_window=8)
    m = AutoModelForCausalLM.from_pretrained(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".layers.3." in n and p.dim() == 2:
                p.add_(1e-3 * torch.randn(p.shape, generator=g))
    m.save_pretrained(root / "tuned")  # no tokenizer saved: `attention` must refuse it
    return {"base": base, "tuned": root / "tuned", "root": root}


# ---- effective rank: closed forms (research note §2.4) ----

@pytest.mark.parametrize("sv,erank,srank,k90", [
    ([1, 1, 1, 1, 0, 0], 4.0, 4.0, 4), ([3, 1], 1.75477, 1.11111, 1),
    ([4, 2, 1], 2.60049, 1.3125, 2), ([10, 1, 1, 1, 1], 2.70298, 1.04, 1)])
def test_rank_golden_values(sv, erank, srank, k90):
    s = torch.tensor(sv, dtype=torch.float64)
    assert R.erank_from_sv(s) == pytest.approx(erank, abs=1e-5)
    assert R.stable_rank_from_sv(s) == pytest.approx(srank, abs=1e-5)
    assert R.energy_rank_from_sv(s) == k90


def test_rank_invariances_and_bounds():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 3, generator=g) @ torch.randn(3, 9, generator=g)  # rank 3
    u, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    v, _ = torch.linalg.qr(torch.randn(9, 9, generator=g))
    base = R.rank_measures(a)
    assert base["numerical_rank"] == 3 and base["n"] == 9
    for b in (7.5 * a, u @ a @ v.T):
        m = R.rank_measures(b)
        for k in ("erank", "stable_rank", "k90", "numerical_rank"):
            assert m[k] == pytest.approx(base[k], rel=1e-6)
    assert 1 <= base["stable_rank"] <= base["erank"] <= base["numerical_rank"]
    z = R.rank_measures(torch.zeros(4, 5))
    assert z["erank"] == z["stable_rank"] == z["k90"] == z["numerical_rank"] == 0


# ---- weights ----

def test_weights_ranks_the_perturbed_layer_first(gemma, tmp_path):
    from alignlab.analysis.weights import analyze

    res = analyze(str(gemma["base"]), str(gemma["tuned"]), tmp_path)
    assert res["ranking"][0] == 3
    others = [r["rel_change"] for r in res["layers"] if r["layer"] != 3]
    assert max(others) == 0.0 and res["layers"][3]["rel_change"] > 0
    rows = [r for r in res["matrices"] if r["layer"] == 3]
    assert all(r["erank"] > 1 and r["cosine"] < 1 for r in rows)  # a random perturbation: high rank
    assert json.loads((tmp_path / "weights.json").read_text())["ranking"][0] == 3
    assert (tmp_path / "weights_rel_frob.png").stat().st_size > 0


def test_weights_folds_a_lora_adapter(gemma, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.analysis.weights import analyze

    m = AutoModelForCausalLM.from_pretrained(gemma["base"])
    pm = get_peft_model(m, LoraConfig(r=2, target_modules=["v_proj"], init_lora_weights=False))
    pm.peft_config["default"].base_model_name_or_path = str(gemma["base"])
    pm.save_pretrained(tmp_path / "adapter")
    res = analyze(str(gemma["base"]), str(tmp_path / "adapter"), tmp_path / "out")
    changed = {r["module"] for r in res["matrices"] if r["delta_norm"] > 0}
    assert changed == {"v_proj"}
    assert all(r["numerical_rank"] <= 2 for r in res["matrices"] if r["module"] == "v_proj")  # ΔW = BA, rank ≤ r


def test_weights_refuses_mismatched_architectures(gemma, qwen_dir, tmp_path, capsys):
    assert cli(["analyze", "weights", "--base", str(gemma["base"]), "--tuned", str(qwen_dir), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "different architectures" in err and "model_type" in err
    assert cli(["analyze", "weights", "--base", str(tmp_path / "nope"), "--tuned", str(qwen_dir)]) == 2
    assert "no such folder" in capsys.readouterr().err


# ---- attention ----

def test_previous_token_head_has_distance_one_and_zero_entropy():
    T = 10
    prev = torch.zeros(1, T, T)
    prev[0, 0, 0] = 1
    prev[0, torch.arange(1, T), torch.arange(T - 1)] = 1
    s = attention_stats(prev, window=4)
    assert s["mean_distance"].item() == pytest.approx(1.0)
    assert s["entropy"].item() == pytest.approx(0.0, abs=1e-12)
    assert s["window_mass"].item() == pytest.approx(1.0)
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    u = attention_stats(uniform[None], window=4)
    q = torch.arange(1, T, dtype=torch.float64)
    assert u["entropy"].item() == pytest.approx(float(torch.log(q + 1).mean()))
    assert u["mean_distance"].item() == pytest.approx(float((q / 2).mean()))
    check_attention(prev, 0, "sliding_attention", 4)
    with pytest.raises(AnalysisError, match="future"):
        check_attention(torch.ones(1, T, T) / T, 0, "full_attention", None)
    with pytest.raises(AnalysisError, match="window"):
        check_attention(uniform[None], 0, "sliding_attention", 4)


def test_attention_on_tiny_gemma_separates_local_and_global(gemma, tmp_path):
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 4)
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"text": long}) + "\n")
    assert cli(["analyze", "attention", "--model", str(gemma["base"]), "--vs", str(gemma["base"]),
                "--data", str(data), "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "attention.json").read_text())
    by = res["base"]["by_layer_type"]
    assert by["sliding_attention"]["window_mass"] == pytest.approx(1.0, abs=1e-6)  # masks applied correctly
    assert by["full_attention"]["window_mass"] < 0.9  # the global layer sees past the window
    assert by["full_attention"]["layers"] == [5]
    assert res["delta_by_layer_type"]["full_attention"]["entropy"] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "a" / "attention_maps.png").exists()


def test_attention_refusals(gemma, tmp_path, capsys):
    assert cli(["analyze", "attention", "--model", str(gemma["base"]), "--attn", "sdpa"]) == 2
    assert "only returned by eager attention" in capsys.readouterr().err
    assert cli(["analyze", "attention", "--model", str(gemma["tuned"]), "--out", str(tmp_path)]) == 2
    assert "no tokenizer" in capsys.readouterr().err


# ---- report + a real browser ----

def _fake_run(root: Path, name: str, analysis_src: Path | None) -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\noptim:\n  lr: 0.001\n")
    with (run / "metrics.jsonl").open("w") as f:
        for s in range(1, 6):
            f.write(json.dumps({"step": s, "time": 0.0, "loss/policy": 1 / s, "tokens/per_s": 100.0 + s}) + "\n")
    (run / "samples" / "step_5.jsonl").write_text(
        json.dumps({"prompt": "2+2=<script>alert(1)</script>", "completion": "4", "reward": 1.0}) + "\n")
    if analysis_src:
        shutil.copytree(analysis_src, run / "analysis" / "weights")
    return run


def test_report_is_self_contained(gemma, tmp_path):
    from alignlab.analysis.weights import analyze

    analyze(str(gemma["base"]), str(gemma["tuned"]), tmp_path / "w")
    run = _fake_run(tmp_path, "a", tmp_path / "w")
    other = _fake_run(tmp_path, "b", None)
    assert cli(["report", str(run), "--vs", str(other)]) == 0
    page = (run / "report.html").read_text()
    assert "<script>alert" not in page  # sample text is escaped
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("<img") == 2 + 2  # two curves + two weight figures
    assert cli(["report", str(tmp_path / "missing")]) == 2


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


def test_report_in_a_real_browser(gemma, tmp_path):
    """Skips where no browser is installed, except in CI (CI=1), which must have run `make browser-tool`."""
    import os

    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    if CHROMIUM is None or sync_api is None:
        why = "no system chromium (make browser-tool)" if CHROMIUM is None else "no playwright (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    from alignlab.analysis.weights import analyze

    analyze(str(gemma["base"]), str(gemma["tuned"]), tmp_path / "w")
    run = _fake_run(tmp_path, "a", tmp_path / "w")
    assert cli(["report", str(run)]) == 0
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((run / "report.html").as_uri())
        page.wait_for_load_state("load")
        n_img = page.locator("figure.fig img").count()
        loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        n_tables = page.locator("table.tbl").count()
        headings = page.locator("h2").all_inner_texts()
        browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing fetched from a network
    assert n_img == 4 and loaded
    assert n_tables == 3  # samples, weights per layer, weights by layer type
    assert any("Training curves" in h for h in headings) and any("Analyses" in h for h in headings)
