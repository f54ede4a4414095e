"""training.watchdog: each check on constructed inputs (pure), each action's effect, and one CLI run."""
import json

import pytest
import torch

from alignlab import checkpoint, optim, tracking
from alignlab.config import OptimConfig, SFTConfig, WatchdogConfig, load_config
from alignlab.errors import TrainingDiverged, WatchdogStop
from alignlab.watchdog import CHECKS, Watchdog

from conftest import sft_overrides


def wd(**over) -> Watchdog:
    cfg = WatchdogConfig()
    for dotted, v in over.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, v)
    return Watchdog(cfg, say=lambda text: None)


def test_nonfinite_check():
    c = WatchdogConfig().nonfinite
    assert CHECKS["nonfinite"](c, {"loss": 1.0, "grad/norm": 2.0}, {}) is None
    assert "loss is nan" in CHECKS["nonfinite"](c, {"loss": float("nan")}, {})[2]
    assert "grad/norm is inf" in CHECKS["nonfinite"](c, {"loss": 1.0, "grad/norm": float("inf")}, {})[2]


def test_grad_spike_against_running_median():
    w = wd()
    w.replay([{"step": i, "grad/norm": 1.0} for i in range(10)])
    c = w.cfg.grad_spike
    assert CHECKS["grad_spike"](c, {"grad/norm": 5.0}, w.state) is None
    value, limit, diag = CHECKS["grad_spike"](c, {"grad/norm": 50.0}, w.state)
    assert value == 50.0 and limit == 10.0 and "running median" in diag
    assert CHECKS["grad_spike"](c, {"grad/norm": 50.0}, wd().state) is None  # no history yet


def test_kl_entropy_and_length_bounds():
    c = WatchdogConfig()
    assert CHECKS["kl"](c.kl, {"kl/ref": 0.5}, {}) is None and CHECKS["kl"](c.kl, {"kl/ref": 2.0}, {})[1] == 1.0
    assert CHECKS["entropy"](c.entropy, {"entropy/mean": 0.001}, {})[2].startswith("entropy/mean")
    w = wd()
    w.replay([{"step": i, "response/len_mean": 10.0} for i in range(10)])
    assert "blew up" in CHECKS["length"](c.length, {"response/len_mean": 40.0}, w.state)[2]
    assert "collapsed" in CHECKS["length"](c.length, {"response/len_mean": 2.0}, w.state)[2]
    assert CHECKS["length"](c.length, {"response/len_mean": 12.0}, w.state) is None
    c.length.max = 11.0
    assert CHECKS["length"](c.length, {"response/len_mean": 12.0}, w.state)[1] == 11.0


def test_reward_hacking_reward_up_while_accuracy_falls():
    w = wd()
    c = w.cfg.reward_hacking
    w.replay([{"step": 0, "eval/accuracy": 0.5}, {"step": 1, "reward/mean": 0.2}, {"step": 2, "eval/accuracy": 0.6},
              {"step": 3, "reward/mean": 0.8}])
    hit = CHECKS["reward_hacking"](c, {"eval/accuracy": 0.4}, w.state)
    assert hit and "fell 0.6 -> 0.4" in hit[2] and "rose 0.2 -> 0.8" in hit[2]
    assert CHECKS["reward_hacking"](c, {"eval/accuracy": 0.7}, w.state) is None  # accuracy held up


def test_actions_through_the_guard_and_end_step():
    w = wd(grad_spike__action="skip")
    w.replay([{"step": i, "grad/norm": 1.0} for i in range(10)])
    assert w.guard(11, 1.0)(1.2) is False
    assert w.end_step(11, {"grad/norm": 1.2}) == {}
    assert w.guard(12, 1.0)(100.0) is True  # skip
    keys = w.end_step(12, {"grad/norm": 100.0})
    assert keys["watchdog/action"] == "skip" and keys["watchdog/grad_spike"] == 100.0
    w.record({"step": 12, "grad/norm": 100.0, **keys})
    assert max(w.state["grad/norm"]) == 1.0  # a spike does not enter the median window
    logged = []
    w = Watchdog(WatchdogConfig(), log=lambda step, **m: logged.append((step, m)), say=lambda t: None)
    with pytest.raises(WatchdogStop, match="step 3: nonfinite: loss is nan.*not applied") as e:
        w.guard(3, float("nan"))(1.0)
    assert isinstance(e.value, TrainingDiverged)  # today's exception (and exit code 3), kept
    assert logged[0][1]["watchdog/action"] == "stop"
    w = wd()  # warn: late checks (metrics only at end_step) are logged, the run goes on
    keys = w.end_step(5, {"entropy/mean": 0.0})
    assert keys["watchdog/action"] == "warn" and w.pending is None
    w = wd(kl__action="rollback")
    w.end_step(5, {"kl/ref": 9.0})
    assert w.pending[0] == "rollback"
    w = wd(kl__action="rollback")
    w.state["rollbacks"] = 3
    w.end_step(5, {"kl/ref": 9.0})
    assert w.pending[0] == "stop" and "max_rollbacks" in w.pending[1]
    assert wd().guard(1, 1.0)(float("inf"), True) is False  # fp16: the scaler handles inf grads


def test_config_refuses_rollback_where_not_implemented_and_skip_at_eval():
    from alignlab.config import ConfigError, PPOConfig, RMConfig

    for schema in (PPOConfig, RMConfig):
        with pytest.raises(ConfigError, match="rollback is not supported"):
            load_config(schema, None, ["training.watchdog.kl.action=rollback", "training.total_steps=5"])
    with pytest.raises(ConfigError, match="reward_hacking.action=skip"):
        load_config(SFTConfig, None, ["training.watchdog.reward_hacking.action=skip"])


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))


