"""Tabular MDP testbeds: generators, (soft) value iteration, segments, regret and labels."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.tasks import mdp as M


def random_mdp(seed=0, num_states=4, num_actions=2, gamma=0.9):
    """A stochastic MDP whose last state is terminal, and a random reward [S, A]."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(num_states), size=(num_states, num_actions)).astype(np.float32)
    terminal = np.zeros(num_states, bool)
    terminal[-1] = True
    p[-1] = 0.0
    p[-1, :, -1] = 1.0
    features = np.zeros((num_states, num_actions, 1), np.float32)
    start = np.full(num_states, 1.0 / num_states, np.float32)
    reward = rng.standard_normal((num_states, num_actions)).astype(np.float32)
    reward[-1] = 0.0
    return M.TabularMDP(p, features, terminal, start, gamma), reward


def exact_policy_values(mdp, reward, policy):
    """V^pi = (I - gamma P_pi)^-1 r_pi in float64, with V = 0 on terminal states."""
    p = np.asarray(mdp.transitions, np.float64)
    live = ~np.asarray(mdp.terminal)
    p_pi = np.einsum("sa,sat->st", policy, p) * live[:, None]
    r_pi = np.sum(policy * reward, axis=-1) * live
    return np.linalg.solve(np.eye(len(p)) - mdp.gamma * p_pi, r_pi)


def test_value_iteration_matches_brute_force_over_deterministic_policies():
    mdp, reward = random_mdp(seed=1, num_states=4, num_actions=3, gamma=0.9)
    values = []
    for acts in itertools.product(range(3), repeat=4):
        values.append(exact_policy_values(mdp, reward, np.eye(3)[list(acts)]))
    values = np.stack(values)  # [policies, S]
    best = values[np.argmax(values.sum(-1))]
    np.testing.assert_allclose(best, values.max(0), atol=1e-9)  # one policy is best everywhere
    v, q = M.value_iteration(mdp, reward, num_iters=300)
    np.testing.assert_allclose(v, best, atol=1e-4)
    q_exact = reward + 0.9 * np.einsum("sat,t->sa", mdp.transitions, best)
    q_exact[-1] = 0.0
    np.testing.assert_allclose(q, q_exact, atol=1e-4)
    # The greedy policy is optimal, and its evaluation agrees with the linear solve.
    pi = np.asarray(M.greedy_policy(q))
    np.testing.assert_allclose(exact_policy_values(mdp, reward, pi), best, atol=1e-4)
    np.testing.assert_allclose(M.policy_evaluation(mdp, reward, pi, num_iters=300), best,
                               atol=1e-4)
    adv = M.optimal_advantages(mdp, reward, num_iters=300)
    assert np.all(np.asarray(adv) <= 0) and np.allclose(np.asarray(adv).max(-1), 0)


def test_soft_value_iteration_approaches_hard_from_above():
    mdp, reward = random_mdp(seed=2, num_states=5, num_actions=3, gamma=0.9)
    v_hard, _ = M.value_iteration(mdp, reward, num_iters=200)
    gaps = []
    for temperature in [1.0, 0.3, 0.1, 0.01]:
        v_soft, q_soft = M.value_iteration(mdp, reward, num_iters=200, temperature=temperature)
        gap = np.asarray(v_soft - v_hard)
        assert gap.min() >= -1e-5
        assert gap.max() <= temperature * np.log(3) / (1 - 0.9) + 1e-4
        assert gap[-1] == 0.0 and np.all(np.asarray(q_soft[-1]) == 0.0)  # terminal
        gaps.append(gap.max())
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.05


