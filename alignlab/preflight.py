"""`alignlab preflight -c CONFIG [key=value ...] [--json]`: checks a config before spending GPU hours.

Supported: SFT and DPO configs (EI, GRPO, PPO and RM are refused with exit 2). Checks, in order:
- masks: every training example (DPO: chosen and rejected) is tokenised and collated as the loop does
  it; an example whose response mask is all zeros trains nothing (the classic chat-template masking
  error) and is refused by its FILE:LINE or id. The first `--examples` are shown with the trained
  tokens highlighted (`[[...]]` in plain text and JSON).
- memory: the longest micro-batch of the data (the longest examples, at the configured micro-batch
  size) runs first, once, forward + backward + optimizer step, as an out-of-memory probe. Its peak
  is measured as `alignlab analyze memory` measures it (live tensor bytes on CPU, max allocated on
  CUDA) and set beside the planner's prediction for the same shape (analysis/memory.planner_setup).
- gradient: the first optimizer step's gradient, accumulated at the configured micro-batch size and
  at another split (1, or 2 when the configured size is 1), through the loop's own code
  (step.accumulate_step for SFT; dpo.pair_logps + dpo.LOSSES for DPO), dropout off. The max over
  parameter tensors of ||g_a - g_b|| / ||g_a|| must stay under the precision's tolerance (TOLERANCE).
- time: a few timed optimizer steps -> seconds per step and the run's total (training steps only:
  evaluation, checkpoints and DPO's reference precompute are not counted).

Nothing is written: no run directory, no checkpoint; the model on disk is only read (the in-memory
copy takes the probe's and the timed steps' updates, and is then dropped).
Exit code: 0 go, 1 no-go (a check failed), 2 bad config or data.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

SUPPORTED = ("sft", "dpo")
# max relative difference ||g_a - g_b|| / ||g_a|| (per parameter tensor) allowed between two splits
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 2e-2}
PLANNER_WARN = 0.5  # warn when the planner's peak is off the measured one by more than this fraction
MARK = ("[[", "]]")  # trained tokens in plain text / JSON


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skipped
    reason: str
    data: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

def load(path: str, overrides: list[str]):
    """-> (algorithm, cfg) for an SFT or DPO config; ConfigError (exit 2) for anything else."""
    from . import config as K

    errors = []
    for algo, (_, schema_name, _) in K.ALGORITHMS.items():
        try:
            cfg = K.load_config(getattr(K, schema_name), path, overrides)
        except K.ConfigError as exc:
            errors.append(f"{algo}: {str(exc).splitlines()[0]}")
            continue
        if algo not in SUPPORTED:
            raise K.ConfigError(f"{path} is a {algo} config; preflight supports {', '.join(SUPPORTED)} so far "
                                f"(for {algo}, `alignlab analyze memory -c {path}` measures one step's memory)")
        return algo, cfg
    raise K.ConfigError(f"{path}: not a valid training config:\n  " + "\n  ".join(errors))


# ----------------------------------------------------------------------------------------------
# Data and masks
# ----------------------------------------------------------------------------------------------

def encode(algo: str, cfg, tok):
    """The loop's own training set: a list of Encoded (SFT) or of (chosen, rejected) pairs (DPO)."""
    from . import data

    if algo == "sft":
        return data.encode(data.load_examples(cfg.data.train, cfg.data, "train", cfg.seed), tok, cfg.data)
    return data.encode_pairs(data.load_pref_examples(cfg.data.train, "train", cfg.seed, cfg.data.n_train), tok, cfg.data)


def trained_counts(items, pad_id: int, chunk: int = 256) -> list[int]:
    """Response-mask tokens of each example, from the collator the loops use (shift included)."""
    from . import data

    out: list[int] = []
    for i in range(0, len(items), chunk):
        out += data.collate(items[i : i + chunk], pad_id)["response_mask"].sum(-1).tolist()
    return out


def highlight(enc, tok, pad_id: int) -> list[tuple[str, bool]]:
    """(text, trained?) runs of one example: token k is trained when label position k-1 is masked in."""
    from . import data

    mask = data.collate([enc], pad_id)["response_mask"][0].tolist()
    flags = [False] + [bool(m) for m in mask]
    runs: list[tuple[list[int], bool]] = []
    for t, f in zip(enc.ids, flags):
        if runs and runs[-1][1] == f:
            runs[-1][0].append(t)
        else:
            runs.append(([t], f))
    return [(tok.decode(ids, skip_special_tokens=False), f) for ids, f in runs]


