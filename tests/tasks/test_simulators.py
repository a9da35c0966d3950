"""Preference simulators: each label distribution matches its documented formula.

Random outputs are checked with fixed seeds against the exact expected value, with a tolerance of
4 standard errors of the (Bernoulli / multinomial) estimate.
"""

import itertools
import math

import numpy as np
import pytest

from alignax.tasks import simulators as sim

Z = 4.0  # tolerance in standard errors


def _phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _assert_bernoulli_bins(labels, p, key, num_bins=10):
    """In each quantile bin of `key`, mean(labels) is within Z standard errors of mean(p)."""
    edges = np.quantile(key, np.linspace(0, 1, num_bins + 1))
    bins = np.clip(np.searchsorted(edges, key, side="right") - 1, 0, num_bins - 1)
    for b in range(num_bins):
        m = bins == b
        expected = p[m].mean()
        se = np.sqrt(np.sum(p[m] * (1 - p[m]))) / m.sum()
        assert abs(labels[m].mean() - expected) < Z * se + 1e-12, (b, labels[m].mean(), expected)


def _rewards(n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal(n), scale * rng.standard_normal(n)


def test_probabilities_match_closed_forms():
    np.testing.assert_allclose(sim.bt_probability([1.0], [0.0]), [1 / (1 + math.exp(-1))])
    np.testing.assert_allclose(sim.bt_probability([1.0], [0.0], 0.5), [1 / (1 + math.exp(-2))])
    np.testing.assert_allclose(sim.thurstone_probability([1.0], [0.0], 1.0), [_phi(1 / 2**0.5)])
    np.testing.assert_allclose(sim.thurstone_probability([0.0], [1.0], 2.0), [_phi(-1 / 8**0.5)])
    np.testing.assert_array_equal(sim.bt_probability([1, 0, 0], [0, 1, 0], 0.0), [1, 0, 0.5])
    np.testing.assert_array_equal(sim.thurstone_probability([1, 0, 0], [0, 1, 0], 0.0), [1, 0, 0.5])
    # Stable at large margins.
    assert np.all(np.isfinite(sim.bt_probability([1e4, -1e4], [0.0, 0.0], 1e-3)))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_bradley_terry_rate_in_bins_of_the_margin(temperature):
    r_a, r_b = _rewards(200_000, scale=1.5)
    labels = sim.bradley_terry(r_a, r_b, rng=np.random.default_rng(1), temperature=temperature)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1}
    p = 1 / (1 + np.exp(-(r_a - r_b) / temperature))
    _assert_bernoulli_bins(labels, p, r_a - r_b)


def test_bradley_terry_temperature_zero_is_deterministic_with_random_ties():
    r_a, r_b = _rewards(10_000)
    for seed in range(3):
        labels = sim.bradley_terry(r_a, r_b, rng=seed, temperature=0.0)
        np.testing.assert_array_equal(labels, (r_a > r_b).astype(np.int32))
    n = 20_000
    tied = sim.bradley_terry(np.ones(n), np.ones(n), rng=0, temperature=0.0)
    assert abs(tied.mean() - 0.5) < Z * 0.5 / np.sqrt(n)


