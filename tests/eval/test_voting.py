"""alignax.eval.voting: hand-computed votes, a naive NumPy reference of weighted voting, step-score
aggregation, masks, ties, jit and vmap."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import voting


def naive_weighted_vote(answers, scores, mask, num_answers):
    out = []
    for a_row, s_row, m_row in zip(answers, scores, mask):
        totals = collections.defaultdict(float)
        for a, s, m in zip(a_row, s_row, m_row):
            if m and 0 <= a < num_answers:
                totals[int(a)] += float(s)
        if not totals:
            out.append(-1)
            continue
        best = max(totals.values())
        out.append(min(a for a, t in totals.items() if t == best))
    return np.array(out)


def test_hand_computed_votes():
    answers = jnp.array([[3, 3, 5, 5, 5], [1, 2, 2, 1, 7]])
    scores = jnp.array([[0.9, 0.8, 0.1, 0.2, 0.3], [0.5, 0.1, 0.1, 0.0, 0.9]])
    maj = jax.jit(lambda a: voting.majority_vote(a, num_answers=10))
    assert maj(answers).tolist() == [5, 1]  # row 2: 1 and 2 tie at two votes -> smaller
    w = jax.jit(lambda a, s: voting.weighted_vote(a, s, num_answers=10))
    # row 1: 3 -> 1.7, 5 -> 0.6; row 2: 1 -> 0.5, 2 -> 0.2, 7 -> 0.9
    assert w(answers, scores).tolist() == [3, 7]
    assert voting.best_of_n(scores).tolist() == [0, 4]
    assert voting.best_of_n_answer(answers, scores).tolist() == [3, 7]
    mask = jnp.array([[False, False, True, True, True], [True, True, True, True, False]])
    assert voting.weighted_vote(answers, scores, mask, num_answers=10).tolist() == [5, 1]
    assert voting.best_of_n_answer(answers, scores, mask).tolist() == [5, 1]
    # nothing valid: -1; out-of-range answers never vote
    none = jnp.zeros((1, 3), bool)
    assert voting.weighted_vote(answers[:1, :3], scores[:1, :3], none,
                                num_answers=10).tolist() == [-1]
    assert voting.best_of_n(scores[:1, :3], none).tolist() == [-1]
    assert voting.best_of_n_answer(answers[:1, :3], scores[:1, :3], none).tolist() == [-1]
    assert voting.majority_vote(jnp.array([[-1, 12, 4]]), num_answers=10).tolist() == [4]
    # a given answer with zero total score still beats the answers nobody gave
    assert voting.weighted_vote(jnp.array([[6, 6]]), jnp.zeros((1, 2)),
                                num_answers=10).tolist() == [6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_vote_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    p, n, a = 50, 9, 6
    answers = rng.integers(-1, a, (p, n))
    scores = rng.integers(0, 4, (p, n)).astype(np.float32) / 4  # many ties
    mask = rng.random((p, n)) < 0.8
    got = jax.jit(lambda *x: voting.weighted_vote(*x, num_answers=a))(answers, scores, mask)
    np.testing.assert_array_equal(got, naive_weighted_vote(answers, scores, mask, a))
    ones = np.ones_like(scores)
    np.testing.assert_array_equal(voting.majority_vote(answers, mask, num_answers=a),
                                  naive_weighted_vote(answers, ones, mask, a))
    totals, present = voting.answer_totals(answers, scores, mask, num_answers=a)
    for i in range(p):
        for v in range(a):
            sel = mask[i] & (answers[i] == v)
            assert present[i, v] == sel.any()
            np.testing.assert_allclose(totals[i, v], scores[i][sel].sum(), rtol=1e-6)


def test_vmap_over_a_leading_axis_equals_the_batched_call():
    rng = np.random.default_rng(3)
    answers = rng.integers(0, 5, (4, 7, 8))
    scores = rng.random((4, 7, 8)).astype(np.float32)
    per = jax.vmap(lambda x, s: voting.weighted_vote(x, s, num_answers=5))(answers, scores)
    np.testing.assert_array_equal(per, voting.weighted_vote(answers, scores, num_answers=5))
    np.testing.assert_array_equal(jax.vmap(voting.best_of_n_answer)(answers, scores),
                                  voting.best_of_n_answer(answers, scores))


def test_aggregate_step_scores():
    p = jnp.array([[0.9, 0.5, 0.8, 0.1], [0.7, 0.6, 0.2, 0.3], [0.3, 0.3, 0.3, 0.3]])
    m = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    agg = jax.jit(voting.aggregate_step_scores, static_argnums=2)
    np.testing.assert_allclose(agg(p, m, "min"), [0.5, 0.6, 1.0])
    np.testing.assert_allclose(agg(p, m, "product"), [0.9 * 0.5 * 0.8, 0.7 * 0.6, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose(agg(p, m, "last"), [0.8, 0.6, 0.0])
    np.testing.assert_allclose(agg(p, m, "mean"), [2.2 / 3, 0.65, 0.0], rtol=1e-6)
    # masked == sliced, and any leading axes
    for method in voting.AGGREGATIONS:
        np.testing.assert_allclose(agg(p[:1, :3], jnp.ones((1, 3)), method),
                                   agg(p[:1], m[:1], method), rtol=1e-6)
    assert agg(jnp.ones((2, 3, 5)), jnp.ones((2, 3, 5)), "min").shape == (2, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        voting.aggregate_step_scores(p, m, "max")


def test_coverage_is_the_ceiling_of_every_rule():
    rng = np.random.default_rng(4)
    answers = rng.integers(0, 4, (200, 5))
    gold = rng.integers(0, 4, (200, 1))
    correct = answers == gold
    cover = np.asarray(voting.coverage(correct))
    np.testing.assert_array_equal(cover, correct.any(1))
    for chosen in (voting.majority_vote(answers, num_answers=4),
                   voting.weighted_vote(answers, rng.random((200, 5)), num_answers=4)):
        right = np.asarray(chosen) == gold[:, 0]
        assert (right <= cover.astype(bool)).all()
    mask = np.zeros_like(correct)
    assert voting.coverage(correct, mask).sum() == 0