def plain(runs: list[tuple[str, bool]]) -> str:
    return "".join(f"{MARK[0]}{s}{MARK[1]}" if f else s for s, f in runs)


def check_masks(algo: str, train, tok, n_show: int) -> tuple[Check, list[dict]]:
    pad = tok.pad_token_id
    sides = [("", train)] if algo == "sft" else [("chosen", [c for c, _ in train]), ("rejected", [r for _, r in train])]
    empty: list[str] = []
    for side, items in sides:
        for e, n in zip(items, trained_counts(items, pad)):
            if n == 0:
                ex = e.example
                name = ex.get("where") or ex.get("id") or "?"
                if ex.get("id") not in (None, name):
                    name += f" (id {ex['id']})"
                empty.append(name + (f" ({side})" if side else ""))
    shown = []
    for i in range(min(n_show, len(train))):
        encs = {"": train[i]} if algo == "sft" else {"chosen": train[i][0], "rejected": train[i][1]}
        for side, e in encs.items():
            runs = highlight(e, tok, pad)
            shown.append({"where": e.example.get("where"), "side": side or None, "runs": runs, "text": plain(runs),
                          "trained_tokens": trained_counts([e], pad)[0], "tokens": len(e.ids)})
    n_total = sum(len(items) for _, items in sides)
    if empty:
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        return Check("masks", "fail", (
            f"{len(empty)} of {n_total} examples train no token (response mask all zeros): {', '.join(empty[:5])}{more}. "
            "Likely cause: the chat template renders the response inside the prompt, or drops it (check "
            "data.format and the tokenizer's chat template), or the response is cut by data.max_seq_len"),
            {"empty": empty, "checked": n_total}), shown
    what = "examples" if algo == "sft" else f"sequences ({len(train)} pairs)"
    return Check("masks", "ok", f"all {n_total} {what} have trained tokens", {"checked": n_total}), shown


# ----------------------------------------------------------------------------------------------
# The step, through the loops' own code
# ----------------------------------------------------------------------------------------------

class Stepper:
    """One optimizer step's backward for the config's loop, at any micro-batch size."""

    def __init__(self, algo, cfg, model, tok, device, prec, train):
        self.algo, self.cfg, self.model, self.tok, self.device, self.prec, self.train = (
            algo, cfg, model, tok, device, prec, train)
        t = cfg.training
        self.global_batch = t.global_batch_seqs if algo == "sft" else t.global_batch_pairs
        self.micro = t.micro_batch
        self.ref = None
        if algo == "dpo":
            from .train import dpo

            self.dpo = dpo
            if cfg.dpo.loss not in dpo.REFERENCE_FREE:
                # the reference at step 0 (= the starting policy for every dpo.reference mode), as precomputed
                # log-probs; fixed, so it cannot differ between the two splits
                self.ref = {}

    def _ref_for(self, idx: list[int], pairs):
        if self.ref is None:
            return {"c": None, "r": None}
        missing = [i for i in idx if i not in self.ref]
        if missing:
            from . import models

            adapter = models.is_peft(self.model)
            lp = self.dpo.reference_logps(self.model, [self.train[i] for i in missing], self.tok.pad_token_id,
                                          self.device, self.prec, self.micro, adapter)
            self.ref.update({i: lp[k] for k, i in enumerate(missing)})
        import torch

        r = torch.stack([self.ref[i] for i in idx]).to(self.device)
        return {"c": r[:, 0], "r": r[:, 1]}

    def backward(self, idx: list[int], micro: int) -> float:
        """Accumulate the gradient of the step made of examples `idx`, in micro-batches of `micro`."""
        if self.algo == "sft":
            from .step import accumulate_step

            t, d = self.cfg.training, self.cfg.data
            loss, _ = accumulate_step(self.model, [self.train[i] for i in idx], self.tok.pad_token_id, self.device,
                                      self.prec, micro_batch_seqs=micro, normalizer=t.loss_normalizer,
                                      bucket=d.length_bucketing, packing_len=d.pack_len)
            return loss
        # DPO: the loop's micro-step (train/dpo.py main), with its pair log-probs and LOSSES
        total = 0.0
        pack = self.cfg.data.pack_len
        for part in self.dpo.micro_batches(self.train, idx, micro, self.cfg.training.max_tokens_per_micro_batch,
                                           bool(pack)):
            pairs = [self.train[j] for j in part]
            ref = self._ref_for(part, pairs)
            lp, n = self.dpo.pair_logps(self.model, pairs, self.tok.pad_token_id, self.device, self.prec, pack)
            per_pair, _ = self.dpo.LOSSES[self.cfg.dpo.loss](lp, ref, n, self.cfg.dpo)
            loss = per_pair.sum() / len(idx)
            loss.backward()
            total += loss.item()
        return total

    def longest(self) -> list[int]:
        """Indices of the longest micro-batch in the data (DPO: by the longer side of each pair)."""
        n = (lambda i: len(self.train[i].ids)) if self.algo == "sft" else (
            lambda i: max(len(self.train[i][0].ids), len(self.train[i][1].ids)))
        return sorted(range(len(self.train)), key=n, reverse=True)[: self.micro]

    def seq_len(self, idx: list[int]) -> int:
        if self.algo == "sft":
            return max(len(self.train[i].ids) for i in idx)
        return max(max(len(self.train[i][0].ids), len(self.train[i][1].ids)) for i in idx)


