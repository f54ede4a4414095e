"""`alignlab blend`: golden values of TIES / magnitude pruning (research note §3.6, verified there against
peft's merge_utils), DARE's unbiasedness, exact linear/cat/svd merges read back through peft, rsLoRA."""
import json

import pytest
import torch

from alignlab import cli
from alignlab.lora import blend as B

T1, T2, T3 = (torch.tensor(v, dtype=torch.float64) for v in
              ([0.5, -0.2, 0.1, 0.0], [-0.3, -0.4, 0.2, 0.05], [0.4, 0.1, -0.6, 0.0]))


@pytest.mark.parametrize("kind,kwargs,want", [
    ("ties", dict(weights=[1, 1, 1], density=1.0), [0.45, -0.3, -0.6, 0.05]),
    ("ties", dict(weights=[1, 1, 1], density=0.5), [0.45, -0.3, -0.6, 0.0]),
    ("ties", dict(weights=[1, 1, 1], density=1.0, majority="frequency"), [0.45, -0.3, 0.15, 0.05]),
    ("ties", dict(weights=[2, 1, 1], density=1.0), [0.7, -0.4, -0.6, 0.05]),  # divided by a count, not by Σw
    ("magnitude", dict(weights=[1, 1, 1], density=0.5), [0.6, -0.6, -0.6, 0.0]),
])
def test_ties_and_magnitude_golden_values(kind, kwargs, want):
    got = (B.ties_merge([T1, T2, T3], **kwargs) if kind == "ties"
           else B.magnitude_merge([T1, T2, T3], kwargs["weights"], kwargs["density"]))
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12)
    deltas = [{"m": t} for t in (T1, T2, T3)]  # the same through the adapter-level combine
    via = B.combine(deltas, kwargs["weights"], kind, kwargs["density"], kwargs.get("majority", "total"))["m"]
    assert torch.allclose(via, got, atol=1e-12)


