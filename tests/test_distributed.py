"""Data-parallel training on 2 CPU processes (gloo), launched by torchrun (docs/distributed.md).

The claims: 2 ranks take the update 1 process takes on the same global batch (SFT, DPO, GRPO; ddp and
fsdp2: torch 2.13's fully_shard runs on CPU with gloo); a 2-rank run killed and resumed, on 2 ranks or
on 1, ends with the weights of the run that was never interrupted; a rank that fails stops the job with
its message. The torchrun runs go through tests/dist_entry.py (the CLI, plus test-only rewards and
faults); the one-process references run the same CLI in this process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from alignlab import cli, distributed, rollout
from alignlab.config import ConfigError, DPOConfig, GRPOConfig, PPOConfig, SFTConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
ENTRY = Path(__file__).with_name("dist_entry.py")


def torchrun(args: list[str], nproc: int = 2, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(ENTRY), *args]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def in_process(args: list[str]) -> None:
    assert cli.main(args) == 0
    assert not distributed.current().active  # the CLI closed any process group it opened


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(ckpt / ("adapter_model.safetensors" if (ckpt / "adapter_config.json").is_file()
                           else "model.safetensors"))
    sd.pop("lm_head.weight", None)  # tied to the embeddings; fsdp2's gathered state also names it
    return sd


def assert_same_weights(a: Path, b: Path, start: Path | None = None) -> None:
    """Equal to float tolerance: the largest difference is 1% of one step's update at lr 1e-3, the
    mean difference is far smaller, and the runs moved the weights."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{k}: {m}")
    diffs = torch.cat([(wa[k] - wb[k]).abs().flatten() for k in wa])
    assert diffs.mean().item() < 1e-7, diffs.mean().item()
    if start is not None:  # the runs trained: equal weights are not equal starting points
        w0 = weights(start)
        moved = torch.cat([(wa[k] - w0[k]).abs().flatten() for k in wa])
        assert moved.mean().item() > 1e-4, moved.mean().item()


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- small pieces (no processes) ----------------------------------------------------------------------------


