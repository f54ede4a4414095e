"""training.watchdog: per-step health checks that act (docs/watchdog.md).

`Watchdog` is pure and torch-free. Its checks are the small functions in `CHECKS`, each
`(check config, metrics, state) -> None | (value, limit, diagnosis)`. A loop asks it twice a step:
`guard(step, loss, metrics)` goes to `optim.step(..., guard=)` and decides on the loss and the grad
norm BEFORE the optimizer update (so `skip` and `rollback` leave the weights untouched), and
`Run.end_step` passes it the step's metrics (checks whose inputs only exist then: response length in
some loops) and each evaluation (reward hacking). The running state (median windows, reward trend,
rollbacks so far) is rebuilt from metrics.jsonl by `record(row)`: every row the run logs passes
through it, and on resume the kept rows are replayed, so exact resume needs nothing in checkpoints.
"""
from __future__ import annotations

import math
import statistics
from collections import deque

from .errors import WatchdogStop

SEVERITY = {"warn": 0, "skip": 1, "rollback": 2, "stop": 3}
STEP_CHECKS = ("nonfinite", "grad_spike", "kl", "entropy", "length")
INPUTS = {"nonfinite": ("loss", "grad/norm"), "grad_spike": ("grad/norm",), "kl": ("kl/ref",),
          "entropy": ("entropy/mean",), "length": ("response/len_mean",), "reward_hacking": ("eval/accuracy",)}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(c, key: str, v):
    if not _finite(v):
        return None
    if c.max is not None and v > c.max:
        return v, c.max, f"{key} {v:.4g} is above the bound {c.max:g}"
    if c.min is not None and v < c.min:
        return v, c.min, f"{key} {v:.4g} is below the bound {c.min:g}"
    return None


def check_nonfinite(c, m: dict, s: dict):
    for key in INPUTS["nonfinite"]:
        v = m.get(key)
        if v is not None and not math.isfinite(v):
            return str(v), None, f"{key} is {v}"
    return None


def check_grad_spike(c, m: dict, s: dict):
    v, hist = m.get("grad/norm"), s["grad/norm"]
    if not _finite(v) or len(hist) < c.min_history:
        return None
    med = statistics.median(hist)
    if v > c.factor * med:
        return v, c.factor * med, (f"grad/norm {v:.4g} is {v / max(med, 1e-30):.1f}x the running median {med:.4g} "
                                   f"of the last {len(hist)} steps (factor {c.factor:g})")
    return None


def check_kl(c, m: dict, s: dict):
    return _bounds(c, "kl/ref", m.get("kl/ref"))


def check_entropy(c, m: dict, s: dict):
    return _bounds(c, "entropy/mean", m.get("entropy/mean"))


def check_length(c, m: dict, s: dict):
    v, hist = m.get("response/len_mean"), s["response/len_mean"]
    hit = _bounds(c, "response/len_mean", v)
    if hit or not _finite(v) or len(hist) < c.min_history:
        return hit
    med = statistics.median(hist)
    if v > c.factor * med:
        return v, c.factor * med, f"response/len_mean {v:.4g} blew up: {v / max(med, 1e-30):.1f}x the running median {med:.4g}"
    if v < med / c.factor:
        return v, med / c.factor, f"response/len_mean {v:.4g} collapsed: below the running median {med:.4g} / {c.factor:g}"
    return None


def check_reward_hacking(c, m: dict, s: dict):
    """At an evaluation: held-out accuracy fell while the training reward (mean since the previous
    evaluation) rose, both against the previous evaluation's interval."""
    acc, last = m.get("eval/accuracy"), s["last_eval"]
    reward = statistics.fmean(s["rewards"]) if s["rewards"] else None
    if not _finite(acc) or last is None or last["reward"] is None or reward is None:
        return None
    drop, rise = last["acc"] - acc, reward - last["reward"]
    if drop > c.min_drop and rise > c.min_rise:
        return acc, last["acc"] - c.min_drop, (f"eval/accuracy fell {last['acc']:.4g} -> {acc:.4g} while training "
                                               f"reward/mean rose {last['reward']:.4g} -> {reward:.4g}")
    return None


CHECKS = {"nonfinite": check_nonfinite, "grad_spike": check_grad_spike, "kl": check_kl, "entropy": check_entropy,
          "length": check_length, "reward_hacking": check_reward_hacking}


