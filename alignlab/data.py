"""SFT data: load and validate, render with chat templates, tokenise with response masks, batch.

Examples are validated and tokenised before any model is loaded, so a malformed line or an
over-long example stops the run with `FILE:LINE: what is wrong; how to fix it`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DataConfig
from .jsonl import read_jsonl as _read_jsonl


from .jsonl import DataError  # noqa: E402  (re-exported: alignlab.data.DataError)


# ----------------------------------------------------------------------------------------------
# The plan's tokenisation contract
# ----------------------------------------------------------------------------------------------


def _prompt_ids(tokenizer, text: str) -> list[int]:
    # A chat template may already start with the BOS text (Gemma); never add a second one.
    bos = tokenizer.bos_token
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add)["input_ids"]


def _output_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_prompt_and_output(prompt_strs: list[str], output_strs: list[str], tokenizer) -> dict[str, torch.Tensor]:
    """Tokenise prompts and outputs separately, concatenate, right-pad with the pad id.

    Returns `input_ids = seq[:, :-1]`, `labels = seq[:, 1:]` and `response_mask` (bool, on label
    positions that are output tokens), each (B, max_len - 1).
    """
    if len(prompt_strs) != len(output_strs):
        raise ValueError(f"{len(prompt_strs)} prompts but {len(output_strs)} outputs")
    seqs, masks = [], []
    for p, o in zip(prompt_strs, output_strs):
        pi, oi = _prompt_ids(tokenizer, p), _output_ids(tokenizer, o)
        seqs.append(pi + oi)
        masks.append([False] * len(pi) + [True] * len(oi))
    out = pad_and_shift(seqs, masks, tokenizer.pad_token_id)
    del out["attention_mask"]  # the plan's contract: exactly input_ids, labels, response_mask
    return out


def pad_and_shift(seqs: list[list[int]], masks: list[list[bool]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad, then shift: input_ids = seq[:, :-1], labels = seq[:, 1:], response_mask on label
    positions, attention_mask on the real (unpadded) input positions. All (B, max_len - 1)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    lengths = torch.tensor([len(s) - 1 for s in seqs])
    attention = (torch.arange(width - 1)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:], "attention_mask": attention}


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------

# Formats a file may be in (TRL's standard formats, alignlab's own, and the instruction layout).
# The first line decides the file's format; every later line must be in the same one.
SFT_FORMATS = {  # name: (required keys, what maps where)
    "messages": (("messages",), "all messages but the last are the prompt, the last (the assistant's) is trained; "
                 "chat template"),
    "prompt_completion": (("prompt", "completion"), "prompt -> prompt, completion -> trained response"),
    "prompt_response": (("prompt", "response"), "prompt -> prompt, response -> trained response"),
    "instruction": (("instruction", "output"), "instruction, a blank line and input (when non-empty) -> prompt "
                    "(plain: followed by a blank line; chat: the user message), output -> trained response"),
}
PREF_FORMATS = {
    "preference": (("prompt", "chosen", "rejected"), "prompt -> prompt, chosen / rejected -> the two responses"),
    "implicit_preference": (("chosen", "rejected"), "the longest common start of chosen and rejected -> prompt "
                            "(whole messages when conversational), the rest of each -> the two responses"),
}
SFT_SHAPE = ('an SFT line is one of {"prompt", "completion"}, {"prompt", "response"}, {"messages": [...]}, '
             '{"instruction", "input", "output"}; prompt and completion may be lists of chat messages')
PREF_SHAPE = ('a preference line is {"prompt", "chosen", "rejected"} or {"chosen", "rejected"} (implicit prompt); '
              "each field a string or a list of chat messages")


def detect_format(obj: dict, formats: dict) -> tuple[str, bool] | None:
    """(format name, conversational?) of one JSON object, or None when its keys match no format."""
    for name, (keys, _) in formats.items():
        if all(k in obj for k in keys):
            lead = {"messages": "messages", "implicit_preference": "chosen"}.get(name, keys[0])
            return name, isinstance(obj[lead], list)
    return None


def format_label(fmt: tuple[str, bool]) -> str:
    name, conv = fmt
    return ("conversational " if conv and name != "messages" else "") + name.replace("_", "-")


def _check_messages(v, where: str, key: str) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise DataError(f"{where}: {key!r} must be a non-empty list of messages")
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: {key}[{i}] needs string 'role' and 'content'")
    return v


def _check_text(obj: dict, key: str, where: str, allow_empty: bool = False) -> str:
    v = obj[key]
    if not isinstance(v, str):
        raise DataError(f"{where}: {key!r} must be a string, got {type(v).__name__}")
    if not v and not allow_empty:
        raise DataError(f"{where}: {key!r} is empty; an SFT example needs something to learn")
    return v


def validate_sft_example(obj: dict, where: str, fmt: str | None = None) -> dict:
    """One SFT line in format `fmt` (detected from the line when None) -> the internal form:
    {"prompt", "response"}, or {"messages", "n_prompt" (how many of them are the prompt), "response"}."""
    fmt = fmt or (detect_format(obj, SFT_FORMATS) or ("prompt_response", False))[0]
    missing = [k for k in SFT_FORMATS[fmt][0] if k not in obj]
    if missing:
        raise DataError(f"{where}: missing {', '.join(repr(k) for k in missing)}; {SFT_SHAPE}")
    extra = {"id": obj.get("id"), **({"answer": obj["answer"]} if "answer" in obj else {})}
    if fmt == "messages":
        msgs = _check_messages(obj["messages"], where, "messages")
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's (it is the trained response), "
                            f"got role {msgs[-1]['role']!r}")
        return {"messages": msgs, "n_prompt": len(msgs) - 1, "response": msgs[-1]["content"], **extra}
    if fmt == "prompt_completion" and isinstance(obj["prompt"], list):
        prompt = _check_messages(obj["prompt"], where, "prompt")
        comp = obj["completion"]
        comp = [{"role": "assistant", "content": comp}] if isinstance(comp, str) else _check_messages(comp, where, "completion")
        if comp[-1]["role"] != "assistant" or not comp[-1]["content"]:
            raise DataError(f"{where}: 'completion' must end with a non-empty assistant message (it is trained)")
        return {"messages": prompt + comp, "n_prompt": len(prompt), "response": comp[-1]["content"], **extra}
    if fmt == "instruction":
        user = _check_text(obj, "instruction", where)
        if obj.get("input"):
            user += "\n\n" + _check_text(obj, "input", where)
        return {"prompt": user + "\n\n", "chat_prompt": user, "response": _check_text(obj, "output", where), **extra}
    key = "completion" if fmt == "prompt_completion" else "response"
    return {"prompt": _check_text(obj, "prompt", where, allow_empty=True), "response": _check_text(obj, key, where),
            **extra}


def read_examples(source: str, rows: list[tuple[str, dict]], formats: dict, validate, shape: str) -> list[dict]:
    """Detect the format from the first row, say which, and validate every row in it; a row in
    another format is refused with its FILE:LINE (one file, one format)."""
    first_where, first = rows[0]
    fmt = detect_format(first, formats)
    if fmt is None:
        raise DataError(f"{first_where}: the keys {sorted(first)} match no accepted format; {shape}")
    from .tracking import console

    console.print(f"data: {source}: detected {format_label(fmt)} ({formats[fmt[0]][1]})", highlight=False, soft_wrap=True)
    out = []
    for where, obj in rows:
        mine = detect_format(obj, formats)
        if mine is not None and mine != fmt:
            raise DataError(f"{where}: this line is {format_label(mine)} but the first line ({first_where}) is "
                            f"{format_label(fmt)}; a file holds one format: convert this line or split the file")
        out.append({**validate(obj, where, fmt[0]), "where": where})
    return out


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of an SFT file; errors name FILE:LINE."""
    return _read_jsonl(path, hint=SFT_SHAPE)


