"""CEM finds known optima (vmapped over keys, under jit); MPC rolls an episode out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import planning


def test_cem_finds_the_optimum_of_a_quadratic():
    target = jnp.array([[0.3, -0.5], [0.7, 0.1], [-0.2, 0.4]])  # [H, A], inside the box

    def score(actions):  # [P, H, A] -> [P]
        return -jnp.sum((actions - target) ** 2, axis=(1, 2))

    run = jax.jit(jax.vmap(lambda k: planning.cem(score, k, horizon=3, action_dim=2,
                                                  population=128, elites=12, iterations=8)))
    out = run(jax.random.split(jax.random.key(0), 3))
    assert out["mean"].shape == (3, 3, 2)
    np.testing.assert_allclose(out["mean"], np.broadcast_to(target, (3, 3, 2)), atol=0.05)
    assert np.all(np.asarray(out["best_score"]) > -0.05)
    np.testing.assert_allclose(out["best_score"], jax.vmap(lambda a: score(a[None])[0])(
        out["best_actions"]), rtol=1e-6)


def test_cem_respects_the_box():
    def score(actions):
        return actions[:, 0, 0]  # wants a_0 as large as possible

    out = planning.cem(score, jax.random.key(1), horizon=1, action_dim=1, population=64,
                       elites=8, iterations=6, low=-1.0, high=0.5)
    assert float(out["mean"][0, 0]) == pytest.approx(0.5, abs=0.02)
    assert float(out["best_actions"][0, 0]) <= 0.5


def test_cem_errors():
    with pytest.raises(ValueError, match="elites"):
        planning.cem(lambda a: a.sum((1, 2)), jax.random.key(0), horizon=2, action_dim=1,
                     population=4, elites=5)


def test_mpc_episode_by_hand():
    # 1-D: s' = s + a, r = -|s'|; the agent sees s + 1 and believes b = o - 1, acts a = -b / 2
    def env_step(s, a, key):
        s = s + a[0]
        return s, -jnp.abs(s)

    out = planning.mpc_episode(
        jax.random.key(0), jnp.float32(4.0), num_steps=3, env_step=env_step,
        observe=lambda s: s + 1.0, belief=jnp.float32(0.0),
        update_belief=lambda b, a, o: o - 1.0, act=lambda b, k: jnp.array([-b / 2]),
        action_dim=1)
    # s: 4 -> 2 -> 1 -> 0.5
    np.testing.assert_allclose(out["actions"][:, 0], [-2.0, -1.0, -0.5])
    np.testing.assert_allclose(out["rewards"], [-2.0, -1.0, -0.5])
    assert float(out["return"]) == pytest.approx(-3.5)