class Watchdog:
    def __init__(self, cfg=None, log=None, say=print):
        from .config import WatchdogConfig

        self.cfg = cfg if cfg is not None else WatchdogConfig()
        self.log, self.say = log, say  # log(step, **metrics): Run.log; say(text): the console
        self.state = {"grad/norm": deque(maxlen=self.cfg.grad_spike.window),
                      "response/len_mean": deque(maxlen=self.cfg.length.window),
                      "rewards": [], "last_eval": None, "rollbacks": 0}
        self._events: list[tuple] = []  # (check, value, limit, diagnosis, action) of the current step
        self._actions: list[str] = []  # the actions taken for them
        self._checked: set[str] = set()
        self.pending: tuple[str, str] | None = None  # ("rollback" | "stop", diagnosis), for Run.end_step

    # -- state: a function of the logged rows only, so that resume can rebuild it ----------------
    def record(self, row: dict) -> None:
        s = self.state
        if "eval/accuracy" in row and _finite(row["eval/accuracy"]):
            s["last_eval"] = {"acc": row["eval/accuracy"],
                              "reward": statistics.fmean(s["rewards"]) if s["rewards"] else None}
            s["rewards"] = []
        if _finite(row.get("reward/mean")):
            s["rewards"].append(row["reward/mean"])
        if _finite(row.get("grad/norm")) and "watchdog/grad_spike" not in row:
            s["grad/norm"].append(row["grad/norm"])
        if _finite(row.get("response/len_mean")) and "watchdog/length" not in row:
            s["response/len_mean"].append(row["response/len_mean"])
        if "rollback" in str(row.get("watchdog/action", "")):
            s["rollbacks"] += 1

    def replay(self, rows: list[dict]) -> None:
        for row in rows:
            self.record(row)

    # -- checks --------------------------------------------------------------------------------------
    def run_checks(self, names, m: dict) -> list[tuple]:
        """Run the enabled checks among `names` whose inputs are in `m`; -> the fired ones, with actions."""
        fired = []
        for name in names:
            c = getattr(self.cfg, name)
            if not c.enabled or not any(k in m and m[k] is not None for k in INPUTS[name]):
                continue
            self._checked.add(name)
            hit = CHECKS[name](c, m, self.state)
            if hit is not None:
                fired.append((name, *hit, c.action))
        self._events += fired
        return fired

    def _resolve(self, fired: list[tuple], late: bool = False) -> str | None:
        """The most severe action of the fired checks; rollback beyond max_rollbacks becomes stop;
        skip after the update was applied (late) can only warn."""
        if not fired:
            return None
        action = max((f[4] for f in fired), key=SEVERITY.get)
        if late and action == "skip":
            action = "warn"
        if action == "rollback" and self.state["rollbacks"] >= self.cfg.max_rollbacks:
            action = "stop"
            fired.append(("rollback_limit", self.state["rollbacks"], self.cfg.max_rollbacks,
                          f"already rolled back {self.state['rollbacks']} times (watchdog.max_rollbacks)", "stop"))
            self._events.append(fired[-1])
        self._actions.append(action)
        for name, _, _, diag, _ in fired:
            self.say(f"watchdog: {name}: {diag} -> {action}")
        if action in ("rollback", "stop"):
            self.pending = (action, "; ".join(f"{f[0]}: {f[3]}" for f in fired))
        return action

    def diagnosis(self, step: int, applied: bool = True) -> str:
        what = "The step's update was applied but not saved" if applied else "The update was not applied"
        return (f"watchdog stopped the run at step {step}: {self.pending[1]}. {what}, and the "
                f"last checkpoint is intact; see watchdog/* in metrics.jsonl. Lower optim.lr, check the data, or "
                f"change training.watchdog (docs/watchdog.md)")

    def guard(self, step: int, loss: float, metrics: dict | None = None):
        """-> `decide(grad_norm, amp_scaled) -> skip?` for optim.step, called after the grads are
        unscaled and clipped, before the update. stop raises WatchdogStop right there (logged first)."""

        def decide(grad_norm: float, amp_scaled: bool = False) -> bool:
            # fp16: an inf grad norm is the scaler's business (it skips that update itself)
            norm = None if amp_scaled and not math.isfinite(grad_norm) else grad_norm
            m = {**(metrics or {}), "loss": loss, "grad/norm": norm}
            action = self._resolve(self.run_checks(STEP_CHECKS, m))
            if action == "stop":
                if self.log is not None:
                    self.log(step, **self.keys())
                raise WatchdogStop(self.diagnosis(step, applied=False))
            return action in ("skip", "rollback")

        return decide

    def end_step(self, step: int, metrics: dict) -> dict:
        """The step's checks not already run by the guard, on the step's metrics; -> watchdog/* keys for
        the step's row (and self.pending set for rollback / stop)."""
        self._resolve(self.run_checks([n for n in STEP_CHECKS if n not in self._checked], metrics), late=True)
        out = self.keys()
        self._checked = set()
        return out

    def on_eval(self, step: int, metrics: dict) -> dict:
        self._resolve(self.run_checks(["reward_hacking"], metrics), late=True)
        return self.keys()

    def keys(self) -> dict:
        """watchdog/<check> (the value seen), watchdog/<check>_limit, watchdog/action, watchdog/diagnosis
        for what fired since the last call; {} when all was well."""
        if not self._events:
            return {}
        out = {}
        for name, value, limit, _, _ in self._events:
            out[f"watchdog/{name}"] = value
            if limit is not None:
                out[f"watchdog/{name}_limit"] = limit
        out["watchdog/action"] = max(self._actions, key=SEVERITY.get)
        out["watchdog/diagnosis"] = "; ".join(f"{e[0]}: {e[3]}" for e in self._events)
        self._events, self._actions = [], []
        return out
