"""Matched-KL-budget frontiers, exact win rates against a reference, implicit-reward accuracy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import frontier


def test_ref_win_table_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(3, 12)).astype(np.float32)  # many ties
    logits = rng.standard_normal((3, 12))
    ref_logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    table = np.asarray(frontier.ref_win_table(values, ref_logp))
    p = np.exp(ref_logp)
    for r, y in itertools.product(range(3), range(12)):
        want = (p[r] * ((values[r, y] > values[r]) + 0.5 * (values[r, y] == values[r]))).sum()
        assert table[r, y] == pytest.approx(want, abs=1e-6)
    # the reference against itself wins exactly 1/2, a point mass on the best beats it
    np.testing.assert_allclose((p * table).sum(-1), 0.5, atol=1e-6)
    best = values.argmax(-1)
    assert np.all(table[np.arange(3), best] >= (p * table).sum(-1))


def test_ref_win_table_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        frontier.ref_win_table(jnp.zeros((2, 4)), jnp.zeros((2, 5)))


def test_envelope_and_area():
    kl = [0.0, 0.5, 1.0, 2.0, np.nan]
    score = [0.5, 0.7, 0.6, 0.9, 1.0]
    np.testing.assert_allclose(frontier.envelope(kl, score, [-1.0, 0.0, 0.7, 1.5, 3.0]),
                               [np.nan, 0.5, 0.7, 0.7, 0.9])
    # budgets 0.5, 1, 1.5, 2 -> 0.7, 0.7, 0.7, 0.9
    assert frontier.frontier_area(kl, score, 2.0, num_budgets=4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        frontier.frontier_area(kl, score, 0.0)


def test_interpolate_at_kl():
    kl, score = [0.0, 1.0, 3.0], [0.5, 0.6, 1.0]
    assert frontier.interpolate_at_kl(kl, score, 2.0) == pytest.approx(0.8)
    assert frontier.interpolate_at_kl(kl, score, 1.0) == pytest.approx(0.6)
    assert frontier.interpolate_at_kl(kl, score, 0.0) == pytest.approx(0.5)
    assert np.isnan(frontier.interpolate_at_kl(kl, score, 3.5))


def test_budget_choice_picks_best_feasible_and_records():
    names = ["ref", "a", "b", "c"]
    name, rec = frontier.budget_choice(names, [0.0, 0.4, 0.9, 1.5], [0.5, 0.7, 0.8, 0.95], 1.0)
    assert name == "b"
    assert rec["feasible"] == 3 and rec["budget"] == 1.0 and rec["chosen"] == "b"
    assert set(rec["scores"]) == {"ref", "a", "b"}  # infeasible ones are not candidates
    name, rec = frontier.budget_choice(names, [0.2, 0.4, 0.9, 1.5], [0.5, 0.7, 0.8, 0.95], 0.1)
    assert name is None and rec["feasible"] == 0


def test_implicit_reward_accuracy():
    pa = jnp.array([-1.0, -2.0, -1.0, -3.0])
    ra = jnp.array([-1.5, -1.0, -1.0, -3.0])  # h_a = 0.5, -1, 0, 0
    pb = jnp.array([-1.0, -1.0, -2.0, -1.0])
    rb = jnp.array([-1.0, -1.0, -1.0, -1.0])  # h_b = 0, 0, -1, 0
    label = jnp.array([True, True, False, True])
    # pair 0: h_a > h_b, a better: right; 1: h_a < h_b, a better: wrong;
    # 2: h_a > h_b but b better: wrong; 3: tie: 1/2
    assert float(frontier.implicit_reward_accuracy(pa, ra, pb, rb, label)) == pytest.approx(
        1.5 / 4)
    # the reference itself scores exactly 1/2
    assert float(frontier.implicit_reward_accuracy(ra, ra, rb, rb, label)) == 0.5
    assert jax.jit(frontier.implicit_reward_accuracy)(pa, ra, pb, rb, label).shape == ()
