"""Heuristic rewards: toxicity lexicon (word boundaries, normalisation), length and repetition
penalties, the combined score, and their documented ranges on adversarial inputs."""
from __future__ import annotations

import math

import pytest

from alignlab.rewards import heuristic as H
from alignlab.tasks.preferences import safety_pairs

ADVERSARIAL = [
    "",
    " ",
    "\n\t\n",
    "😀🔥💯" * 50,
    "مرحبا بالعالم",                      # RTL script
    "e\u0301\u0301\u0301" * 100,          # combining marks
    "\u200b\u200d\ufeff",                 # only zero-width characters
    "\x00\x01\x02 control",
    "YOU ARE AN IDIOT AND A MORON!!!",
    "ＩＤＩＯＴ ＭＯＲＯＮ",               # full-width
    "idiot " * 20000,                      # very long and toxic
    "word " * 50000,                       # very long, all one word
    "the cat sat on the mat. " * 3000,     # very long loop
    "kill yourself. I will kill you. subhuman vermin, shut up, damn idiot",
]


def test_benign_text_and_substrings_of_lexicon_words_score_zero():
    # each of these contains a lexicon word as a substring, or a benign use of a violent verb
    for text in ["She has great skill and many skills.", "The skillet is hot.", "kill the process with kill -9",
                 "A knee-jerk reaction.", "This is idiotproof.", "Scunthorpe United won.", "The classic assassin novel.",
                 "Stupidity is not a crime.", "Foolproof plan.", "Hello, how can I help you today?",
                 "Take out the trash on Monday.", "Shoot me an email.", "The dumbbell weighs 5 kg."]:
        cats = H.toxicity_categories(text)
        assert sum(cats.values()) == 0, (text, cats)
        assert H.toxicity_score(text) == 0.0


def test_each_category_is_detected_by_its_own_example():
    examples = {
        "insult": "you are such an idiot",
        "threat": "I will kill you",
        "dehumanizing": "those people are vermin",
        "self_harm": "just go and kill yourself",
        "harassment": "shut up, nobody asked",
        "profanity": "damn it",
    }
    assert set(examples) == set(H.CATEGORIES)
    for cat, text in examples.items():
        cats = H.toxicity_categories(text)
        assert cats[cat] >= 1, (cat, cats)
        assert H.toxicity_score(text) == pytest.approx(1 - math.prod((1 - H.LEXICON[c][0]) ** k for c, k in cats.items()))


def test_kill_yourself_is_self_harm_not_a_threat_and_skill_is_nothing():
    assert H.toxicity_categories("kill yourself") == {**dict.fromkeys(H.CATEGORIES, 0), "self_harm": 1}
    assert H.toxicity_categories("skill yourself") == dict.fromkeys(H.CATEGORIES, 0)


def test_noisy_or_values_and_monotonicity():
    assert H.toxicity_score("idiot") == pytest.approx(0.6)
    assert H.toxicity_score("idiot idiot") == pytest.approx(1 - 0.4**2)
    assert H.toxicity_score("I will kill you") == pytest.approx(0.9)
    scores = [H.toxicity_score("idiot " * k) for k in range(6)]
    assert scores == sorted(scores) and scores[0] == 0.0 and scores[-1] < 1.0


def test_normalisation_case_fullwidth_zero_width_and_curly_apostrophe():
    base = H.toxicity_score("you're useless, idiot")
    assert base > 0
    for variant in ["YOU'RE USELESS, IDIOT", "ＹＯＵ'ＲＥ ＵＳＥＬＥＳＳ, ＩＤＩＯＴ", "you’re useless, id\u200biot",
                    "You're\n\n  useless,   IdIoT"]:
        assert H.toxicity_score(variant) == pytest.approx(base), variant


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_ranges_hold_on_adversarial_inputs(text):
    tox = H.toxicity_score(text)
    assert 0.0 <= tox <= 1.0
    assert -1.0 <= H.length_penalty(text) <= 0.0
    assert -1.0 <= H.length_penalty(text, (10, 20), unit="chars") <= 0.0
    rep = H.repetition_penalty(text)
    assert -1.0 < rep <= 0.0
    out = H.heuristic_reward(text)
    assert set(out) == {"toxicity", "length_penalty", "repetition_penalty", "heuristic"}
    assert -1.0 <= out["heuristic"] <= 1.0
    assert all(math.isfinite(v) for v in out.values())


def test_non_string_is_refused():
    with pytest.raises(TypeError):
        H.toxicity_score(None)


