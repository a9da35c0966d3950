"""Exact win rates over an enumerated response space."""

import jax.numpy as jnp
import numpy as np

from alignax.eval.exact import win_probabilities, win_rate_vs_reference
from alignax.eval.metrics import win_rate


def test_win_probabilities_count_ties_half_and_match_sampling():
    gold = jnp.array([0.0, 1.0, 1.0, 3.0])
    ref = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    # y0 beats nothing, ties itself (0.4/2); y1 beats y0, ties y1 and y2 (0.5/2); y3 beats all
    np.testing.assert_allclose(win_probabilities(gold, ref), [0.2, 0.65, 0.65, 0.95], rtol=1e-6)
    # the policy = the reference: win rate 1/2 exactly
    np.testing.assert_allclose(win_rate_vs_reference(ref, gold, ref), 0.5, rtol=1e-6)
    pi = jnp.log(jnp.array([0.1, 0.1, 0.2, 0.6]))
    exact = float(win_rate_vs_reference(pi, gold, ref))
    rng = np.random.default_rng(0)
    a = rng.choice(4, size=200_000, p=np.exp(np.asarray(pi)))
    b = rng.choice(4, size=200_000, p=np.exp(np.asarray(ref)))
    np.testing.assert_allclose(float(win_rate(gold[a], gold[b])), exact, atol=5e-3)


def test_batched_over_prompts():
    rng = np.random.default_rng(1)
    gold = jnp.asarray(rng.normal(size=(3, 5)))
    ref = jnp.asarray(np.log(rng.dirichlet(np.ones(5), size=3)))
    pi = jnp.asarray(np.log(rng.dirichlet(np.ones(5), size=3)))
    got = win_rate_vs_reference(pi, gold, ref)
    assert got.shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(got[i], win_rate_vs_reference(pi[i], gold[i], ref[i]),
                                   rtol=1e-6)