def test_blocks_cover_the_step_once_in_order():
    for n in (8, 9, 3):
        parts = [distributed.Dist(rank=r, world=4).shard(list(range(n))) for r in range(4)]
        assert [x for p in parts for x in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_ranks_seeds_are_the_ones_one_process_gives_its_prompts():
    one = distributed.Dist().seeds(123, 6, 4)
    assert one == rollout.request_seeds(123, 6, 4)
    two = [distributed.Dist(rank=r, world=2).seeds(123, 6, 4) for r in range(2)]
    assert two[0] + two[1] == one


def test_seeded_samples_do_not_depend_on_the_batch(qwen_dir):
    """What a prompt draws depends on its seed only: alone, in another batch, or batched differently (a
    data-parallel rank samples a block of the step's prompts)."""
    from alignlab import models
    from alignlab.config import LoRAConfig, ModelConfig

    model, tok, *_ = models.load_policy(ModelConfig(path=str(qwen_dir)), LoRAConfig())
    prompts = ["12+3=", "a longer prompt 44-1=", "7-7="]
    seeds = rollout.request_seeds(5, 3, 2)
    kw = dict(max_new_tokens=5, n=2, temperature=1.0, return_logprobs=True)
    together = rollout.generate(model, tok, prompts, seeds=seeds, batch_size=3, **kw)
    alone = rollout.generate(model, tok, prompts[1:2], seeds=seeds[1:2], **kw)
    assert alone.completion_ids == together.completion_ids[2:4]
    split = rollout.generate(model, tok, prompts, seeds=seeds, batch_size=1, **kw)
    assert split.completion_ids == together.completion_ids
    static = rollout.generate(model, tok, prompts, seeds=seeds, decode="static", **kw)
    assert static.completion_ids == together.completion_ids  # the static-cache loop draws the same way
    other = rollout.generate(model, tok, prompts, seeds=rollout.request_seeds(6, 3, 2), batch_size=3, **kw)
    assert other.completion_ids != together.completion_ids
    sampler = rollout.HFSampler(model, tok)
    assert sampler.generate(prompts, seed=5, **kw).completion_ids == together.completion_ids


TINY = {SFTConfig: "sft_tiny", DPOConfig: "dpo_tiny", GRPOConfig: "grpo_tiny", PPOConfig: "ppo_tiny"}


def _refused(schema, overrides: list[str], world: int, match: str) -> None:
    cfg = load_config(schema, TINY[schema], overrides)
    with pytest.raises(ConfigError, match=match):
        distributed.check(cfg, distributed.Dist(world=world))


def test_what_cannot_run_on_these_ranks_is_refused_by_key():
    _refused(SFTConfig, ["training.global_batch_seqs=6", "training.micro_batch=2"], 4,
             r"training.global_batch_seqs=6 does not split over 4 ranks")
    _refused(GRPOConfig, ["rl.prompts_per_step=3", "rl.group_size=2", "training.micro_batch=2"], 2,
             r"rl.prompts_per_step=3")
    _refused(PPOConfig, ["parallel.strategy=fsdp2"], 1, r"not supported by ppo.*parallel.strategy=ddp")
    _refused(SFTConfig, ["parallel.strategy=fsdp2", "training.max_tokens_per_micro_batch=64"], 2,
             r"max_tokens_per_micro_batch")
    _refused(GRPOConfig, ["parallel.strategy=fsdp2", "sampling.hf_decode=static"], 2, r"hf_decode=generate")
    _refused(DPOConfig, ["parallel.strategy=fsdp2", "training.watchdog.nonfinite.action=rollback",
                         "training.save_every=1"], 2, r"rollback is not supported")
    distributed.check(load_config(SFTConfig, "sft_tiny", ["training.global_batch_seqs=8", "training.micro_batch=2"]),
                      distributed.Dist(world=4))
    with pytest.raises(ConfigError, match=r"parallel.fsdp2.\* applies to parallel.strategy=fsdp2"):
        load_config(SFTConfig, "sft_tiny", ["parallel.fsdp2.reshard_after_forward=false"])


def test_nproc_execs_torchrun_with_the_same_arguments(monkeypatch, capsys):
    seen = {}
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.update(exe=exe, argv=argv))
    assert cli.main(["sft", "-c", "sft_tiny", "--nproc", "3", "optim.lr=1e-4"]) == 0
    assert seen["argv"][1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
                                "-m", "alignlab.cli", "sft", "-c", "sft_tiny", "optim.lr=1e-4"]
    assert cli.main(["sft", "-c", "sft_tiny", "--nproc", "2", "optim.lr=-1"]) == 2  # a bad config: before torchrun
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert cli.main(["sft", "-c", "sft_tiny", "--nproc", "2"]) == 2
    assert "inside torchrun" in capsys.readouterr().err


# -- 2 ranks against 1 process --------------------------------------------------------------------------------


def _stages(model: Path, data: Path, strategy: str | None = None) -> dict:
    # optim.eps=1e-6: AdamW's g / (sqrt(v) + eps) turns the summation-order noise of a gradient near 0 into
    # an update of up to lr * noise / eps; a larger eps keeps that below the tolerance
    common = [f"model.path={model}", "training.total_steps=3", "training.save_every=0", "optim.lr=1e-3",
              "optim.eps=1e-6"]
    if strategy:
        common.append(f"parallel.strategy={strategy}")
    sft = ["training.global_batch_seqs=8", "training.micro_batch=2", "training.eval_every=0",
           "data.arithmetic.n_train=64", "data.eval=null", "optim.warmup_ratio=0"]
    dpo = [f"data.train={data}", "data.eval=null", "training.global_batch_pairs=4", "training.micro_batch=1",
           "training.eval_every=0", "optim.warmup_ratio=0", "data.max_seq_len=32"]
    grpo = ["rl.prompts_per_step=4", "rl.group_size=4", "training.micro_batch=4", "rl.kl_coef=0.05",
            "sampling.max_new_tokens=4", "eval.max_examples=2", "eval.max_new_tokens=2", "task.arithmetic.n_eval=2",
            "training.eval_every=0"]
    lora = ["lora.enabled=true", "lora.dropout=0"]  # dropout masks are drawn per rank: 0 to compare exactly
    return {"name": "eq", "stages": [
        {"name": "sft", "kind": "sft", "config": "sft_tiny", "overrides": common + sft},
        {"name": "sft_lora", "kind": "sft", "config": "sft_tiny", "overrides": common + sft + lora},
        {"name": "dpo", "kind": "dpo", "config": "dpo_tiny", "overrides": common + dpo},
        {"name": "grpo", "kind": "grpo", "config": "grpo_tiny", "overrides": common + grpo}]}


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefs") / "p.jsonl"
    pairs = [(1, 2), (13, 29), (7, 40), (3, 3), (20, 5), (9, 9), (11, 4), (30, 12)]
    p.write_text("".join(json.dumps({"id": i, "prompt": f"{a}+{b}=", "chosen": str(a + b),
                                     "rejected": str(a + b + 1)}) + "\n" for i, (a, b) in enumerate(pairs)))
    return p