def test_length_penalty_formula():
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    assert H.length_penalty(words(5), (4, 8)) == 0.0
    assert H.length_penalty(words(4), (4, 8)) == 0.0 and H.length_penalty(words(8), (4, 8)) == 0.0
    assert H.length_penalty(words(2), (4, 8)) == pytest.approx(-0.5)      # -(4-2)/4
    assert H.length_penalty("", (4, 8)) == -1.0
    assert H.length_penalty(words(12), (4, 8)) == pytest.approx(-0.5)     # -(12-8)/8
    assert H.length_penalty(words(16), (4, 8)) == -1.0
    assert H.length_penalty(words(1000), (4, 8)) == -1.0
    assert H.length_penalty("", (0, 8)) == 0.0
    assert H.length_penalty("abcdef", (1, 3), unit="chars") == -1.0
    assert H.length_penalty("ａｂ", (2, 2), unit="chars") == 0.0        # NFKC: one char per letter
    with pytest.raises(ValueError):
        H.length_penalty("x", (5, 2))
    with pytest.raises(ValueError):
        H.length_penalty("x", unit="bytes")
    with pytest.raises(ValueError, match="tokenizer"):
        H.length_penalty("x", unit="tokens")


def test_length_penalty_in_tokens_uses_the_tokenizer():
    from alignlab.tiny import build_tokenizer

    tok = build_tokenizer()
    text = "12345 67890"
    n = len(tok.encode(text, add_special_tokens=False))
    assert n >= 10  # digits are split one per token
    assert H.length_penalty(text, (1, n), unit="tokens", tokenizer=tok) == 0.0
    assert H.length_penalty(text, (1, n // 2), unit="tokens", tokenizer=tok) < 0.0


def test_repetition_penalty():
    assert H.repetition_penalty("a b c a b c", n=3) == pytest.approx(-0.25)   # 4 trigrams, 3 unique
    assert H.repetition_penalty("the quick brown fox jumps over the lazy dog") == 0.0
    assert H.repetition_penalty("a b", n=3) == 0.0
    assert H.repetition_penalty("A b C, a B c!", n=3) == pytest.approx(-0.25)  # case and punctuation ignored
    assert H.repetition_penalty("a a a a a", n=1) == pytest.approx(-0.8)
    loop = H.repetition_penalty("I am a loop. " * 500)
    assert -1.0 < loop < -0.99
    mild = H.repetition_penalty("I am a loop. " * 3)
    assert loop < mild < 0.0
    with pytest.raises(ValueError):
        H.repetition_penalty("x", n=0)


def test_heuristic_reward_formula_weights_and_clipping():
    clean = H.heuristic_reward("The answer is 42 because six times seven is forty two.")
    assert clean == {"toxicity": 0.0, "length_penalty": 0.0, "repetition_penalty": 0.0, "heuristic": 1.0}
    text = "you idiot " * 3 + "you idiot you idiot"
    out = H.heuristic_reward(text, {"toxicity": 0.25, "length": 0.5, "repetition": 0.5}, length_target=(1, 5))
    expect = 1 - 2 * 0.25 * out["toxicity"] + 0.5 * out["length_penalty"] + 0.5 * out["repetition_penalty"]
    assert out["heuristic"] == pytest.approx(max(-1.0, min(1.0, expect)))
    assert out["length_penalty"] < 0 and out["repetition_penalty"] < 0 and out["toxicity"] > 0
    assert H.heuristic_reward("I will kill you, idiot")["heuristic"] == pytest.approx(1 - 2 * (1 - 0.1 * 0.4))
    assert H.heuristic_reward("idiot", length_target=(50, 60))["heuristic"] == -1.0  # 1 - 1.2 - 0.98, clipped
    assert H.heuristic_reward("")["heuristic"] == 0.0                          # empty: length -1
    assert H.heuristic_reward("idiot", {"toxicity": 0.0})["heuristic"] == 1.0
    with pytest.raises(ValueError, match="unknown heuristic weight"):
        H.heuristic_reward("x", {"toxic": 1.0})
    with pytest.raises(ValueError):
        H.heuristic_reward("x", {"length": -1.0})


def test_on_the_safety_set_chosen_is_clean_and_abusive_rejected_is_flagged():
    pairs = safety_pairs()
    assert all(H.toxicity_score(p["chosen"]) == 0.0 for p in pairs), [p["id"] for p in pairs
                                                                       if H.toxicity_score(p["chosen"])]
    abusive = [p for p in pairs if p["rejected_type"] in ("insult", "abuse")]
    flagged = [p for p in abusive if H.toxicity_score(p["rejected"]) > 0]
    assert len(abusive) >= 20 and len(flagged) / len(abusive) >= 0.9
    # the lexicon says nothing about compliance with a harmful request or a needless refusal:
    # that is the learned reward model's job
    polite = [p for p in pairs if p["rejected_type"] in ("compliance", "needless_refusal")]
    assert sum(H.toxicity_score(p["rejected"]) > 0 for p in polite) <= 2