def test_gradients_through_value_iteration():
    mdp, w = M.gridworld(3, 4, seed=0, num_hazards=1, num_coins=1)
    seg1 = M.sample_segments(mdp, 0, 16, 4)
    seg2 = M.sample_segments(mdp, 1, 16, 4)
    labels = M.simulate_segment_preferences(
        -M.segment_regret(mdp, mdp.reward(w), *seg1),
        -M.segment_regret(mdp, mdp.reward(w), *seg2),
        rng=0,
    )

    @functools.partial(jax.jit, static_argnums=1)
    def loss(weights, temperature):
        reward = mdp.reward(weights)
        d = M.segment_regret(mdp, reward, *seg2, temperature=temperature) - M.segment_regret(
            mdp, reward, *seg1, temperature=temperature
        )
        return jnp.mean(jax.nn.softplus(-jnp.where(labels == 1, d, -d)))

    for temperature in [0.0, 0.5]:
        g = jax.grad(loss)(jnp.asarray(w) * 0.5, temperature)
        assert g.shape == (4,) and np.all(np.isfinite(g)) and np.any(g != 0)

    small, reward = random_mdp(seed=3, num_states=3, num_actions=2, gamma=0.8)

    def f(r):
        v, q = M.value_iteration(small, r, num_iters=10, temperature=0.5)
        return jnp.sum(v) + jnp.sum(jnp.sin(q))

    check_grads(f, (jnp.asarray(reward),), order=1, modes=["fwd", "rev"], eps=1e-2, atol=2e-2,
                rtol=2e-2)


@pytest.mark.parametrize("which", ["tree", "grid"])
def test_regret_identity_for_deterministic_transitions(which):
    if which == "tree":  # gamma = 1, finite horizon: VI is exact after depth backups
        mdp, w = M.tree_mdp(3, 3, num_features=3, seed=4)
        assert mdp.gamma == 1.0
    else:  # discounted form
        mdp, w = M.gridworld(4, 4, seed=5)
    reward = mdp.reward(w)
    seg = M.sample_segments(mdp, 7, 64, 3)
    v, q = M.value_iteration(mdp, reward)
    adv_form = M.segment_regret(mdp, reward, *seg)
    value_form = M.segment_regret(mdp, reward, *seg, form="value")
    # By hand: V*(s0) - partial return - gamma^L V*(s_L).
    g = mdp.gamma
    ret = M.segment_partial_return(reward, seg.states, seg.actions, seg.valid, gamma=g)
    by_hand = np.asarray(v)[seg.states[:, 0]] - ret - g**3 * np.asarray(v)[seg.states[:, -1]]
    np.testing.assert_allclose(adv_form, value_form, atol=1e-4)
    np.testing.assert_allclose(adv_form, by_hand, atol=1e-4)
    assert np.all(np.asarray(adv_form) >= -1e-5)
    # Segments of the greedy policy have zero regret.
    opt = M.sample_segments(mdp, 8, 16, 3, policy=M.greedy_policy(q))
    np.testing.assert_allclose(M.segment_regret(mdp, reward, *opt), 0.0, atol=1e-4)
    if which == "tree":  # undiscounted partial return is the plain masked sum
        r = np.asarray(reward)
        manual = [sum(r[s, a] for s, a, ok in zip(ss, aa, vv) if ok)
                  for ss, aa, vv in zip(seg.states, seg.actions, seg.valid)]
        np.testing.assert_allclose(ret, manual, atol=1e-5)


