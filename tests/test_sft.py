"""The SFT loop end to end on tiny models: invariances, resume, crash safety, every architecture."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ARCHS, StopAt, load_sft, sft_overrides
from safetensors.torch import load_file

from alignlab import cli, step, tracking
from alignlab.train import sft

METRIC_KEYS = {"step", "loss/train", "lr", "grad/norm", "tokens/response", "tokens/per_s", "time/step", "mem/peak_gb"}


def weights(ckpt):
    return load_file(os.path.join(ckpt, "model.safetensors"))


def train_losses(run_dir):
    return [m["loss/train"] for m in tracking.read_metrics(run_dir) if "loss/train" in m]


@pytest.mark.parametrize("normalizer", ["tokens", "sequences"])
def test_gradient_accumulation_8x1_equals_2x4(tmp_path, qwen_dir, normalizer):
    """The loop's own step function: 8 micro-batches of 1 and 2 of 4 accumulate the same .grad."""
    from alignlab import data, models

    grads, step_losses = {}, {}
    for micro in (1, 4):
        cfg = load_sft(tmp_path, qwen_dir, f"acc{micro}", **{"training.micro_batch": micro,
                                                             "training.loss_normalizer": normalizer})
        policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, "fp32")
        train = data.encode(data.load_examples(cfg.data.train, cfg.data, "train", 0), tok, cfg.data)
        items = [train[i] for i in data.StepSampler(len(train), 8, 0).indices(0)]
        assert len({len(e.ids) for e in items}) > 1  # different lengths: padding differs between splits
        step_losses[micro], _ = step.accumulate_step(policy, items, tok.pad_token_id, device, prec, micro_batch_seqs=micro,
                                                    normalizer=normalizer)
        grads[micro] = {n: p.grad.clone() for n, p in policy.named_parameters()}
    assert step_losses[1] == pytest.approx(step_losses[4], rel=1e-6)
    for n in grads[1]:
        torch.testing.assert_close(grads[1][n], grads[4][n], atol=1e-7, rtol=1e-5)


def test_loop_reports_the_same_step_losses_for_any_micro_batching(tmp_path, qwen_dir):
    kw = {"training.total_steps": 2, "data.eval": "null"}
    a = load_sft(tmp_path, qwen_dir, "l1", **kw, **{"training.micro_batch": 1})
    b = load_sft(tmp_path, qwen_dir, "l8", **kw, **{"training.micro_batch": 8})
    sft.main(a)
    sft.main(b)
    assert train_losses(a.run_dir) == pytest.approx(train_losses(b.run_dir), rel=1e-5)


def test_packing_trains_with_the_same_step_losses_as_padding(tmp_path, qwen_dir):
    kw = {"training.total_steps": 2, "data.eval": "null", "training.micro_batch": 8}
    padded = load_sft(tmp_path, qwen_dir, "padded", **kw)
    packed = load_sft(tmp_path, qwen_dir, "packed", **kw, **{"data.packing": "true", "data.max_seq_len": 32})
    sft.main(padded)
    sft.main(packed)
    assert train_losses(packed.run_dir) == pytest.approx(train_losses(padded.run_dir), rel=1e-5)


