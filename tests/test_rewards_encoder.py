"""The small encoder reward model and the built-in preference sets: data properties, forward-pass
invariants, exact save/load, determinism, and held-out pairwise accuracy clearly above chance."""
from __future__ import annotations

import json

import pytest
import torch

from alignlab.jsonl import DataError
from alignlab.tasks import preferences as bp
from alignlab.rewards.encoder_rm import (EncoderRewardModel, EncoderRMConfig, encode_pair, pad_batch,
                                         cross_validate_safety, pairwise_accuracy, train_builtin,
                                         train_encoder_rm)
from alignlab.tasks.arithmetic import is_held_out


@pytest.fixture(scope="module")
def tok():
    from alignlab.tiny import build_tokenizer

    return build_tokenizer()


# ---------------------------------------------------------------------------------------------- data


def test_arithmetic_pairs_are_correct_deterministic_and_split_by_problem():
    train = bp.arithmetic_pairs(600, seed=0, split="train")
    held = bp.arithmetic_pairs(200, seed=0, split="eval")
    assert train == bp.arithmetic_pairs(600, seed=0, split="train")
    assert train != bp.arithmetic_pairs(600, seed=1, split="train")
    assert len({p["id"] for p in train}) == 600
    for p in train + held:
        a, op, b = bp._parse(p["prompt"])
        right = a + b if op == "+" else a - b
        assert p["chosen"] == str(right) and p["rejected"] != p["chosen"]
        assert int(p["rejected"]) != right and p["error"] in bp.ERROR_KINDS
    assert not any(is_held_out(p["prompt"]) for p in train)
    assert all(is_held_out(p["prompt"]) for p in held)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    assert {p["error"] for p in train} == set(bp.ERROR_KINDS)
    # more pairs than problems: problems repeat with fresh wrong answers, ids stay unique
    many = bp.arithmetic_pairs(500, seed=0, split="eval", max_operand=9)
    assert len({p["id"] for p in many}) == 500 and len({p["prompt"] for p in many}) < 500
    with pytest.raises(ValueError):
        bp.arithmetic_pairs(5, split="test")


def test_safety_pairs_file(tmp_path):
    pairs = bp.safety_pairs()
    assert len(pairs) >= 60 and len({p["id"] for p in pairs}) == len(pairs)
    assert {p["kind"] for p in pairs} == {"harmful", "benign"}
    assert {p["rejected_type"] for p in pairs} == {"compliance", "abuse", "needless_refusal", "insult"}
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n{"id": "b", "prompt": "p", "chosen": "c"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing or empty 'rejected'"):
        bp.safety_pairs(bad)
    bad.write_text('{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n' * 2)
    with pytest.raises(DataError, match="duplicate id"):
        bp.safety_pairs(bad)


def test_split_and_recombine():
    pairs = bp.safety_pairs()
    train, held = bp.split_pairs(pairs, 0.2, seed=0)
    assert len(held) == round(0.2 * len(pairs)) and len(train) + len(held) == len(pairs)
    assert not {p["id"] for p in train} & {p["id"] for p in held}
    assert bp.split_pairs(pairs, 0.2, seed=0) == (train, held) and bp.split_pairs(pairs, 0.2, seed=1) != (train, held)
    aug = bp.recombine_pairs(train, 3, seed=0)
    assert aug[: len(train)] == train and len(aug) == 4 * len(train)
    by_id = {p["id"]: p for p in train}
    held_rejected = {p["rejected"] for p in held}
    for p in aug[len(train):]:
        src = by_id[p["id"].split("+")[0]]
        assert (p["prompt"], p["chosen"], p["kind"]) == (src["prompt"], src["chosen"], src["kind"])
        assert p["rejected"] != src["rejected"] and p["rejected"] not in held_rejected
        assert p["rejected"] in {q["rejected"] for q in train if q["kind"] == src["kind"]}
    assert bp.recombine_pairs(train, 3, seed=0) == aug


# ---------------------------------------------------------------------------------------------- model


def _model(tok, **kw):
    torch.manual_seed(0)
    cfg = EncoderRMConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, sep_token_id=tok.eos_token_id, **kw)
    return EncoderRewardModel(cfg).eval()


def test_forward_shape_padding_invariance_and_empty_rows(tok):
    m = _model(tok, max_len=64)
    seqs = [encode_pair(tok, "What is 2+2?", "4", 64),
            encode_pair(tok, "Tell me a long story please", "Once upon a time there was a fox.", 64)]
    ids, mask = pad_batch(seqs, tok.pad_token_id)
    with torch.no_grad():
        batch = m(ids, mask)
        alone = m(*pad_batch(seqs[:1], tok.pad_token_id))
        zeros = torch.zeros(2, 7, dtype=torch.long)
        extra_pad = m(torch.cat([ids, zeros], 1), torch.cat([mask, zeros], 1))
        empty = m(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
    assert batch.shape == (2,)
    assert torch.allclose(batch[0], alone[0], atol=1e-5)
    assert torch.allclose(batch, extra_pad, atol=1e-5)
    assert torch.isfinite(empty).all() and torch.allclose(empty, m.head.bias)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 65, dtype=torch.long), torch.ones(1, 65, dtype=torch.long))