def test_gridworld_dynamics_and_features():
    h, wd = 4, 5
    mdp, w = M.gridworld(h, wd, seed=3, num_hazards=3, num_coins=2)
    M.validate_mdp(mdp)
    layout = M.gridworld_layout(h, wd, seed=3, num_hazards=3, num_coins=2)
    cells = {layout.goal, *layout.hazards.tolist(), *layout.coins.tolist()}
    assert len(cells) == 6
    p, phi = np.asarray(mdp.transitions), np.asarray(mdp.features)
    assert p.shape == (20, 4, 20) and phi.shape == (20, 4, 4) and w.shape == (4,)
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal), [layout.goal])
    np.testing.assert_allclose(p[layout.goal, :, layout.goal], 1.0)
    assert np.all(phi[layout.goal] == 0)
    np.testing.assert_allclose(mdp.start[layout.goal], 0.0)
    np.testing.assert_allclose(mdp.start.sum(), 1.0, rtol=1e-6)
    for s in range(20):
        if s == layout.goal:
            continue
        row, col = divmod(s, wd)
        for a, (dr, dc) in enumerate(M.GRID_MOVES):
            assert p[s, a].max() == 1.0 and p[s, a].sum() == 1.0  # deterministic
            nxt = int(p[s, a].argmax())
            inside = 0 <= row + dr < h and 0 <= col + dc < wd
            assert nxt == ((row + dr) * wd + col + dc if inside else s)  # walls keep you in place
            moved = nxt != s
            expected = [1, nxt == layout.goal, moved and nxt in layout.hazards,
                        moved and nxt in layout.coins]
            np.testing.assert_array_equal(phi[s, a], expected)
    # Corners bump: up and left from (0, 0) stay unless (0, 0) is the goal.
    if layout.goal != 0:
        assert p[0, M.UP, 0] == 1.0 and p[0, M.LEFT, 0] == 1.0
    np.testing.assert_allclose(mdp.reward(w), phi @ w, rtol=1e-6)
    # Deterministic per seed, different across seeds.
    again, _ = M.gridworld(h, wd, seed=3, num_hazards=3, num_coins=2)
    np.testing.assert_array_equal(again.features, mdp.features)
    other = {M.gridworld_layout(h, wd, seed=s).goal for s in range(10)}
    assert len(other) > 1
    with pytest.raises(ValueError):
        M.gridworld(2, 2, seed=0, num_hazards=2, num_coins=2)


def test_gridworld_optimal_policy_reaches_the_goal():
    mdp, w = M.gridworld(5, 5, seed=1)
    _, q = M.value_iteration(mdp, mdp.reward(w))
    seg = M.sample_segments(mdp, 0, 32, 8, policy=M.greedy_policy(q))
    # 5x5 grid: any cell is within 8 moves of the goal, and the optimal policy goes there.
    assert np.all(mdp.terminal[seg.states[:, -1]])


def test_tree_mdp_structure():
    mdp, w = M.tree_mdp(3, 2, num_features=5, seed=0)
    M.validate_mdp(mdp)
    p = np.asarray(mdp.transitions)
    assert p.shape == (15, 2, 15) and mdp.features.shape == (15, 2, 5) and w.shape == (5,)
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal), np.arange(7, 15))
    assert np.all(p.max(-1) == 1.0)  # deterministic
    children = p[:7].argmax(-1)
    np.testing.assert_array_equal(np.sort(children.ravel()), np.arange(1, 15))  # a tree
    np.testing.assert_array_equal(mdp.start, np.eye(15)[0])
    assert np.all(mdp.features[7:] == 0) and np.all(mdp.features[:7] != 0)
    again, w2 = M.tree_mdp(3, 2, num_features=5, seed=0)
    np.testing.assert_array_equal(again.features, mdp.features)
    np.testing.assert_array_equal(w, w2)
    assert not np.array_equal(M.tree_mdp(3, 2, num_features=5, seed=1)[1], w)
    # Undiscounted values are exact after `depth` backups: V*(root) = best root-to-leaf return.
    r = np.asarray(mdp.reward(w))
    best = max(
        r[0, a0] + r[1 + a0, a1] + r[2 * (1 + a0) + 1 + a1, a2]
        for a0, a1, a2 in itertools.product(range(2), repeat=3)
    )
    v, _ = M.value_iteration(mdp, r, num_iters=3)
    np.testing.assert_allclose(v[0], best, rtol=1e-5)


