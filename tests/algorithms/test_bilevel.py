"""Bilevel hypergradients (alignax.algorithms.bilevel): on a quadratic inner problem the implicit
gradient equals the closed form, the unrolled gradient approaches it with many steps, Neumann
and CG agree, the custom-VJP solution composes with jax.grad, and BARFI's tabular pieces match
the MDP module's policy evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import bilevel
from alignax.tasks import mdp as mdp_lib

N, M = 5, 3


def _problem(seed=0):
    """L(theta, phi) = 1/2 theta^T A theta - theta^T B phi_w + 1/2 s ||theta_b||^2 - theta_b . phi_c
    over theta = {"w": [N], "b": [2]}, phi = {"w": [M], "c": [2]}; F = 1/2 ||theta_w - c||^2
    + 1/2 ||theta_b||^2 + d . phi_w. Closed forms: theta_w* = A^{-1} B phi_w, theta_b* = phi_c / s,
    dF/dphi_w = B^T A^{-1} (theta_w* - c) + d, dF/dphi_c = theta_b* / s."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((N, N))
    a = q @ q.T / N + np.eye(N)
    b = rng.standard_normal((N, M))
    c = rng.standard_normal(N)
    d = rng.standard_normal(M)
    s = 2.0
    a, b, c, d = (jnp.asarray(x, jnp.float32) for x in (a, b, c, d))

    def inner(theta, phi):
        return (0.5 * theta["w"] @ a @ theta["w"] - theta["w"] @ b @ phi["w"]
                + 0.5 * s * theta["b"] @ theta["b"] - theta["b"] @ phi["c"])

    def outer(theta, phi):
        return 0.5 * jnp.sum((theta["w"] - c) ** 2) + 0.5 * theta["b"] @ theta["b"] + d @ phi["w"]

    phi = {"w": jnp.asarray(rng.standard_normal(M), jnp.float32),
           "c": jnp.asarray(rng.standard_normal(2), jnp.float32)}
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    theta_w = np.linalg.solve(a64, b64 @ np.asarray(phi["w"], np.float64))
    theta_b = np.asarray(phi["c"], np.float64) / s
    star = {"w": jnp.asarray(theta_w, jnp.float32), "b": jnp.asarray(theta_b, jnp.float32)}
    grad = {"w": b64.T @ np.linalg.solve(a64, theta_w - np.asarray(c, np.float64))
            + np.asarray(d, np.float64), "c": theta_b / s}
    return inner, outer, phi, star, grad, np.asarray(a, np.float64)


def _close(tree, ref, **kw):
    for k in ref:
        np.testing.assert_allclose(np.asarray(tree[k]), ref[k], **kw)


@pytest.mark.parametrize("method,kwargs", [("cg", dict(maxiter=50, tol=1e-10)),
                                           ("neumann", dict(num_terms=400, alpha=0.2))])