def load_examples(spec: str, cfg: DataConfig, split: str, seed: int) -> list[dict]:
    """Examples with a `where` (FILE:LINE or builtin:NAME#i) for error messages."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name != "arithmetic":
            raise DataError(f"unknown built-in data set {spec!r}; available: builtin:arithmetic")
        from .tasks import arithmetic

        a = cfg.arithmetic
        n = a.n_train if split == "train" else a.n_eval
        rows = arithmetic.sample(n, a.max_operand, list(a.ops), split, seed)
        return [{**r, "where": f"{spec}#{i}"} for i, r in enumerate(rows)]
    if spec.startswith("hf:"):
        return load_hf_dataset(spec[3:])
    return read_examples(spec, [(f"{spec}:{n}", obj) for n, obj in read_jsonl(spec)], SFT_FORMATS, validate_sft_example,
                         SFT_SHAPE)


def load_hf_dataset(spec_or_dataset) -> list[dict]:
    """A `datasets.Dataset` object, or `path[:split]` saved with `save_to_disk` (offline)."""
    if isinstance(spec_or_dataset, str):
        import datasets

        path, _, split = spec_or_dataset.partition(":")
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
        name = spec_or_dataset
    else:
        ds, name = spec_or_dataset, "dataset"
    if len(ds) == 0:
        raise DataError(f"{name}: no examples (empty dataset)")
    return read_examples(name, [(f"{name}[{i}]", dict(row)) for i, row in enumerate(ds)], SFT_FORMATS,
                         validate_sft_example, SFT_SHAPE)


def render(example: dict, tokenizer, fmt: str) -> tuple[str, str]:
    """(prompt text, response text). The response ends with EOS so the model learns to stop.
    fmt: auto (conversational examples through the chat template, text as it is), plain, or chat."""
    if fmt == "auto":
        fmt = "chat" if "messages" in example else "plain"
    if fmt == "plain":
        if "messages" in example:
            raise DataError(f"{example['where']}: conversational data (chat messages) needs the chat template, but "
                            "data.format=plain; use data.format=auto (the default) or data.format=chat")
        return example["prompt"], example["response"] + tokenizer.eos_token
    msgs = example.get("messages") or [
        {"role": "user", "content": example.get("chat_prompt", example["prompt"])},
        {"role": "assistant", "content": example["response"]},
    ]
    if not tokenizer.chat_template:
        raise DataError(f"{example.get('where', 'data')}: conversational data (or data.format=chat) needs a chat "
                        "template, and this tokenizer has none; give text (prompt/completion strings) instead")
    n_prompt = example.get("n_prompt", len(msgs) - 1)
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    prompt = tokenizer.apply_chat_template(msgs[:n_prompt], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise DataError(f"{example['where']}: the chat template renders the conversation so that the prompt is "
                        f"not a prefix of the full text; cannot locate the response")
    response = full[len(prompt):]
    if not response.rstrip().endswith(tokenizer.eos_token) and tokenizer.eos_token not in response:
        response += tokenizer.eos_token
    return prompt, response


@dataclass
class Encoded:
    """One tokenised example: `ids` = prompt + response token ids, `n_prompt` of them the prompt."""

    ids: list[int]
    n_prompt: int
    example: dict

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.n_prompt


def encode(examples: list[dict], tokenizer, cfg: DataConfig) -> list[Encoded]:
    out = []
    for ex in examples:
        prompt, response = render(ex, tokenizer, cfg.format)
        pi, ri = _prompt_ids(tokenizer, prompt), _output_ids(tokenizer, response)
        n = len(pi) + len(ri)
        if n > cfg.max_seq_len:
            if cfg.on_too_long == "error":
                raise DataError(
                    f"{ex['where']}: example has {n} tokens ({len(pi)} prompt + {len(ri)} response) but "
                    f"data.max_seq_len={cfg.max_seq_len}; raise data.max_seq_len, or set data.on_too_long=truncate "
                    f"(cut the response) or data.on_too_long=drop"
                )
            if cfg.on_too_long == "drop" or len(pi) >= cfg.max_seq_len:
                continue
            ri = ri[: cfg.max_seq_len - len(pi)]
        out.append(Encoded(pi + ri, len(pi), ex))
    if not out:
        raise DataError("no examples left after applying data.max_seq_len; raise it or shorten the data")
    return out


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (input_ids, labels, response_mask, attention_mask), each (B, T)."""
    seqs = [e.ids for e in items]
    masks = [[False] * e.n_prompt + [True] * e.n_response for e in items]
    return pad_and_shift(seqs, masks, pad_id)


