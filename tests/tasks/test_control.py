"""The distractor navigation task: dynamics, rewards and the noisy TV by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.tasks import control


def _task(**kw):
    return control.make_task(jax.random.key(0), distractor_dims=5, factors=2, **kw)


def test_make_task_mixing_and_errors():
    task = _task(goal=(0.5, -0.25))
    assert task.mixing.shape == (5, 2) and task.obs_dim == 7
    np.testing.assert_allclose(np.linalg.norm(task.mixing, axis=0), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(task.goal, [0.5, -0.25])
    with pytest.raises(ValueError, match="rho"):
        _task(rho=1.0)
    with pytest.raises(ValueError, match="distractor_dims"):
        control.make_task(jax.random.key(0), distractor_dims=-1)


def test_move_reward_and_distractor_by_hand():
    task = _task(goal=(0.5, -0.25), step_size=0.2, scale=3.0)
    # s + 0.2 a, actions clipped to [-1, 1], positions to [-1, 1]
    np.testing.assert_allclose(control.move(task, jnp.array([0.0, 0.9]), jnp.array([0.5, 2.0])),
                               [0.1, 1.0], atol=1e-6)
    np.testing.assert_allclose(control.move(task, jnp.array([-0.95, 0.0]),
                                            jnp.array([-1.0, -0.5])), [-1.0, -0.1], atol=1e-6)
    # r = -||s - g||: (0.5 - (-0.1), -0.25 - 0.55) = (0.6, -0.8) -> -1
    np.testing.assert_allclose(control.reward(task, jnp.array([-0.1, 0.55])), -1.0, atol=1e-6)
    u = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(control.distractor(task, u), 3.0 * np.asarray(task.mixing) @ [1, -2],
                               rtol=1e-5)


def test_step_is_ar1_and_independent_of_actions():
    task = _task(rho=0.9)
    state = {"pos": jnp.array([0.2, 0.3]), "tv": jnp.array([1.0, -1.0])}
    key = jax.random.key(3)
    s1, r1 = control.step(task, state, jnp.array([1.0, 0.0]), key)
    s2, _ = control.step(task, state, jnp.array([-1.0, 1.0]), key)
    noise = np.asarray(jax.random.normal(key, (2,)))
    np.testing.assert_allclose(s1["tv"], 0.9 * np.array([1.0, -1.0]) + np.sqrt(1 - 0.81) * noise,
                               rtol=1e-5)
    np.testing.assert_array_equal(s1["tv"], s2["tv"])  # the TV ignores the action
    np.testing.assert_allclose(s1["pos"], [0.4, 0.3], atol=1e-6)
    np.testing.assert_allclose(r1, control.reward(task, s1["pos"]))


def test_random_episode_is_consistent():
    task = _task()
    ep = jax.jit(lambda k: control.random_episode(task, k, 6))(jax.random.key(1))
    assert ep["obs"].shape == (7, 7) and ep["actions"].shape == (7, 2)
    np.testing.assert_array_equal(ep["actions"][0], [0.0, 0.0])
    np.testing.assert_allclose(ep["obs"][:, :2], ep["pos"])
    np.testing.assert_allclose(ep["obs"][:, 2:], ep["distractor"])
    np.testing.assert_allclose(ep["rewards"], control.reward(task, ep["pos"]), rtol=1e-6)
    for t in range(6):  # the action before observation t + 1 moved the point
        np.testing.assert_allclose(ep["pos"][t + 1],
                                   control.move(task, ep["pos"][t], ep["actions"][t + 1]),
                                   atol=1e-6)


def test_optimal_action_reaches_the_per_coordinate_bound():
    task = _task(goal=(0.5, -0.25), step_size=0.2)
    np.testing.assert_allclose(control.optimal_action(task, jnp.array([0.45, 0.75])),
                               [0.25, -1.0], atol=1e-6)
    pos = jnp.array([-0.9, 0.8])
    for t in range(1, 8):
        pos = control.move(task, pos, control.optimal_action(task, pos))
        bound = np.maximum(0.0, np.abs(np.array([-0.9, 0.8]) - [0.5, -0.25]) - 0.2 * t)
        np.testing.assert_allclose(np.abs(np.asarray(pos) - [0.5, -0.25]), bound, atol=1e-5)
