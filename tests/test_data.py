import json

import pytest
import torch

from alignlab import data
from alignlab.config import DataConfig
from alignlab.tasks import arithmetic


@pytest.fixture(scope="module")
def tok(qwen_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_dir)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = write(tmp_path / "train.jsonl", [json.dumps({"prompt": "a", "response": "b"}), "", '{"prompt": "x", "resp'])
    with pytest.raises(data.DataError, match=r"train\.jsonl:3: not valid JSON"):
        data.load_examples(p, DataConfig(), "train", 0)


def test_missing_field_and_wrong_type(tmp_path):
    p = write(tmp_path / "d.jsonl", [json.dumps({"prompt": "a", "response": "b"}), json.dumps({"prompt": "a"})])
    with pytest.raises(data.DataError, match=r"d\.jsonl:2: missing 'response'"):
        data.load_examples(p, DataConfig(), "train", 0)
    p2 = write(tmp_path / "e.jsonl", [json.dumps({"prompt": 3, "response": "b"})])
    with pytest.raises(data.DataError, match=r"e\.jsonl:1: 'prompt' must be a string"):
        data.load_examples(p2, DataConfig(), "train", 0)
    p3 = write(tmp_path / "m.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"}]})])
    with pytest.raises(data.DataError, match=r"m\.jsonl:1: the last message must be the assistant"):
        data.load_examples(p3, DataConfig(), "train", 0)


def test_over_long_example_error_then_truncate_or_drop(tmp_path, tok):
    long = "1+" * 40
    p = write(tmp_path / "long.jsonl", [json.dumps({"prompt": "2+2=", "response": "4"}),
                                        json.dumps({"prompt": "q", "response": long})])
    cfg = DataConfig(train=p, max_seq_len=16)
    ex = data.load_examples(p, cfg, "train", 0)
    with pytest.raises(data.DataError, match=r"long\.jsonl:2: example has \d+ tokens .* data.max_seq_len=16"):
        data.encode(ex, tok, cfg)
    trunc = data.encode(ex, tok, cfg.model_copy(update={"on_too_long": "truncate"}))
    assert len(trunc) == 2 and all(len(e.ids) <= 16 for e in trunc)
    dropped = data.encode(ex, tok, cfg.model_copy(update={"on_too_long": "drop"}))
    assert len(dropped) == 1


def test_chat_format_masks_only_the_assistant_turn(tmp_path, tok):
    ex = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2"},
                       {"role": "assistant", "content": "4"}], "where": "x:1"}
    prompt, response = data.render(ex, tok, "chat")
    assert prompt.endswith("<|im_start|>assistant\n") and response.startswith("4<|im_end|>")
    enc = data.encode([ex], tok, DataConfig(format="chat", max_seq_len=64))[0]
    b = data.collate([enc], tok.pad_token_id)
    trained = tok.decode(b["labels"][0][b["response_mask"][0]])
    assert trained.startswith("4<|im_end|>") and "2+2" not in trained


def test_plain_format_appends_eos(tok):
    p, r = data.render({"prompt": "2+2=", "response": "4", "where": "x"}, tok, "plain")
    assert (p, r) == ("2+2=", "4" + tok.eos_token)


def test_hf_dataset_object_is_accepted(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "1+1=", "response": "2"}, {"prompt": "2+2=", "response": "4"}])
    rows = data.load_hf_dataset(ds)
    assert [r["response"] for r in rows] == ["2", "4"]
    ds.save_to_disk(str(tmp_path / "ds"))
    assert len(data.load_examples(f"hf:{tmp_path / 'ds'}", DataConfig(), "train", 0)) == 2


def test_arithmetic_split_never_overlaps_and_answers_are_right():
    train = arithmetic.problems(30, ["+", "-", "*"], "train")
    held = arithmetic.problems(30, ["+", "-", "*"], "eval")
    assert {p["prompt"] for p in train}.isdisjoint({p["prompt"] for p in held})
    assert len(train) + len(held) == 3 * 31 * 31 and 0.05 < len(held) / (3 * 31 * 31) < 0.15
    for p in train[:50] + held[:50]:
        assert str(eval(p["prompt"][:-1])) == p["answer"]
    s1 = arithmetic.sample(100, 30, ["+"], "train", seed=1)
    assert s1 == arithmetic.sample(100, 30, ["+"], "train", seed=1) != arithmetic.sample(100, 30, ["+"], "train", 2)


def test_step_sampler_is_deterministic_and_covers_each_epoch():
    s = data.StepSampler(10, 4, seed=3)
    seen = [i for step in range(5) for i in s.indices(step)]  # 20 draws = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert data.StepSampler(10, 4, seed=3).indices(3) == s.indices(3)


def test_packing_gives_the_same_log_probs_as_padding(qwen_dir, tok):
    from transformers import AutoModelForCausalLM

    from alignlab.logprobs import get_response_log_probs

    model = AutoModelForCausalLM.from_pretrained(qwen_dir)
    cfg = DataConfig(max_seq_len=40)
    exs = [{"prompt": f"{a}+{b}=", "response": str(a + b), "where": "t"} for a, b in [(1, 2), (13, 29), (7, 40), (3, 3)]]
    enc = data.encode(exs, tok, cfg)
    padded = data.collate(enc, tok.pad_token_id)
    packed = data.collate_packed(enc, tok.pad_token_id, max_len=40)
    assert packed["input_ids"].shape[0] < len(enc)  # several examples share a row
    with torch.no_grad():
        lp_pad = get_response_log_probs(model, padded["input_ids"], padded["labels"],
                                        attention_mask=padded["attention_mask"])["log_probs"]
        lp_pack = get_response_log_probs(model, packed["input_ids"], packed["labels"],
                                         position_ids=packed["position_ids"])["log_probs"]
    a = torch.sort(lp_pad[padded["response_mask"]]).values
    b = torch.sort(lp_pack[packed["response_mask"]]).values
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
