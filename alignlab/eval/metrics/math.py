"""Math: R1-Zero format / answer breakdown per sample, majority vote and pass@k over samples.

Each sample is scored with ``alignlab.rewards.math.r1_zero_reward`` (format_reward, answer_reward,
reward). For a problem with n samples the row metrics are the means over samples:

* ``accuracy``       mean reward (format and answer both right): the headline number;
* ``format_reward``  share of samples in the ``</think> <answer>...</answer>`` format;
* ``answer_reward``  share of samples whose answer is right (graded only when formatted);
* ``maj@n``          (n > 1) 1 when the most common normalised answer among the formatted
                     samples is right (``normalize_answer`` strings vote; unformatted samples
                     abstain); a tie scores the share of the tied answers that are right;
* ``pass@k``         (n > 1, each requested k <= n) the unbiased estimator from
                     ``alignlab.eval.passk``.
"""
from __future__ import annotations

from alignlab.eval.passk import maj_at_k, pass_at_k
from alignlab.rewards.math import extract_answer, grade_answer, normalize_answer, r1_zero_reward


def score_math_samples(outputs: list[str], reference: str, ks: tuple[int, ...] = (1,), reward_fn=None,
                       extract=None) -> tuple[dict, dict]:
    """(metrics, details) for one problem's samples. reward_fn / extract default to the r1_zero
    reward and its <answer> extraction; the arithmetic task passes its own."""
    reward_fn = reward_fn or r1_zero_reward
    extract_answer_fn = extract or extract_answer
    rewards = [reward_fn(o, reference) for o in outputs]
    n = len(outputs)
    metrics: dict[str, float] = {
        "accuracy": sum(r["reward"] for r in rewards) / n,
        "format_reward": sum(r["format_reward"] for r in rewards) / n,
        "answer_reward": sum(r["answer_reward"] for r in rewards) / n,
    }
    answers = [extract_answer_fn(o) for o in outputs]
    voted = [normalize_answer(a) if a is not None and a.strip() else None for a in answers]
    if n > 1:
        metrics[f"maj@{n}"] = maj_at_k(voted, lambda a: grade_answer(a, reference))
        c = int(sum(r["reward"] for r in rewards))
        for k in ks:
            if 1 < k <= n:
                metrics[f"pass@{k}"] = pass_at_k(n, c, k)
    details = {"answers": answers, "rewards": rewards}
    return metrics, details
