"""The data formats users bring from TRL and the hub load without extra flags.

`{"prompt", "completion"}` once got "missing 'response'", and conversational preference pairs got
"chat 'messages' need data.format=chat". The first line decides a file's format, which is printed;
a line in another format is refused with FILE:LINE.
"""
import json

import pytest

from alignlab import cli, data, tracking
from alignlab.config import DataConfig, PrefDataConfig
from conftest import sft_overrides


@pytest.fixture(scope="module")
def tok(qwen_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_dir)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def trained_text(enc, tok):
    b = data.collate([enc], tok.pad_token_id)
    return tok.decode(b["labels"][0][b["response_mask"][0]])


SFT_CASES = {  # name: (line, label printed, prompt rendered, trained text)
    "prompt_completion": ({"prompt": "2+2=", "completion": "4"}, "prompt-completion", "2+2=", "4{eos}"),
    "conversational_prompt_completion": ({"prompt": [U("2+2")], "completion": [A("4")]},
                                         "conversational prompt-completion", "<|im_start|>user\n2+2<|im_end|>\n"
                                         "<|im_start|>assistant\n", "4<|im_end|>\n"),
    "messages": ({"messages": [U("2+2"), A("4")]}, "messages", "<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n",
                 "4<|im_end|>\n"),
    "prompt_response": ({"prompt": "2+2=", "response": "4"}, "prompt-response", "2+2=", "4{eos}"),
    "instruction": ({"instruction": "Add", "input": "2+2", "output": "4"}, "instruction", "Add\n\n2+2\n\n", "4{eos}"),
    "instruction_no_input": ({"instruction": "Add 2+2", "input": "", "output": "4"}, "instruction", "Add 2+2\n\n",
                             "4{eos}"),
}


@pytest.mark.parametrize("case", list(SFT_CASES))
def test_sft_formats_are_detected_and_mapped(tmp_path, tok, capsys, case):
    line, label, prompt, trained = SFT_CASES[case]
    p = write(tmp_path / "d.jsonl", [line, line])
    ex = data.load_examples(p, DataConfig(), "train", 0)
    assert f"detected {label} (" in capsys.readouterr().err
    assert data.render(ex[0], tok, "auto")[0] == prompt
    enc = data.encode(ex, tok, DataConfig(max_seq_len=64))
    assert len(enc) == 2 and trained_text(enc[0], tok) == trained.format(eos=tok.eos_token)


def test_instruction_with_the_chat_template_is_the_user_message(tmp_path, tok):
    p = write(tmp_path / "i.jsonl", [{"instruction": "Add", "input": "2+2", "output": "4"}])
    ex = data.load_examples(p, DataConfig(), "train", 0)[0]
    assert data.render(ex, tok, "chat")[0] == "<|im_start|>user\nAdd\n\n2+2<|im_end|>\n<|im_start|>assistant\n"


