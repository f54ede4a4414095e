"""Unbiased pass@k and majority voting (maj@k).

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", arXiv 2107.03374):
draw n >= k samples per problem, count the c correct ones, and estimate the probability that at
least one of k samples is correct by

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

The product form avoids the huge binomial coefficients (and their overflow) of the ratio form.
Averaging it over problems gives an unbiased estimate of the expected pass@k; the naive
"did any of the first k pass" is unbiased too but has far higher variance.

maj@k (Wang et al. 2022, self-consistency, arXiv 2203.11171): the answer given most often
among k samples is the system's answer; the problem counts as solved when that answer is correct.
A tie between several most frequent answers scores the share of them that are correct (the
expected score of a random tie-break), so the order of the samples never matters.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct.

    1.0 when n - c < k (every k-subset contains a correct sample); 0.0 when c = 0.
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer))
            and isinstance(k, (int, np.integer))):
        raise TypeError("n, c and k must be integers")
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least k samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_array(ns: Sequence[int], cs: Sequence[int], k: int) -> np.ndarray:
    """pass@k per problem (shape (P,)); average it for the benchmark score."""
    return np.array([pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)], dtype=np.float64)


def majority_leaders(answers: Sequence[Hashable | None]) -> list[Hashable]:
    """Every non-None answer given most often (the tied leaders), in a canonical order that does
    not depend on the order of the samples: sorted by (type name, repr). [] when all are None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return []
    best = max(counts.values())
    return sorted((a for a, c in counts.items() if c == best), key=lambda a: (type(a).__name__, repr(a)))


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """Most frequent non-None answer; a tie goes to the first tied leader in ``majority_leaders``'
    canonical order, so shuffling the samples never changes the vote. None when all are None."""
    leaders = majority_leaders(answers)
    return leaders[0] if leaders else None


def maj_at_k(answers: Sequence[Hashable | None], is_correct: Callable[[Hashable], bool],
             k: int | None = None) -> float:
    """Majority-vote score of the first k answers: the share of the tied leaders that are correct.

    Without a tie that is 1.0 (the majority answer is correct) or 0.0. With a tie between m answers
    it is the expected score of breaking the tie uniformly at random (e.g. 0.5 for a 2-2 split
    between a right and a wrong answer): independent of the order of the samples and unbiased,
    unlike "first seen wins", which let the sampling order decide. ``answers`` are already
    normalised (e.g. ``normalize_answer`` strings; None for a sample with no parsable answer,
    which does not vote). ``is_correct`` grades each leader; a grader exception counts as wrong.
    """
    if k is not None:
        if k < 1 or k > len(answers):
            raise ValueError(f"maj@{k} needs 1 <= k <= {len(answers)} answers")
        answers = answers[:k]
    leaders = majority_leaders(answers)
    if not leaders:
        return 0.0

    def graded(a: Hashable) -> float:
        try:
            return float(bool(is_correct(a)))
        except Exception:
            return 0.0

    return sum(graded(a) for a in leaders) / len(leaders)
