"""alignax.eval.tilted against brute-force enumeration (sequences, N-tuples of draws) and
closed forms (Bernoulli rate function, the best-of-N KL bound)."""

import itertools
import math

import numpy as np
import pytest

from alignax.eval import tilted


def _law(seed, k=4, levels=None):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k))
    r = rng.normal(size=k) if levels is None else rng.integers(0, levels, k) / (levels - 1)
    return r, p


def test_tilt_is_the_normalised_exponential_and_its_kl():
    r, p = _law(0)
    phi = tilted.tilt(r, p, 0.7)
    want = p * np.exp(0.7 * r)
    np.testing.assert_allclose(phi, want / want.sum(), rtol=1e-12)
    kl = float(np.sum(phi * np.log(phi / p)))
    assert tilted.tilted_kl(r, p, 0.7) == pytest.approx(kl, rel=1e-10)
    assert tilted.kl(phi, p) == pytest.approx(kl, rel=1e-12)
    np.testing.assert_allclose(tilted.tilt(r, p, 0.0), p, rtol=1e-12)


def test_infinite_tilt_is_p_on_the_maximum_and_max_kl():
    r = np.array([0.0, 1.0, 1.0, 0.5])
    p = np.array([0.4, 0.1, 0.3, 0.2])
    np.testing.assert_allclose(tilted.tilt(r, p, math.inf), [0, 0.25, 0.75, 0])
    assert tilted.max_kl(r, p) == pytest.approx(-math.log(0.4))
    assert tilted.tilted_kl(r, p, math.inf) == pytest.approx(-math.log(0.4))


@pytest.mark.parametrize("fraction", [1e-3, 0.3, 0.95])
def test_lambda_for_kl_hits_the_budget(fraction):
    r, p = _law(1)
    delta = fraction * tilted.max_kl(r, p)
    lam = tilted.lambda_for_kl(r, p, delta)
    assert 0 < lam < math.inf
    assert tilted.tilted_kl(r, p, lam) == pytest.approx(delta, rel=1e-8)


def test_lambda_for_kl_edges():
    r, p = _law(2)
    assert tilted.lambda_for_kl(r, p, 0.0) == 0.0
    assert tilted.lambda_for_kl(np.ones(4), p, 0.3) == 0.0  # constant reward
    assert tilted.lambda_for_kl(r, p, tilted.max_kl(r, p) + 0.1) == math.inf


def test_tilt_is_optimal_at_its_kl():
    """No law over the items with KL <= Delta has a higher mean reward (random laws)."""
    r, p = _law(3)
    delta = 0.2
    best = np.dot(tilted.tilt(r, p, tilted.lambda_for_kl(r, p, delta)), r)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        q = rng.dirichlet(np.ones(4) * 0.5)
        if tilted.kl(q, p) <= delta:
            assert np.dot(q, r) <= best + 1e-12


def _brute_bon(r, p, n):
    """Best-of-n over the items by enumerating every n-tuple of draws; ties split uniformly
    among the tied draws (any rule that ignores the item's identity gives the same law)."""
    k = len(p)
    items = np.zeros(k)
    for tup in itertools.product(range(k), repeat=n):
        prob = np.prod(p[list(tup)])
        top = max(r[i] for i in tup)
        winners = [i for i in tup if r[i] == top]
        for i in winners:
            items[i] += prob / len(winners)
    return items


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_bon_laws_match_enumeration_with_ties(n):
    r = np.array([0.2, 0.7, 0.7, 0.1, 0.2])
    p = np.array([0.1, 0.15, 0.3, 0.25, 0.2])
    items = _brute_bon(r, p, n)
    np.testing.assert_allclose(tilted.bon_item_law(r, p, n), items, rtol=1e-10, atol=1e-15)
    support, q = tilted.bon_law(r, p, n)
    np.testing.assert_allclose(support, [0.1, 0.2, 0.7])
    np.testing.assert_allclose(q, [items[3], items[0] + items[4], items[1] + items[2]],
                               rtol=1e-10)
    assert tilted.bon_expected_reward(r, p, n) == pytest.approx(np.dot(items, r), rel=1e-10)
    assert tilted.bon_kl(r, p, n) == pytest.approx(tilted.kl(items, p), rel=1e-9, abs=1e-14)


def test_bon_of_one_is_the_reference():
    r, p = _law(4, levels=5)
    np.testing.assert_allclose(tilted.bon_item_law(r, p, 1), p, rtol=1e-12)
    assert tilted.bon_kl(r, p, 1) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [2, 4, 16, 1000, 1e8])
def test_bon_kl_is_below_the_bound(seed, n):
    r, p = _law(seed, k=6, levels=4 if seed % 2 else None)
    assert tilted.bon_kl(r, p, n) <= tilted.bon_kl_bound(n) + 1e-12
    _, q = tilted.bon_law(r, p, n)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)


def test_bon_kl_bound_is_tight_for_a_nearly_continuous_law():
    r = np.arange(100_000, dtype=np.float64)
    p = np.full(r.size, 1.0 / r.size)
    for n in (2, 8, 32):
        assert tilted.bon_kl(r, p, n) == pytest.approx(tilted.bon_kl_bound(n), abs=1e-3)
    assert tilted.bon_kl_bound(4) == pytest.approx(math.log(4) - 0.75)