def test_right_and_left_padding_give_the_same_log_probs(qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.logprobs import get_response_log_probs

    model = AutoModelForCausalLM.from_pretrained(qwen_dir)
    tok = AutoTokenizer.from_pretrained(qwen_dir)
    texts = ["1+2=3", "13+29=42 and more words here"]
    res = {}
    for side in ("right", "left"):
        tok.padding_side = side
        enc = tok(texts, return_tensors="pt", padding=True)
        ids, am = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            lp = get_response_log_probs(model, ids[:, :-1], ids[:, 1:], attention_mask=am[:, :-1])["log_probs"]
        valid = (am[:, :-1] * am[:, 1:]).bool()
        res[side] = [lp[i][valid[i]] for i in range(2)]
    for r, l in zip(res["right"], res["left"]):
        torch.testing.assert_close(r, l, atol=1e-5, rtol=0)


def test_lora_at_init_equals_the_base_and_reference_mode_is_the_base(qwen_dir):
    from transformers import AutoModelForCausalLM

    from alignlab.config import LoRAConfig, ModelConfig
    from alignlab.models import load_policy, reference_mode

    base = AutoModelForCausalLM.from_pretrained(qwen_dir)
    policy, tok, _, _ = load_policy(ModelConfig(path=str(qwen_dir)), LoRAConfig(enabled=True, r=4))
    ids = tok(["12+30=42"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(policy(ids).logits, base(ids).logits, atol=0, rtol=0)
        for n, p in policy.named_parameters():  # move the adapters away from init
            if "lora_B" in n:
                p.add_(0.1)
        assert not torch.allclose(policy(ids).logits, base(ids).logits)
        with reference_mode(policy):
            torch.testing.assert_close(policy(ids).logits, base(ids).logits, atol=0, rtol=0)


def test_resume_2_plus_2_equals_4_straight_exactly(tmp_path, qwen_dir):
    kw = {"training.save_every": 2, "data.eval": "null", "lora.dropout": 0.0}
    straight = load_sft(tmp_path, qwen_dir, "straight", **kw)
    sft.main(straight)
    split = load_sft(tmp_path, qwen_dir, "split", **kw)
    with pytest.raises(KeyboardInterrupt):
        sft.main(split, hooks=[StopAt(2)])
    assert len(train_losses(split.run_dir)) == 2
    sft.main(split)  # resume=auto picks up step_2
    assert train_losses(split.run_dir) == train_losses(straight.run_dir)  # bitwise, fp32 on CPU
    wa, wb = weights(straight.run_dir / "checkpoints/step_4"), weights(split.run_dir / "checkpoints/step_4")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa = torch.load(straight.run_dir / "checkpoints/step_4/trainer_state.pt", weights_only=False)
    sb = torch.load(split.run_dir / "checkpoints/step_4/trainer_state.pt", weights_only=False)
    assert sa["scheduler"] == sb["scheduler"]
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], sb["optimizer"]["state"][k]["exp_avg_sq"])


def test_lora_resume_is_exact_too(tmp_path, qwen_dir):
    kw = {"training.save_every": 2, "data.eval": "null", "lora.enabled": "true", "lora.dropout": 0.1, "lora.r": 4}
    straight = load_sft(tmp_path, qwen_dir, "ls", **kw)
    sft.main(straight)
    split = load_sft(tmp_path, qwen_dir, "lsplit", **kw)
    with pytest.raises(KeyboardInterrupt):
        sft.main(split, hooks=[StopAt(2)])
    sft.main(split)
    assert train_losses(split.run_dir) == train_losses(straight.run_dir)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import alignlab.atomic as atomic
    from alignlab.config import SFTConfig, load_config
    from alignlab.train import sft
    real = atomic.fsync_tree
    def dying_fsync(root):
        real(root)
        if "step_4" in str(root):          # the temporary folder is fully written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    atomic.fsync_tree = dying_fsync
    sft.main(load_config(SFTConfig, "sft_tiny", sys.argv[1:]))
""")


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path, qwen_dir):
    args = sft_overrides(tmp_path, qwen_dir, "killed", **{"training.total_steps": 6, "training.save_every": 2,
                                                           "training.keep_last": 5, "data.eval": "null"})
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ck = tmp_path / "killed" / "checkpoints"
    names = sorted(p.name for p in ck.iterdir())
    assert "step_2" in names and "step_4" not in names and any(n.startswith(".tmp-step_4") for n in names)
    assert weights(ck / "step_2")  # the previous checkpoint is intact and loadable
    from alignlab.config import SFTConfig, load_config

    sft.main(load_config(SFTConfig, "sft_tiny", args))
    names = sorted(p.name for p in ck.iterdir())
    assert names == ["step_2", "step_4", "step_6"]  # temporaries cleaned, run completed
    assert [m["step"] for m in tracking.read_metrics(tmp_path / "killed")] == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, qwen_dir):
    cfg = load_sft(tmp_path, qwen_dir, "nan", **{"training.save_every": 2, "data.eval": "null"})

    class Poison:
        def on_save(self, ctx, step, path):  # after step 2's checkpoint is committed
            if step == 2:
                with torch.no_grad():
                    for p in ctx.model.parameters():
                        p.fill_(float("nan"))

    with pytest.raises(sft.TrainingDiverged, match="step 3.*last checkpoint is intact"):
        sft.main(cfg, hooks=[Poison()])
    ck = cfg.run_dir / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_2"]
    assert all(torch.isfinite(v).all() for v in weights(ck / "step_2").values())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_through_the_cli(tmp_path, tiny_dirs, arch, capsys):
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).state_dict()
    rc = cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, tiny_dirs[arch], arch)])
    assert rc == 0
    run = tmp_path / arch
    rows = tracking.read_metrics(run)
    train_rows = [r for r in rows if "loss/train" in r]
    assert len(train_rows) == 4 and all(METRIC_KEYS <= set(r) for r in train_rows)
    assert {"eval/loss", "eval/exact_match"} <= set(rows[0]) and rows[0]["step"] == 0
    assert (run / "config.yaml").exists() and (run / "samples/step_4.jsonl").exists()
    # the checkpoint is a plain HF folder: transformers loads it with no alignlab involved
    code = ("import sys, transformers; m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
            "transformers.AutoTokenizer.from_pretrained(sys.argv[1]); "
            "assert 'alignlab' not in sys.modules; print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(run / "checkpoints/step_4")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    after = AutoModelForCausalLM.from_pretrained(run / "checkpoints/step_4").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # full fine-tuning: every parameter moved


def test_lora_run_trains_adapters_only_and_merges(tmp_path, qwen_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rc = cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "lora", **{
        "lora.enabled": "true", "lora.r": 4, "optim.lr": 1e-2})])
    assert rc == 0
    ckpt = tmp_path / "lora/checkpoints/step_4"
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(qwen_dir)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, ckpt)
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, base_sd[key]), f"frozen {key} changed"
    assert any(not torch.all(p == 0) for n, p in model.named_parameters() if "lora_B" in n)
    ids = torch.tensor([[21, 22, 15, 23]])
    with torch.no_grad():
        want = model(ids).logits
    from alignlab.models import remove_adapter

    unloaded = remove_adapter(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen_dir), ckpt))
    assert not any("lora_" in n for n, _ in unloaded.named_parameters())
    assert all(torch.equal(v, base_sd[k]) for k, v in unloaded.state_dict().items())
    assert cli.main(["merge-lora", "--adapter", str(ckpt), "--out", str(tmp_path / "merged"),
                     "--base", str(qwen_dir)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, want, atol=1e-5, rtol=1e-5)


def test_bad_data_fails_before_any_compute_with_file_and_line(tmp_path, qwen_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "1+1=", "response": "2"}) + "\n{oops\n")
    rc = cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "bad", **{"data.train": str(bad)})])
    assert rc == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing was created


def test_resume_never_refuses_to_overwrite(tmp_path, qwen_dir, capsys):
    args = sft_overrides(tmp_path, qwen_dir, "once", **{"data.eval": "null"})
    assert cli.main(["sft", "-c", "sft_tiny", *args]) == 0
    before = (tmp_path / "once/metrics.jsonl").read_text()
    assert cli.main(["sft", "-c", "sft_tiny", *args, "training.resume=never"]) == 2
    assert "already has checkpoints" in capsys.readouterr().err
    assert (tmp_path / "once/metrics.jsonl").read_text() == before
