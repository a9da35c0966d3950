"""Entropic optimal transport and Gromov-Wasserstein couplings, and preference-label transfer.

Gromov-Wasserstein (GW) matches two metric-measure spaces that live in different domains by
comparing their intra-domain distance matrices only. PEARL (Liu et al. 2023, "PEARL: Zero-shot
Cross-task Preference Alignment and Robust Reward Learning for Robotic Manipulation") couples the
trajectories of a labelled source task with those of an unlabelled target task this way and carries
the source preference labels over through the coupling. The solver follows Peyre et al. 2016,
"Gromov-Wasserstein Averaging of Kernel and Distance Matrices" (entropic GW, square loss).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp


def _check_marginal(x, n, name):
    chex.assert_shape(x, (n,), custom_message=name)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def sinkhorn(cost, a, b, *, epsilon: float = 0.05, num_iters: int = 200):
    """Entropic optimal transport plan by log-domain Sinkhorn iterations.

    .. math::
        T^* = \\arg\\min_{T \\in \\Pi(a, b)} \\langle C, T \\rangle - \\epsilon H(T), \\quad
        T_{ij} = \\exp((f_i + g_j - C_{ij}) / \\epsilon)

    with the dual potentials updated alternately,
    f_i = eps log a_i - eps logsumexp_j((g_j - C_ij) / eps) and symmetrically for g, so the column
    marginals are exact after each iteration and the row marginals converge.

    Args:
      cost: [N, M] cost matrix C.
      a: [N] source marginal (positive, sums to 1).
      b: [M] target marginal (positive, sums to 1).
      epsilon: entropic regularisation eps > 0 (same units as the cost).
      num_iters: number of (f, g) updates (static).

    Returns:
      [N, M] transport plan T.

    Reference: Cuturi 2013, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport".
    """
    chex.assert_rank(cost, 2, custom_message="cost")
    n, m = jnp.shape(cost)
    _check_marginal(a, n, "a")
    _check_marginal(b, m, "b")
    cost = jnp.asarray(cost, jnp.float32)
    log_a = jnp.log(jnp.asarray(a, jnp.float32))
    log_b = jnp.log(jnp.asarray(b, jnp.float32))

    def body(_, fg):
        f, g = fg
        f = epsilon * (log_a - jax.nn.logsumexp((g[None, :] - cost) / epsilon, axis=1))
        g = epsilon * (log_b - jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0))
        return f, g

    f, g = jax.lax.fori_loop(0, num_iters, body, (jnp.zeros(n), jnp.zeros(m)))
    return jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)


def gromov_wasserstein_cost(cost_s, cost_t, coupling):
    """Square-loss GW objective of a coupling, in O(N^2 M + N M^2) instead of O(N^2 M^2).

    .. math::
        \\mathrm{GW}(T) = \\sum_{i,j,k,l} (C^S_{ik} - C^T_{jl})^2 T_{ij} T_{kl}
                     = \\langle c_{CST} - 2 C^S T (C^T)^\\top, T \\rangle,

    c_CST_ij = sum_k (C^S_ik)^2 p_k + sum_l (C^T_jl)^2 q_l, with p = T 1 and q = T^T 1 (Peyre et
    al. 2016, Prop. 1).

    Args:
      cost_s: [N, N] source distances C^S.
      cost_t: [M, M] target distances C^T.
      coupling: [N, M] coupling T.

    Returns:
      float32 scalar.
    """
    tens = _gw_tensor(cost_s, cost_t, coupling)
    return jnp.sum(tens * coupling)


def _gw_tensor(cost_s, cost_t, coupling):
    """L(C^S, C^T) (x) T: [N, M], the linearisation of the square-loss GW objective at T."""
    chex.assert_rank(coupling, 2, custom_message="coupling")
    n, m = jnp.shape(coupling)
    chex.assert_shape([cost_s, cost_t], [(n, n), (m, m)],
                      custom_message="cost_s [N, N], cost_t [M, M] for a coupling [N, M]")
    cs = jnp.asarray(cost_s, jnp.float32)
    ct = jnp.asarray(cost_t, jnp.float32)
    t = jnp.asarray(coupling, jnp.float32)
    p, q = jnp.sum(t, axis=1), jnp.sum(t, axis=0)
    const = (cs**2 @ p)[:, None] + (ct**2 @ q)[None, :]
    return const - 2.0 * cs @ t @ ct.T


@functools.partial(jax.jit, static_argnames=("num_iters", "sinkhorn_iters"))
def entropic_gromov_wasserstein(cost_s, cost_t, p=None, q=None, *, epsilon: float = 0.01,
                                num_iters: int = 50, sinkhorn_iters: int = 200, init=None):
    """Entropic Gromov-Wasserstein coupling (square loss) by projected mirror descent.

    .. math::
        T^* \\approx \\arg\\min_{T \\in \\Pi(p, q)} \\sum_{i,j,k,l}
            (C^S_{ik} - C^T_{jl})^2 T_{ij} T_{kl} - \\epsilon H(T)

    Starting from T_0 = p q^T (or `init`), each outer iteration linearises the objective,
    G = c_CST - 2 C^S T (C^T)^T ([N, M], see `gromov_wasserstein_cost`), and sets
    T <- Sinkhorn(G, p, q, epsilon), the entropic projection onto the couplings of p and q
    (Peyre et al. 2016, Alg. 1 / Prop. 2). The problem is non-convex: the result is a stationary
    point that depends on the initialisation; a smaller epsilon gives a sharper coupling and needs
    costs of order one (rescale distances, e.g. by their maximum).

    Args:
      cost_s: [N, N] intra-source distances (symmetric).
      cost_t: [M, M] intra-target distances (symmetric).
      p: [N] source weights (default uniform).
      q: [M] target weights (default uniform).
      epsilon: entropic regularisation > 0.
      num_iters: outer GW iterations (static).
      sinkhorn_iters: Sinkhorn iterations per outer iteration (static).
      init: optional [N, M] initial coupling.

    Returns:
      [N, M] coupling T with marginals (approximately) p and q.

    Reference: Peyre, Cuturi and Solomon 2016, "Gromov-Wasserstein Averaging of Kernel and
    Distance Matrices"; used for cross-task preference transfer by Liu et al. 2023 (PEARL).
    """
    chex.assert_rank([cost_s, cost_t], 2, custom_message="cost_s, cost_t")
    n, m = jnp.shape(cost_s)[0], jnp.shape(cost_t)[0]
    chex.assert_shape([cost_s, cost_t], [(n, n), (m, m)],
                      custom_message="cost_s and cost_t must be square")
    p = jnp.full((n,), 1.0 / n) if p is None else jnp.asarray(p, jnp.float32)
    q = jnp.full((m,), 1.0 / m) if q is None else jnp.asarray(q, jnp.float32)
    _check_marginal(p, n, "p")
    _check_marginal(q, m, "q")
    t0 = jnp.outer(p, q) if init is None else jnp.asarray(init, jnp.float32)
    chex.assert_shape(t0, (n, m), custom_message="init")

    def body(_, t):
        return sinkhorn(_gw_tensor(cost_s, cost_t, t), p, q, epsilon=epsilon,
                        num_iters=sinkhorn_iters)

    return jax.lax.fori_loop(0, num_iters, body, t0)


def transfer_preference_labels(coupling, source_labels, source_mask=None):
    """Soft target preference labels carried over from the source through a coupling.

    .. math::
        \\hat y_{jl} = \\frac{\\sum_{i,k} T_{ij} T_{kl} w_{ik} y_{ik}}
                             {\\sum_{i,k} T_{ij} T_{kl} w_{ik}}
                    = \\frac{(T^\\top (w \\odot Y) T)_{jl}}{(T^\\top w T)_{jl}}

    with w the mask of labelled source pairs (all ones by default). If Y is antisymmetric
    (y_ki = 1 - y_ik, with a symmetric mask) so is the result. Target pairs that no labelled source
    pair reaches (zero denominator) get 0.5.

    Args:
      coupling: [N, M] coupling T between N source and M target trajectories.
      source_labels: [N, N] y_ik = P(source trajectory i preferred to k).
      source_mask: optional [N, N] weights of the labelled source pairs.

    Returns:
      [M, M] soft labels y_hat_jl = P(target trajectory j preferred to l).

    Reference: Liu et al. 2023, "PEARL: Zero-shot Cross-task Preference Alignment and Robust
    Reward Learning for Robotic Manipulation" (cross preference alignment).
    """
    chex.assert_rank(coupling, 2, custom_message="coupling")
    n = jnp.shape(coupling)[0]
    chex.assert_shape(source_labels, (n, n), custom_message="source_labels")
    t = jnp.asarray(coupling, jnp.float32)
    w = jnp.ones((n, n)) if source_mask is None else jnp.asarray(source_mask, jnp.float32)
    chex.assert_shape(w, (n, n), custom_message="source_mask")
    y = jnp.asarray(source_labels, jnp.float32)
    num = t.T @ (w * y) @ t
    den = t.T @ w @ t
    ok = den > 1e-30
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.5)