def test_dare_is_unbiased_over_seeds_and_keeps_the_density():
    g = torch.Generator().manual_seed(0)
    t1, t2 = torch.randn(64, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    target, d, n = t1 - 0.5 * t2, 0.5, 3000
    acc, kept = torch.zeros(64, dtype=torch.float64), 0
    for seed in range(n):
        out = B.combine([{"m": t1}, {"m": t2}], [1.0, -0.5], "dare", d, seed=seed)["m"]
        acc += out
        gen = torch.Generator().manual_seed(seed)
        kept += int(sum(int((B.dare_drop(t, d, gen) != 0).sum()) for t in (t1, t2)))
    assert float((acc / n - target).norm() / target.norm()) < 0.03
    trials = 2 * 64 * n
    assert abs(kept / trials - d) < 3 * (d * (1 - d) / trials) ** 0.5


def test_global_trimming_differs_from_per_tensor():
    big, small = torch.tensor([4.0, -3.0, 2.0, 1.0]), torch.tensor([0.4, -0.3, 0.2, 0.1])
    d = [{"a": big.double(), "b": small.double()}]
    per_tensor = B.combine(d, [1.0], "magnitude", 0.5, scope="tensor")
    glob = B.combine(d, [1.0], "magnitude", 0.5, scope="global")
    assert int((per_tensor["b"] != 0).sum()) == 2 and int((glob["b"] != 0).sum()) == 0
    assert int((glob["a"] != 0).sum()) == 4  # the global top half of all 8 entries is all of "a"


# -- real adapters, written and read back through peft ---------------------------------------------


def make_adapter(base_dir, out, r, targets, rslora=False, seed=0, alpha=8.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    model.save_pretrained(out)
    return out


def peft_deltas(base_dir, adapter) -> dict:
    """{module: ΔW} as peft itself computes it for an adapter folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignlab.lora import cycles

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))
    return {name: layer.get_delta_weight("default").double() for name, layer in cycles.lora_layers(model)}


@pytest.fixture(scope="module")
def adapters(qwen_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    a = make_adapter(qwen_dir, root / "a", 2, ["q_proj", "v_proj"], seed=1)
    b = make_adapter(qwen_dir, root / "b", 3, ["q_proj", "o_proj"], rslora=True, seed=2)
    return a, b


def test_cat_and_linear_are_exact_and_svd_at_sum_r_equals_cat(tmp_path, qwen_dir, adapters):
    a, b = adapters
    da, db = peft_deltas(qwen_dir, a), peft_deltas(qwen_dir, b)
    want = {m: 0.7 * da.get(m, 0) - 1.5 * db.get(m, 0) for m in set(da) | set(db)}
    outs = {}
    for method, extra in (("cat", []), ("linear", []), ("svd", ["--rank", "5"])):
        out = tmp_path / method
        assert cli.main(["blend", "--adapters", str(a), str(b), "--weights", "0.7", "-1.5", "--method", method,
                         "--out", str(out), *extra]) == 0
        outs[method] = peft_deltas(qwen_dir, out)
        assert set(outs[method]) == set(want)  # union of target modules: q, v, o
        for m, w in want.items():
            assert (outs[method][m] - w).abs().max() <= 1e-6 * w.abs().max(), (method, m)
    cfg = json.loads((tmp_path / "cat/adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 5 and cfg["use_rslora"] is False  # rank Σr, scale 1


def test_svd_truncation_is_eckart_young(tmp_path, qwen_dir, adapters):
    a, b = adapters
    da, db = peft_deltas(qwen_dir, a), peft_deltas(qwen_dir, b)
    out = tmp_path / "svd2"
    B.blend([str(a), str(b)], out, "svd", rank=2)
    got = peft_deltas(qwen_dir, out)
    for m in got:
        target = da.get(m, 0) + db.get(m, 0)
        sv = torch.linalg.svdvals(target)
        assert float((got[m] - target).norm()) == pytest.approx(float(sv[2:].pow(2).sum().sqrt()), rel=1e-4, abs=1e-7)
    rep = json.loads((out / "blend.json").read_text())
    assert rep["rank"] == 2 and rep["max_rel_error"] > 0  # the report says what the truncation lost


def test_identity_merge_of_one_rslora_adapter_reproduces_it(tmp_path, qwen_dir, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, b = adapters  # rsLoRA, r = 3: scale alpha/sqrt(r), which peft 0.21.2's own merge gets wrong by sqrt(r)
    out = tmp_path / "ident"
    B.blend([str(b)], out, "linear")
    ids = torch.randint(3, 400, (2, 9))
    logits = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), str(p)).eval()(input_ids=ids).logits
              for p in (b, out)]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    src, got = peft_deltas(qwen_dir, b), peft_deltas(qwen_dir, out)
    assert all((got[m] - src[m]).abs().max() <= 1e-6 * src[m].abs().max() for m in src)


def test_trimming_methods_write_loadable_adapters_and_the_report(tmp_path, qwen_dir, adapters):
    a, b = adapters
    for method in ("ties", "dare", "dare_ties", "magnitude"):
        out = tmp_path / method
        assert cli.main(["blend", "--adapters", str(a), str(b), "--method", method, "--density", "0.3",
                         "--out", str(out)]) == 0
        assert len(peft_deltas(qwen_dir, out)) == 12  # 4 layers x (q, v, o)
        rep = json.loads((out / "blend.json").read_text())
        assert rep["method"] == method and rep["rank"] == 5 and len(rep["matrices"]) == 12
    glob = tmp_path / "magnitude_global"
    B.blend([str(a), str(b)], glob, "magnitude", density=0.3, scope="global")
    da, db = peft_deltas(qwen_dir, a), peft_deltas(qwen_dir, b)
    flat = {name: torch.cat([d[m].abs().flatten() for m in d]) for name, d in (("a", da), ("b", db))}
    tau = {name: torch.topk(f, int(0.3 * f.numel())).values[-1] for name, f in flat.items()}
    want = {m: sum(d[m] * (d[m].abs() >= tau[n]) for n, d in (("a", da), ("b", db)) if m in d) for m in set(da) | set(db)}
    got = peft_deltas(qwen_dir, glob)  # rank Σr holds the trimmed sum only approximately: at the Eckart–Young error
    for m in want:
        k = (2 if m in da else 0) + (3 if m in db else 0)  # Σ r_i of the adapters that adapt this matrix
        floor = float(torch.linalg.svdvals(want[m])[k:].pow(2).sum().sqrt())
        assert float((got[m] - want[m]).norm()) <= floor * (1 + 1e-3) + 1e-6 * float(want[m].norm()), m
    tensor_scope = peft_deltas(qwen_dir, tmp_path / "magnitude")
    assert any((got[m] - tensor_scope[m]).abs().max() > 1e-4 for m in got)  # the scopes trim differently


def test_bad_input_is_refused_before_any_computation(tmp_path, qwen_dir, adapters, capsys):
    a, b = adapters
    other = tmp_path / "other"
    other.mkdir()
    for f in a.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((other / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "google/gemma-3-270m"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    cases = [
        (["--adapters", str(a), str(other), "--method", "linear"], "different base models"),
        (["--adapters", str(a), str(b), "--method", "ties"], "needs --density"),
        (["--adapters", str(a), str(b), "--method", "linear", "--weights", "1"], "1 weights for 2 adapters"),
        (["--adapters", str(a), str(b), "--method", "dare", "--density", "1.5"], "must be in"),
        (["--adapters", str(a), str(tmp_path), "--method", "linear"], "not a peft LoRA adapter folder"),
        (["--adapters", str(a), "--method", "linear", "--out", str(a)], "not empty"),
    ]
    for args, match in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "never")]
        assert cli.main(["blend", *args]) == 2
        assert match in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
