"""The static-KV-cache decode loop (`sampling.hf_decode=static`; with CUDA graphs on CUDA): the same
`Rollout` as transformers' generate, greedy outputs identical, sampling log-probs equal to the
trainer's recompute. On CPU the loop runs eagerly; the graph-captured variant is in test_gpu.py."""
import pytest
import torch

from alignlab import cli, rollout, tracking
from alignlab.config import ConfigError, SamplingConfig
from alignlab.logprobs import get_response_log_probs
from alignlab.rollout import hf as rollout_hf

PROMPTS = ["12+3=", "a much longer prompt here 7-3=", "9", "think about it"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return {a: (AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d)) for a, d in tiny_dirs.items()}


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text", "llama", "qwen3"])
def test_greedy_static_decode_equals_generate(models, arch):
    """Left padding of different amounts, several samples per prompt, batches split by batch_size;
    Gemma-3's sliding-window layers use the static cache's sliding layers."""
    model, tok = models[arch]
    kw = dict(max_new_tokens=12, batch_size=3, return_logprobs=True)
    ref = rollout.generate(model, tok, PROMPTS, **kw)
    ours = rollout.generate(model, tok, PROMPTS, decode="static", **kw)
    assert ours.completion_ids == ref.completion_ids and ours.completions == ref.completions
    assert ours.prompt_ids == ref.prompt_ids
    for a, b in zip(ours.sampling_logps, ref.sampling_logps):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_static_sampling_log_probs_equal_the_training_recompute(models, temperature):
    model, tok = models["qwen2"]
    torch.manual_seed(0)
    ro = rollout.generate(model, tok, PROMPTS[:2], max_new_tokens=8, n=3, temperature=temperature,
                          return_logprobs=True, decode="static")
    assert len(ro.completions) == 6 and ro.n == 3
    b = ro.tensors(tok.pad_token_id)
    lp = get_response_log_probs(model, b["input_ids"], b["labels"], attention_mask=b["attention_mask"],
                                temperature=temperature)["log_probs"]
    m = b["response_mask"]
    assert m.sum() == sum(len(c) for c in ro.completion_ids) > 0
    torch.testing.assert_close(lp[m], b["sampling_logps"][m], atol=1e-5, rtol=0)
    # samples of one prompt differ: the n copies are drawn independently, not once and repeated
    assert len({tuple(c) for c in ro.completion_ids[:3]}) > 1


def test_static_decode_samples_from_the_top_p_nucleus(models):
    """With top-p, every drawn token lies inside the nucleus, and its recorded log-prob is the
    renormalised nucleus probability (greater than the unfiltered one)."""
    model, tok = models["qwen2"]
    torch.manual_seed(0)
    ro = rollout.generate(model, tok, PROMPTS[:2], max_new_tokens=6, n=4, temperature=1.0, top_p=0.5,
                          return_logprobs=True, decode="static")
    b = ro.tensors(tok.pad_token_id)
    full = get_response_log_probs(model, b["input_ids"], b["labels"], attention_mask=b["attention_mask"])["log_probs"]
    m = b["response_mask"]
    assert (b["sampling_logps"][m] >= full[m] - 1e-6).all()
    assert (b["sampling_logps"][m] > full[m] + 1e-4).any()


def test_eos_pads_the_row_and_stops_the_loop_once_every_row_is_done(models):
    model, tok = models["qwen2"]
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    greedy, _ = rollout.decode_static(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=10,
                                      eos_id=-1, pad_id=tok.pad_token_id)
    eos = int(greedy[0, 2])  # treat row 0's third greedy token as the end of sequence
    calls = []
    real_forward = model.forward
    model.forward = lambda *a, **k: calls.append(1) or real_forward(*a, **k)
    try:
        out, _ = rollout.decode_static(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=40,
                                       eos_id=eos, pad_id=tok.pad_token_id)
    finally:
        del model.forward
    first = out[0].tolist().index(eos)
    assert first <= 2 and all(t == tok.pad_token_id for t in out[0, first + 1 :].tolist())
    for row, g in zip(out.tolist(), greedy.tolist()):  # until its EOS, each row is the plain greedy decode
        k = row.index(eos) if eos in row else 10
        assert row[: min(k, 10)] == g[: min(k, 10)]
    if all(eos in row for row in out.tolist()):  # every row finished: the loop stopped at the next check
        assert len(calls) < 40


