"""Prompted REINFORCE with a KL penalty (alignax.algorithms.prompted_pg): it reaches the
KL-regularised optimum pi* ∝ pi_ref exp(r / beta) per prompt, with per-seed coefficients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.prompted_pg import prompted_reinforce_loss
from alignax.algorithms.small_pg import rl_batch
from alignax.train.small import fit_small

P, K = 3, 4  # prompts, responses (one token)


def sample_fn(params, x, key, n):
    lp = jax.nn.log_softmax(params["logits"][x], -1)  # [B, K]
    return jax.random.categorical(key, lp, axis=-1, shape=(n, x.shape[0])).T


def log_prob_fn(params, x, y):
    lp = jax.nn.log_softmax(params["logits"][x], -1)
    return jnp.take_along_axis(lp, y, -1)


def reward_fn(x, y, data):
    return data["table"][x[:, None], y]


def test_reaches_the_kl_regularised_optimum_for_each_coefficient(tmp_path):
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.standard_normal((P, K)), jnp.float32)
    ref = {"logits": jnp.asarray(rng.standard_normal((P, K)) * 0.5, jnp.float32)}
    betas = jnp.array([0.5, 2.0])
    data = {"prompts": jnp.tile(jnp.arange(P)[None], (2, 1)),
            "ref_params": jax.tree.map(lambda x: jnp.stack([x, x]), ref),
            "table": jnp.stack([table, table]), "kl_coef": betas}
    loss = prompted_reinforce_loss(sample_fn, log_prob_fn, reward_fn, num_prompts=16,
                                   num_samples=8)
    fit = fit_small(str(tmp_path), loss_fn=loss, init_params=data["ref_params"],
                    per_seed_init=True, tx=optax.adam(0.05), num_steps=1500, data=data,
                    seeds=[0, 1], per_seed_data=True, batch_fn=rl_batch, has_aux=True)
    for i, beta in enumerate(np.asarray(betas)):
        target = jax.nn.softmax(ref["logits"] + table / beta, -1)
        got = jax.nn.softmax(fit.params["logits"][i], -1)
        np.testing.assert_allclose(got, target, atol=0.06)
    assert np.isfinite(fit.metrics["kl"])


def test_validation():
    with pytest.raises(ValueError):
        prompted_reinforce_loss(sample_fn, log_prob_fn, reward_fn, num_prompts=4,
                                num_samples=1)
