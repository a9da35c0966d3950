"""Optimizer moments in a chosen dtype (`moment_dtype`, `with_state_dtype`) and bf16 params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.train import TrainState, make_train_step
from alignax.train.optim import check_optimizer_config, make_optimizer, with_state_dtype

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(64, 8)), jnp.float32)
Y = jnp.asarray(RNG.normal(size=(64, 2)), jnp.float32)
P0 = {"w1": jnp.asarray(RNG.normal(size=(8, 16)) * 0.5, jnp.float32),
      "w2": jnp.asarray(RNG.normal(size=(16, 2)) * 0.5, jnp.float32), "b": jnp.zeros(())}
CFG = dict(name="adamw", learning_rate=1e-2, kwargs=dict(weight_decay=0.1))


def _plain():
    """What make_optimizer(CFG) built before moment_dtype: the bare optax chain."""
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(optax.constant_schedule(1e-2), weight_decay=0.1))


def _loss(p, x=X, y=Y):
    h = jnp.tanh(x @ p["w1"].astype(jnp.float32)) @ p["w2"].astype(jnp.float32)
    return jnp.mean((h + p["b"].astype(jnp.float32) - y) ** 2)


def _trajectory(tx, params, n):
    """Params after n steps of full-batch `tx` on `_loss` (one jitted scan)."""

    @jax.jit
    def run(p):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(_loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (p, tx.init(p)), None, length=n)[0]

    return run(params)


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.dtype(x.dtype).name, tree)


def test_moment_dtype_sets_the_dtype_of_both_adam_moments():
    for name in ("float32", "bfloat16"):
        state = make_optimizer({**CFG, "moment_dtype": name}, 10).init(P0)
        adam = state[1][0]
        assert set(jax.tree.leaves(_dtypes((adam.mu, adam.nu)))) == {name}
        assert adam.count.dtype == jnp.int32
    # only the subtrees that mirror the params: an injected learning rate stays float32
    tx = with_state_dtype(optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
                          jnp.bfloat16)
    state = tx.init(P0)
    assert state.hyperparams["learning_rate"].dtype == jnp.float32
    assert set(jax.tree.leaves(_dtypes((state.inner_state[0].mu,)))) == {"bfloat16"}


def test_float32_moments_are_the_plain_optax_chain_bit_for_bit():
    plain = _plain()
    ours = make_optimizer(CFG, 10)
    assert jax.tree.structure(ours.init(P0)) == jax.tree.structure(plain.init(P0))
    (pa, sa), (pb, sb) = _trajectory(plain, P0, 5), _trajectory(ours, P0, 5)
    jax.tree.map(np.testing.assert_array_equal, (pa, sa), (pb, sb))


def test_bfloat16_moments_follow_the_float32_trajectory():
    """Tolerance, derived: in the first n <= 5 steps |m_hat / sqrt(v_hat)| <= 1.01 (bias-
    corrected EMAs with near-uniform weights), so a step moves a param by <= 1.01 lr. Storing m
    and v in bf16 rounds each by a relative <= 2^-8 per step; carried over t steps m is off by
    <= t 2^-8 and sqrt(v) by <= t 2^-9, so step t is off by <= 1.5 t 2^-8 of itself, and after
    n steps |theta_bf16 - theta_fp32| <= 1.01 lr 1.5 2^-8 n (n + 1) / 2 (measured: 0.16 of
    that; the params' own divergence changes the gradients only at second order)."""
    n, lr = 5, CFG["learning_rate"]
    ref, _ = _trajectory(make_optimizer(CFG, n), P0, n)
    low, state = _trajectory(make_optimizer({**CFG, "moment_dtype": "bfloat16"}, n), P0, n)
    assert set(jax.tree.leaves(_dtypes(state[1][0].nu))) == {"bfloat16"}
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(ref),
                                                          jax.tree.leaves(low)))
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(ref),
                                                           jax.tree.leaves(P0)))
    assert 0 < diff <= 1.01 * lr * 1.5 * 2**-8 * n * (n + 1) / 2
    assert moved > 0.8 * n * lr  # the params really moved by ~n lr


@pytest.mark.parametrize("moment_dtype", ["float32", "bfloat16"])
def test_bf16_params_train_with_either_moment_dtype(moment_dtype):
    def loss_fn(params, batch, rng):
        del rng
        return _loss(params, batch["x"], batch["y"]), {}

    tx = make_optimizer({**CFG, "moment_dtype": moment_dtype}, 10)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), P0)
    step = make_train_step(loss_fn, tx, donate=False)
    state = TrainState.create(params16, tx, jax.random.key(0))
    batch = {"x": np.asarray(X), "y": np.asarray(Y)}
    first = step(state, batch)[1]["loss"]
    for _ in range(3):
        state, metrics = step(state, batch)
    assert step._cache_size() == 1  # the state's dtypes are stable
    assert set(jax.tree.leaves(_dtypes(state.params))) == {"bfloat16"}
    adam = state.opt_state[1][0]
    assert set(jax.tree.leaves(_dtypes((adam.mu, adam.nu)))) == {moment_dtype}
    assert float(metrics["loss"]) < float(first)
    # the first update is fp32 Adam on the upcast gradient, rounded once to bf16
    g16 = jax.jit(jax.grad(_loss))(params16, batch["x"], batch["y"])
    up = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)  # noqa: E731
    u32, _ = jax.jit(lambda g, p: _plain().update(g, _plain().init(p), p))(up(g16),
                                                                          up(params16))
    u16, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(g16, params16)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), u16,
                 u32)


def test_bad_moment_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown moment_dtype 'float16'"):
        check_optimizer_config({**CFG, "moment_dtype": "float16"})
    with pytest.raises(ValueError, match="instead of kwargs.mu_dtype"):
        check_optimizer_config({**CFG, "kwargs": {"mu_dtype": "bfloat16"}})


def test_bf16_second_moment_cannot_decay_with_b2_0999():
    """The documented limit of bf16 moments: nu's EMA step (1 - b2) nu is below half a bf16
    ulp of nu, so after a gradient spike nu stays where it is; fp32 decays it."""
    g = {"w": jnp.ones((4,))}
    zero = {"w": jnp.zeros((4,))}
    nus = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        tx = with_state_dtype(optax.scale_by_adam(b2=0.999), dtype)
        _, state = tx.update(g, tx.init(g))
        first = float(state.nu["w"][0])
        for _ in range(5):
            _, state = tx.update(zero, state)
        nus[jnp.dtype(dtype).name] = (first, float(state.nu["w"][0]))
    assert nus["bfloat16"][1] == nus["bfloat16"][0]
    np.testing.assert_allclose(nus["float32"][1], nus["float32"][0] * 0.999**5, rtol=1e-6)