def _pipeline_in_process(root):
    """The one-process reference: root/p.yaml's pipeline in this process, with the odd-length reward that
    the torchrun ranks get through ALIGNLAB_TEST_ODD_REWARD (put back afterwards)."""
    from dist_entry import odd_length_reward

    from alignlab.tasks import arithmetic

    keep = arithmetic.arithmetic_reward
    odd_length_reward()
    try:
        in_process(["pipeline", "-c", str(root / "p.yaml"), f"out_dir={root}"])
    finally:
        arithmetic.arithmetic_reward = keep


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, qwen_dir, prefs):
    """SFT, DPO and GRPO, 3 steps each, in this process: the references."""
    root = tmp_path_factory.mktemp("one")
    (root / "p.yaml").write_text(yaml.safe_dump(_stages(qwen_dir, prefs)))
    _pipeline_in_process(root)
    return root / "eq"


def _two_ranks(tmp_path_factory, qwen_dir, prefs, strategy: str) -> Path:
    root = tmp_path_factory.mktemp(strategy)
    (root / "p.yaml").write_text(yaml.safe_dump(_stages(qwen_dir, prefs, strategy)))
    out = torchrun(["pipeline", "-c", str(root / "p.yaml"), f"out_dir={root}"], ALIGNLAB_TEST_ODD_REWARD="1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return root / "eq"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, qwen_dir, prefs):
    return _two_ranks(tmp_path_factory, qwen_dir, prefs, "ddp")


@pytest.fixture(scope="module")
def fsdp2_run(tmp_path_factory, qwen_dir, prefs):
    return _two_ranks(tmp_path_factory, qwen_dir, prefs, "fsdp2")


LOGGED = {"sft": ("loss/train", "grad/norm", "tokens/response"), "sft_lora": ("loss/train", "grad/norm"),
          "dpo": ("loss/train", "grad/norm", "rewards/accuracy", "logps/chosen"),
          "grpo": ("loss/policy", "grad/norm", "reward/mean", "adv/std", "kl/ref", "response/len_mean",
                   "mismatch/logp_abs_mean")}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.parametrize("loop", ["sft", "sft_lora", "dpo", "grpo"])
def test_two_ranks_take_the_one_process_update(loop, strategy, one_process, request, qwen_dir):
    two = request.getfixturevalue(f"{strategy}_run")
    assert_same_weights(one_process / loop / "checkpoints/step_3", two / loop / "checkpoints/step_3",
                        start=None if loop == "sft_lora" else qwen_dir)
    # rank 0 logged the whole step's statistics, not its own share
    r1 = [r for r in rows(one_process / loop) if "grad/norm" in r]
    r2 = [r for r in rows(two / loop) if "grad/norm" in r]
    assert len(r1) == len(r2) == 3
    for a, b in zip(r1, r2):
        for key in LOGGED[loop]:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    if loop == "grpo":
        assert any(r["reward/mean"] not in (0.0, 1.0) for r in r1)  # the advantages were not all 0
    if strategy == "fsdp2":  # the optimizer state is sharded (torch.distributed.checkpoint), the weights are HF
        assert (two / loop / "checkpoints/step_3" / distributed.OPTIM_DIR / ".metadata").is_file()
        if loop != "sft_lora":
            from transformers import AutoModelForCausalLM

            AutoModelForCausalLM.from_pretrained(two / loop / "checkpoints/step_3")


def _other_stages(model: Path, data: Path) -> dict:
    """EI, RM and PPO, 2 steps each (PPO: one minibatch per epoch, so its per-rank minibatch shares are the
    whole rollout and the update is the one-process update too)."""
    common = [f"model.path={model}", "training.save_every=0", "optim.lr=1e-3", "optim.eps=1e-6"]
    ei = ["training.total_steps=2", "ei.questions_per_round=4", "ei.group_size=4", "ei.global_batch_seqs=8",
          "training.micro_batch=2", "sampling.max_new_tokens=4", "eval.max_examples=2", "eval.max_new_tokens=2",
          "task.arithmetic.n_eval=2", "training.eval_every=0"]
    rm = [f"data.train={data}", "data.eval=null", "training.total_steps=2", "training.global_batch_pairs=4",
          "training.micro_batch=1", "training.eval_every=0", "optim.warmup_ratio=0", "data.max_seq_len=32"]
    ppo = ["training.total_steps=2", "ppo.rollout_size=4", "ppo.minibatch_seqs=4", "ppo.num_ppo_epochs=2",
           "ppo.kl_coef=0.05", "sampling.max_new_tokens=4", "eval.max_examples=2", "eval.max_new_tokens=2",
           "task.arithmetic.n_eval=2", "training.eval_every=0"]
    return {"name": "eq", "stages": [
        {"name": "ei", "kind": "ei", "config": "ei_tiny", "overrides": common + ei},
        {"name": "rm", "kind": "rm", "config": "rm_tiny", "overrides": common + rm},
        {"name": "ppo", "kind": "ppo", "config": "ppo_tiny", "overrides": common + ppo}]}


@pytest.fixture(scope="module")
def other_loops(tmp_path_factory, qwen_dir, prefs):
    """-> (one process, 2 ddp ranks) run roots of EI, RM and PPO."""
    one, two = tmp_path_factory.mktemp("one_other"), tmp_path_factory.mktemp("ddp_other")
    for root in (one, two):
        (root / "p.yaml").write_text(yaml.safe_dump(_other_stages(qwen_dir, prefs)))
    _pipeline_in_process(one)
    out = torchrun(["pipeline", "-c", str(two / "p.yaml"), f"out_dir={two}"], ALIGNLAB_TEST_ODD_REWARD="1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return one / "eq", two / "eq"


@pytest.mark.slow
@pytest.mark.parametrize("loop,key", [("ei", "ei/kept_samples"), ("rm", "loss/train"), ("ppo", "loss/policy")])
def test_ei_rm_and_ppo_on_two_ranks_take_the_one_process_update(loop, key, other_loops, qwen_dir):
    one, two = other_loops
    assert_same_weights(one / loop / "checkpoints/step_2", two / loop / "checkpoints/step_2",
                        start=None if loop == "rm" else qwen_dir)  # rm: a new scalar head, not the LM's
    r1 = [r for r in rows(one / loop) if key in r]
    r2 = [r for r in rows(two / loop) if key in r]
    assert len(r1) == len(r2) == 2
    for a, b in zip(r1, r2):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)
    if loop == "ei":
        assert all(r["ei/kept_samples"] > 0 for r in r1)  # the rounds had something to fine-tune on


# -- kill and resume ------------------------------------------------------------------------------------------


def _resume_args(run_root: Path, model: Path, strategy: str) -> list[str]:
    return ["sft", "-c", "sft_tiny", "name=r", f"out_dir={run_root}", f"model.path={model}",
            "training.total_steps=4", "training.save_every=2", "training.global_batch_seqs=8",
            "training.micro_batch=2", "data.arithmetic.n_train=64", "data.eval=null", "optim.lr=1e-3",
            "optim.eps=1e-6", "training.hooks=[dist_entry:KillAfterSave]", f"parallel.strategy={strategy}"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_a_killed_two_rank_run_resumes_to_the_same_weights(tmp_path, qwen_dir, strategy):
    """Rank 1 is SIGKILLed right after checkpoint step_2; the run is resumed on 2 ranks (ddp) or on 1
    (both strategies: a different rank count is allowed) and ends with the weights of a run that was never
    interrupted."""
    straight = tmp_path / "straight"
    in_process(_resume_args(straight, qwen_dir, "ddp"))
    killed = torchrun(_resume_args(tmp_path / "killed", qwen_dir, strategy), ALIGNLAB_TEST_KILL_STEP="2")
    assert killed.returncode != 0
    ckpts = sorted(p.name for p in (tmp_path / "killed/r/checkpoints").iterdir())
    assert ckpts == ["step_2"], ckpts
    shutil.copytree(tmp_path / "killed", tmp_path / "on_one")
    if strategy == "ddp":
        again = torchrun(_resume_args(tmp_path / "killed", qwen_dir, strategy))
        assert again.returncode == 0, again.stderr[-5000:]
        assert "resumed from" in again.stderr
        assert_same_weights(straight / "r/checkpoints/step_4", tmp_path / "killed/r/checkpoints/step_4", start=qwen_dir)
    in_process(_resume_args(tmp_path / "on_one", qwen_dir, strategy))
    assert_same_weights(straight / "r/checkpoints/step_4", tmp_path / "on_one/r/checkpoints/step_4", start=qwen_dir)
    assert [r["step"] for r in rows(tmp_path / "on_one/r")] == [1, 2, 3, 4]


# -- a failing rank ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_rank_stops_the_job_with_its_message(tmp_path, qwen_dir):
    """Rank 1 raises at the end of step 2 while rank 0 goes into step 3's collectives: the job ends within
    seconds (not at the process-group timeout), non-zero, with rank 1's message."""
    args = ["sft", "-c", "sft_tiny", "name=f", f"out_dir={tmp_path}", f"model.path={qwen_dir}",
            "training.total_steps=6", "training.global_batch_seqs=4", "training.micro_batch=2",
            "data.arithmetic.n_train=32", "data.eval=null", "training.save_every=0",
            "training.hooks=[dist_entry:FailOnRank]", "parallel.timeout_s=600"]
    t0 = time.monotonic()
    out = torchrun(args, timeout=240, ALIGNLAB_TEST_FAIL_RANK="1", ALIGNLAB_TEST_FAIL_STEP="2")
    took = time.monotonic() - t0
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "error: (rank 1) shard.jsonl:7: field 'response' is missing" in text  # rank 1 itself
    assert "error: rank 1: DataError: shard.jsonl:7" in text  # relayed by rank 0, which stopped too
    assert took < 120, f"took {took:.0f} s"
    assert max(r["step"] for r in rows(tmp_path / "f")) <= 3


# -- the planner: memory per GPU -------------------------------------------------------------------------------


def _plan(capsys, *args) -> dict:
    from alignlab.plan import cli as plan_cli

    # foreach AdamW (a copy of every parameter as temporaries): one 80 GB GPU no longer holds full 4B training
    code = plan_cli.main(["--model", "gemma-3-4b", "--method", "full", "--gpu", "A100-80GB", "--optim-impl", "foreach",
                          "--json", *args])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return json.loads(out)


def test_planner_splits_the_batch_and_shards_the_state_per_gpu(capsys):
    one = _plan(capsys)
    ddp = _plan(capsys, "--gpus", "8", "--strategy", "ddp")
    fsdp2 = _plan(capsys, "--gpus", "8", "--strategy", "fsdp2")
    gib = lambda plan, k: plan["terms"][k]["gib"]
    for k in ("weights", "grads", "optimizer"):
        assert gib(ddp, k) == pytest.approx(gib(one, k))  # ddp: the whole state on every GPU
        assert gib(fsdp2, k) == pytest.approx(gib(one, k) / 8)  # fsdp2: 1/8 of it
    assert fsdp2["terms"]["fsdp_gathered"]["gib"] > 0 and "dp_bucket" in ddp["terms"]
    assert fsdp2["peak_gib"] < one["peak_gib"] and fsdp2["fits"] and not one["fits"]
    rec = lambda plan, k: next(r["value"] for r in plan["recommendations"] if r["key"] == k)
    assert rec(ddp, "grad_accum_steps") * ddp["setup"]["gpus"] == rec(one, "grad_accum_steps")  # per-GPU share
    assert rec(ddp, "total_steps") == rec(one, "total_steps")  # the global batch, hence the schedule, is kept


def test_planner_yaml_for_several_gpus_is_a_config_the_loop_loads(capsys, tmp_path):
    from alignlab.plan import cli as plan_cli

    out = tmp_path / "p.yaml"
    assert plan_cli.main(["--model", "gemma-3-270m", "--method", "lora", "--gpu", "L4", "--gpus", "2",
                          "--strategy", "fsdp2", "--target-batch", "32", "--yaml", str(out)]) == 0
    assert "torchrun --nproc-per-node 2" in out.read_text()
    cfg = load_config(SFTConfig, out)
    assert cfg.parallel.strategy == "fsdp2" and cfg.training.global_batch_seqs == 32
    assert plan_cli.main(["--model", "gemma-3-270m", "--method", "qlora", "--gpu", "L4", "--gpus", "2",
                          "--strategy", "fsdp2"]) == 2
    assert "cannot be sharded" in capsys.readouterr().err