def other_split(global_batch: int, micro: int) -> int | None:
    """A second micro-batch size: 1, or (when the configured one is 1) the smallest divisor > 1."""
    if micro > 1:
        return 1
    return next((d for d in range(2, global_batch + 1) if global_batch % d == 0), None)


def grads(model) -> dict:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def max_rel_diff(a: dict, b: dict) -> tuple[float, str, float]:
    """max over tensors of ||a - b|| / ||a|| -> (value, worst tensor, global ||a||)."""
    worst, name, sq = 0.0, "", 0.0
    for k in set(a) | set(b):
        ga, gb = a.get(k), b.get(k)
        if ga is None or gb is None:
            return math.inf, k, 0.0
        na = float(ga.norm())
        sq += na * na
        diff = float((ga - gb).norm())
        rel = diff / na if na > 0 else (0.0 if diff == 0 else math.inf)
        if not math.isfinite(rel) or rel > worst:
            worst, name = rel, k
    return worst, name, math.sqrt(sq)


def check_gradient(st: Stepper, precision: str) -> Check:
    from .data import StepSampler

    idx = StepSampler(len(st.train), st.global_batch, st.cfg.seed).indices(0)
    alt = other_split(len(idx), st.micro)
    if alt is None:
        return Check("gradient", "ok", f"one sequence per step ({len(idx)}): no other split to compare")
    tol = TOLERANCE[precision]
    st.model.eval()  # dropout off: the two splits must see the same function
    try:
        res = {}
        for m in (st.micro, alt):
            st.model.zero_grad(set_to_none=True)
            st.backward(idx, m)
            res[m] = grads(st.model)
        st.model.zero_grad(set_to_none=True)
    finally:
        st.model.train()
    rel, worst, norm = max_rel_diff(res[st.micro], res[alt])
    info = {"micro_batches": [st.micro, alt], "max_rel_diff": rel, "worst_tensor": worst, "grad_norm": norm,
            "tolerance": tol, "precision": precision}
    splits = f"micro-batch {st.micro} vs {alt}"
    if norm == 0:
        return Check("gradient", "fail", f"{splits}: the step's gradient is zero; nothing would train", info)
    if not rel <= tol:
        return Check("gradient", "fail", (
            f"{splits}: accumulated gradients differ by {rel:.2e} (relative, worst in {worst}) > {tol:.0e} allowed "
            f"for {precision}; the step's loss is not normalised over the whole step, or padding leaks into it"), info)
    return Check("gradient", "ok", f"{splits}: max relative difference {rel:.2e} <= {tol:.0e} ({precision})", info)


# ----------------------------------------------------------------------------------------------
# Memory probe and timing
# ----------------------------------------------------------------------------------------------

