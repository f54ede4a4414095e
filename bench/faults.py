"""Fault injection: SIGKILL tiny SFT, DPO and GRPO runs at random moments, resume, compare.

Each trial starts a run, kills it with SIGKILL once or twice, then runs the same config again
(`training.resume=auto`) until it finishes. It checks that the run completed and that its final
weights are bit-identical to an uninterrupted run of the same config. Two kinds of kill:
- `time`: the parent sends SIGKILL after a random delay within the run's measured duration, which
  can land anywhere (loading, data, a step, evaluation, a save);
- `save`: the run kills itself inside its k-th checkpoint save, at a random phase: after the model
  files are written, halfway through writing trainer_state.pt, after fsync but before the rename, or
  after the rename but before old checkpoints are pruned.

Runs are forked from this process after the imports, so a trial costs compute, not start-up. The
process uses one thread (OMP_NUM_THREADS=1, set before torch loads): forking is safe, and every
run does the same arithmetic, so bit identity is the test.

    python bench/faults.py --trials 50            # the documented result (docs/reliability.md)
    python bench/faults.py --trials 3 --json r.json
"""
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from alignlab import atomic, checkpoint, config as C  # noqa: E402
from alignlab.train import dpo, grpo, sft  # noqa: E402

LOOPS = {  # name: (loop module, schema, packaged config, overrides); a save after every step
    "sft": (sft, "SFTConfig", "sft_tiny", [
        "training.total_steps=6", "training.global_batch_seqs=8", "training.micro_batch=4",
        "data.arithmetic.n_train=64", "data.eval=null", "optim.lr=1e-3"]),
    "dpo": (dpo, "DPOConfig", "dpo_tiny", [
        "training.total_steps=6", "training.global_batch_pairs=4", "training.micro_batch=2",
        "data.n_train=32", "data.eval=null", "data.max_seq_len=32", "optim.lr=1e-3"]),
    "grpo": (grpo, "GRPOConfig", "grpo_tiny", [
        "training.total_steps=4", "rl.prompts_per_step=2", "rl.group_size=4", "training.micro_batch=8",
        "sampling.max_new_tokens=4", "eval.max_examples=4", "eval.max_new_tokens=4", "task.arithmetic.n_eval=4",
        "optim.lr=1e-3"]),
}
SAVE_PHASES = ("model_written", "state_half_written", "before_rename", "before_prune")


def config(loop: str, model: Path, out: Path, name: str):
    module, schema, packaged, overrides = LOOPS[loop]
    return C.load_config(getattr(C, schema), packaged, [
        f"model.path={model}", f"out_dir={out}", f"name={name}", "training.save_every=1", "training.keep_last=2",
        "training.resume=auto", *overrides])


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _inject_save_kill(phase: str, nth: int) -> None:
    """In the child: SIGKILL this process inside its nth checkpoint save, at `phase`."""
    seen = {"n": 0}

    def is_target() -> bool:
        return seen["n"] == nth

    real_save_model, real_fsync, real_prune, real_torch_save = (checkpoint.save_model, atomic.fsync_tree,
                                                                checkpoint.prune, torch.save)

    def save_model(model, tok, out):
        seen["n"] += 1
        real_save_model(model, tok, out)
        if phase == "model_written" and is_target():
            _die()

    def torch_save(obj, f, *a, **k):
        if phase == "state_half_written" and is_target() and str(f).endswith(checkpoint.STATE_FILE):
            real_torch_save(obj, f, *a, **k)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            _die()
        return real_torch_save(obj, f, *a, **k)

    def fsync_tree(root):
        real_fsync(root)
        if phase == "before_rename" and is_target():
            _die()

    def prune(root, keep_last):
        if phase == "before_prune" and is_target():
            _die()
        return real_prune(root, keep_last)

    checkpoint.save_model, atomic.fsync_tree, checkpoint.prune, torch.save = save_model, fsync_tree, prune, torch_save