def test_stop_strings_end_rows_early_and_are_cut_as_with_generate(models):
    model, tok = models["qwen2"]
    greedy = rollout.generate(model, tok, PROMPTS, max_new_tokens=12)
    ids = greedy.completion_ids[0]
    k = next(i for i in range(1, len(ids) - 1) if ids[i] != ids[i - 1])
    stop = [tok.decode(ids[k - 1 : k + 1])]  # the first completion contains it, ending at its token k
    ref = rollout.generate(model, tok, PROMPTS, max_new_tokens=12, stop=stop)
    ours = rollout.generate(model, tok, PROMPTS, max_new_tokens=12, stop=stop, decode="static")
    assert ours.completion_ids == ref.completion_ids
    assert stop[0] in ours.completions[0] and len(ours.completion_ids[0]) == k + 1


def test_decode_choice_is_checked():
    with pytest.raises(ValueError, match="decode='fast'"):
        rollout.generate(None, None, [], max_new_tokens=1, decode="fast")
    with pytest.raises(ValueError, match="hf_decode=static applies to backend=hf only"):
        SamplingConfig(backend="vllm", hf_decode="static")


def test_auto_decode_is_generate_off_cuda(models):
    """The default, hf_decode=auto, picks cuda_graphs only on CUDA: CPU runs keep transformers' generate
    (and the demo's numbers)."""
    model, tok = models["qwen2"]
    assert SamplingConfig().hf_decode == "auto"
    assert rollout.make_sampler(SamplingConfig(), model, tok, None, None, None).decode == "generate"
    assert rollout.make_sampler(SamplingConfig(hf_decode="static"), model, tok, None, None, None).decode == "static"


def test_prompts_are_bucketed_so_shapes_repeat(models, monkeypatch):
    """Prompt batches of different lengths within one bucket reach the static cache with one shape (so
    CUDA graphs captured for it are replayed, not re-captured), and the extra left padding changes no
    output: the completions equal those of the unbucketed loop."""
    model, tok = models["qwen2"]
    monkeypatch.setattr(rollout_hf, "CACHE_BUCKET", 1)  # cache length = bucketed prompt + new tokens
    shapes = []
    real = rollout_hf._static_cache_and_step
    monkeypatch.setattr(rollout_hf, "_static_cache_and_step",
                        lambda m, b, length, g: shapes.append((b, length)) or real(m, b, length, g))
    outs = {}
    for bucket in (1, rollout_hf.PROMPT_BUCKET):
        monkeypatch.setattr(rollout_hf, "PROMPT_BUCKET", bucket)
        shapes.clear()
        outs[bucket] = [rollout.generate(model, tok, p, max_new_tokens=6, decode="static").completion_ids
                        for p in (["1+2="], ["12+3=", "7-9="], ["a longer prompt 4+4="])]
        lengths = {length for _, length in shapes}
        assert len(lengths) == (1 if bucket > 1 else 3), (bucket, shapes)
    assert outs[1] == outs[16]