def first_fit_decreasing(lengths: list[int], cap: int) -> list[list[int]]:
    """Bin packing of sequence lengths into rows of at most `cap` tokens: longest first (ties in index
    order), each into the first row it fits; a length over `cap` gets a row of its own. -> the indices
    in each row. The one packer behind `collate_packed` and `logprobs.Packing`."""
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, used in enumerate(fill):
            if used + lengths[i] <= cap:
                rows[r].append(i)
                fill[r] += lengths[i]
                break
        else:
            rows.append([i])
            fill.append(lengths[i])
    return rows


def collate_packed(items: list[Encoded], pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Pack examples into rows of <= max_len tokens (`first_fit_decreasing`). `position_ids` restart at 0
    for each example and `attention_mask` is omitted: transformers then builds a block-diagonal causal
    mask (flash_attention_2: variable-length kernels), so packed examples never attend to each other.
    `segment` (rows, width) holds each position's index into `items` (-1 on the padding tail), for
    per-example sums (`segment_sums`)."""
    rows = first_fit_decreasing([len(e.ids) for e in items], max_len)
    width = max(sum(len(items[i].ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = items[i]
            n = len(e.ids)
            t = torch.tensor(e.ids)
            ids[r, at : at + n] = t
            labels[r, at : at + n - 1] = t[1:]
            mask[r, at + e.n_prompt - 1 : at + n - 1] = True  # label positions that are response tokens
            pos[r, at : at + n] = torch.arange(n)
            seg[r, at : at + n] = i
            at += n
        pos[r, at:] = torch.arange(width - at)  # padding tail: its own segment, masked out of the loss
    return {"input_ids": ids, "labels": labels, "response_mask": mask, "position_ids": pos, "segment": seg}


def segment_sums(values: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) per-example sums of `values` over the `mask`ed positions of a packed batch (`segment` from
    `collate_packed`): what `masked_normalize(values, mask, dim=-1)` gives one example per row."""
    out = torch.zeros(n, dtype=values.dtype, device=values.device)
    return out.index_add(0, segment[mask], values[mask])


def budget_micro_batches(idx: list[int], lengths: list[tuple[int, ...]], micro: int, max_tokens: int | None = None,
                         packed: bool = False) -> list[list[int]]:
    """Split one step's items (`idx`, in order; `lengths[k]` the token counts of item k's rows: one row
    per RL sequence, (chosen, rejected) per DPO pair) into micro-batches of at most `micro` items and,
    with `max_tokens`, at most that many tokens: padded, rows x the longest row; packed, the sum of
    lengths. An item over the budget goes alone. Without `max_tokens`: consecutive slices of `micro`."""
    budget = max_tokens or float("inf")
    out: list[list[int]] = []
    cur: list[int] = []
    total = longest = 0
    for i, ls in zip(idx, lengths):
        size = total + sum(ls) if packed else len(ls) * (len(cur) + 1) * max(longest, *ls)
        if cur and (len(cur) >= micro or size > budget):
            out.append(cur)
            cur, total, longest = [], 0, 0
        cur.append(i)
        total, longest = total + sum(ls), max(longest, *ls)
    if cur:
        out.append(cur)
    return out


def sequence_micro_batches(rows: list[int], lengths: list[int], micro: int, max_tokens: int | None = None,
                           packed: bool = False) -> list[list[int]]:
    """RL micro-batches: `rows` (indices of one sequence each; `lengths[r]` its real tokens) cut by
    `budget_micro_batches`; with a token cap, sorted by length first, so short sequences share a
    micro-batch and long ones get small ones. GRPO's step and each PPO minibatch use it."""
    if max_tokens:
        rows = sorted(rows, key=lambda r: lengths[r])
    return budget_micro_batches(rows, [(lengths[r],) for r in rows], micro, max_tokens, packed)


def take_rows(x: torch.Tensor, idx, lengths: list[int]) -> torch.Tensor:
    """The rows `idx` of a right-padded (B, T, ...) tensor, cut to their longest sequence (the columns
    after it are padding in every one of them), so a micro-batch computes no more than rows x longest.
    A (B,) tensor: just the rows."""
    rows = x[idx]
    return rows[:, : max(lengths[i] for i in idx)] if x.dim() >= 2 else rows


class StepSampler:
    """Deterministic data order: epoch e is a permutation seeded by (seed, e); step s takes the next
    `per_step` examples. The position is a pure function of the step, so resume is exact."""

    def __init__(self, n: int, per_step: int, seed: int):
        self.n, self.per_step, self.seed = n, per_step, seed

    def indices(self, step: int) -> list[int]:
        out = []
        start = step * self.per_step
        for k in range(start, start + self.per_step):
            epoch, i = divmod(k, self.n)
            out.append(self._perm(epoch)[i])
        return out

    def _perm(self, epoch: int) -> list[int]:
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != epoch:
            perm = list(range(self.n))
            random.Random(f"{self.seed}-epoch-{epoch}").shuffle(perm)
            self._cache = (epoch, perm)
        return self._cache[1]


def micro_batches(items: list[Encoded], micro: int, bucket: bool, max_tokens: int | None = None,
                  packed: bool = False) -> list[list[Encoded]]:
    """Split one optimizer step's examples into micro-batches (`budget_micro_batches`: at most `micro`
    examples and, with `max_tokens`, at most that many tokens, so short examples share big micro-batches
    and long ones get small ones); with `bucket`, similar lengths go together (less padding). The step's
    loss is normalised by the whole step's counts, so neither the order nor the split can change the update."""
    if bucket:
        items = sorted(items, key=lambda e: len(e.ids))
    cuts = budget_micro_batches(list(range(len(items))), [(len(e.ids),) for e in items], micro, max_tokens, packed)
    return [[items[i] for i in cut] for cut in cuts]


# ----------------------------------------------------------------------------------------------
# Preference pairs (DPO, reward models)
# ----------------------------------------------------------------------------------------------

def split_implicit_prompt(chosen, rejected):
    """TRL's implicit prompt: the longest common start of chosen and rejected (whole messages when
    they are message lists; in text, a space just before the split goes with the responses).
    -> (prompt, chosen rest, rejected rest)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if isinstance(chosen, str) and 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def validate_pref_example(obj: dict, where: str, fmt: str = "preference") -> dict:
    missing = [k for k in PREF_FORMATS[fmt][0] if k not in obj]
    if missing:
        raise DataError(f"{where}: missing {', '.join(repr(k) for k in missing)}; {PREF_SHAPE}")
    if fmt == "implicit_preference":
        c, r = obj["chosen"], obj["rejected"]
        if type(c) is not type(r) or not isinstance(c, (str, list)):
            raise DataError(f"{where}: 'chosen' and 'rejected' must both be strings or both lists of messages")
        if isinstance(c, list):
            _check_messages(c, where, "chosen")
            _check_messages(r, where, "rejected")
        prompt, c, r = split_implicit_prompt(c, r)
        if isinstance(prompt, list) and not prompt:
            raise DataError(f"{where}: 'chosen' and 'rejected' share no leading message, so there is no prompt; "
                            "give an explicit 'prompt'")
        obj = {**obj, "prompt": prompt, "chosen": c, "rejected": r}
    out = {"id": obj.get("id", where), "where": where}
    for k in ("prompt", "chosen", "rejected"):
        v = obj[k]
        if isinstance(v, list):
            for i, m in enumerate(v):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                    raise DataError(f"{where}: {k}[{i}] needs string 'role' and 'content'")
            if k != "prompt":  # a completion given as messages: the assistant's text
                if not v or v[-1]["role"] != "assistant":
                    raise DataError(f"{where}: {k!r} given as messages must end with the assistant's message")
                v = v[-1]["content"]
        elif not isinstance(v, str):
            raise DataError(f"{where}: {k!r} must be a string or a list of messages, got {type(v).__name__}")
        if k != "prompt" and not v:
            raise DataError(f"{where}: {k!r} is empty")
        out[k] = v
    if out["chosen"] == out["rejected"]:
        raise DataError(f"{where}: 'chosen' and 'rejected' are identical; the pair carries no preference")
    return out


def load_pref_examples(spec: str, split: str, seed: int, n: int) -> list[dict]:
    """builtin:arithmetic (generated, split-safe), builtin:safety (hand-written), or a JSONL path."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name == "arithmetic":
            from .tasks.preferences import arithmetic_pairs

            rows = arithmetic_pairs(n, seed, split)
            return [validate_pref_example(r, f"{spec}#{i}") for i, r in enumerate(rows)]
        if name == "safety":
            import random as _random

            from .tasks.preferences import SAFETY_FILE as path

            rows = [validate_pref_example(obj, f"{path}:{ln}") for ln, obj in _read_jsonl(path, hint=PREF_SHAPE)]
            _random.Random(0).shuffle(rows)  # fixed split, independent of the run's seed
            cut = max(1, len(rows) // 5)
            return rows[cut:] if split == "train" else rows[:cut]
        raise DataError(f"unknown built-in preference set {spec!r}; available: builtin:arithmetic, builtin:safety")
    rows = [(f"{spec}:{ln}", obj) for ln, obj in _read_jsonl(spec, hint=PREF_SHAPE)]
    sft = detect_format(rows[0][1], SFT_FORMATS)
    if detect_format(rows[0][1], PREF_FORMATS) is None and sft is not None:
        raise DataError(f"{rows[0][0]}: this is an SFT file ({format_label(sft)}); DPO and reward models need "
                        f"preference pairs: {PREF_SHAPE}")
    return read_examples(spec, rows, PREF_FORMATS, validate_pref_example, PREF_SHAPE)


def encode_pairs(examples: list[dict], tokenizer, cfg) -> list[tuple[Encoded, Encoded]]:
    """(chosen, rejected) encodings that share the prompt's tokens."""
    out = []
    for ex in examples:
        pair = []
        for side in ("chosen", "rejected"):
            if isinstance(ex["prompt"], list):
                one = {"messages": ex["prompt"] + [{"role": "assistant", "content": ex[side]}], "where": ex["where"]}
            else:
                one = {"prompt": ex["prompt"], "response": ex[side], "where": ex["where"]}
            enc = encode([one], tokenizer, cfg)
            pair.append(enc[0])
        out.append((pair[0], pair[1]))
    return out
