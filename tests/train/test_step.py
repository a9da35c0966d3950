"""make_train_step: correct update, compiled once, donated state, explicit shardings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.train import TrainState, make_train_step
from alignax.train import sharding as shd


def quadratic_loss(params, batch, rng, target_scale):
    del rng
    err = params["w"] * batch["x"] - target_scale * batch["y"]
    loss = jnp.mean(err**2)
    return loss, {"mse": loss}


def _batch(seed):
    x = np.random.default_rng(seed).normal(size=(8, 3)).astype(np.float32)
    return {"x": x, "y": 2.0 * x}


def test_sgd_step_matches_the_hand_computed_update():
    tx = optax.sgd(0.1)
    state = TrainState.create({"w": jnp.ones((3,))}, tx, jax.random.key(0))
    batch = _batch(0)
    step = make_train_step(quadratic_loss, tx)
    new, metrics = step(state, batch, 1.0)
    x, y = batch["x"], batch["y"]
    grad = np.mean(2 * (1.0 * x - y) * x, axis=0) / 3
    np.testing.assert_allclose(new.params["w"], 1.0 - 0.1 * grad, rtol=1e-5)
    assert int(new.step) == 1
    np.testing.assert_allclose(metrics["loss"], np.mean((x - y) ** 2), rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(grad), rtol=1e-5)


def test_compiled_once_and_state_donated():
    tx = optax.adam(0.05)
    mesh = shd.make_mesh()
    repl = shd.replicated(mesh)
    state = TrainState.create({"w": jnp.ones((3,))}, tx, jax.random.key(0))
    state_sharding = jax.tree.map(lambda _: repl, state)
    step = make_train_step(quadratic_loss, tx, mesh=mesh, state_sharding=state_sharding,
                           batch_sharding=shd.batch_sharding(mesh), frozen_shardings=(repl,))
    state = jax.device_put(state, state_sharding)
    first = state
    for i in range(80):
        state, metrics = step(state, _batch(i), jnp.float32(1.0))
    assert step._cache_size() == 1
    assert first.params["w"].is_deleted()  # donated
    assert float(metrics["loss"]) < 0.05  # w -> 2 on this problem
    np.testing.assert_allclose(state.params["w"], 2.0, atol=0.1)


def test_step_rng_is_a_function_of_the_step():

    def loss_fn(params, batch, rng):
        del batch
        noise = jax.random.normal(rng, ())
        return jnp.sum(params["w"]) * 0.0 + noise, {}

    tx = optax.sgd(0.0)
    step = make_train_step(loss_fn, tx, donate=False)
    s0 = TrainState.create({"w": jnp.zeros(())}, tx, jax.random.key(3))
    s1, m1 = step(s0, {})
    s2, m2 = step(s1, {})
    _, m1_again = step(s0, {})
    seen = [float(m1["loss"]), float(m2["loss"])]
    assert seen[0] != seen[1]
    assert float(m1_again["loss"]) == seen[0]


def test_mesh_without_shardings_is_an_error():
    with pytest.raises(ValueError, match="state_sharding"):
        make_train_step(quadratic_loss, optax.sgd(0.1), mesh=shd.make_mesh())
