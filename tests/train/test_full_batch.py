"""fit_full_batch: the scan equals a Python loop of optax updates, and it vmaps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.train.full_batch import fit_full_batch

X = jnp.asarray(np.random.default_rng(0).normal(size=(32, 3)), jnp.float32)
Y = X @ jnp.array([1.0, -2.0, 0.5])


def _loss(p):
    return jnp.mean((X @ p["w"] + p["b"] - Y) ** 2)


def test_equals_a_python_loop_of_updates():
    tx = optax.adamw(0.05, weight_decay=1e-3)
    p0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    params, losses = jax.jit(lambda p: fit_full_batch(_loss, p, tx, 25))(p0)
    p, opt, ref = p0, tx.init(p0), []
    for _ in range(25):
        loss, g = jax.value_and_grad(_loss)(p)
        ref.append(float(loss))
        upd, opt = tx.update(g, opt, p)
        p = optax.apply_updates(p, upd)
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    np.testing.assert_allclose(params["w"], p["w"], rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0] / 2


def test_vmaps_over_initial_params_and_rejects_zero_steps():
    tx = optax.sgd(0.1)
    inits = {"w": jnp.stack([jnp.zeros(3), jnp.ones(3)]), "b": jnp.zeros(2)}
    params, losses = jax.jit(jax.vmap(lambda p: fit_full_batch(_loss, p, tx, 50)))(inits)
    assert losses.shape == (2, 50)
    np.testing.assert_allclose(params["w"][0], params["w"][1], atol=0.05)  # both converge
    with pytest.raises(ValueError, match="steps"):
        fit_full_batch(_loss, inits, tx, 0)
