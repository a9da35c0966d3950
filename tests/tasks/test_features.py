"""Feature-vector preference tasks: the frozen rewards and the labelled pairs they generate."""

import numpy as np
import pytest

from alignax.tasks import simulators as sim
from alignax.tasks.features import FeatureTask, LinearReward, MLPReward, MultiObjectiveReward

Z = 4.0  # tolerance in standard errors


def _x(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_reward_shapes():
    x = _x(50, 6)
    assert LinearReward(6)(x).shape == (50,)
    assert MLPReward(6, hidden=16)(x).shape == (50,)
    assert MLPReward(6, activation="relu")(x).shape == (50,)
    assert MultiObjectiveReward(6, num_objectives=4)(x).shape == (50, 4)
    for kind in ["linear", "mlp", "multi"]:
        assert FeatureTask(dim=6, reward=kind).gold_reward(x).shape == (50,)
    with pytest.raises(ValueError):
        LinearReward(6)(_x(5, 7))
    with pytest.raises(ValueError):
        MLPReward(6, activation="gelu")
    with pytest.raises(ValueError):
        MultiObjectiveReward(4, num_objectives=4)  # needs dim >= K + 1


@pytest.mark.parametrize(
    "make",
    [
        lambda s: LinearReward(5, seed=s),
        lambda s: MLPReward(5, seed=s),
        lambda s: MultiObjectiveReward(5, num_objectives=3, seed=s),
    ],
)
def test_rewards_are_deterministic_given_the_seed(make):
    x = _x(100, 5)
    np.testing.assert_array_equal(make(3)(x), make(3)(x))
    assert not np.allclose(make(3)(x), make(4)(x))


def test_linear_reward_is_a_unit_projection():
    r = LinearReward(8, seed=1)
    np.testing.assert_allclose(np.linalg.norm(r.weight), 1.0)
    x = _x(100_000, 8, seed=2)
    np.testing.assert_allclose(r(x), x @ r.weight)
    # r(x) ~ N(0, 1): the sample variance has standard error sqrt(2 / n).
    assert abs(r(x).var() - 1.0) < Z * np.sqrt(2 / len(x))


def test_mlp_reward_is_standardised_and_nonlinear():
    n = 50_000
    x = _x(n, 8, seed=3)
    for act in ["tanh", "relu"]:
        r = MLPReward(8, hidden=32, activation=act, seed=5)(x)
        # mu and sd come from 4096 reference inputs: the error of both estimates counts.
        se_mean = np.sqrt(1 / 4096 + 1 / n)
        assert abs(r.mean()) < Z * se_mean
        # SE of a sample standard deviation: sqrt((kurtosis - 1) / (4 n)), for both samples.
        kurt = np.mean(r**4) / np.mean(r**2) ** 2
        assert abs(r.std() - 1.0) < Z * np.sqrt((kurt - 1) / 4 * (1 / 4096 + 1 / n))
    # A relu MLP is not a linear function of x: least squares leaves a residual.
    r = MLPReward(8, activation="relu", seed=5)(x)
    design = np.c_[x, np.ones(n)]
    resid = r - design @ np.linalg.lstsq(design, r, rcond=None)[0]
    assert resid.var() > 0.01


@pytest.mark.parametrize("rho,conflicting", [(0.6, 2), (0.3, 1), (0.0, 0)])
def test_multi_objective_correlations_have_the_documented_sign(rho, conflicting):
    k = 4
    m = MultiObjectiveReward(8, num_objectives=k, correlation=rho, num_conflicting=conflicting)
    s = np.where(np.arange(k) < k - conflicting, 1.0, -1.0)
    np.testing.assert_array_equal(m.signs, s)
    expected = rho * np.outer(s, s)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(m.correlation_matrix(), expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(m.weights, axis=0), 1.0)
    n = 60_000
    emp = np.corrcoef(m(_x(n, 8, seed=6)).T)
    # Standard error of a sample correlation: (1 - rho^2) / sqrt(n).
    assert np.all(np.abs(emp - expected) < Z * (1 - expected**2) / np.sqrt(n) + 1e-9)
    if rho > 0 and conflicting:
        assert emp[0, k - 1] < 0 and (k - conflicting < 2 or emp[0, 1] > 0)


def test_sample_pairs_keys_shapes_and_determinism():
    task = FeatureTask(dim=5, reward="mlp", seed=2)
    d = task.sample_pairs(64, rng=0)
    assert d["x_a"].shape == d["x_b"].shape == (64, 5)
    for key in ["r_a", "r_b", "margin", "label", "flipped"]:
        assert d[key].shape == (64,)
    assert d["label"].dtype == np.float32 and d["flipped"].dtype == bool
    np.testing.assert_allclose(d["r_a"], task.gold_reward(d["x_a"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["margin"], d["r_a"] - d["r_b"], rtol=1e-5, atol=1e-6)
    again = task.sample_pairs(64, rng=np.random.default_rng(0))
    assert all(np.array_equal(d[k], again[k]) for k in d)
    assert not np.array_equal(d["x_a"], task.sample_pairs(64, rng=1)["x_a"])
    with pytest.raises(ValueError):
        task.sample_pairs(4, rng=0, simulator="nope")
    with pytest.raises(ValueError):
        task.sample_pairs(4, rng=0, simulator="mixture")  # needs reward="multi"


@pytest.mark.parametrize("flip_rate", [0.0, 0.2])
def test_sample_pairs_bradley_terry_label_rate(flip_rate):
    n, t = 100_000, 0.5
    d = FeatureTask(dim=6, seed=7).sample_pairs(
        n, rng=8, simulator="bt", temperature=t, flip_rate=flip_rate
    )
    p = sim.bt_probability(d["margin"].astype(np.float64), 0.0, t)
    q = (1 - flip_rate) * p + flip_rate * (1 - p)
    assert abs(d["label"].mean() - q.mean()) < Z * np.sqrt(np.sum(q * (1 - q))) / n
    # The labels agree with the gold margin at the predicted rate.
    agree = d["label"] == (d["margin"] > 0)
    e = np.where(d["margin"] > 0, q, 1 - q)
    assert abs(agree.mean() - e.mean()) < Z * np.sqrt(np.sum(e * (1 - e))) / n
    if flip_rate:
        assert abs(d["flipped"].mean() - flip_rate) < Z * np.sqrt(0.16 / n)
    else:
        assert not d["flipped"].any()


def test_sample_pairs_thurstone_and_ties():
    n = 100_000
    task = FeatureTask(dim=4, seed=9)
    d = task.sample_pairs(n, rng=10, simulator="thurstone", noise_std=0.7)
    p = sim.thurstone_probability(d["margin"].astype(np.float64), 0.0, 0.7)
    assert abs(d["label"].mean() - p.mean()) < Z * np.sqrt(np.sum(p * (1 - p))) / n
    d = task.sample_pairs(n, rng=11, simulator="ties", tie_threshold=0.25)
    m = np.abs(d["margin"])
    clear = np.abs(m - 0.25) > 1e-5  # float32 margins: skip rounding at the threshold
    np.testing.assert_array_equal((d["label"] == 0.5)[clear], (m < 0.25)[clear])
    d = task.sample_pairs(n, rng=12, simulator="davidson", tie_strength=1.0, temperature=1.0)
    _, pt, _ = sim.davidson_probabilities(d["r_a"], d["r_b"], tie_strength=1.0)
    ties = (d["label"] == 0.5).mean()
    assert abs(ties - pt.mean()) < Z * np.sqrt(np.sum(pt * (1 - pt))) / n


def test_sample_pairs_annotators():
    n, m = 20_000, 5
    d = FeatureTask(dim=4, seed=13).sample_pairs(
        n, rng=14, simulator="annotators", num_annotators=m, temperature=0.5, flip_rate=0.1
    )
    assert d["votes"].shape == (n, m)
    np.testing.assert_allclose(d["soft_label"], d["votes"].mean(1))
    assert d["strength"].min() >= 0 and d["strength"].max() <= 1
    np.testing.assert_array_equal(d["label"], d["votes"].mean(1) > 0.5)  # M odd: no even splits
    p = sim.bt_probability(d["margin"].astype(np.float64), 0.0, 0.5)
    q = 0.9 * p + 0.1 * (1 - p)
    se = np.sqrt(np.sum(q * (1 - q) / m)) / n
    assert abs(d["soft_label"].mean() - q.mean()) < Z * se


def test_sample_pairs_mixture_of_users():
    n, weights = 60_000, np.array([0.6, 0.4])
    task = FeatureTask(
        dim=6, reward="multi", num_objectives=2, correlation=0.8, num_conflicting=1, seed=15
    )
    d = task.sample_pairs(n, rng=16, simulator="mixture", mixture_weights=weights, temperature=0.3)
    freq = np.bincount(d["group"], minlength=2) / n
    assert np.all(np.abs(freq - weights) < Z * np.sqrt(weights * (1 - weights) / n))
    att = task.attributes(d["x_a"]) - task.attributes(d["x_b"])
    rows = np.arange(n)
    np.testing.assert_allclose(d["group_margin"], att[rows, d["group"]], rtol=1e-4, atol=1e-5)
    for g in range(2):
        sel = d["group"] == g
        p = sim.bt_probability(att[sel, g], 0.0, 0.3)
        assert abs(d["label"][sel].mean() - p.mean()) < Z * np.sqrt(np.sum(p * (1 - p))) / sel.sum()
        # The two groups' rewards conflict (correlation -0.8): each group follows its own.
        own = (d["label"][sel] == (att[sel, g] > 0)).mean()
        other = (d["label"][sel] == (att[sel, 1 - g] > 0)).mean()
        assert own > 0.8 and other < 0.5


def test_contexts_add_a_bilinear_term():
    task = FeatureTask(dim=5, context_dim=3, context_scale=2.0, seed=17)
    x, c = _x(10, 5, seed=18), _x(10, 3, seed=19)
    base = LinearReward(5, seed=17)(x)
    np.testing.assert_allclose(
        task.gold_reward(x, c), base + 2.0 * np.einsum("nd,dm,nm->n", x, task.context_matrix, c)
    )
    np.testing.assert_allclose(task.gold_reward(x, np.zeros((10, 3))), base)
    with pytest.raises(ValueError):
        task.gold_reward(x)
    with pytest.raises(ValueError):
        FeatureTask(dim=5).gold_reward(x, c)
    d = task.sample_pairs(32, rng=20)
    assert d["context"].shape == (32, 3)
    np.testing.assert_allclose(
        d["r_a"], task.gold_reward(d["x_a"], d["context"]), rtol=1e-4, atol=1e-5
    )
    multi = FeatureTask(dim=5, reward="multi", context_dim=3, seed=17)
    np.testing.assert_allclose(
        multi.attributes(x, c) - multi.attributes(x, np.zeros((10, 3))),
        np.repeat(np.einsum("nd,dm,nm->n", x, multi.context_matrix, c)[:, None], 3, axis=1),
    )