def test_cache_length_is_bucketed(models, monkeypatch):
    """Prompt lengths from different prompt buckets share one cache length (one per-token step shape, so
    one compilation and graph capture), and the unused cache tail changes no output."""
    model, tok = models["qwen2"]
    lengths = []
    real = rollout_hf._static_cache_and_step
    monkeypatch.setattr(rollout_hf, "_static_cache_and_step",
                        lambda m, b, length, g: lengths.append(length) or real(m, b, length, g))
    batches = (["1+2="], ["a much longer prompt than the others, 4+4=" * 2])
    ours = [rollout.generate(model, tok, p, max_new_tokens=6, decode="static").completion_ids for p in batches]
    assert len({len(tok(p[0])["input_ids"]) // rollout_hf.PROMPT_BUCKET for p in batches}) == 2  # two prompt buckets
    assert len(set(lengths)) == 1 and lengths[0] % rollout_hf.CACHE_BUCKET == 0, lengths
    assert ours == [rollout.generate(model, tok, p, max_new_tokens=6).completion_ids for p in batches]


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_decode_step_compiles_once(models, monkeypatch, arch):
    """The per-token step traces into one graph (no graph breaks) that every later step reuses: nothing it
    reads changes its guards from one token to the next. A recompiling step (Gemma-3's sliding layers in
    transformers' StaticCache keep their fill level in a Python int) would be re-traced every token and,
    past the recompile limit, run eagerly; on CUDA that undoes the graphs. The eager backend traces
    exactly as `cuda_graphs` does, without compiling kernels."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    model, tok = models[arch]
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(rollout_hf._decode_step, backend="eager", fullgraph=True, dynamic=False)
    real = rollout_hf._static_cache_and_step
    monkeypatch.setattr(rollout_hf, "_static_cache_and_step", lambda m, b, length, g: (real(m, b, length, False)[0], step))
    ours = rollout.generate(model, tok, PROMPTS[:2], max_new_tokens=12, n=2, temperature=1.0, decode="static",
                            seeds=[1, 2])
    again = rollout.generate(model, tok, PROMPTS[:2], max_new_tokens=12, n=2, temperature=1.0, decode="static",
                             seeds=[1, 2])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert ours.completion_ids == again.completion_ids and max(len(c) for c in ours.completion_ids) > 8
    torch._dynamo.reset()


def test_static_decode_is_exact_past_the_sliding_window(models):
    """Gemma-3 with a 4-token window, decoding past it: the full-length cache of the static loop masks the
    sliding layers' old keys, as transformers' rolling sliding-window cache evicts them; greedy outputs and
    their log-probs equal generate's."""
    from transformers import AutoModelForCausalLM

    from alignlab.tiny import tiny_config

    _, tok = models["gemma3_text"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gemma3_text", sliding_window=4, vocab_size=len(tok))).eval()
    kw = dict(max_new_tokens=16, return_logprobs=True)
    ref = rollout.generate(model, tok, PROMPTS, **kw)
    ours = rollout.generate(model, tok, PROMPTS, decode="static", **kw)
    assert ours.completion_ids == ref.completion_ids and min(len(c) for c in ours.completion_ids) > 4
    for a, b in zip(ours.sampling_logps, ref.sampling_logps):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    # the window matters here: a model that saw every key would decode differently
    wide = AutoModelForCausalLM.from_config(tiny_config("gemma3_text", sliding_window=64, vocab_size=len(tok))).eval()
    wide.load_state_dict(model.state_dict())
    assert rollout.generate(wide, tok, PROMPTS, **kw).sampling_logps != ref.sampling_logps


def test_cuda_graphs_are_refused_without_cuda(models):
    model, tok = models["qwen2"]
    with pytest.raises(ConfigError, match="hf_decode=cuda_graphs needs a CUDA device"):
        rollout.make_sampler(SamplingConfig(hf_decode="cuda_graphs"), model, tok, None, None, None)
    enc = tok(["1"], return_tensors="pt")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        rollout.decode_static(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=2, eos_id=0, pad_id=0,
                              graphs=True)


def test_grpo_with_static_decode_is_on_policy(tmp_path, qwen_dir):
    args = ["grpo", "-c", "grpo_tiny", f"out_dir={tmp_path}", f"model.path={qwen_dir}", "name=s",
            "training.total_steps=2", "rl.prompts_per_step=4", "rl.group_size=4", "training.micro_batch=8",
            "sampling.max_new_tokens=4", "sampling.hf_decode=static", "eval.max_examples=8", "eval.max_new_tokens=4",
            "task.arithmetic.n_eval=8"]
    assert cli.main(args) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "s") if "reward/mean" in r]
    assert len(train) == 2
    for r in train:
        assert r["ratio/mean"] == pytest.approx(1.0, abs=1e-6) and r["mismatch/logp_abs_max"] < 1e-5
    assert "hf_decode: static" in (tmp_path / "s" / "config.yaml").read_text()


def test_graphed_decoding_reuses_one_cache_and_one_compiled_step_per_shape(models):
    """A new cache or compiled closure per call would make torch.compile capture the CUDA graphs again
    for every batch; the same shape gets the same (zeroed) cache and the same compiled step."""
    model, _ = models["qwen2"]
    c1, s1 = rollout_hf._static_cache_and_step(model, 4, 20, graphs=True)
    c2, s2 = rollout_hf._static_cache_and_step(model, 4, 20, graphs=True)
    c3, _ = rollout_hf._static_cache_and_step(model, 4, 24, graphs=True)
    assert c1 is c2 and s1 is s2 and c3 is not c1
    e1, _ = rollout_hf._static_cache_and_step(model, 4, 20, graphs=False)
    e2, _ = rollout_hf._static_cache_and_step(model, 4, 20, graphs=False)
    assert e1 is not e2  # eager decoding keeps a fresh cache per call
