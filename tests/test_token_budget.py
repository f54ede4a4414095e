"""Micro-batches sized by tokens (`training.max_tokens_per_micro_batch`): every example once, each
micro-batch within the budget (an over-long example alone), and the same accumulated update as a
fixed number of sequences per micro-batch."""
import pytest
import torch
from conftest import load_sft

from alignlab import data, step, tracking
from alignlab.train import sft


def _enc(lengths):
    return [data.Encoded(ids=list(range(n)), n_prompt=1, example={"id": i}) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("packed", [False, True])
def test_token_budget_splits_cover_every_example_within_the_budget(packed):
    items = _enc([3, 9, 4, 20, 5, 5, 7, 2, 31, 6])
    mbs = data.micro_batches(items, micro=8, bucket=True, max_tokens=24, packed=packed)
    seen = sorted(e.example["id"] for mb in mbs for e in mb)
    assert seen == list(range(10))
    for mb in mbs:
        lens = [len(e.ids) for e in mb]
        size = sum(lens) if packed else len(lens) * max(lens)
        assert size <= 24 or len(mb) == 1, (lens, size)  # the 31-token example goes alone
        assert len(mb) <= 8
    assert any(len(mb) > 1 for mb in mbs) and any(len(mb) == 1 for mb in mbs)
    # short examples share bigger micro-batches than long ones
    assert len(mbs[0]) > len(mbs[-1])
    # without a budget: the plain fixed-size split
    assert [len(mb) for mb in data.micro_batches(items, 4, True)] == [4, 4, 2]


def test_first_fit_decreasing_packs_within_the_cap():
    """Every index once; each row within the cap unless it holds a single over-long sequence; longest
    first into the first row with room, so rows are few (here the optimum: 48 tokens in 3 rows of 16)."""
    lengths = [5, 11, 3, 16, 8, 1, 4, 20]
    rows = data.first_fit_decreasing(lengths, 16)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    for r in rows:
        assert sum(lengths[i] for i in r) <= 16 or len(r) == 1, r
    assert rows[0] == [7]  # the 20-token sequence alone, first (longest first)
    assert len(rows) == 1 + -(-sum(x for x in lengths if x <= 16) // 16)  # no wasted row
    # a row that already holds a sequence takes the next one that fits (first fit), not a new row
    assert data.first_fit_decreasing([6, 6, 4], 10) == [[0, 2], [1]]


def test_a_token_budget_accumulates_the_same_update(tmp_path, qwen_dir, monkeypatch):
    from alignlab import models

    calls = []
    real = step.micro_logps
    monkeypatch.setattr(step, "micro_logps", lambda m, batch, *a: calls.append(batch["input_ids"].shape) or real(m, batch, *a))
    grads, losses, splits, forwards = {}, {}, {}, {}
    for budget in (None, 40):
        cfg = load_sft(tmp_path, qwen_dir, f"b{budget}")
        policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, "fp32")
        train = data.encode(data.load_examples(cfg.data.train, cfg.data, "train", 0), tok, cfg.data)
        items = [train[i] for i in data.StepSampler(len(train), 8, 0).indices(0)]
        splits[budget] = [len(mb) for mb in data.micro_batches(items, 8, True, budget)]
        calls.clear()
        losses[budget], _ = step.accumulate_step(policy, items, tok.pad_token_id, device, prec, micro_batch_seqs=8,
                                                 max_tokens=budget)
        forwards[budget] = list(calls)
        grads[budget] = {n: p.grad.clone() for n, p in policy.named_parameters()}
    assert splits[None] == [8] and len(splits[40]) > 1  # the budget really split the step
    assert [shape[0] for shape in forwards[40]] == splits[40]  # and the step ran those micro-batches
    assert all(r * t <= 40 or r == 1 for r, t in forwards[40])
    assert losses[None] == pytest.approx(losses[40], rel=1e-6)
    for n in grads[None]:
        torch.testing.assert_close(grads[None][n], grads[40][n], atol=1e-7, rtol=1e-5)


def test_sft_cli_reads_the_token_budget(tmp_path, qwen_dir):
    kw = {"training.total_steps": 2, "data.eval": "null", "training.micro_batch": 8}
    a = load_sft(tmp_path, qwen_dir, "fixed", **kw)
    b = load_sft(tmp_path, qwen_dir, "budget", **kw, **{"training.max_tokens_per_micro_batch": 40})
    sft.main(a)
    sft.main(b)
    la = [r["loss/train"] for r in tracking.read_metrics(a.run_dir) if "loss/train" in r]
    lb = [r["loss/train"] for r in tracking.read_metrics(b.run_dir) if "loss/train" in r]
    assert la == pytest.approx(lb, rel=1e-5)
    assert "max_tokens_per_micro_batch: 40" in (b.run_dir / "config.yaml").read_text()