def test_a_mixed_file_is_refused_at_the_first_line_in_another_format(tmp_path):
    p = write(tmp_path / "mix.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"},
                                       {"messages": [U("x"), A("y")]}])
    with pytest.raises(data.DataError, match=r"mix\.jsonl:3: this line is messages but the first line "
                                             r"\(.*mix\.jsonl:1\) is prompt-completion"):
        data.load_examples(p, DataConfig(), "train", 0)
    p = write(tmp_path / "mix2.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": [U("c")], "completion": [A("d")]}])
    with pytest.raises(data.DataError, match=r"mix2\.jsonl:2: this line is conversational prompt-completion"):
        data.load_examples(p, DataConfig(), "train", 0)
    p = write(tmp_path / "none.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(data.DataError, match=r"none\.jsonl:1: the keys \['answer', 'question'\] match no accepted format"):
        data.load_examples(p, DataConfig(), "train", 0)


def test_plain_format_refuses_conversational_data_with_the_fix(tmp_path, tok):
    p = write(tmp_path / "c.jsonl", [{"messages": [U("2+2"), A("4")]}])
    ex = data.load_examples(p, DataConfig(), "train", 0)
    with pytest.raises(data.DataError, match=r"c\.jsonl:1: conversational data .* data.format=plain; use data.format=auto"):
        data.encode(ex, tok, DataConfig(format="plain"))


PREF_CASES = {  # name: (line, label, prompt, chosen, rejected) after validation
    "preference": ({"prompt": "2+2=", "chosen": "4", "rejected": "5"}, "preference", "2+2=", "4", "5"),
    "conversational_preference": ({"prompt": [U("2+2")], "chosen": [A("4")], "rejected": [A("5")]},
                                  "conversational preference", [U("2+2")], "4", "5"),
    "implicit_preference": ({"chosen": "2+2 is 4", "rejected": "2+2 is 5"}, "implicit-preference", "2+2 is", " 4", " 5"),
    "conversational_implicit_preference": ({"chosen": [U("2+2"), A("4")], "rejected": [U("2+2"), A("5")]},
                                           "conversational implicit-preference", [U("2+2")], "4", "5"),
}


@pytest.mark.parametrize("case", list(PREF_CASES))
def test_preference_formats_are_detected_and_mapped(tmp_path, tok, capsys, case):
    line, label, prompt, chosen, rejected = PREF_CASES[case]
    p = write(tmp_path / "p.jsonl", [line])
    ex = data.load_pref_examples(p, "train", 0, 10)[0]
    assert f"detected {label} (" in capsys.readouterr().err
    assert (ex["prompt"], ex["chosen"], ex["rejected"]) == (prompt, chosen, rejected)
    c, r = data.encode_pairs([ex], tok, PrefDataConfig(max_seq_len=64))[0]
    assert c.ids[: c.n_prompt] == r.ids[: r.n_prompt]  # the pair shares its prompt tokens
    assert trained_text(c, tok).strip().startswith(chosen.strip())


def test_preference_files_refuse_mixing_and_sft_lines(tmp_path):
    p = write(tmp_path / "pm.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"chosen": "ab", "rejected": "ac"}])
    with pytest.raises(data.DataError, match=r"pm\.jsonl:2: this line is implicit-preference but the first line"):
        data.load_pref_examples(p, "train", 0, 10)
    p = write(tmp_path / "sft.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(data.DataError, match=r"sft\.jsonl:1: this is an SFT file \(prompt-completion\); DPO and reward"):
        data.load_pref_examples(p, "train", 0, 10)
    p = write(tmp_path / "np.jsonl", [{"chosen": [A("x")], "rejected": [A("y")]}])
    with pytest.raises(data.DataError, match=r"np\.jsonl:1: 'chosen' and 'rejected' share no leading message"):
        data.load_pref_examples(p, "train", 0, 10)


def test_the_packaged_configs_take_trl_files_without_flags(tmp_path, qwen_dir):
    """The two commands of the bug report: SFT on prompt-completion, DPO on conversational pairs."""
    sft_file = write(tmp_path / "pc.jsonl", [{"prompt": f"{a}+1=", "completion": str(a + 1)} for a in range(8)])
    args = sft_overrides(tmp_path, qwen_dir, "pc", **{"data.train": sft_file, "data.eval": "null", "training.total_steps": 1})
    assert cli.main(["sft", "-c", "sft_tiny", *args]) == 0
    pref_file = write(tmp_path / "cp.jsonl", [{"prompt": [U(f"{a}+1")], "chosen": [A(str(a + 1))], "rejected": [A(str(a))]}
                                              for a in range(4)])
    assert cli.main(["dpo", "-c", "dpo_tiny", f"out_dir={tmp_path}", "name=cp", f"model.path={qwen_dir}",
                     f"data.train={pref_file}", "data.eval=null", "training.total_steps=1", "training.global_batch_pairs=2",
                     "training.micro_batch=2", "data.max_seq_len=32"]) == 0
    assert [r["step"] for r in tracking.read_metrics(tmp_path / "cp")] == [1]
