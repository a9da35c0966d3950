"""Secrets of RLHF II toy: planted noise and the out-of-bag ensemble strength."""

import importlib.util
import os

import jax
import numpy as np

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


def test_strength_is_out_of_bag_mean_and_tracks_gold():
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 1)
    hp = mod._hparams(config, 200)
    mu, sigma, mu_all = (np.asarray(a) for a in mod.ensemble_strength(
        jax.random.key(0), data["chosen"], data["rejected"], members=4, **hp))
    assert mu.shape == sigma.shape == mu_all.shape == (len(data["chosen"]),)
    assert np.all(sigma >= 0)
    # mu differs from the all-member mean (some members are in bag) but agrees in sign mostly
    assert not np.allclose(mu, mu_all)
    assert np.mean(np.sign(mu) == np.sign(mu_all)) > 0.8
    # flipped labels get lower strength than clean ones on ordinary pairs
    ordinary = ~data["is_tie"]
    assert mu[ordinary & data["flipped"]].mean() < mu[ordinary & ~data["flipped"]].mean()
