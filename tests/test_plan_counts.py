"""Exact parameter and LoRA counts: the planner's shape arithmetic against transformers + peft on the meta device."""
import json
from pathlib import Path

import pytest

from alignlab.plan.arch import CATALOG_PATH, arch_from_config, load_arch, load_catalog
from alignlab.plan.naive import naive_lora_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

META_KEYS = {"config_class", "architectures", "confidence", "source", "aliases", "head_dim_note",
             "attention_bias_note", "qk_norm", "layer_types"}


def meta_model(entry: dict):
    kw = {k: v for k, v in entry.items() if k not in META_KEYS}
    if isinstance(entry.get("layer_types"), list):
        kw["layer_types"] = entry["layer_types"]
    cfg = getattr(transformers, entry["config_class"])(**kw)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("name", list(load_catalog()))
def test_counts_equal_transformers_and_peft(name):
    entry = load_catalog()[name]
    arch = arch_from_config(entry, name)
    model = meta_model(entry)
    assert sum(p.numel() for p in model.parameters()) == arch.param_counts()["total"]
    emb = model.get_input_embeddings().weight.numel()
    assert emb == arch.param_counts()["embedding"]
    layer0 = sum(p.numel() for p in model.model.layers[0].parameters())
    assert layer0 == arch.param_counts()["per_layer"]
    for r, targets in ((16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
                       (8, ["q_proj", "v_proj"])):
        pm = peft.get_peft_model(meta_model(entry), peft.LoraConfig(r=r, target_modules=targets))
        trainable, total = pm.get_nb_trainable_parameters()
        assert trainable == arch.lora_params(r, targets)["total"], (name, r, targets)
        assert total == arch.param_counts()["total"] + trainable


def test_published_totals_and_the_naive_formula_is_wrong():
    # totals as published on the model cards / computed by transformers
    assert load_arch("Qwen/Qwen2.5-0.5B").param_counts()["total"] == 494_032_768
    assert load_arch("Qwen/Qwen3-0.6B").param_counts()["total"] == 596_049_920
    assert load_arch("google/gemma-3-1b-it").param_counts()["total"] == 999_885_952
    assert load_arch("google/gemma-3-270m-it").param_counts()["total"] == 268_098_176  # alias
    q3 = load_arch("Qwen/Qwen3-0.6B")
    exact = q3.lora_params(16, "all-linear")["total"]
    assert exact == 10_092_544
    # one d_model for every projection: 2 x 16 x 1024 x 28 x 7, 36% short of the real shapes
    assert naive_lora_params(q3, 16) == 6_422_528
    # the plan's worked "Qwen3-0.6B" example (4.8M) is Qwen2.5-0.5B's width and depth (896 x 24)
    q25 = load_arch("Qwen/Qwen2.5-0.5B")
    assert naive_lora_params(q25, 16) == 4_816_896
    assert q25.lora_params(16, "all-linear")["total"] == 8_798_208


def test_catalog_is_the_shared_one_plus_aliases():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "model_configs.json"
    ours = json.loads(CATALOG_PATH.read_text())
    if shared.is_file():
        theirs = json.loads(shared.read_text())
        assert set(theirs) == {k for k in ours if not k.startswith("_")}
        for k, v in theirs.items():
            for field, val in v.items():
                assert ours[k][field] == val, (k, field)
    for k, v in load_catalog().items():
        arch = arch_from_config(v, k)
        assert arch.q_dim % arch.kv_dim == 0 and arch.heads % arch.kv_heads == 0
        assert v["aliases"], k


def test_lora_targets_are_validated():
    arch = load_arch("Qwen/Qwen3-0.6B")
    with pytest.raises(ValueError, match="unknown LoRA target 'qproj'.*q_proj"):
        arch.lora_params(8, ["qproj"])
    assert arch.lora_params(8, "attn")["total"] == arch.lora_params(8, ["q_proj", "k_proj", "v_proj", "o_proj"])["total"]