def test_implicit_hypergradient_equals_the_closed_form(method, kwargs):
    inner, outer, phi, star, grad, _ = _problem()
    value, g = jax.jit(lambda t, p: bilevel.implicit_hypergradient(
        inner, outer, t, p, method=method, **kwargs))(star, phi)
    _close(g, grad, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(value, outer(star, phi), rtol=1e-6)


def test_unrolled_hypergradient_approaches_the_implicit_one_with_more_steps():
    inner, outer, phi, _, grad, _ = _problem()
    step = bilevel.gradient_step(inner, 0.2)
    theta0 = {"w": jnp.zeros(N), "b": jnp.zeros(2)}
    errors = []
    for k in (5, 50, 500):
        _, g, theta = jax.jit(lambda t, p, k=k: bilevel.unrolled_hypergradient(
            outer, step, t, p, k))(theta0, phi)
        errors.append(max(float(np.max(np.abs(np.asarray(g[key]) - grad[key]))) for key in grad))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4, errors
    # with remat the unrolled gradient is the same
    _, g_remat, _ = bilevel.unrolled_hypergradient(outer, step, theta0, phi, 50, remat=True)
    _, g_plain, _ = bilevel.unrolled_hypergradient(outer, step, theta0, phi, 50)
    for key in grad:
        np.testing.assert_allclose(g_remat[key], g_plain[key], rtol=1e-5, atol=1e-7)


def test_neumann_and_cg_agree_with_the_dense_solve():
    inner, _, phi, star, _, a = _problem(seed=1)
    v = {"w": jnp.arange(N, dtype=jnp.float32) - 2.0, "b": jnp.array([1.0, -3.0])}

    def matvec(u):
        return bilevel.hvp(lambda t: inner(t, phi), star, u)

    cg = bilevel.cg_inverse_hvp(matvec, v, maxiter=50, tol=1e-10)
    neu = bilevel.neumann_inverse_hvp(matvec, v, num_terms=500, alpha=0.2)
    dense = {"w": np.linalg.solve(a, np.asarray(v["w"], np.float64)),
             "b": np.asarray(v["b"], np.float64) / 2.0}
    _close(cg, dense, rtol=1e-4, atol=1e-5)
    _close(neu, dense, rtol=1e-4, atol=1e-5)
    # hvp is the Hessian times the vector
    np.testing.assert_allclose(matvec(v)["w"], a @ np.asarray(v["w"]), rtol=1e-5)
    # damping solves (H + lambda I) x = v
    damped = bilevel.cg_inverse_hvp(matvec, v, maxiter=50, tol=1e-10, damping=0.5)
    np.testing.assert_allclose(damped["w"], np.linalg.solve(a + 0.5 * np.eye(N), v["w"]),
                               rtol=1e-4, atol=1e-5)


def test_a_short_neumann_series_is_the_partial_sum():
    h = jnp.diag(jnp.array([1.0, 0.5]))
    v = jnp.array([1.0, 1.0])
    # alpha sum_{j<3} (1 - alpha h)^j with alpha = 0.5: h=1 -> .5 (1 + .5 + .25) = .875;
    # h=.5 -> .5 (1 + .75 + .5625) = 1.15625
    x = bilevel.neumann_inverse_hvp(lambda u: h @ u, v, num_terms=3, alpha=0.5)
    np.testing.assert_allclose(x, [0.875, 1.15625], rtol=1e-6)
    with pytest.raises(ValueError, match="num_terms"):
        bilevel.neumann_inverse_hvp(lambda u: u, v, num_terms=0, alpha=0.5)
    with pytest.raises(ValueError, match="method"):
        bilevel.inverse_hvp(lambda u: u, v, method="lu")


@pytest.mark.parametrize("method,kwargs", [("cg", dict(maxiter=50, tol=1e-10)),
                                           ("neumann", dict(num_terms=400, alpha=0.2))])
def test_implicit_solution_composes_with_grad(method, kwargs):
    inner, outer, phi, _, grad, _ = _problem()
    step = bilevel.gradient_step(inner, 0.2)
    solve = bilevel.implicit_solution(lambda t0, p: bilevel.unroll(step, t0, p, 400), inner,
                                      method=method, **kwargs)
    theta0 = {"w": jnp.zeros(N), "b": jnp.zeros(2)}
    g = jax.jit(jax.grad(lambda p: outer(solve(theta0, p), p)))(phi)
    _close(g, grad, rtol=5e-4, atol=5e-5)


def test_tabular_return_matches_policy_evaluation_and_has_a_discount_gradient():
    mdp, w = mdp_lib.gridworld(3, 3, seed=0, num_hazards=1, num_coins=1, gamma=0.9)
    reward = mdp.reward(jnp.asarray(w))
    logits = jax.random.normal(jax.random.key(0), (9, 4))
    args = (jnp.asarray(mdp.transitions), jnp.asarray(mdp.terminal), reward)
    j = bilevel.tabular_return(logits, *args, jnp.float32(0.9), jnp.asarray(mdp.start))
    v = mdp_lib.policy_evaluation(mdp, reward, jax.nn.softmax(logits), num_iters=400)
    np.testing.assert_allclose(j, jnp.asarray(mdp.start) @ v, rtol=1e-4)
    # d J / d gamma by central differences
    f = lambda g: bilevel.tabular_return(logits, *args, g, jnp.asarray(mdp.start))  # noqa: E731
    fd = (f(jnp.float32(0.901)) - f(jnp.float32(0.899))) / 0.002
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(0.9)), fd, rtol=2e-2)
    # r_phi = r_p + phi_1 r_aux; gamma = sigmoid(phi_2)
    r = bilevel.alignment_reward(jnp.ones((2, 2)), jnp.full((2, 2), 0.5), jnp.array([[0.0, 2.0]]))
    np.testing.assert_allclose(r, [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(bilevel.alignment_discount(4.6), 0.99, atol=1e-3)


def test_implicit_solution_takes_traced_data_through_args():
    # L(theta, phi, a) = 1/2 a theta^2 - theta phi: theta* = phi / a, d theta*/d phi = 1 / a;
    # F = theta*^2 / 2 -> dF/dphi = phi / a^2, vmapped over a (traced data, passed as args)
    def inner(theta, phi, a):
        return 0.5 * a * theta ** 2 - theta * phi

    def solve(theta0, phi, a):
        return bilevel.unroll(lambda t, p: t - 0.1 * jax.grad(inner)(t, p, a), theta0, phi, 300)

    sol = bilevel.implicit_solution(solve, inner, method="neumann", num_terms=300, alpha=0.1)
    a = jnp.array([1.0, 2.0, 4.0])
    g = jax.jit(jax.vmap(jax.grad(lambda p, a: 0.5 * sol(jnp.float32(0.0), p, a) ** 2),
                         in_axes=(None, 0)))(jnp.float32(1.5), a)
    np.testing.assert_allclose(g, 1.5 / np.asarray(a) ** 2, rtol=1e-4)
    # and the same through implicit_hypergradient
    _, h = bilevel.implicit_hypergradient(inner, lambda t, p: 0.5 * t ** 2, jnp.float32(0.75),
                                          jnp.float32(1.5), args=(jnp.float32(2.0),),
                                          method="cg", maxiter=5, tol=1e-10)
    np.testing.assert_allclose(h, 1.5 / 4.0, rtol=1e-5)
