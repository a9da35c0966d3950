"""alignax.eval.overoptimization: the d (alpha - b log d) fit, humps, exact win rate and
off-support mass."""

import itertools

import jax
import numpy as np
import pytest

from alignax.eval.overoptimization import (exact_win_rate, fit_overoptimization, hump,
                                           unseen_mass)


def test_fit_recovers_the_coefficients_of_an_exact_curve():
    d = np.linspace(0.0, 3.0, 40)
    r = d * (0.8 - 0.5 * np.log(np.where(d > 0, d, 1.0)))
    fit = fit_overoptimization(d, r)
    assert fit.alpha == pytest.approx(0.8, abs=1e-9) and fit.b == pytest.approx(0.5, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.peak_d == pytest.approx(np.exp(0.8 / 0.5 - 1.0))
    assert fit.peak_r == pytest.approx(fit.predict([fit.peak_d])[0])
    # the peak is the curve's maximum
    grid = np.linspace(0.01, 5, 2000)
    assert fit.predict(grid).max() <= fit.peak_r + 1e-9
    np.testing.assert_allclose(fit.predict(d), r, atol=1e-12)


def test_fit_r2_is_low_for_a_curve_of_another_shape_and_no_peak_when_b_negative():
    d = np.linspace(0.1, 3.0, 30)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(30)
    fit = fit_overoptimization(d, noise)
    assert fit.r2 < 0.5
    # a convex rising curve has b < 0: no peak
    up = fit_overoptimization(d, d ** 2)
    assert up.b < 0 and up.peak_d == np.inf and np.isnan(up.peak_r)
    # least squares: the residual is orthogonal to both features
    x = np.stack([d, -d * np.log(d)], 1)
    res = noise - x @ np.array([fit.alpha, fit.b])
    np.testing.assert_allclose(x.T @ res, 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="two points"):
        fit_overoptimization([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        fit_overoptimization([0.0, 1.0, 2.0], [0.0, 1.0])


def test_hump_drop_is_the_fraction_of_the_peak_gain_lost():
    h = hump([0.5, 0.6, 0.8, 0.7, 0.65])
    assert h.peak == 0.8 and h.peak_index == 2 and h.final == 0.65 and h.baseline == 0.5
    assert h.drop == pytest.approx(0.15 / 0.3)
    assert h.is_hump(0.1) and not h.is_hump(0.6)
    assert hump([0.5, 0.6, 0.7]).drop == 0.0  # ends at its peak
    assert np.isnan(hump([0.5, 0.4, 0.3]).drop)  # never gained
    assert not hump([0.5, 0.4, 0.3]).is_hump()
    assert hump([1.0, 2.0, 0.0], baseline=0.0).drop == pytest.approx(1.0)


def test_exact_win_rate_matches_enumeration():
    rng = np.random.default_rng(1)
    n = 7
    gold = np.round(rng.standard_normal(n), 1)
    gold[3] = gold[5]  # a tie
    p, q = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
    brute = sum(p[i] * q[j] * (1.0 if gold[i] > gold[j] else 0.5 if gold[i] == gold[j] else 0.0)
                for i, j in itertools.product(range(n), repeat=2))
    assert float(exact_win_rate(p, q, gold)) == pytest.approx(brute, abs=1e-6)
    assert float(exact_win_rate(q, q, gold)) == pytest.approx(0.5, abs=1e-6)
    # batched (vmappable) over leading axes
    batched = jax.vmap(exact_win_rate)(np.stack([p, q]), np.stack([q, q]), np.stack([gold] * 2))
    np.testing.assert_allclose(batched, [brute, 0.5], atol=1e-6)


def test_unseen_mass():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    seen = np.array([True, False, True, False])
    assert float(unseen_mass(p, seen)) == pytest.approx(0.6)
    assert float(unseen_mass(p, np.ones(4, bool))) == 0.0


def test_first_crossing_interpolates_the_first_reach():
    from alignax.eval.overoptimization import first_crossing

    kl = [0.0, 1.0, 2.0, 3.0, 4.0]
    gold = [0.0, 0.5, 1.5, 1.0, 2.0]
    assert first_crossing(kl, gold, 1.0) == pytest.approx(1.5)
    assert first_crossing(kl, gold, 1.5) == pytest.approx(2.0)  # first, not the later 2.0
    assert first_crossing(kl, gold, -1.0) == 0.0
    assert first_crossing(kl, gold, 2.5) == np.inf
    with pytest.raises(ValueError, match="equal length"):
        first_crossing([0.0], [0.0, 1.0], 0.5)


def test_importance_win_rate_is_unbiased_for_the_exact_win_rate():
    from alignax.eval.overoptimization import importance_win_rate

    rng = np.random.default_rng(2)
    n = 6
    gold = rng.standard_normal(n)
    ref = rng.dirichlet(np.ones(n) * 3)
    pol = rng.dirichlet(np.ones(n) * 3)
    exact = float(exact_win_rate(pol, ref, gold))
    m = 200_000
    a, b = rng.choice(n, m, p=ref), rng.choice(n, m, p=ref)
    a_wins = rng.random(m) < 1 / (1 + np.exp(-(gold[a] - gold[b]) / 1e-3))  # near-deterministic
    lp, lr = np.log(pol), np.log(ref)
    est = importance_win_rate(lp[a], lp[b], lr[a], lr[b], a_wins, self_normalized=False)
    snis = importance_win_rate(lp[a], lp[b], lr[a], lr[b], a_wins)
    # ties (a == b) get label "b wins"; the exact rate counts them 1/2 either way on average
    assert float(est) == pytest.approx(exact, abs=0.01)
    assert float(snis) == pytest.approx(exact, abs=0.01)
    # at pi = pi_ref every pair counts once for its winner: exactly 1/2
    same = importance_win_rate(lr[a], lr[b], lr[a], lr[b], a_wins)
    assert float(same) == pytest.approx(0.5, abs=1e-6)
