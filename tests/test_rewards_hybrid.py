"""Hybrid reward and running normalisation: the formula holds exactly, the statistics match numpy,
and resuming from a state dict continues bit-for-bit."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from alignlab.rewards.heuristic import heuristic_reward
from alignlab.rewards.hybrid import HybridReward, RunningNorm


def _stream(seed, n):
    rng = random.Random(seed)
    return [rng.gauss(3.0, 2.5) for _ in range(n)]


def test_running_norm_matches_numpy_population_stats():
    xs = _stream(0, 1000)
    rn = RunningNorm(clip=None)
    rn.update(xs[:10])
    for x in xs[10:500]:
        rn.update(x)
    rn.update(torch.tensor(xs[500:], dtype=torch.float64))
    assert rn.count == 1000
    assert rn.mean == pytest.approx(np.mean(xs), rel=1e-12)
    assert rn.std == pytest.approx(np.std(xs), rel=1e-10)
    z = rn.normalize(xs)
    assert np.mean(z) == pytest.approx(0.0, abs=1e-9) and np.std(z) == pytest.approx(1.0, rel=1e-7)
    assert rn.normalize(5.0) == pytest.approx((5.0 - np.mean(xs)) / (np.std(xs) + 1e-8))


def test_running_norm_early_calls_clip_and_no_centering():
    rn = RunningNorm(clip=2.0)
    assert rn.normalize(3.0) == 2.0              # no data: mean 0, std 1, then clipped
    rn.update(4.0)
    assert rn.normalize(4.5) == pytest.approx(0.5)  # one value: mean 4, std taken as 1
    rn.update([0.0, 8.0])
    assert rn.normalize(100.0) == 2.0 and rn.normalize(-100.0) == -2.0
    sc = RunningNorm(clip=None, center=False)
    sc.update([1.0, 3.0])                        # std 1
    assert sc.normalize(2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        rn.update(float("nan"))
    with pytest.raises(ValueError):
        RunningNorm(clip=0.0)


def test_running_norm_resume_is_exact():
    xs = _stream(1, 300)
    straight = RunningNorm()
    straight.update(xs)
    first = RunningNorm()
    first.update(xs[:137])
    state = json.loads(json.dumps(first.state_dict()))   # through a file format, as a checkpoint would
    resumed = RunningNorm()
    resumed.load_state_dict(state)
    resumed.update(xs[137:])
    assert resumed.state_dict() == straight.state_dict()  # bit-for-bit, not approximately
    assert resumed.normalize(xs) == straight.normalize(xs)


TEXTS = ["The answer is 19.", "You are an idiot.", "", "ok ok ok ok ok ok ok ok", "I will kill you, loser",
         "Rinse the rice until the water runs clear."]


def test_reward_is_alpha_heuristic_plus_beta_model_with_parts():
    hr = HybridReward()
    assert (hr.alpha, hr.beta, hr.normalize) == (0.5, 0.5, False)
    scores = [0.3, -1.2, 2.0, 0.0, 5.0, -0.5]
    rows = hr(TEXTS, scores)
    assert len(rows) == len(TEXTS)
    for t, s, r in zip(TEXTS, scores, rows):
        h = heuristic_reward(t)
        assert r["heuristic"] == r["heuristic_raw"] == h["heuristic"]
        assert r["model"] == r["model_raw"] == s
        assert r["reward"] == 0.5 * h["heuristic"] + 0.5 * s
        assert (r["toxicity"], r["length_penalty"], r["repetition_penalty"]) == (
            h["toxicity"], h["length_penalty"], h["repetition_penalty"])
    # with equal model scores, a toxic text gets a lower reward than a clean one
    clean, toxic = hr(["Here is a clear answer.", "Here is a clear answer, idiot."], [1.0, 1.0])
    assert toxic["reward"] < clean["reward"]


def test_no_model_scores_means_model_part_zero():
    hr = HybridReward(alpha=0.7, beta=0.3)
    rows = hr(TEXTS)
    for t, r in zip(TEXTS, rows):
        assert r["model"] == r["model_raw"] == 0.0
        assert r["reward"] == pytest.approx(0.7 * heuristic_reward(t)["heuristic"])


def test_heuristic_options_pass_through():
    hr = HybridReward(heuristic_weights={"toxicity": 0.0}, length_target=(1, 2))
    r = hr(["you idiot you idiot"], [0.0])[0]
    assert r["toxicity"] > 0 and r["length_penalty"] == -1.0  # 4 words vs band (1, 2): -(4-2)/2
    assert r["heuristic_raw"] == heuristic_reward("you idiot you idiot", {"toxicity": 0.0},
                                                  length_target=(1, 2))["heuristic"]


def test_bad_inputs_are_refused():
    hr = HybridReward()
    with pytest.raises(ValueError, match="2 texts but 1 model scores"):
        hr(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="not finite"):
        hr(["a"], [float("inf")])
    with pytest.raises(TypeError):
        hr("just one string", None)
    with pytest.raises(ValueError, match="unknown heuristic weight"):
        HybridReward(heuristic_weights={"tox": 1.0})
    with pytest.raises(ValueError):
        HybridReward(alpha=float("nan"))
    assert hr([], []) == []


def test_normalized_components_and_formula_still_exact():
    hr = HybridReward(alpha=0.5, beta=0.5, normalize=True)
    rng = random.Random(0)
    for _ in range(20):
        texts = [rng.choice(TEXTS) for _ in range(8)]
        scores = [rng.gauss(10.0, 4.0) for _ in range(8)]
        rows = hr(texts, scores)
        for r in rows:
            assert r["reward"] == 0.5 * r["heuristic"] + 0.5 * r["model"]
            assert abs(r["model"]) <= 5.0
    # after 160 values the model statistics match the stream; normalised values are standardised
    assert hr.model_norm.count == 160 and hr.heuristic_norm.count == 160
    assert hr.model_norm.mean == pytest.approx(10.0, abs=1.0)
    r = hr(["The answer is 19."], [hr.model_norm.mean])[0]
    assert r["model"] == pytest.approx(0.0, abs=0.05)
    assert r["model_raw"] == pytest.approx(hr.model_norm.mean, abs=0.1)
    # no model scores: the model statistics are left alone
    before = hr.model_norm.state_dict()
    hr(["abc"])
    assert hr.model_norm.state_dict() == before and hr.heuristic_norm.count == 162


def test_hybrid_resume_is_exact():
    rng = random.Random(3)
    batches = [([rng.choice(TEXTS) for _ in range(5)], [rng.gauss(0, 3) for _ in range(5)]) for _ in range(4)]
    straight = HybridReward(normalize=True)
    out_straight = [straight(t, s) for t, s in batches]
    first = HybridReward(normalize=True)
    out_first = [first(t, s) for t, s in batches[:2]]
    resumed = HybridReward(normalize=True)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    out_resumed = [resumed(t, s) for t, s in batches[2:]]
    assert out_first + out_resumed == out_straight


def test_summarize_gives_per_component_means():
    hr = HybridReward()
    rows = hr(["fine text here", "you idiot"], [1.0, 3.0])
    s = HybridReward.summarize(rows)
    assert s["reward/mean"] == pytest.approx((rows[0]["reward"] + rows[1]["reward"]) / 2)
    assert s["reward/model"] == pytest.approx(2.0)
    assert s["reward/toxicity"] == pytest.approx(0.3)
    assert s["reward/std"] == pytest.approx(abs(rows[0]["reward"] - rows[1]["reward"]) / 2)
    assert {"reward/heuristic", "reward/heuristic_raw", "reward/model_raw", "reward/length_penalty",
            "reward/repetition_penalty"} <= set(s)
    assert HybridReward.summarize([]) == {}