def run(loop: str, model: Path, out: Path, name: str, kill: dict | None = None, log: Path | None = None) -> dict:
    """Run (or resume) one config in a forked child; kill it as `kill` says. -> {"status", "seconds"}."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: run the loop, exit 0 when it finishes
        code = 1
        try:
            fd = os.open(log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if kill and kill["kind"] == "save":
                _inject_save_kill(kill["phase"], kill["nth"])
            module = LOOPS[loop][0]
            module.main(config(loop, model, out, name))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = t0 + kill["delay"] if kill and kill["kind"] == "time" else None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        result = "killed"
    else:
        result = "finished" if os.WEXITSTATUS(status) == 0 else "failed"
    return {"status": result, "seconds": time.perf_counter() - t0}


def final_weights(run_dir: Path, steps: int) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    f = run_dir / "checkpoints" / f"step_{steps}" / "model.safetensors"
    return {k: v.clone() for k, v in load_file(f).items()} if f.is_file() else None


def trial(loop: str, model: Path, root: Path, ref: dict, ref_seconds: float, rng: random.Random) -> dict:
    name = f"t{rng.randrange(10**9)}"
    steps = config(loop, model, root, name).training.total_steps
    kills, events = rng.choice([1, 2]), []
    log = root / f"{name}.log"
    for _ in range(kills):
        if rng.random() < 0.5:
            kill = {"kind": "time", "delay": rng.uniform(0.02, 1.0) * ref_seconds}
        else:
            kill = {"kind": "save", "phase": rng.choice(SAVE_PHASES), "nth": rng.randint(1, steps)}
        r = run(loop, model, root, name, kill, log)
        events.append({**kill, "result": r["status"]})
        if r["status"] == "failed":
            break
    final = run(loop, model, root, name, None, log)  # resume to the end, undisturbed
    w = final_weights(root / name, steps)
    completed = final["status"] == "finished" and w is not None
    identical = completed and w.keys() == ref.keys() and all(torch.equal(w[k], ref[k]) for k in ref)
    out = {"loop": loop, "kills": events, "completed": completed, "identical": identical}
    if not completed or not identical:
        out["log_tail"] = log.read_text()[-3000:] if log.exists() else ""
        out["run_dir"] = str(root / name)
    else:
        shutil.rmtree(root / name, ignore_errors=True)
        log.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loops", default="sft,dpo,grpo")
    ap.add_argument("--out", help="work folder (default: a temporary one, removed when all trials pass)")
    ap.add_argument("--json", help="write the summary and every trial here")
    args = ap.parse_args(argv)
    loops = args.loops.split(",")
    root = Path(args.out or tempfile.mkdtemp(prefix="alignlab-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    from alignlab.tiny import make_tiny

    model = make_tiny("qwen2", root / "tiny-qwen2")
    refs = {}
    for loop in loops:  # the uninterrupted runs: final weights and duration
        r = run(loop, model, root, f"ref-{loop}", None, root / f"ref-{loop}.log")
        if r["status"] != "finished":
            print(f"reference {loop} run failed:\n" + (root / f"ref-{loop}.log").read_text()[-3000:], file=sys.stderr)
            return 1
        steps = config(loop, model, root, "x").training.total_steps
        refs[loop] = (final_weights(root / f"ref-{loop}", steps), r["seconds"])
        print(f"reference {loop}: {steps} steps in {r['seconds']:.1f}s", flush=True)
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        loop = loops[i % len(loops)]
        res = trial(loop, model, root, refs[loop][0], refs[loop][1], rng)
        results.append(res)
        kills = ", ".join(f"{k['kind']}:{k.get('phase', round(k.get('delay', 0), 2))}->{k['result']}" for k in res["kills"])
        print(f"trial {i + 1:>3} {loop:<4} completed={res['completed']!s:<5} identical={res['identical']!s:<5} [{kills}]",
              flush=True)
    summary = {"trials": len(results), "completed": sum(r["completed"] for r in results),
               "identical": sum(r["identical"] for r in results),
               "kills_landed": sum(k["result"] == "killed" for r in results for k in r["kills"]),
               "kills_in_saves": sum(k["result"] == "killed" and k["kind"] == "save" for r in results for k in r["kills"]),
               "per_loop": {lp: {"trials": sum(r["loop"] == lp for r in results),
                                 "completed": sum(r["completed"] for r in results if r["loop"] == lp),
                                 "identical": sum(r["identical"] for r in results if r["loop"] == lp)} for lp in loops}}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": results}, indent=1))
    ok = summary["completed"] == summary["identical"] == summary["trials"]
    if ok and not args.out:
        shutil.rmtree(root, ignore_errors=True)
    elif not ok:
        print(f"failures kept in {root}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
