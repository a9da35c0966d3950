"""Sinkhorn, entropic Gromov-Wasserstein and preference-label transfer vs naive NumPy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.ops.transport import (entropic_gromov_wasserstein, gromov_wasserstein_cost, sinkhorn,
                                   transfer_preference_labels)


def distances(rng, n, dim=2):
    x = rng.normal(size=(n, dim))
    c = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return c / c.max()


def naive_gw_cost(cs, ct, t):
    n, m = t.shape
    return sum((cs[i, k] - ct[j, jj]) ** 2 * t[i, j] * t[k, jj]
               for i, j, k, jj in itertools.product(range(n), range(m), range(n), range(m)))


def naive_tensor(cs, ct, t):
    n, m = t.shape
    out = np.zeros((n, m))
    for i, j in itertools.product(range(n), range(m)):
        out[i, j] = sum((cs[i, k] - ct[j, jj]) ** 2 * t[k, jj]
                        for k, jj in itertools.product(range(n), range(m)))
    return out


def naive_sinkhorn(cost, a, b, eps, iters):
    k = np.exp(-cost / eps)
    v = np.ones(len(b))
    for _ in range(iters):
        u = a / (k @ v)
        v = b / (k.T @ u)
    return u[:, None] * k * v[None]


def test_gw_cost_matches_quadruple_sum():
    rng = np.random.default_rng(0)
    cs, ct = distances(rng, 4), distances(rng, 3)
    t = rng.random((4, 3))
    t /= t.sum()
    got = jax.jit(gromov_wasserstein_cost)(cs, ct, t)
    np.testing.assert_allclose(got, naive_gw_cost(cs, ct, t), rtol=1e-5)


def test_gw_cost_golden_value():
    # One point each side: (0 - 0)^2 = 0; two points at distance 1 vs 3 with T = I / 2:
    # sum = 2 * (1 - 3)^2 * (1/2)^2 = 2.
    cs, ct = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 3.0], [3.0, 0.0]])
    np.testing.assert_allclose(gromov_wasserstein_cost(cs, ct, np.eye(2) / 2), 2.0, rtol=1e-6)


def test_sinkhorn_matches_naive_and_has_exact_column_marginals():
    rng = np.random.default_rng(1)
    cost = rng.random((5, 4))
    a = rng.dirichlet(np.ones(5))
    b = rng.dirichlet(np.ones(4))
    got = np.asarray(sinkhorn(cost, a, b, epsilon=0.1, num_iters=30))
    np.testing.assert_allclose(got, naive_sinkhorn(cost, a, b, 0.1, 30), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(0), b, rtol=1e-5)
    got = np.asarray(sinkhorn(cost, a, b, epsilon=0.1, num_iters=500))
    np.testing.assert_allclose(got.sum(1), a, rtol=1e-4)


def test_entropic_gw_matches_naive_numpy_iterations():
    rng = np.random.default_rng(2)
    cs, ct = distances(rng, 4), distances(rng, 5)
    p, q = np.full(4, 0.25), np.full(5, 0.2)
    t = np.outer(p, q)
    for _ in range(5):
        t = naive_sinkhorn(naive_tensor(cs, ct, t), p, q, 0.05, 100)
    got = entropic_gromov_wasserstein(cs, ct, epsilon=0.05, num_iters=5, sinkhorn_iters=100)
    np.testing.assert_allclose(got, t, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropic_gw_recovers_the_permutation_of_an_isomorphic_pair(seed):
    rng = np.random.default_rng(seed)
    n = 8
    cs = distances(rng, n)
    perm = rng.permutation(n)
    ct = cs[perm][:, perm]  # target j is source perm[j]
    t = np.asarray(entropic_gromov_wasserstein(cs, ct, epsilon=0.005, num_iters=100))
    np.testing.assert_array_equal(t.argmax(axis=0), perm)
    np.testing.assert_allclose(t.sum(0), np.full(n, 1 / n), rtol=1e-4)
    # and the coupling is (much) better than the independent one
    assert gromov_wasserstein_cost(cs, ct, t) < 0.1 * gromov_wasserstein_cost(
        cs, ct, np.full((n, n), 1 / n**2))


def test_gw_is_symmetric_under_swapping_the_domains():
    rng = np.random.default_rng(3)
    cs, ct = distances(rng, 5), distances(rng, 6)
    t = entropic_gromov_wasserstein(cs, ct, epsilon=0.05, num_iters=20)
    t_swapped = entropic_gromov_wasserstein(ct, cs, epsilon=0.05, num_iters=20)
    np.testing.assert_allclose(gromov_wasserstein_cost(cs, ct, t),
                               gromov_wasserstein_cost(ct, cs, t.T), rtol=1e-5)
    np.testing.assert_allclose(t_swapped, t.T, rtol=2e-2, atol=1e-4)


def test_transfer_labels_match_naive_sum_and_are_antisymmetric():
    rng = np.random.default_rng(4)
    n, m = 4, 3
    t = rng.random((n, m))
    upper = rng.random((n, n))
    y = np.triu(upper, 1) + np.tril(1 - upper.T, -1) + 0.5 * np.eye(n)  # y_ki = 1 - y_ik
    want = np.zeros((m, m))
    for j, jj in itertools.product(range(m), range(m)):
        num = sum(t[i, j] * t[k, jj] * y[i, k] for i, k in itertools.product(range(n), range(n)))
        den = sum(t[i, j] * t[k, jj] for i, k in itertools.product(range(n), range(n)))
        want[j, jj] = num / den
    got = np.asarray(jax.jit(transfer_preference_labels)(t, y))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got + got.T, 1.0, rtol=1e-5)


def test_transfer_through_a_permutation_permutes_the_labels():
    rng = np.random.default_rng(5)
    n = 6
    perm = rng.permutation(n)
    t = np.zeros((n, n))
    t[perm, np.arange(n)] = 1 / n
    y = (rng.random((n, n)) < 0.5).astype(np.float32)
    mask = np.ones((n, n))
    mask[0, 1] = 0.0
    got = np.asarray(transfer_preference_labels(t, y, mask))
    want = y[perm][:, perm]
    keep = mask[perm][:, perm] > 0
    np.testing.assert_allclose(got[keep], want[keep], atol=1e-6)
    np.testing.assert_allclose(got[~keep], 0.5)  # unreachable pair


def test_gradients():
    rng = np.random.default_rng(6)
    cs, ct = distances(rng, 3), distances(rng, 3)
    t = rng.random((3, 3)) / 9
    check_grads(lambda x: gromov_wasserstein_cost(cs, ct, x), (jnp.asarray(t, jnp.float32),),
                order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    cost = jnp.asarray(rng.random((3, 4)))
    a, b = jnp.full(3, 1 / 3), jnp.full(4, 0.25)
    check_grads(lambda c: jnp.sum(sinkhorn(c, a, b, epsilon=0.5, num_iters=20) * c), (cost,),
                order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_finite_at_extreme_costs():
    a, b = jnp.full(3, 1 / 3), jnp.full(3, 1 / 3)
    cost = jnp.array([[0.0, 1e4, 1e4], [1e4, 0.0, 1e4], [1e4, 1e4, 0.0]])
    t = sinkhorn(cost, a, b, epsilon=1e-3, num_iters=20)
    assert np.all(np.isfinite(t))
    np.testing.assert_allclose(t, np.eye(3) / 3, atol=1e-6)
    g = jax.grad(lambda c: jnp.sum(sinkhorn(c, a, b, epsilon=1e-3, num_iters=20) * c))(cost)
    assert np.all(np.isfinite(g))


def test_shape_errors():
    # chex asserts (trace-time): AssertionError naming the arguments
    with pytest.raises(AssertionError, match=r"shape \(3, 2\) but expected \(3, 3\)\. "
                                             r"\[cost_s and cost_t must be square\]"):
        entropic_gromov_wasserstein(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(AssertionError, match=r"shape \(2,\) but expected \(3\)\. \[p\]"):
        entropic_gromov_wasserstein(np.zeros((3, 3)), np.zeros((2, 2)), p=np.ones(2) / 2)
    with pytest.raises(AssertionError,
                       match=r"shape \(2, 2\) but expected \(3, 3\)\. \[source_labels\]"):
        transfer_preference_labels(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(AssertionError, match=r"shape \(3, 3\) but expected \(2, 2\)\. "
                                             r"\[cost_s \[N, N\], cost_t \[M, M\]"):
        gromov_wasserstein_cost(np.zeros((3, 3)), np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(AssertionError, match=r"rank 1 .* but expected 2\. \[cost\]"):
        sinkhorn(np.zeros(3), np.ones(3) / 3, np.ones(3) / 3)