def test_bon_kl_to_tilt_matches_the_item_laws():
    r, p = _law(5, levels=4)
    lam, n = 0.9, 6
    want = tilted.kl(tilted.bon_item_law(r, p, n), tilted.tilt(r, p, lam))
    assert tilted.bon_kl_to_tilt(r, p, n, lam) == pytest.approx(want, rel=1e-9)


def test_sum_distribution_matches_sequence_enumeration():
    r = np.array([0.25, 0.0, 0.75])
    p = np.array([0.5, 0.3, 0.2])
    n = 5
    support, probs = tilted.sum_distribution(r, p, n, 0.25)
    want = {}
    for seq in itertools.product(range(3), repeat=n):
        key = round(float(sum(r[list(seq)])), 9)
        want[key] = want.get(key, 0.0) + float(np.prod(p[list(seq)]))
    got = {round(float(s), 9): float(q) for s, q in zip(support, probs) if q > 0}
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    np.testing.assert_allclose(support, 0.25 * np.arange(support.size))


def test_sequence_tilt_is_the_product_of_token_tilts():
    """On sequences of a memoryless p with a linear reward, the tilt of R's law is that of the
    enumerated sequences, and its KL is n times the token tilt's."""
    r = np.array([0.0, 0.5, 1.0])
    p = np.array([0.6, 0.3, 0.1])
    n, lam = 4, 1.3
    support, probs = tilted.sum_distribution(r, p, n, 0.5)
    phi_sum = tilted.tilt(support, probs, lam)
    token = tilted.tilt(r, p, lam)
    by_level = np.zeros(support.size)
    for seq in itertools.product(range(3), repeat=n):
        by_level[int(round(sum(r[list(seq)]) / 0.5))] += np.prod(token[list(seq)])
    np.testing.assert_allclose(phi_sum, by_level, rtol=1e-10, atol=1e-16)
    assert tilted.tilted_kl(support, probs, lam) == pytest.approx(
        n * tilted.tilted_kl(r, p, lam), rel=1e-9)
    assert tilted.lambda_for_kl(support, probs, n * 0.05) == pytest.approx(
        tilted.lambda_for_kl(r, p, 0.05), rel=1e-7)


def test_sum_distribution_rejects_off_grid_rewards():
    with pytest.raises(ValueError, match="grid"):
        tilted.sum_distribution([0.0, 0.3], [0.5, 0.5], 3, 0.25)


def test_law_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        tilted.tilt([0.0, 1.0], [0.5, 0.6], 1.0)
    with pytest.raises(ValueError, match="N >= 1"):
        tilted.bon_law([0.0, 1.0], [0.5, 0.5], 0.5)


def test_rate_function_bernoulli_closed_form():
    q = 0.3
    r, p = np.array([0.0, 1.0]), np.array([1 - q, q])
    xs = np.array([0.05, 0.3, 0.5, 0.9])

    def bern(x, q):
        return x * np.log(x / q) + (1 - x) * np.log((1 - x) / (1 - q))

    np.testing.assert_allclose(tilted.rate_function(r, p, xs), bern(xs, q), rtol=1e-8,
                               atol=1e-12)
    lam = 0.8
    q_lam = tilted.tilt(r, p, lam)[1]
    np.testing.assert_allclose(tilted.rate_function(r, p, xs, lam=lam), bern(xs, q_lam),
                               rtol=1e-8, atol=1e-12)
    ends = tilted.rate_function(r, p, np.array([0.0, 1.0, 1.5]))
    np.testing.assert_allclose(ends[:2], [-np.log(1 - q), -np.log(q)])
    assert ends[2] == math.inf


def test_rate_function_is_cramers_limit():
    """-(1/n) log P(R >= n x) -> I(x) (Cramer); exact tail at n = 2000 within O(log n / n)."""
    r = np.array([0.0, 0.5, 1.0])
    p = np.array([0.5, 0.3, 0.2])
    n, x = 2000, 0.6
    support, probs = tilted.sum_distribution(r, p, n, 0.5)
    tail = probs[support >= n * x - 1e-9].sum()
    assert -np.log(tail) / n == pytest.approx(float(tilted.rate_function(r, p, x)), abs=5e-3)


def test_ldp_reward_rate_is_where_the_rate_equals_delta():
    r, p = _law(6, levels=6)
    delta = 0.1
    x_star = tilted.ldp_reward_rate(r, p, delta)
    assert x_star > np.dot(p, r)
    assert float(tilted.rate_function(r, p, x_star)) == pytest.approx(delta, rel=1e-6)
    assert tilted.ldp_reward_rate(r, p, 10.0) == pytest.approx(r.max())


def test_log_mgf_and_empirical_weights():
    r, p = _law(7)
    thetas = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(tilted.log_mgf(r, p, thetas),
                               np.log([np.dot(p, np.exp(t * r)) for t in thetas]), rtol=1e-12,
                               atol=1e-15)
    samples = np.array([[0.1, 0.4, 0.4, -0.2]])
    w = tilted.empirical_tilt_weights(samples, 1.5)
    np.testing.assert_allclose(w[0], tilted.tilt(samples[0], np.full(4, 0.25), 1.5),
                               rtol=1e-12)
    np.testing.assert_allclose(tilted.empirical_tilt_weights(samples, math.inf)[0],
                               [0, 0.5, 0.5, 0])
