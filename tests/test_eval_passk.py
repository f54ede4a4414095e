"""pass@k against brute-force enumeration; majority voting and its order-independent tie-breaking."""
import itertools
import math

import pytest

from alignlab.eval.passk import maj_at_k, majority_leaders, majority_vote, pass_at_k, pass_at_k_array


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that contain a correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_forms():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10))


def test_pass_at_k_large_n_is_stable():
    # Binomial coefficients here exceed float range; the product form must still work.
    v = pass_at_k(2000, 1, 100)
    assert v == pytest.approx(100 / 2000)
    assert 0.0 <= pass_at_k(5000, 2500, 1000) <= 1.0


def test_pass_at_k_validation():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)  # type: ignore[arg-type]


def test_pass_at_k_array():
    assert pass_at_k_array([4, 4], [0, 4], 2).tolist() == [0.0, 1.0]


def test_majority_vote():
    assert majority_vote(["3", "4", "3"]) == "3"
    assert majority_vote([None, None, "7"]) == "7"      # None abstains
    assert majority_vote([None, None]) is None
    assert majority_leaders(["4", "3", "3", "4", "5"]) == ["3", "4"]  # every tied leader, canonical order


def test_majority_vote_does_not_depend_on_sample_order():
    # A tie used to go to the answer seen first, so shuffling the samples changed the vote.
    answers = ["4", "3", None, "3", "4", "x"]
    votes = {majority_vote(list(p)) for p in itertools.permutations(answers)}
    assert votes == {"3"}
    mixed = [2, "2", 2, "2"]  # unorderable types tie too
    assert {majority_vote(list(p)) for p in itertools.permutations(mixed)} == {2}


def test_maj_at_k():
    ok = lambda a: a == "3"  # noqa: E731
    assert maj_at_k(["3", "4", "3"], ok) == 1.0
    assert maj_at_k(["4", "4", "3"], ok) == 0.0
    assert maj_at_k([None, None], ok) == 0.0
    with pytest.raises(ValueError):
        maj_at_k(["3"], ok, k=2)


def test_maj_at_k_ties_score_the_expected_random_tie_break():
    ok = lambda a: a == "3"  # noqa: E731
    # A 2-2 tie between a right and a wrong answer is worth 1/2 in every order of the samples.
    assert {maj_at_k(list(p), ok) for p in itertools.permutations(["4", "3", "3", "4"])} == {0.5}
    assert maj_at_k(["4", "3", "3", "3"], ok, k=2) == 0.5   # the first two: a 1-1 tie
    assert maj_at_k(["5", "3", "4"], ok) == pytest.approx(1 / 3)  # three-way tie, one right
    # It is the mean over uniformly random tie-breaks: check by brute force over the tied leaders.
    answers = ["a", "b", "c", "a", "b", "c", "d"]
    right = {"b", "c"}
    leaders = [x for x in set(answers) if answers.count(x) == 2]
    assert maj_at_k(answers, lambda x: x in right) == pytest.approx(sum(x in right for x in leaders) / len(leaders))
    # A grader that raises counts that leader as wrong.
    def boom(a):
        if a == "4":
            raise RuntimeError("grader failed")
        return a == "3"
    assert maj_at_k(["3", "4"], boom) == 0.5