def check_memory(st: Stepper, opt) -> Check:
    """The longest micro-batch, once: backward + optimizer step, peak memory vs the planner."""
    import torch

    from .analysis import memory as AM
    from .plan.measure import existing_tensors, mark_phase, peak_per_phase

    idx = st.longest()
    seq_len = st.seq_len(idx)
    dev = st.device
    shape = AM.Shape(st.algo, len(idx) * (2 if st.algo == "dpo" else 1), seq_len,
                     reference=st.algo == "dpo" and st.ref is not None)
    info: dict = {"micro_batch": len(idx), "seq_len": seq_len, "device": str(dev)}

    def step(tr=None):  # one phase: the whole training step
        mark_phase(tr, dev, "step")
        st.model.zero_grad(set_to_none=True)
        st.backward(idx, len(idx))
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark_phase(tr, dev, "done")

    try:
        peaks, method = peak_per_phase(step, dev, existing_tensors(st.model, opt, []), ("step",))
        measured = peaks["step"]
        if dev.type == "cuda":
            info["device_total"] = float(torch.cuda.get_device_properties(dev).total_memory)
    except torch.OutOfMemoryError as exc:
        return Check("memory", "fail", f"out of memory on the longest micro-batch ({len(idx)} x {seq_len} tokens): "
                     f"{str(exc).splitlines()[0]}; lower the micro-batch size or data.max_seq_len, or enable "
                     "model.gradient_checkpointing / LoRA", info)
    info.update(measured_bytes=measured, method=method)
    try:
        setup = AM.planner_setup(st.algo, st.cfg, shape, dev.type)
        predicted = max(AM.predict(st.cfg, setup).values())
    except Exception as exc:  # the planner does not know every architecture
        info["predicted_bytes"] = None
        return Check("memory", "warn", f"peak {measured / 2**20:.1f} MiB measured ({method}); the planner could not "
                     f"predict it: {exc}", info)
    err = (predicted - measured) / measured if measured else 0.0
    info.update(predicted_bytes=predicted, planner_error=err)
    msg = (f"longest micro-batch ({len(idx)} x {seq_len} tokens): peak {measured / 2**20:.1f} MiB measured ({method}), "
           f"{predicted / 2**20:.1f} MiB predicted by the planner ({100 * err:+.0f}%)")
    if "device_total" in info and measured > 0.9 * info["device_total"]:
        return Check("memory", "warn", msg + f"; over 90% of the device's {info['device_total'] / 2**30:.1f} GiB", info)
    if abs(err) > PLANNER_WARN:
        return Check("memory", "warn", msg + "; the planner is far off for this setup, trust the measured peak", info)
    return Check("memory", "ok", msg, info)


def check_time(st: Stepper, opt, n_steps: int, total_steps: int) -> Check:
    import torch

    from .data import StepSampler

    sampler = StepSampler(len(st.train), st.global_batch, st.cfg.seed)
    times = []
    for s in range(n_steps):
        t0 = time.perf_counter()
        st.model.zero_grad(set_to_none=True)
        st.backward(sampler.indices(s), st.micro)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if st.device.type == "cuda":
            torch.cuda.synchronize(st.device)
        times.append(time.perf_counter() - t0)
    per = statistics.median(times)
    total = per * total_steps
    info = {"timed_steps": n_steps, "step_seconds": times, "per_step_s": per, "total_steps": total_steps,
            "total_s": total}
    return Check("time", "ok", f"{per:.3f} s/step (median of {n_steps}) x {total_steps} steps = {_hms(total)} "
                 "(training steps only: no evaluation, checkpoints or reference precompute)", info)


