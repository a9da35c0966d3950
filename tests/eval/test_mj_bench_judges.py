"""MJ-Bench judge harness: tie policies, per-category accuracy, score scales, GES and NDS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.eval.judges import (discretize_scores, gini, gini_equality_score, judge_accuracy,
                                 normalized_dispersion_score)


def _naive_gini(x):
    x = np.asarray(x, np.float64)
    n = len(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * x.mean())


def test_tie_policies_by_hand():
    # category 0: win, tie, loss; category 1: win, win; category 2: only a tie
    c = jnp.array([2.0, 1.0, 0.0, 3.0, 5.0, 4.0])
    r = jnp.array([1.0, 1.0, 1.0, 0.0, 4.0, 4.0])
    cats = jnp.array([0, 0, 0, 1, 1, 2])
    f = jax.jit(judge_accuracy, static_argnames=("num_categories", "tie_policy"))
    wrong = f(c, r, cats, num_categories=4, tie_policy="wrong")
    half = f(c, r, cats, num_categories=4, tie_policy="half")
    excl = f(c, r, cats, num_categories=4, tie_policy="exclude")
    np.testing.assert_allclose(wrong["accuracy"], [1 / 3, 1.0, 0.0, np.nan])
    np.testing.assert_allclose(half["accuracy"], [0.5, 1.0, 0.5, np.nan])
    np.testing.assert_allclose(excl["accuracy"], [0.5, 1.0, np.nan, np.nan])
    np.testing.assert_allclose(half["tie_rate"], [1 / 3, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(half["count"], [3, 2, 1, 0])


def test_matches_naive_reference_and_policy_order():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 5, 200).astype(np.float32)  # coarse scores: many ties
    r = rng.integers(0, 5, 200).astype(np.float32)
    cats = rng.integers(0, 3, 200)
    out = {p: judge_accuracy(c, r, cats, num_categories=3, tie_policy=p)
           for p in ("wrong", "half", "exclude")}
    for k in range(3):
        m = cats == k
        win, tie = np.mean(c[m] > r[m]), np.mean(c[m] == r[m])
        np.testing.assert_allclose(out["wrong"]["accuracy"][k], win, rtol=1e-6)
        np.testing.assert_allclose(out["half"]["accuracy"][k], win + tie / 2, rtol=1e-6)
        np.testing.assert_allclose(out["exclude"]["accuracy"][k], win / (1 - tie), rtol=1e-6)
        assert out["wrong"]["accuracy"][k] <= out["half"]["accuracy"][k]


def test_swap_symmetry():
    rng = np.random.default_rng(1)
    c = np.round(rng.normal(size=100), 1).astype(np.float32)
    r = np.round(rng.normal(size=100), 1).astype(np.float32)
    a = judge_accuracy(c, r, tie_policy="half")["accuracy"]
    b = judge_accuracy(r, c, tie_policy="half")["accuracy"]
    np.testing.assert_allclose(a + b, 1.0, rtol=1e-6)
    a = judge_accuracy(c, r, tie_policy="exclude")["accuracy"]
    b = judge_accuracy(r, c, tie_policy="exclude")["accuracy"]
    np.testing.assert_allclose(a + b, 1.0, rtol=1e-6)


def test_accuracy_errors():
    with pytest.raises(ValueError, match="tie_policy"):
        judge_accuracy(jnp.ones(3), jnp.ones(3), tie_policy="drop")
    # shape and dtype checks are chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"different shapes: \[\(3,\), \(4,\)\]\. "
                                             r"\[chosen_scores, rejected_scores\]"):
        judge_accuracy(jnp.ones(3), jnp.ones(4))
    with pytest.raises(AssertionError, match=r"rank 2 .* but expected 1\. \[chosen_scores\]"):
        judge_accuracy(jnp.ones((3, 2)), jnp.ones((3, 2)))
    with pytest.raises(AssertionError, match=r"type float32 but expected .*int.*\[categories\]"):
        judge_accuracy(jnp.ones(3), jnp.ones(3), jnp.ones(3))


def test_discretize_scales():
    u = jnp.array([0.0, 0.04, 0.06, 0.5, 0.99, 1.3, -0.2])
    numeric = jax.jit(discretize_scores, static_argnames="levels")(u, levels=11)
    np.testing.assert_allclose(numeric, [0, 0, 1, 5, 10, 10, 0])
    likert = discretize_scores(u, levels=5, low=1.0)
    np.testing.assert_allclose(likert, [1, 1, 1, 3, 5, 5, 1])
    np.testing.assert_allclose(discretize_scores(jnp.array([0.5]), levels=3, low=0.0, high=1.0),
                               [0.5])
    # a coarser scale never separates two scores the finer one ties
    v = jnp.asarray(np.random.default_rng(2).uniform(size=500), jnp.float32)
    w = jnp.asarray(np.random.default_rng(3).uniform(size=500), jnp.float32)
    tie10 = discretize_scores(v, levels=11) == discretize_scores(w, levels=11)
    tie5 = discretize_scores(v, levels=5) == discretize_scores(w, levels=5)
    assert tie5.mean() > tie10.mean()
    with pytest.raises(ValueError, match="levels"):
        discretize_scores(u, levels=1)
    with pytest.raises(AssertionError, match=r"type int32 but expected .*float.*\[unit_scores\]"):
        discretize_scores(jnp.array([1, 2]), levels=5)


def test_gini_ges_nds_golden_and_reference():
    x = jnp.array([[2.0, 4.0, 6.0, 8.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 4.0]])
    g = jax.jit(gini)(x)
    np.testing.assert_allclose(g, [0.25, 0.0, 0.75], rtol=1e-6)
    np.testing.assert_allclose(gini_equality_score(x), [0.75, 1.0, 0.25], rtol=1e-6)
    nds = jax.jit(normalized_dispersion_score)(x)
    np.testing.assert_allclose(nds, [1 - np.sqrt(5.0) / 5.0, 1.0, 1 - np.sqrt(3.0)],
                               rtol=1e-6)
    rng = np.random.default_rng(4)
    y = rng.uniform(0.5, 10, size=(6, 5))
    np.testing.assert_allclose(gini(y), [_naive_gini(row) for row in y], rtol=1e-5)
    np.testing.assert_allclose(normalized_dispersion_score(y), 1 - y.std(-1) / y.mean(-1),
                               rtol=1e-5)
    np.testing.assert_allclose(gini(jnp.zeros((2, 3))), [0.0, 0.0])


def test_bias_metrics_invariances():
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.uniform(1, 9, size=(4, 6)), jnp.float32)
    perm = jnp.asarray(rng.permutation(6))
    # symmetric in the variants, invariant to the scale of the scores
    np.testing.assert_allclose(gini(y[:, perm]), gini(y), rtol=1e-6)
    np.testing.assert_allclose(gini(3.0 * y), gini(y), rtol=1e-5)
    np.testing.assert_allclose(normalized_dispersion_score(y[:, perm]),
                               normalized_dispersion_score(y), rtol=1e-6)
    np.testing.assert_allclose(normalized_dispersion_score(3.0 * y),
                               normalized_dispersion_score(y), rtol=1e-5)


def test_bias_metric_gradients():
    y = jnp.array([[1.0, 2.5, 4.0], [3.0, 7.0, 5.5]])
    check_grads(gini_equality_score, (y,), order=1, modes=("rev",), eps=1e-3, atol=1e-2,
                rtol=1e-2)
    check_grads(normalized_dispersion_score, (y,), order=1, modes=("rev",), eps=1e-3, atol=1e-2,
                rtol=1e-2)
    extreme = jnp.array([[1e-6, 1e6, 3.0], [1e6, 1e6, 1e6]])
    for fn in (gini_equality_score, normalized_dispersion_score):
        g = jax.grad(lambda s, fn=fn: fn(s).sum())(extreme)
        assert np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(ValueError, match="rank >= 1"):
        gini(jnp.float32(1.0))
    with pytest.raises(ValueError, match="rank >= 1"):
        normalized_dispersion_score(jnp.float32(1.0))
