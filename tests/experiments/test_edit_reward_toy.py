"""The EditReward toy (experiments/edit_reward.py): seeds with different numbers of training
pairs are padded to one shape with zero-weight rows that change no loss."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from alignax.experiment import load_module
from alignax.losses.reward import bradley_terry_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
edit_reward = load_module(os.path.join(REPO, "experiments", "edit_reward.py"))


def test_padded_pairs_keep_each_seeds_pairs_and_their_mean_loss():
    config = edit_reward.get_config("smoke")
    per_seed = [edit_reward.make_seed_data(config, s) for s in (0, 1)]
    sizes = [len(p["dim"]) for p in per_seed]
    assert sizes[0] != sizes[1]  # the seeds keep different numbers of pairs
    padded = edit_reward._pad_pairs(per_seed)
    assert padded["chosen"].shape == (2, max(sizes), config.task.dim)
    for i, (p, m) in enumerate(zip(per_seed, sizes)):
        np.testing.assert_array_equal(padded["weight"][i], np.arange(max(sizes)) < m)
        for k in ("chosen", "rejected", "dim"):
            np.testing.assert_array_equal(padded[k][i, :m], p[k])
        # the weighted mean over the padded rows is the plain mean over the seed's pairs
        w = np.random.default_rng(i).standard_normal(config.task.dim).astype(np.float32)
        losses = bradley_terry_loss(padded["chosen"][i] @ w, padded["rejected"][i] @ w)
        weighted = jnp.sum(padded["weight"][i] * losses) / jnp.sum(padded["weight"][i])
        plain = bradley_terry_loss(jnp.asarray(p["chosen"]) @ w, jnp.asarray(p["rejected"]) @ w)
        assert float(weighted) == pytest.approx(float(plain.mean()), rel=1e-6)