def test_sample_segments_shapes_mask_and_dynamics():
    mdp, _ = random_mdp(seed=5, num_states=5, num_actions=3)
    policy = np.array([[0.5, 0.5, 0.0]] * 5)
    seg = M.sample_segments(mdp, np.random.default_rng(0), 200, 6, policy=policy)
    assert seg.states.shape == (200, 7) and seg.actions.shape == (200, 6)
    assert seg.valid.shape == (200, 6) and seg.valid.dtype == bool
    p, term = np.asarray(mdp.transitions), np.asarray(mdp.terminal)
    assert not np.any(term[seg.states[:, 0]])  # start from non-terminal states
    np.testing.assert_array_equal(seg.valid, ~term[seg.states[:, :-1]])
    assert np.all(seg.valid[:, 1:] <= seg.valid[:, :-1])  # once invalid, always invalid
    assert not seg.valid.all() and seg.valid.any()
    ok = seg.valid
    assert np.all(p[seg.states[:, :-1], seg.actions, seg.states[:, 1:]][ok] > 0)
    assert np.all(seg.actions[ok] < 2)  # the policy never picks action 2
    assert np.all(seg.actions[~ok] == 0)
    np.testing.assert_array_equal(seg.states[:, 1:][~ok], seg.states[:, :-1][~ok])  # stays put
    again = M.sample_segments(mdp, 0, 200, 6, policy=policy)
    np.testing.assert_array_equal(again.states, seg.states)
    # from_start draws s_0 from the start distribution (the root of a tree).
    tree, _ = M.tree_mdp(2, 2, seed=0)
    assert np.all(M.sample_segments(tree, 0, 10, 2, from_start=True).states[:, 0] == 0)


def test_normalized_return():
    mdp, w = M.gridworld(4, 4, seed=2)
    reward = mdp.reward(w)
    _, q = M.value_iteration(mdp, reward)
    assert abs(float(M.normalized_return(mdp, reward, M.greedy_policy(q))) - 1.0) < 1e-4
    assert abs(float(M.normalized_return(mdp, reward, M.uniform_policy(mdp)))) < 1e-4
    # The optimal policy of the negated reward is worse than random.
    _, q_bad = M.value_iteration(mdp, -reward)
    assert float(M.normalized_return(mdp, reward, M.greedy_policy(q_bad))) < 0
    # Degenerate reward: uniform is optimal, every policy scores 1 (no division by zero).
    zero = jnp.zeros_like(reward)
    assert float(M.normalized_return(mdp, zero, M.greedy_policy(q))) == 1.0


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_simulated_preferences_are_bradley_terry(temperature):
    diffs = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    n = 4000
    d = np.repeat(diffs, n)
    base = np.random.default_rng(0).standard_normal(d.shape)
    labels = M.simulate_segment_preferences(base + d, base, rng=1, temperature=temperature)
    assert labels.dtype == np.int32 and set(np.unique(labels)) <= {0, 1}
    rate = labels.reshape(5, n).mean(-1)
    if temperature > 0:
        expected = 1 / (1 + np.exp(-diffs / temperature))
    else:
        expected = np.array([0.0, 0.0, 0.5, 1.0, 1.0])
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(rate - expected) <= 4 * se + 1e-12), (rate, expected)
    again = M.simulate_segment_preferences(base + d, base, rng=1, temperature=temperature)
    np.testing.assert_array_equal(again, labels)


def test_linear_reward_is_learnable_through_regret_preferences():
    mdp, w_gold = M.tree_mdp(3, 2, num_features=3, seed=6)
    rng = np.random.default_rng(0)
    seg1, seg2 = M.sample_segments(mdp, rng, 256, 2), M.sample_segments(mdp, rng, 256, 2)

    def regret(w, seg):
        return M.segment_regret(mdp, mdp.reward(w), *seg, temperature=0.1)

    labels = M.simulate_segment_preferences(
        -regret(w_gold, seg1), -regret(w_gold, seg2), rng=rng, temperature=0.0
    )
    sign = jnp.asarray(2 * labels - 1, jnp.float32)

    @jax.jit
    def loss(w):
        return jnp.mean(jax.nn.softplus(-sign * (regret(w, seg2) - regret(w, seg1))))

    @jax.jit
    def step(w):
        return w - 0.5 * jax.grad(loss)(w)

    w = jnp.zeros(3)
    first = float(loss(w))
    for _ in range(100):
        w = step(w)
    assert float(loss(w)) < 0.6 * first
    # Regret preferences identify the reward up to scale: the direction is recovered.
    cosine = float(w @ w_gold) / (float(jnp.linalg.norm(w)) * np.linalg.norm(w_gold))
    assert cosine > 0.95, cosine