def test_seeds_and_generators_are_reproducible():
    r_a, r_b = _rewards(1000)
    a = sim.bradley_terry(r_a, r_b, rng=7)
    b = sim.bradley_terry(r_a, r_b, rng=np.random.default_rng(7))
    c = sim.bradley_terry(r_a, r_b, rng=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(TypeError):
        sim.bradley_terry(r_a, r_b, rng=None)
    with pytest.raises(ValueError):
        sim.bradley_terry(r_a, r_b[:-1], rng=0)


@pytest.mark.parametrize("noise_std", [0.5, 1.5])
def test_thurstone_matches_the_normal_cdf(noise_std):
    r_a, r_b = _rewards(200_000, seed=2)
    labels = sim.thurstone(r_a, r_b, rng=3, noise_std=noise_std)
    d = r_a - r_b
    p = np.array([_phi(x / (math.sqrt(2) * noise_std)) for x in d[:1000]])
    np.testing.assert_allclose(sim.thurstone_probability(r_a[:1000], r_b[:1000], noise_std), p)
    _assert_bernoulli_bins(labels, sim.thurstone_probability(r_a, r_b, noise_std), d)


def test_thurstone_equals_comparing_noisy_utilities():
    # P(r_a + s eps_a > r_b + s eps_b) by Monte Carlo, against the closed form.
    rng = np.random.default_rng(4)
    n, s = 400_000, 0.7
    for diff in [-1.0, 0.0, 0.5]:
        wins = (diff + s * rng.standard_normal(n) > s * rng.standard_normal(n)).mean()
        p = sim.thurstone_probability([diff], [0.0], s)[0]
        assert abs(wins - p) < Z * np.sqrt(p * (1 - p) / n)


def test_flip_labels_rate_and_mask():
    rng = np.random.default_rng(5)
    n, rate = 100_000, 0.2
    labels = rng.integers(0, 2, n).astype(np.int32)
    noisy, flipped = sim.flip_labels(labels, rate=rate, rng=6)
    assert noisy.dtype == labels.dtype and flipped.dtype == bool
    assert abs(flipped.mean() - rate) < Z * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_array_equal(noisy != labels, flipped)
    np.testing.assert_array_equal(noisy[flipped], 1 - labels[flipped])
    assert not sim.flip_labels(labels, rate=0.0, rng=0)[1].any()
    assert sim.flip_labels(labels, rate=1.0, rng=0)[1].all()
    tie_labels = np.array([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_array_equal(sim.flip_labels(tie_labels, rate=1.0, rng=0)[0], [1, 0.5, 0])
    with pytest.raises(ValueError):
        sim.flip_labels(labels, rate=1.5, rng=0)


@pytest.mark.parametrize("flip_rate", [0.0, 0.15])
def test_annotator_votes_soft_labels_have_the_right_mean(flip_rate):
    n, m, t = 40_000, 7, 0.8
    r_a, r_b = _rewards(n, seed=8)
    votes = sim.annotator_votes(
        r_a, r_b, num_annotators=m, rng=9, temperature=t, flip_rate=flip_rate
    )
    assert votes.shape == (n, m) and votes.dtype == np.int32
    p = sim.bt_probability(r_a, r_b, t)
    q = (1 - flip_rate) * p + flip_rate * (1 - p)
    soft = sim.soft_labels(votes)
    # Var(soft) = q (1 - q) / M per example.
    se = np.sqrt(np.sum(q * (1 - q) / m)) / n
    assert abs(soft.mean() - q.mean()) < Z * se
    # Per bin of the margin as well (votes flattened: M Bernoulli(q) draws per example).
    _assert_bernoulli_bins(votes.ravel(), np.repeat(q, m), np.repeat(r_a - r_b, m))
    strength = sim.vote_strength(votes)
    assert strength.min() >= 0 and strength.max() <= 1
    np.testing.assert_allclose(strength, np.abs(2 * soft - 1))
    unanimous = (votes.sum(1) == 0) | (votes.sum(1) == m)
    np.testing.assert_array_equal(strength == 1, unanimous)


def test_majority_label_breaks_even_splits_at_random():
    votes = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(sim.majority_label(votes, rng=0), [1, 0, 1])
    n = 20_000
    even = np.tile([1, 0, 1, 0], (n, 1))
    assert sim.vote_strength(even).max() == 0
    labels = sim.majority_label(even, rng=1)
    assert abs(labels.mean() - 0.5) < Z * 0.5 / np.sqrt(n)


def test_mixture_group_frequencies_and_per_group_labels():
    k, n, t = 3, 120_000, 0.5
    weights = np.array([0.5, 0.3, 0.2])
    rng = np.random.default_rng(10)
    ra = rng.standard_normal((k, n))
    rb = rng.standard_normal((k, n))
    ra[1], rb[1] = -ra[0], -rb[0]  # group 1 has the opposite taste of group 0
    labels, groups = sim.mixture_preferences(ra, rb, weights=weights, rng=11, temperature=t)
    assert labels.shape == groups.shape == (n,)
    freq = np.bincount(groups, minlength=k) / n
    assert np.all(np.abs(freq - weights) < Z * np.sqrt(weights * (1 - weights) / n))
    p_all = sim.bt_probability(ra, rb, t)
    for g in range(k):
        m = groups == g
        _assert_bernoulli_bins(labels[m], p_all[g, m], ra[g, m] - rb[g, m], num_bins=5)
    # The groups disagree: group 0's labels follow group 0's reward, group 1's the opposite.
    agree0 = labels == (ra[0] > rb[0])
    assert agree0[groups == 0].mean() > 0.7 and agree0[groups == 1].mean() < 0.3
    # Population rate = the mixture probability.
    p_mix = sim.mixture_probability(ra, rb, weights=weights, temperature=t)
    np.testing.assert_allclose(p_mix, weights @ p_all)
    assert abs(labels.mean() - p_mix.mean()) < Z * np.sqrt(np.sum(p_mix * (1 - p_mix))) / n
    with pytest.raises(ValueError):
        sim.mixture_preferences(ra, rb, weights=[0.5, 0.5, 0.5], rng=0)


def _agreement(order_rank, cluster, beats):
    """Fraction of the cross-cluster edges i -> j (i beats j) with rank[i] < rank[j]."""
    i, j = np.nonzero(beats & (cluster[:, None] != cluster[None, :]))
    return np.mean(order_rank[..., i] < order_rank[..., j], axis=-1)


def test_cyclic_tournament_is_skew_symmetric_with_cycles():
    tour = sim.cyclic_preferences(30, rng=12, dominance=0.85, temperature=0.5)
    p = tour.matrix()
    assert p.shape == (30, 30)
    np.testing.assert_allclose(p + p.T, 1.0)
    np.testing.assert_allclose(np.diag(p), 0.5)
    c = tour.cluster
    assert np.bincount(c).tolist() == [10, 10, 10]
    # Rock-paper-scissors between clusters.
    for a, b in [(0, 1), (1, 2), (2, 0)]:
        np.testing.assert_allclose(p[np.ix_(c == a, c == b)], 0.85)
    # A 3-cycle whose every edge has P > 1/2 (trace of A^3 counts directed 3-cycles, x3).
    a = (p > 0.5).astype(np.int64)
    assert np.trace(a @ a @ a) > 0
    i, j, k = 0, 1, 2  # clusters 0, 1, 2
    assert p[i, j] > 0.5 and p[j, k] > 0.5 and p[k, i] > 0.5
    # Within a cluster: Bradley-Terry on the score.
    w = np.nonzero(c == 0)[0]
    np.testing.assert_allclose(
        p[np.ix_(w, w)], sim.bt_probability(tour.score[w][:, None], tour.score[w][None, :], 0.5)
    )


def test_no_ordering_explains_more_than_two_thirds_of_the_cross_cluster_edges():
    beats_small = sim.cyclic_preferences(6, rng=13).matrix() > 0.5
    cluster_small = np.arange(6) % 3
    perms = np.array(list(itertools.permutations(range(6))))  # every order of 6 items
    ranks = np.argsort(perms, axis=1)
    agree = _agreement(ranks, cluster_small, beats_small)
    assert agree.max() == pytest.approx(2 / 3)  # the bound is attained, never exceeded
    # Larger tournament: score orders, cluster-then-score orders and random orders.
    tour = sim.cyclic_preferences(30, rng=14)
    beats = tour.matrix() > 0.5
    rng = np.random.default_rng(15)
    scores = [tour.score, -tour.score, tour.cluster + 0.1 * tour.score]
    scores += [rng.standard_normal(30) for _ in range(2000)]
    ranks = np.argsort(np.argsort(-np.array(scores), axis=1), axis=1)
    assert _agreement(ranks, tour.cluster, beats).max() <= 2 / 3 + 1e-12


def test_cyclic_more_clusters_and_the_pair_sampler():
    tour = sim.cyclic_preferences(25, rng=16, num_clusters=5, dominance=0.8)
    p = tour.matrix()
    np.testing.assert_allclose(p + p.T, 1.0)
    c = tour.cluster
    # Each cluster beats exactly two of the other four.
    for a in range(5):
        wins = [b for b in range(5) if b != a and p[np.ix_(c == a, c == b)].min() > 0.5]
        assert sorted(wins) == sorted([(a + 1) % 5, (a + 2) % 5])
    n = 50_000
    pairs = sim.cyclic_preferences(12, rng=17).sample_pairs(n, rng=18)
    assert np.all(pairs["i"] != pairs["j"])
    _assert_bernoulli_bins(pairs["label"], pairs["prob"], pairs["prob"], num_bins=3)
    with pytest.raises(ValueError):
        sim.cyclic_preferences(10, rng=0, num_clusters=4)


def test_threshold_ties_appear_exactly_below_the_threshold():
    n, thr = 100_000, 0.3
    r_a, r_b = _rewards(n, seed=19)
    d = r_a - r_b
    labels = sim.ties(r_a, r_b, threshold=thr)
    assert labels.dtype == np.float32 and set(np.unique(labels)) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(labels == 0.5, np.abs(d) < thr)
    np.testing.assert_array_equal(labels[np.abs(d) >= thr], (d[np.abs(d) >= thr] > 0))
    # d ~ N(0, 2): P(tie) = 2 Phi(thr / sqrt 2) - 1.
    p_tie = 2 * _phi(thr / math.sqrt(2)) - 1
    assert abs((labels == 0.5).mean() - p_tie) < Z * np.sqrt(p_tie * (1 - p_tie) / n)


def test_davidson_probabilities_and_samples():
    r_a, r_b = np.array([0.3, -1.0, 2.0, 0.0]), np.array([0.0, 0.5, 2.0, 0.0])
    nu, t = 1.5, 0.7
    pa, pt, pb = sim.davidson_probabilities(r_a, r_b, tie_strength=nu, temperature=t)
    ea, eb = np.exp(r_a / t), np.exp(r_b / t)
    z = ea + eb + nu * np.sqrt(ea * eb)
    np.testing.assert_allclose(pa, ea / z)
    np.testing.assert_allclose(pt, nu * np.sqrt(ea * eb) / z)
    np.testing.assert_allclose(pa + pt + pb, 1.0)
    np.testing.assert_allclose(pt[3], nu / (2 + nu))
    pa0, pt0, _ = sim.davidson_probabilities(r_a, r_b, tie_strength=0.0, temperature=t)
    np.testing.assert_allclose(pa0, sim.bt_probability(r_a, r_b, t))
    assert np.all(pt0 == 0)

    n = 150_000
    r_a, r_b = _rewards(n, seed=20)
    labels = sim.davidson(r_a, r_b, rng=21, tie_strength=nu, temperature=t)
    pa, pt, _ = sim.davidson_probabilities(r_a, r_b, tie_strength=nu, temperature=t)
    _assert_bernoulli_bins((labels == 0.5).astype(float), pt, r_a - r_b)
    _assert_bernoulli_bins((labels == 1.0).astype(float), pa, r_a - r_b)


def test_likert_ratings_range_distribution_and_monotonicity():
    n, levels, s = 100_000, 5, 0.8
    scores = np.random.default_rng(22).standard_normal((n, 2))
    ratings = sim.likert_ratings(scores, rng=23, levels=levels, noise_std=s)
    assert ratings.shape == (n, 2) and ratings.dtype == np.int32
    assert ratings.min() == 0 and ratings.max() == levels - 1
    # Default cut points: equiprobable ratings for standard normal scores.
    freq = np.bincount(ratings.ravel(), minlength=levels) / ratings.size
    p = 1 / levels
    assert np.all(np.abs(freq - p) < Z * np.sqrt(p * (1 - p) / ratings.size))
    # Mean rating increases with the score.
    flat_s, flat_r = scores.ravel(), ratings.ravel()
    edges = np.quantile(flat_s, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, flat_s, side="right") - 1, 0, 9)
    means = np.array([flat_r[bins == b].mean() for b in range(10)])
    assert np.all(np.diff(means) > 0)


def test_likert_matches_the_ordered_probit_at_a_fixed_score():
    n, cut = 60_000, [-1.0, 0.0, 0.5]
    for score in [-0.7, 0.4]:
        ratings = sim.likert_ratings(
            np.full(n, score), rng=24, levels=4, noise_std=0.6, cutpoints=cut
        )
        probs = sim.likert_probabilities([score], levels=4, noise_std=0.6, cutpoints=cut)[0]
        expected = np.diff([0] + [_phi((c - score) / 0.6) for c in cut] + [1])
        np.testing.assert_allclose(probs, expected)
        freq = np.bincount(ratings, minlength=4) / n
        assert np.all(np.abs(freq - probs) < Z * np.sqrt(probs * (1 - probs) / n) + 1e-12)
    # No noise: the rating counts the cut points below the score.
    np.testing.assert_array_equal(
        sim.likert_ratings([-2.0, -0.5, 0.2, 3.0], rng=0, levels=4, noise_std=0.0, cutpoints=cut),
        [0, 1, 2, 3],
    )
    with pytest.raises(ValueError):
        sim.likert_ratings([0.0], rng=0, levels=4, cutpoints=[0.0, -1.0, 1.0])