def test_skip_leaves_weights_unchanged():
    model = _tiny_model()
    opt, sched = optim.build(model, OptimConfig(lr=0.1, warmup_ratio=0.0), 10)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(3, 4)).sum().backward()
    optim.step(model, opt, sched, 1.0, guard=lambda norm, scaled: True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optim.step(model, opt, sched, 1.0, guard=lambda norm, scaled: False)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sft_cli_run_with_a_constructed_spike(tmp_path, qwen_dir, monkeypatch, capsys):
    """Step 5's grad norm is made 1000x: the watchdog skips it, and metrics.jsonl says so."""
    from alignlab import cli

    real = optim.step

    def spiking(model, opt, sched, max_grad_norm, scaler=None, guard=None):
        if guard is not None and sched.last_epoch == 4:
            inner = guard
            guard = lambda norm, scaled: inner(norm * 1000, scaled)  # noqa: E731
        return real(model, opt, sched, max_grad_norm, scaler, guard)

    monkeypatch.setattr(optim, "step", spiking)
    args = sft_overrides(tmp_path, qwen_dir, "spike", **{
        "training.total_steps": 6, "data.eval": "null", "training.watchdog.grad_spike.action": "skip",
        "training.watchdog.grad_spike.min_history": 3})
    assert cli.main(["sft", "-c", "sft_tiny", *args]) == 0
    rows = tracking.read_metrics(tmp_path / "spike")
    fired = [r for r in rows if "watchdog/action" in r]
    assert [r["step"] for r in fired] == [5] and fired[0]["watchdog/action"] == "skip"
    assert "grad_spike" in fired[0]["watchdog/diagnosis"]
    assert "watchdog: grad_spike" in capsys.readouterr().err


def test_sft_stop_and_rollback(tmp_path, qwen_dir, monkeypatch):
    """rollback: the weights equal the last checkpoint's and the lr is lowered; a resume replays the
    same; stop raises with a diagnosis naming the check."""
    from alignlab.train import sft

    real = optim.step
    spike_at = {5}

    def spiking(model, opt, sched, max_grad_norm, scaler=None, guard=None):
        if guard is not None and sched.last_epoch + 1 in spike_at:
            inner = guard
            guard = lambda norm, scaled: inner(norm * 1000, scaled)  # noqa: E731
        return real(model, opt, sched, max_grad_norm, scaler, guard)

    monkeypatch.setattr(optim, "step", spiking)
    seen = {}

    class Look:
        def on_step_end(self, ctx, step, row):
            if step == 5:
                seen["weights"] = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
                seen["lr"] = ctx.optimizer.param_groups[0]["lr"]

    cfg = load_config(SFTConfig, "sft_tiny", sft_overrides(tmp_path, qwen_dir, "rb", **{
        "training.total_steps": 6, "data.eval": "null", "training.save_every": 4, "optim.warmup_ratio": 0.0,
        "optim.schedule": "constant", "training.watchdog.grad_spike.action": "rollback",
        "training.watchdog.grad_spike.min_history": 3}))
    sft.main(cfg, hooks=[Look()])
    from safetensors.torch import load_file

    saved = load_file(cfg.run_dir / "checkpoints" / "step_4" / "model.safetensors")
    for k, v in saved.items():
        assert torch.equal(seen["weights"][k].to(v.dtype), v), k
    assert seen["lr"] == pytest.approx(cfg.optim.lr * 0.5)
    rows = tracking.read_metrics(cfg.run_dir)
    row5 = next(r for r in rows if r["step"] == 5)
    assert row5["watchdog/action"] == "rollback" and row5["watchdog/rollback_to"] == 4
    assert next(r for r in rows if r["step"] == 6)["lr"] == pytest.approx(cfg.optim.lr * 0.5)

    spike_at.clear()
    spike_at.add(3)
    cfg = load_config(SFTConfig, "sft_tiny", sft_overrides(tmp_path, qwen_dir, "st", **{
        "training.total_steps": 6, "data.eval": "null", "training.watchdog.grad_spike.action": "stop",
        "training.watchdog.grad_spike.min_history": 2}))
    with pytest.raises(WatchdogStop, match="step 3: grad_spike: grad/norm .* running median"):
        sft.main(cfg)
    assert json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["watchdog/action"] == "stop"


def test_resume_rebuilds_the_running_state_from_metrics_rows(tmp_path):
    """Exact resume: the state is a function of logged rows; replaying the kept rows gives the live state."""
    run = tracking.Run(tmp_path)
    run.watchdog = live = Watchdog(WatchdogConfig(), say=lambda t: None)
    for step in range(1, 30):
        norm = 50.0 if step == 12 else 1.0 + step / 100
        live.guard(step, 1.0)(norm)
        run.log(step, **{"grad/norm": norm, "reward/mean": step / 30, **live.end_step(step, {"grad/norm": norm})})
        if step % 10 == 0:
            run.log(step, **{"eval/accuracy": 0.5, **live.on_eval(step, {"eval/accuracy": 0.5})})
    again = Watchdog(WatchdogConfig())
    again.replay(tracking.read_metrics(tmp_path))
    assert {k: (list(v) if hasattr(v, "maxlen") else v) for k, v in again.state.items()} == \
        {k: (list(v) if hasattr(v, "maxlen") else v) for k, v in live.state.items()}
    assert 50.0 not in live.state["grad/norm"]
