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
    """Skips where no browser is installed, except in CI (CI=1), which must have run `make system-tools`."""
    import os

    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    if CHROMIUM is None or sync_api is None:
        why = "no system chromium (make system-tools)" if CHROMIUM is None else "no playwright (pip install -e '.[test]')"
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


# ---- activations ----

def test_residual_stats_known_answers():
    from alignlab.analysis.activations import residual_stats

    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    s = residual_stats(x)
    assert s["norm"] == pytest.approx(2.5) and s["mean"] == pytest.approx(1.75)
    g = torch.Generator().manual_seed(0)
    gauss = residual_stats(torch.randn(4000, 64, generator=g))
    assert abs(gauss["kurtosis"]) < 0.1 and gauss["outlier_frac"] < 1e-4
    spiky = torch.randn(4000, 64, generator=g)
    spiky[:, 0] *= 100  # one massive-activation channel
    s = residual_stats(spiky)
    assert s["kurtosis"] > 20 and s["outlier_frac"] > 1e-3


def test_activations_and_gradient_flow_cli(gemma, tmp_path):
    out = tmp_path / "act"
    assert cli(["analyze", "activations", "--model", str(gemma["base"]), "--grad-steps", "2", "--max-prompts", "2",
                "--max-tokens", "24",
                "--out", str(out)]) == 0
    res = json.loads((out / "activations.json").read_text())
    assert len(res["model"]["layers"]) == 6 and res["vs"] is None
    gf = res["grad_flow"]
    assert len(gf["steps"]) == 2 and all(len(s["grad_norm"]) == 6 and min(s["grad_norm"]) > 0 for s in gf["steps"])
    assert (out / "grad_flow.png").exists()


# ---- capacity ----

def test_memorised_bits_oracle_and_units():
    from alignlab.analysis.capacity import memorised_bits

    V, S_pred, N = 16, 7, 3
    H = N * S_pred * math.log2(V)
    eps = 1e-3  # an oracle giving the true token probability 1 - eps
    oracle = torch.full((N,), -S_pred * math.log2(1 - eps))
    assert H * 0.99 < memorised_bits(oracle, S_pred, V) <= H
    assert memorised_bits(torch.full((N,), S_pred * math.log2(V)), S_pred, V) == pytest.approx(0.0)
    worse = torch.tensor([S_pred * math.log2(V) + 50, 0.0, S_pred * math.log2(V)])  # clipped: no cancelling
    assert memorised_bits(worse, S_pred, V) == pytest.approx(S_pred * math.log2(V))


def test_capacity_meter_reports_the_entropy_of_a_memorised_set():
    from alignlab.analysis.capacity import (build_model, memorised_bits, random_sequences, sequence_nll_bits,
                                            train)

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead on a shared CPU
    N, S, V = 4, 12, 32
    H = N * (S - 1) * math.log2(V)  # 220 bits
    ids = random_sequences(N, S, V, seed=1)
    model = build_model(32, 1, V, S)
    assert memorised_bits(sequence_nll_bits(model, ids), S - 1, V) < 0.01 * H  # untrained: ~nothing
    try:
        train(model, ids, steps=60, lr=2e-2)
    finally:
        torch.set_num_threads(threads)
    assert memorised_bits(sequence_nll_bits(model, ids), S - 1, V) == pytest.approx(H, rel=0.03)


def test_capacity_cli_refuses_bad_input(capsys):
    assert cli(["analyze", "capacity", "--hidden", "a,b"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert cli(["analyze", "capacity", "--model", "x"]) == 2
    assert "--members" in capsys.readouterr().err


# ---- memory ----

def test_memory_profiler_agrees_with_plan_measure(qwen_dir, tmp_path):
    """The same SFT step (full fine-tuning, fp32, micro-batch 2 x 32 tokens) through `analyze memory`
    and through plan --measure's machinery: per-phase peaks agree."""
    from alignlab.analysis.memory import load_any_config, planner_setup, profile, shape_of
    from alignlab.plan.arch import load_arch
    from alignlab.plan.measure import measure

    task, cfg = load_any_config("sft_tiny", [f"model.path={qwen_dir}", "training.micro_batch=2",
                                             "training.global_batch_seqs=2", "data.max_seq_len=32"])
    res = profile(task, cfg)
    setup = planner_setup(task, cfg, shape_of(task, cfg), "cpu")
    assert setup.micro_batch == 2 and setup.seq_len == 32 and setup.method == "full"
    ref = measure(load_arch(str(qwen_dir)), setup, device="cpu")
    for ph in ("forward", "backward", "optimizer"):
        assert res["phases"][ph] == pytest.approx(ref.phases[ph], rel=0.05), ph


def test_memory_cli_prints_against_the_planner(qwen_dir, tmp_path, capsys):
    out = tmp_path / "mem"
    assert cli(["analyze", "memory", "-c", "sft_tiny", f"model.path={qwen_dir}", "training.micro_batch=2",
                "training.global_batch_seqs=2", "data.max_seq_len=16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "planner MiB" in text and "backward" in text
    rows = json.loads((out / "memory.json").read_text())["phases"]
    assert {r["phase"] for r in rows} == {"forward", "backward", "optimizer"}
    assert all(abs(r["error"]) < 0.25 for r in rows)
    assert cli(["analyze", "memory", "-c", "sft_tiny", "optim.lrr=1"]) == 2
    assert "not an SFT, DPO or GRPO config" in capsys.readouterr().err


def test_an_adapter_trained_on_an_adapter_is_folded_in_order(tmp_path, qwen_dir):
    """A LoRA DPO adapter on a LoRA SFT adapter names the SFT folder as its base (no config.json):
    the analyses load base + both adapters, as training and eval do."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.analysis import common as C

    def adapter(base_model, out, base_name, seed):
        torch.manual_seed(seed)
        m = get_peft_model(base_model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        m.save_pretrained(out)
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(base_name)
        (out / "adapter_config.json").write_text(json.dumps(cfg))
        return m.merge_and_unload()

    first = adapter(AutoModelForCausalLM.from_pretrained(qwen_dir), tmp_path / "a1", qwen_dir, 0)
    both = adapter(first, tmp_path / "a2", tmp_path / "a1", 1)
    loaded = C.load_model(str(tmp_path / "a2"))
    for k, v in both.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert C.load_tokenizer(str(tmp_path / "a2")) is not None  # falls back along the chain to the base's