def test_encode_pair_truncates_within_max_len_and_accepts_chat_messages(tok):
    long_prompt, long_resp = "prompt words " * 100, "response words " * 100
    ids = encode_pair(tok, long_prompt, long_resp, 40)
    assert len(ids) == 40 and ids.count(tok.eos_token_id) == 1
    p_ids = tok.encode(long_prompt, add_special_tokens=False)
    r_ids = tok.encode(long_resp, add_special_tokens=False)
    sep = ids.index(tok.eos_token_id)
    assert ids[:sep] == p_ids[-sep:] and ids[sep + 1:] == r_ids[: 40 - sep - 1]   # prompt end, response start
    short = encode_pair(tok, "12+7=", "19", 40)
    assert short == tok.encode("12+7=", add_special_tokens=False) + [tok.eos_token_id] + tok.encode("19", add_special_tokens=False)
    chat = encode_pair(tok, [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}], 64)
    assert tok.decode(chat).count("hi") >= 1 and "hello" in tok.decode(chat)
    with pytest.raises(TypeError):
        encode_pair(tok, 42, "x", 16)


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0, -1.0])) == 0.625


def test_training_is_deterministic_and_leaves_global_rng_alone(tok):
    pairs = bp.arithmetic_pairs(64, seed=0, split="train")
    held = bp.arithmetic_pairs(16, seed=0, split="eval")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    m1, met1 = train_encoder_rm(pairs, tok, eval_pairs=held, epochs=2, max_len=16, seed=7)
    after = torch.rand(3)
    m2, met2 = train_encoder_rm(pairs, tok, eval_pairs=held, epochs=2, max_len=16, seed=7)
    m3, _ = train_encoder_rm(pairs, tok, eval_pairs=held, epochs=2, max_len=16, seed=8)
    assert torch.equal(before, after)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert met1["eval/accuracy"] == met2["eval/accuracy"] and met1["steps"] == 4 and len(met1["history"]) == 2
    assert met1["n_train"] == 64 and met1["n_eval"] == 16


def test_training_changes_scores_in_the_right_direction(tok):
    pairs = bp.safety_pairs()[:16]
    model, met = train_encoder_rm(pairs, tok, eval_fraction=0.0, epochs=6, lr=2e-3, seed=0)
    assert met["n_eval"] == 0 and met["train/accuracy"] == 1.0 and met["train/loss"] < 0.3
    rc = model.score(tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rr = model.score(tok, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    assert (rc > rr).all()


# ---------------------------------------------------------------------------------------------- acceptance


# Each of the two tests below trains real models for 20-40 s on two CPU cores: `-m "not slow"` skips them.


@pytest.mark.slow
def test_safety_held_out_accuracy_clearly_above_chance(tok):
    """5-fold cross-validation: every one of the 81 pairs is held out once (a single 16-pair split
    is too noisy to test: 0.56-0.94 across seeds)."""
    cv = cross_validate_safety(tok, folds=5, seed=0)
    assert cv["n"] == 81 and len(cv["fold_accuracy"]) == 5
    assert cv["accuracy"] > 0.75, cv
    assert cv["accuracy/insult"] > 0.75 and cv["accuracy/compliance"] > 0.75, cv


@pytest.mark.slow
def test_arithmetic_held_out_accuracy_clearly_above_chance(tok):
    _, met = train_builtin("arithmetic", tok, seed=0)
    assert met["n_eval"] == 400
    # Measured 0.745-0.777 across seeds and thread counts (docs/rewards.md): the model learns the
    # magnitude and shape of the answer but not the exact units digit, so the +-1..5 mistakes stay
    # near chance. 0.70 is the bar that holds on every run; the 0.75 is met only on some.
    assert met["eval/accuracy"] > 0.70, {k: v for k, v in met.items() if k != "history"}
    # mistakes in magnitude or form are caught almost always: the model really reads the numbers
    assert met["eval/accuracy/wrong_op"] > 0.85 and met["eval/accuracy/digit_swap"] > 0.85
    assert met["eval/accuracy/sign_flip"] > 0.8


def test_save_load_round_trips_scores_exactly(tok, tmp_path):
    model, _ = train_encoder_rm(bp.safety_pairs()[:8], tok, eval_fraction=0.0, epochs=1, seed=0)
    pairs = bp.safety_pairs()[:10]
    prompts, responses = [p["prompt"] for p in pairs], [p["rejected"] for p in pairs]
    before = model.score(tok, prompts, responses)
    out = model.save(tmp_path / "rm")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "alignlab_encoder_rm" and cfg["n_layers"] == 3 and cfg["vocab_size"] == len(tok)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = EncoderRewardModel.load(out)
    after = loaded.score(tok, prompts, responses)
    assert torch.equal(before, after)
    assert not loaded.training
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(ValueError, match="not an encoder reward model"):
        EncoderRewardModel.load(tmp_path / "other")
    with pytest.raises(FileNotFoundError):
        EncoderRewardModel.load(tmp_path / "missing")
