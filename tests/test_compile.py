"""`model.compile=true`: the decoder of every log-prob forward runs through torch.compile with dynamic
shapes. It must trace whole (no graph breaks, one graph across batch shapes), for plain and LoRA models
under autocast, padded and packed; and a run must train exactly as the eager one does."""
import pytest
import torch
from conftest import load_sft, sft_overrides

from alignlab import cli, logprobs, tracking
from alignlab.config import ConfigError, LoRAConfig, ModelConfig, RMConfig, SFTConfig, load_config
from alignlab.models import load_policy


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_decoder_traces_whole_across_shapes(tiny_dirs, arch, lora):
    """With the eager backend (the tracing torch.compile does, without generating kernels) and fullgraph=True,
    any graph break fails; three batch shapes reuse one graph per mode (padded with a mask, packed without)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    policy, tok, *_ = load_policy(ModelConfig(path=str(tiny_dirs[arch]), dtype="bfloat16" if lora else "auto"),
                                  LoRAConfig(enabled=lora, r=4), precision="bf16" if lora else "fp32")
    decoder = logprobs._decoder_and_head(policy)[0]
    traced = torch.compile(logprobs._decoder_hidden, backend="eager", dynamic=True, fullgraph=True)
    torch._dynamo.reset()
    counters.clear()
    g = torch.Generator().manual_seed(0)
    for b, t in ((2, 9), (3, 14), (4, 21)):
        ids = torch.randint(3, len(tok), (b, t), generator=g)
        am = torch.ones(b, t, dtype=torch.long)
        am[0, t // 2 :] = 0  # a right-padded row: an explicit mask
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lora):
            for mask in (am, None):  # padded; packed rows (position ids, no mask)
                ref = logprobs._decoder_hidden(decoder, ids, mask, pos)
                torch.testing.assert_close(traced(decoder, ids, mask, pos), ref, atol=0, rtol=0)
    assert counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])  # ({mask, none} x a first static trace)
    torch._dynamo.reset()


def test_sft_with_model_compile_trains_as_eager(tmp_path, qwen_dir):
    """Three SFT steps through the CLI with the decoder compiled (inductor) give the eager run's losses,
    gradient norms and weights, to float rounding; later steps of other lengths do not recompile."""
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    kw = {"training.total_steps": 3, "data.eval": "null", "training.save_every": 3}
    for name, c in (("eager", "false"), ("compiled", "true")):
        counters.clear()
        assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, name, **{"model.compile": c, **kw})]) == 0
        if c == "true":
            assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    rows = {n: [r for r in tracking.read_metrics(tmp_path / n) if "loss/train" in r] for n in ("eager", "compiled")}
    assert len(rows["compiled"]) == 3
    for a, b in zip(rows["eager"], rows["compiled"]):
        assert b["loss/train"] == pytest.approx(a["loss/train"], rel=1e-5)
        assert b["grad/norm"] == pytest.approx(a["grad/norm"], rel=1e-4)
    w = {n: load_file(tmp_path / n / "checkpoints/step_3/model.safetensors") for n in ("eager", "compiled")}
    for k, v in w["eager"].items():
        torch.testing.assert_close(w["compiled"][k], v, atol=1e-5, rtol=1e-4)


def test_model_compile_is_refused_where_it_would_be_ignored(tmp_path, qwen_dir):
    with pytest.raises(ConfigError, match="parallel.strategy=fsdp2"):
        load_config(SFTConfig, "sft_tiny", sft_overrides(tmp_path, qwen_dir, "x", **{"model.compile": "true",
                                                                                     "parallel.strategy": "fsdp2"}))
    with pytest.raises(ConfigError, match="reward model's scoring forward is not compiled"):
        load_config(RMConfig, "rm_tiny", [f"out_dir={tmp_path}", "model.compile=true"])
    assert load_sft(tmp_path, qwen_dir, "y", **{"model.compile": "true"}).model.compile is True


def test_runs_without_model_compile_do_not_load_the_compiler():
    """Importing torch.compile's machinery costs seconds and ~110 MiB per process (it once raised every
    GRPO run's peak memory by 8%): the CLI and the loops must not import it until model.compile or the
    cuda_graphs decoder asks for it."""
    import subprocess
    import sys

    code = ("import sys, alignlab.cli, alignlab.logprobs, alignlab.rollout, alignlab.critics\n"
            "from alignlab.train import sft, ei, dpo, grpo, ppo, reward_model\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
