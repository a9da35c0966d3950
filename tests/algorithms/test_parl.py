"""PARL's upper-level gradient (alignax.algorithms.parl): on a tiny MDP the exact PARL gradient
equals finite differences of F(nu) = E_{rho(theta*(nu))}[U(.; nu)] with theta*(nu) solved to
convergence; dropping the data term gives the PEBBLE-like gradient; the sampled score-function
estimator matches the exact data term; occupancy, trajectory log-probs, the pair utility and
the oracle by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import bilevel, parl
from alignax.tasks import mdp as mdp_lib

S, A, GAMMA, LAM = 4, 2, 0.9, 0.3


def _mdp(dtype=np.float32):
    """3 live states and one terminal one, stochastic transitions, uniform live start."""
    rng = np.random.default_rng(0)
    p = rng.random((S, A, S)) + 0.1
    p[:, :, 3] += 0.3
    p /= p.sum(-1, keepdims=True)
    p[3] = 0.0
    p[3, :, 3] = 1.0
    terminal = np.array([False, False, False, True])
    start = np.array([1 / 3, 1 / 3, 1 / 3, 0.0])
    gold = rng.standard_normal((S, A))
    gold[3] = 0.0
    return (jnp.asarray(p, dtype), jnp.asarray(terminal), jnp.asarray(start, dtype),
            jnp.asarray(gold, dtype))


def _inner_loss(p, terminal, start):
    """L(theta, nu) = -J(theta; r_nu) + LAM / 2 ||theta||^2 (strongly convex near theta*)."""

    def loss(theta, nu):
        return (-bilevel.tabular_return(theta, p, terminal, nu, GAMMA, start)
                + 0.5 * LAM * jnp.sum(theta ** 2))

    return loss


def _solve(loss, nu, steps=4000, lr=0.5):
    step = bilevel.gradient_step(loss, lr)
    return bilevel.unroll(step, jnp.zeros((S, A), nu.dtype), nu, steps)


def test_exact_parl_gradient_equals_finite_differences_of_the_bilevel_objective():
    with jax.enable_x64(True):
        p, terminal, start, gold = _mdp(np.float64)
        loss = _inner_loss(p, terminal, start)

        def utility(nu):  # u_nu(s, a): a reward-fit utility, nonlinear in nu
            return -(nu - gold) ** 2

        def upper(theta, nu):
            return parl.occupancy_utility(theta, utility(nu), p, terminal, start, GAMMA)

        def big_f(nu):
            return upper(_solve(loss, nu), nu)

        nu = jnp.asarray(np.random.default_rng(1).standard_normal((S, A)) * 0.5)
        eps = 1e-4
        basis = jnp.eye(S * A).reshape(S * A, S, A)

        @jax.jit  # one program (eager, each primitive compiled on its own cost seconds)
        def run(nu):
            theta = _solve(loss, nu)
            cg = parl.parl_gradient(loss, upper, theta, nu, method="cg", maxiter=100, tol=1e-12)
            neumann = parl.parl_gradient(loss, upper, theta, nu, method="neumann",
                                         num_terms=2000, alpha=0.5)
            f = jax.vmap(big_f)
            fd = (f(nu + eps * basis) - f(nu - eps * basis)) / (2 * eps)
            return jax.grad(loss)(theta, nu), cg, neumann[1], fd, big_f(nu)

        g_solved, (value, grad, parts), g_neu, fd, f_nu = run(nu)
        assert float(jnp.max(jnp.abs(g_solved))) < 1e-9  # solved
        np.testing.assert_allclose(np.asarray(grad).ravel(), np.asarray(fd), rtol=1e-5,
                                   atol=1e-8)
        np.testing.assert_allclose(float(value), float(f_nu), rtol=1e-10)
        # the data term matters here (the test would not see a missing one)
        assert float(jnp.max(jnp.abs(parts["data"]))) > 1e-2
        # the neumann inverse-HVP gives the same
        np.testing.assert_allclose(np.asarray(g_neu), np.asarray(grad), rtol=1e-6, atol=1e-9)


def test_without_the_data_term_it_is_the_pebble_like_gradient():
    p, terminal, start, gold = _mdp()
    loss = _inner_loss(p, terminal, start)
    key = jax.random.key(3)
    nu = jnp.asarray(np.random.default_rng(2).standard_normal((S, A)), jnp.float32)
    theta = _solve(loss, nu, steps=500)
    st, ac, va = parl.sample_trajectories(key, theta, p, terminal, start, 16, 5)
    pairs = [x.reshape(8, 2, -1) for x in (st, ac, va)]
    labels = parl.oracle_labels(jax.random.key(4), gold, *pairs)

    def upper(th, n):
        u = parl.pair_log_likelihood(n, *pairs, labels)
        return jnp.mean(u) + parl.score_function_surrogate(
            parl.trajectory_log_prob(th, *pairs), u)

    @jax.jit  # one program per call (eager, each primitive compiled on its own cost seconds)
    def both(theta, nu):
        without = parl.parl_gradient(loss, upper, theta, nu, data_term=False)
        with_data = parl.parl_gradient(loss, upper, theta, nu, data_term=True, maxiter=50,
                                       damping=1e-3)
        pebble = jax.grad(lambda n: jnp.mean(parl.pair_log_likelihood(n, *pairs, labels)))(nu)
        return without, with_data, pebble, jnp.mean(parl.pair_log_likelihood(nu, *pairs, labels))

    (value, grad, parts), (_, g2, parts2), pebble, mean_ll = both(theta, nu)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(pebble), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(parts["data"]), 0.0)
    np.testing.assert_allclose(float(value), float(mean_ll), rtol=1e-6)
    # with the data term: direct part unchanged, total = direct + data, data nonzero
    np.testing.assert_allclose(np.asarray(parts2["direct"]), np.asarray(pebble), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(g2), np.asarray(parts2["direct"] + parts2["data"]),
                               rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(parts2["data"]))) > 0.0


def test_attach_implicit_gradient_matches_parl_gradient():
    p, terminal, start, gold = _mdp()
    loss = _inner_loss(p, terminal, start)
    nu = jnp.asarray(np.random.default_rng(5).standard_normal((S, A)), jnp.float32)
    theta = _solve(loss, nu, steps=2000)

    def upper(th, n):
        return parl.occupancy_utility(th, -(n - gold) ** 2, p, terminal, start, GAMMA)

    @jax.jit  # one program (eager, each primitive compiled on its own cost seconds)
    def both(theta, nu):
        _, ref, _ = parl.parl_gradient(loss, upper, theta, nu, maxiter=100, tol=1e-10)
        got = jax.grad(lambda n: upper(parl.attach_implicit_gradient(
            loss, theta, n, maxiter=100, tol=1e-10), n))(nu)
        return ref, got

    ref, got = both(theta, nu)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        parl.attach_implicit_gradient(loss, theta, nu, method="lu")


def test_sampled_data_term_estimates_the_exact_one():
    """E[U grad log rho] for U(tau) = sum_t u(s_t, a_t) over H-step trajectories: the
    score-function average over many sampled trajectories vs the exact visitation gradient."""
    p, terminal, start, gold = _mdp()
    theta = jnp.asarray(np.random.default_rng(6).standard_normal((S, A)), jnp.float32)
    h, n = 3, 40000

    @jax.jit  # one program (eager, each primitive compiled on its own cost seconds)
    def estimates(theta):
        exact = jax.grad(lambda th: parl.occupancy_utility(th, gold, p, terminal, start, 1.0,
                                                           horizon=h))(theta)
        st, ac, va = parl.sample_trajectories(jax.random.key(7), theta, p, terminal, start, n,
                                              h)
        u = jnp.sum(jnp.where(va, gold[st[:, :h], ac], 0.0), -1)
        est = {b: jax.grad(lambda th, b=b: parl.score_function_surrogate(
            parl.trajectory_log_prob(th, st, ac, va), u, baseline=b))(theta)
            for b in parl.BASELINES}
        return exact, est, u.mean(), parl.occupancy_utility(theta, gold, p, terminal, start,
                                                            1.0, horizon=h)

    exact, est, u_mean, utility = estimates(theta)
    for baseline in parl.BASELINES:
        np.testing.assert_allclose(np.asarray(est[baseline]), np.asarray(exact), atol=0.05)
    # and the sampled utility's mean is the exact expectation
    np.testing.assert_allclose(float(u_mean), float(utility), atol=0.03)


def test_occupancy_matches_policy_evaluation_and_the_horizon_sum():
    p, terminal, start, gold = _mdp()
    theta = jnp.asarray(np.random.default_rng(8).standard_normal((S, A)), jnp.float32)
    d = parl.policy_occupancy(theta, p, terminal, start, GAMMA)
    j = bilevel.tabular_return(theta, p, terminal, gold, GAMMA, start)
    np.testing.assert_allclose(float(jnp.sum(d * gold)), float(j), rtol=1e-5)
    d_h = parl.policy_occupancy(theta, p, terminal, start, GAMMA, horizon=400)
    np.testing.assert_allclose(np.asarray(d_h), np.asarray(d), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d[3]), 0.0)
    mdp = mdp_lib.TabularMDP(np.asarray(p), np.zeros((S, A, 1), np.float32),
                             np.asarray(terminal), np.asarray(start), GAMMA)
    v = mdp_lib.policy_evaluation(mdp, gold, jax.nn.softmax(theta, -1), num_iters=400)
    np.testing.assert_allclose(float(start @ v), float(j), rtol=1e-4)
    with pytest.raises(ValueError, match="horizon"):
        parl.policy_occupancy(theta, p, terminal, start, GAMMA, horizon=0)


def test_pair_utility_oracle_and_log_probs_by_hand():
    reward = jnp.array([[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]])
    # pair 0: tau0 = (0, a0) (1, a1) -> R = 3; tau1 = (1, a0) then terminal -> R = 0.5
    states = jnp.array([[[0, 1, 2], [1, 2, 2]]])
    actions = jnp.array([[[0, 1], [0, 0]]])
    valid = jnp.array([[[True, True], [True, False]]])
    u1 = parl.pair_log_likelihood(reward, states, actions, valid, jnp.array([1]))
    u0 = parl.pair_log_likelihood(reward, states, actions, valid, jnp.array([0]))
    np.testing.assert_allclose(float(u1[0]), np.log(1 / (1 + np.exp(-2.5))), rtol=1e-6)
    np.testing.assert_allclose(float(u0[0]), np.log(1 / (1 + np.exp(2.5))), rtol=1e-6)
    y = parl.oracle_labels(jax.random.key(0), reward, states, actions, valid, temperature=0.0)
    assert float(y[0]) == 1.0
    # an exact tie: 1/2 with ties="half", a 0/1 coin with "coin"
    tie = jnp.array([[[0, 0], [2, 2]]]), jnp.array([[[1], [0]]]), jnp.array([[[True], [False]]])
    flat = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert float(parl.oracle_labels(jax.random.key(0), flat, *tie, temperature=0.0,
                                    ties="half")[0]) == 0.5
    assert float(parl.oracle_labels(jax.random.key(0), flat, *tie, temperature=0.0)[0]) in (0, 1)
    with pytest.raises(ValueError, match="ties"):
        parl.oracle_labels(jax.random.key(0), flat, *tie, temperature=0.0, ties="skip")
    logits = jnp.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    lp = parl.trajectory_log_prob(logits, states, actions, valid)
    ls = np.log(np.exp([[0, 1], [2, 0]]) / np.exp([[0, 1], [2, 0]]).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(lp[0]), ls[0, 0] + ls[1, 1] + ls[1, 0], rtol=1e-6)
    # the oracle's label frequency follows BT on the gold margin
    many = jnp.broadcast_to(states, (20000, 2, 3))
    freq = parl.oracle_labels(jax.random.key(1), reward, many,
                              jnp.broadcast_to(actions, (20000, 2, 2)),
                              jnp.broadcast_to(valid, (20000, 2, 2))).mean()
    np.testing.assert_allclose(float(freq), 1 / (1 + np.exp(-2.5)), atol=0.01)
    with pytest.raises(ValueError, match="baseline"):
        parl.score_function_surrogate(lp, jnp.ones(1), baseline="mean")


def test_sampled_trajectories_follow_the_policy_and_stop_at_terminals():
    p, terminal, start, _ = _mdp()
    theta = jnp.array([[3.0, -3.0], [-3.0, 3.0], [0.0, 0.0], [0.0, 0.0]])
    st, ac, va = jax.jit(lambda k: parl.sample_trajectories(k, theta, p, terminal, start,
                                                            5000, 6))(jax.random.key(2))
    assert st.shape == (5000, 7) and ac.shape == (5000, 6) and va.shape == (5000, 6)
    st, ac, va = (np.asarray(x) for x in (st, ac, va))
    np.testing.assert_array_equal(va, st[:, :6] != 3)
    assert np.all(ac[~va] == 0)
    assert np.all(st[:, 0] != 3)
    pi = np.asarray(jax.nn.softmax(theta, -1))
    first = ac[:, 0][st[:, 0] == 0]
    np.testing.assert_allclose(np.mean(first == 0), pi[0, 0], atol=0.02)
    # transitions: the empirical next-state frequencies from (0, a0)
    mask = (st[:, 0] == 0) & (ac[:, 0] == 0)
    freq = np.bincount(st[mask, 1], minlength=S) / mask.sum()
    np.testing.assert_allclose(freq, np.asarray(p[0, 0]), atol=0.04)