def _hms(s: float) -> str:
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{s:.1f}s")


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def run(algo: str, cfg, n_show: int = 3, n_steps: int = 2) -> dict:
    import torch

    from . import models, tracking
    from .data import StepSampler

    tok = models.start_tokenizer(cfg.model.path)
    train = encode(algo, cfg, tok)  # bad data: DataError (exit 2) before any model loads
    masks, shown = check_masks(algo, train, tok, n_show)
    checks = [masks]
    t = cfg.training
    glob = t.global_batch_seqs if algo == "sft" else t.global_batch_pairs
    total_steps = t.total_steps or max(1, math.ceil(t.epochs * len(train) / glob))
    report = {"algorithm": algo, "config": cfg.name, "examples": shown, "checks": checks}
    if masks.status == "fail":
        checks += [Check(n, "skipped", "the masks check failed") for n in ("memory", "gradient", "time")]
        return report
    tracking.seed_everything(cfg.seed)
    model, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision)
    if algo == "dpo":
        models.disable_dropout(model)
    precision = "fp32" if prec.autocast is None else {torch.bfloat16: "bf16", torch.float16: "fp16"}[prec.autocast]
    if prec.weights != torch.float32 and precision == "fp32":
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}[prec.weights]
    report.update(device=str(device), precision=precision)
    st = Stepper(algo, cfg, model, tok, device, prec, train)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            betas=cfg.optim.betas, eps=cfg.optim.eps)
    if algo == "dpo":  # the reference log-probs of every pair used below, from the starting policy (as precomputed)
        sampler = StepSampler(len(train), glob, cfg.seed)
        st._ref_for(sorted(set(st.longest()).union(*(sampler.indices(s) for s in range(n_steps)))), None)
    mem = check_memory(st, opt)
    checks.append(mem)
    if mem.status == "fail":
        checks += [Check(n, "skipped", "the memory probe failed") for n in ("gradient", "time")]
        return report
    checks.append(check_gradient(st, precision))
    checks.append(check_time(st, opt, n_steps, total_steps))
    return report


def verdict(checks: list[Check]) -> bool:
    return all(c.status in ("ok", "warn") for c in checks)


def print_report(report: dict, out=None) -> None:
    from rich.console import Console
    from rich.text import Text

    con = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    con.print(f"[bold]preflight[/] {report['config']} ({report['algorithm']})"
              + (f" on {report['device']}, {report['precision']}" if "device" in report else ""))
    con.print(f"[dim]trained tokens are highlighted (in plain text: {MARK[0]}...{MARK[1]})[/]")
    for ex in report["examples"]:
        head = f"{ex['where']}" + (f" {ex['side']}" if ex["side"] else "")
        con.print(Text(f"--- {head}: {ex['trained_tokens']} of {ex['tokens']} tokens trained", style="dim"))
        text = Text()
        for s, trained in ex["runs"]:
            text.append(s, style="bold black on green" if trained else None)
        if not con.is_terminal:
            text = Text(ex["text"])
        con.print(text)
    style = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    for c in report["checks"]:
        con.print(Text.assemble((f"{c.status:>7}", style[c.status]), f"  {c.name:<9} {c.reason}"))
    go = verdict(report["checks"])
    con.print("[bold green]GO[/]" if go else "[bold red]NO-GO[/]")


def to_json(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in ("checks", "examples")}
    out["go"] = verdict(report["checks"])
    out["examples"] = [{k: v for k, v in ex.items() if k != "runs"} for ex in report["examples"]]
    out["checks"] = {c.name: asdict(c) for c in report["checks"]}
    return out


def main(argv: list[str]) -> int:
    from .errors import ConfigError, DataError

    ap = argparse.ArgumentParser(prog="alignlab preflight", description=__doc__.splitlines()[0],
                                 epilog="exit code: 0 go, 1 no-go, 2 bad config or data")
    ap.add_argument("--config", "-c", required=True, help="YAML file or packaged config name (sft_tiny, dpo_tiny)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    ap.add_argument("--examples", type=int, default=3, help="examples to show with their trained tokens (default 3)")
    ap.add_argument("--steps", type=int, default=2, help="timed optimizer steps for the time estimate (default 2)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for training")
    args = ap.parse_args(argv)
    try:
        algo, cfg = load(args.config, args.overrides)
        report = run(algo, cfg, max(0, args.examples), max(1, args.steps))
    except (ConfigError, DataError, FileNotFoundError) as exc:
        if not args.json:
            raise  # the CLI prints it and exits 2
        print(json.dumps({"go": False, "error": str(exc)}))
        return 2
    if args.json:
        print(json.dumps(to_json(report), default=str))
    else:
        print_report(report)
    return 0 if verdict(report["checks"]) else 1
