"""The GPM toy (experiments/gpm.py): cyclic tournament, tie handling, scalar ceiling, embeddings."""

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.experiment import load_module
from alignax.losses.reward import gpm_loss
from alignax.models.heads import gpm_score
from alignax.models.mlp import MLPConfig, make_mlp
from alignax.train.writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
gpm = load_module(os.path.join(REPO, "experiments", "gpm.py"))


def _config(**data):
    c = gpm.get_config("smoke")
    c.unlock()
    c.data.update(data)
    return c


def test_get_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        gpm.get_config("large")


def test_items_of_the_three_splits_are_disjoint_draws_with_equal_clusters():
    data = _config(num_train_items=60, num_val_items=30, num_test_items=90).data
    x, cluster, ids = gpm.make_items(data, seed=3)
    assert x.shape == (180, data.dim)
    assert np.array_equal(np.concatenate([ids["train"], ids["validation"], ids["test"]]),
                          np.arange(180))
    assert np.bincount(cluster[ids["test"]]).tolist() == [30, 30, 30]
    # the splits come from their own data seeds: another seed's items differ, the centres
    # (the world) are shared by the splits of one seed
    x_other, _, _ = gpm.make_items(data, seed=4)
    assert not np.allclose(x[ids["test"]], x_other[ids["test"]])


def test_prompted_data_flip_the_cycle_with_the_prompt_type():
    data = _config().data
    d = gpm.make_prompted(data, seed=0)
    assert d["chosen"].shape == d["rejected"].shape == (data.num_prompted_train,)
    assert d["prompt"].shape == (data.num_prompted_train, data.prompt_dim)
    assert d["test_prompt"].shape == (data.num_prompted_test, data.prompt_dim)
    assert set(np.unique(d["gold"])) <= {-1.0, 1.0}
    # train, validation and test items are different items
    train = set(d["chosen"]) | set(d["rejected"])
    val = set(d["val_chosen"]) | set(d["val_rejected"])
    test = set(d["first"]) | set(d["second"])
    assert not (train & val) and not (train & test) and not (val & test)


def test_policy_task_gold_is_a_skew_tournament_with_a_dominated_response():
    config = gpm.get_config("smoke")
    task = gpm.make_policy_task(config, seed=1)
    gold = task["gold"]
    np.testing.assert_allclose(gold + gold.transpose(0, 2, 1), 1.0)
    # the uniform policy is beaten somewhere; the dominated response's row is the weakest
    uniform = np.full(gold.shape[:2], 1 / gold.shape[1])
    assert gpm.worst_case_win_rate(uniform, gold) < 0.5
    assert np.all(np.min(gold.sum(-1), -1) < 1.5)
    assert task["val_win_rate"].shape == gold.shape


def test_rotation_embeddings_solve_rock_paper_scissors_and_scalars_cannot():
    """Three unit vectors 120 degrees apart: s(c, c + 1) > 0 for every cluster c (k = 1)."""
    data = _config(num_test_items=30).data
    _, cluster, ids = gpm.make_items(data, seed=0)
    test = ids["test"]
    tour = gpm.cyclic_tournament(cluster, data)
    first, second, gold = gpm.heldout_pairs(tour.probability, test)
    angle = -2 * np.pi * cluster / 3  # cluster c at -120 c degrees: c beats c + 1
    v = jnp.asarray(np.stack([np.cos(angle), np.sin(angle)], -1), jnp.float32)
    scores = np.asarray(jax.jit(gpm_score)(v[first], v[second]))
    keep = gold != 0
    assert np.all(np.sign(scores[keep]) == gold[keep])
    # same-cluster pairs are ties: zero score and no gold direction
    assert np.all(gold[cluster[first] == cluster[second]] == 0)
    np.testing.assert_allclose(scores[~keep], 0.0, atol=1e-6)
    # with 10 test items per cluster the best order of clusters gets exactly 2/3
    assert gpm.scalar_ceiling(cluster, first, second, gold, 3) == pytest.approx(2 / 3)


def test_scalar_ceiling_matches_brute_force_over_item_orders():
    cluster = np.array([0, 1, 2, 0, 1])
    data = _config().data
    t = gpm.cyclic_tournament(cluster, data)
    first, second, gold = gpm.heldout_pairs(t.probability, np.arange(5))
    brute = 0.0
    for perm in itertools.permutations(range(5)):  # every strict order of the items
        r = np.argsort(perm)
        keep = gold != 0
        brute = max(brute, float(np.mean(np.sign(r[first] - r[second])[keep] == gold[keep])))
    assert gpm.scalar_ceiling(cluster, first, second, gold, 3) == pytest.approx(brute)


def test_train_pairs_skip_ties_and_follow_deterministic_labels():
    cluster = np.arange(12) % 3
    data = _config(dominance=1.0).data
    t = gpm.cyclic_tournament(cluster, data)
    chosen, rejected = gpm.sample_train_pairs(t.probability, np.arange(12), 500,
                                              np.random.default_rng(0))
    assert chosen.shape == rejected.shape == (500,)
    assert np.all(cluster[chosen] != cluster[rejected])
    np.testing.assert_array_equal(t.probability(chosen, rejected), 1.0)


def test_train_pairs_raise_when_too_few_strict_pairs():
    cluster = np.zeros(6, int)  # one cluster: every pair ties
    t = gpm.cyclic_tournament(cluster, _config().data)
    with pytest.raises(ValueError, match="strict preference"):
        gpm.sample_train_pairs(t.probability, np.arange(6), 10, np.random.default_rng(0))


def test_gpm_embedding_is_unit_norm_with_nonnegative_eigenvalues_and_skew_symmetric():
    trunk = make_mlp(MLPConfig(in_dim=8, hidden=(16,), out_dim=4))
    params = {"trunk": trunk.init(jax.random.key(0)), "theta": jnp.array([-30.0, 2.0])}
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 8)), jnp.float32)
    v, lam = jax.jit(lambda p, x: gpm.gpm_embed(trunk, p, x))(params, x)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(lam) >= 0)
    s12, s21 = gpm_score(v[:3], v[3:], lam), gpm_score(v[3:], v[:3], lam)
    np.testing.assert_allclose(s12, -s21, atol=1e-6)
    np.testing.assert_allclose(gpm_score(v, v, lam), 0.0, atol=1e-6)
    check_grads(lambda a, b: gpm_loss(a, b, lam).sum(), (v[:3], v[3:]), order=1,
                modes=["rev"], atol=1e-2, rtol=1e-2)


def test_bt_cannot_and_gpm_can_fit_a_small_cyclic_toy(tmp_path):
    config = _config(num_train_items=60, num_train_pairs=400)
    config.train.steps = 200
    config.datasets = ["cyclic"]
    config.seeds = [0, 1]
    out = {}
    for model in ("bt", "gpm"):
        config.model = model
        out[model] = gpm.run_seeds(config, str(tmp_path / model))
    for seed in (0, 1):
        assert out["gpm"][seed]["test_cyclic_accuracy"] > 0.9
        assert (out["bt"][seed]["test_cyclic_accuracy"]
                <= out["bt"][seed]["test_cyclic_scalar_ceiling"] + 1e-9)
        assert 0 < out["gpm"][seed]["cyclic_chosen_steps"] <= 200
    # every seed of the variant trained in one run folder per dataset, with metrics per seed
    rows = read_metrics(str(tmp_path / "gpm" / "cyclic" / "metrics.jsonl"))
    assert "seed_0/loss" in rows[-1] and "seed_1/loss" in rows[-1]
