"""The torchrun entry point of tests/test_distributed.py: `alignlab.cli` plus test-only rewards and faults.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_entry.py sft -c sft_tiny ...

ALIGNLAB_TEST_ODD_REWARD=1: the arithmetic task rewards odd-length completions (an untrained model never
answers right, so every GRPO advantage would be 0 and the update would test nothing). The hooks below
(named in `training.hooks`, importable as `dist_entry:...` with tests/ on PYTHONPATH) fail or kill one
rank at one step.
"""
from __future__ import annotations

import os
import signal
import sys


def odd_length_reward() -> None:
    from alignlab.tasks import arithmetic

    arithmetic.arithmetic_reward = lambda c, a: {"format_reward": 1.0, "answer_reward": 0.0, "reward": float(len(c) % 2)}


def _rank() -> int:
    from alignlab.distributed import current

    return current().rank


class FailOnRank:
    """Rank $ALIGNLAB_TEST_FAIL_RANK raises a DataError at the end of step $ALIGNLAB_TEST_FAIL_STEP, as bad
    data on that rank's shard would; the other ranks go on into the next step's collectives."""

    def on_step_end(self, ctx, step, row):
        if _rank() == int(os.environ.get("ALIGNLAB_TEST_FAIL_RANK", -1)) and step == int(
                os.environ.get("ALIGNLAB_TEST_FAIL_STEP", -1)):
            from alignlab.errors import DataError

            raise DataError("shard.jsonl:7: field 'response' is missing (a bad line on this rank's shard)")


class KillAfterSave:
    """Once checkpoint step $ALIGNLAB_TEST_KILL_STEP is written, rank 1 dies at once (SIGKILL, a lost node)."""

    def on_save(self, ctx, step, path):
        if step == int(os.environ.get("ALIGNLAB_TEST_KILL_STEP", -1)) and _rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if os.environ.get("ALIGNLAB_TEST_ODD_REWARD"):
        odd_length_reward()
    from alignlab import cli

    sys.exit(cli.main(sys.argv[1:]))
