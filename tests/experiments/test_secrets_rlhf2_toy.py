"""Secrets of RLHF II toy: planted noise and the out-of-bag ensemble strength."""

import importlib.util
import os

import jax
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "secrets_rlhf2.py")
    spec = importlib.util.spec_from_file_location("secrets_rlhf2_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_planted_flips_and_ties():
    mod = _module()
    config = mod.get_config("smoke")
    config.data.num_pairs = 2000
    data = mod.make_data(config, 0)
    assert abs(data["flipped"].mean() - 0.25) < 0.03
    assert data["is_tie"].mean() == 0.2
    assert np.all(np.abs(data["gold_margin"][data["is_tie"]]) < config.task.tie_width)
    ordinary = ~data["is_tie"]
    # outside the near-ties, a label is wrong exactly where it was flipped
    np.testing.assert_array_equal(data["gold_margin"][ordinary] < 0, data["flipped"][ordinary])


def test_strength_is_out_of_bag_mean_and_tracks_gold(tmp_path):
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 1)
    mu, sigma, mu_all = (a[0] for a in mod.ensemble_strength(
        config, str(tmp_path), data["chosen"][None], data["rejected"][None], [1],
        jax.random.key(0)[None], members=4, steps=200))
    assert mu.shape == sigma.shape == mu_all.shape == (len(data["chosen"]),)
    assert np.all(sigma >= 0)
    # mu differs from the all-member mean (some members are in bag) but agrees in sign mostly
    assert not np.allclose(mu, mu_all)
    assert np.mean(np.sign(mu) == np.sign(mu_all)) > 0.8
    # flipped labels get lower strength than clean ones on ordinary pairs
    ordinary = ~data["is_tie"]
    assert mu[ordinary & data["flipped"]].mean() < mu[ordinary & ~data["flipped"]].mean()
    # the ensemble trained through the loop: metrics and checkpoints in the workdir
    assert os.path.exists(tmp_path / "metrics.jsonl")
    assert os.path.isdir(tmp_path / "checkpoints")


def test_stacked_members_train_as_separate_fits(tmp_path):
    """The ensemble's summed member losses give each member the updates of its own fit."""
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 0)
    chosen, rejected = data["chosen"][:100], data["rejected"][:100]
    key = jax.random.key(3)
    mu, sigma, mu_all = (a[0] for a in mod.ensemble_strength(
        config, str(tmp_path / "ens"), chosen[None], rejected[None], [0], key[None],
        members=2, steps=20))
    k_boot, k_init = jax.random.split(key)
    counts = np.asarray(mod.bootstrap_counts(k_boot, 100, 2))
    rm = mod.make_rm(config)
    zeros = np.zeros(100, np.float32)
    margins = []
    for m, k in enumerate(jax.random.split(k_init, 2)):  # a plain optax loop per member
        init = rm.init(k)
        tx = mod._optimizer(config)
        params, opt = init, tx.init(init)
        loss = mod.make_rm_loss(rm)
        batch = {"chosen": chosen, "rejected": rejected, "weights": counts[m],
                 "margin": zeros, "smoothing": zeros}
        grad = jax.jit(jax.grad(loss))
        for _ in range(20):
            updates, opt = tx.update(grad(params, batch), opt, params)
            params = optax.apply_updates(params, updates)
        margins.append(np.asarray(rm.apply(params, chosen) - rm.apply(params, rejected)))
    margins = np.stack(margins)
    np.testing.assert_allclose(mu_all, margins.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sigma, margins.std(0), rtol=1e-4, atol=1e-5)
    oob = counts == 0
    expected = np.where(oob.sum(0) > 0, (oob * margins).sum(0) / np.maximum(oob.sum(0), 1),
                        margins.mean(0))
    np.testing.assert_allclose(mu, expected, rtol=1e-4, atol=1e-5)
