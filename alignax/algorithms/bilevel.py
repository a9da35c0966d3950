"""Bilevel optimisation: hypergradients of an outer objective through an inner optimisation.

The problem, over pytrees theta (inner parameters, e.g. a policy) and phi (outer parameters,
e.g. a reward's weights):

    min_phi  F(theta*(phi), phi)      s.t.   theta*(phi) = argmin_theta L(theta, phi).

Two ways to get dF/dphi, both pure functions over pytrees:

- unrolled differentiation (`unroll`): theta_K = step^K(theta_0, phi), K inner steps as one
  `jax.lax.scan` (optionally rematerialised, so the backward pass stores only the carries), and
  reverse-mode through the scan gives the exact gradient of F(theta_K(phi), phi). It is the
  gradient of what was run, K steps from theta_0, whether or not theta_K is a minimiser.
- implicit differentiation (`implicit_hypergradient`, `implicit_solution`): at a stationary
  point grad_theta L(theta*, phi) = 0, the implicit function theorem gives
      dtheta*/dphi = -(d2L/dtheta2)^{-1} d2L/(dtheta dphi),
      dF/dphi = dF/dphi|_direct - (d2L/dphi dtheta)^T (d2L/dtheta2)^{-1} grad_theta F,
  which needs one inverse-Hessian-vector product v = H^{-1} grad_theta F (H = d2L/dtheta2),
  then the mixed term as a vector-Jacobian product of grad_theta L w.r.t. phi:
      -(d2L/dphi dtheta)^T v = -d/dphi <grad_theta L(theta*, phi), v>.
  Hessian-vector products are forward-over-reverse (`hvp`: jvp of grad), never a Hessian.
  The inverse-HVP is by a truncated Neumann series (`neumann_inverse_hvp`, as in Lorraine et
  al. 2020, "Optimizing Millions of Hyperparameters by Implicit Differentiation", arXiv
  1911.02590, and BARFI) or by conjugate gradient (`cg_inverse_hvp`,
  `jax.scipy.sparse.linalg.cg`). Memory does not grow with the number of inner steps; the
  result is exact only at an exact inner minimiser with an invertible H.

Behavior Alignment via Reward Function Optimization (BARFI; Gupta, Chandak, Jordan, Thomas,
da Silva, NeurIPS 2023, arXiv 2310.19007) is this problem with theta a policy, L the negative
return of the behaviour-alignment reward r_phi = r_p + phi_1 r_aux under a learned discount
gamma_phi2, and F the negative primary return. Its tabular pieces are here too:
`alignment_reward`, `alignment_discount` and `tabular_return` (exact policy evaluation of a
softmax policy with a traced discount, so the discount can be learned).

Conventions: both objectives are losses (minimised); a return J to maximise enters as -J. All
functions take and return pytrees of the shape of their arguments; trees are combined leafwise.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any

IMPLICIT_METHODS = ("cg", "neumann")


# ----------------------------------------------------------------------------------------------
# Tree arithmetic.


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """sum over leaves of <a_leaf, b_leaf> (a scalar; float32 or wider)."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves, jnp.zeros((), jnp.float32))


def _axpy(alpha, x: PyTree, y: PyTree) -> PyTree:
    """alpha x + y, leafwise."""
    return jax.tree.map(lambda u, v: alpha * u + v, x, y)


# ----------------------------------------------------------------------------------------------
# Unrolled differentiation.


def gradient_step(inner_loss: Callable[[PyTree, PyTree], jax.Array], learning_rate: Any
                  ) -> Callable[[PyTree, PyTree], PyTree]:
    """One gradient-descent step on the inner loss, as a step function for `unroll`:

        step(theta, phi) = theta - eta grad_theta L(theta, phi).

    Args:
      inner_loss: L(theta, phi) -> scalar.
      learning_rate: eta (a scalar; may be traced).
    """

    def step(theta, phi):
        grads = jax.grad(inner_loss)(theta, phi)
        return jax.tree.map(lambda t, g: t - learning_rate * g, theta, grads)

    return step


def unroll(step: Callable[[PyTree, PyTree], PyTree], theta0: PyTree, phi: PyTree,
           num_steps: int, *, remat: bool = False) -> PyTree:
    """theta_K = step^K(theta_0, phi): K inner steps as one `lax.scan`, differentiable in phi.

        theta_{k+1} = step(theta_k, phi),   k = 0 .. K - 1.

    Reverse-mode differentiation through the scan gives the exact gradient of any function of
    theta_K w.r.t. phi (and theta_0): the unrolled hypergradient. Its memory grows with K
    (each step's residuals); with `remat=True` each step is `jax.checkpoint`ed, so only the K
    carries are stored and the step is recomputed in the backward pass.

    Args:
      step: (theta, phi) -> theta (e.g. `gradient_step(L, eta)`).
      theta0: the initial inner parameters (pytree).
      phi: the outer parameters (pytree).
      num_steps: K >= 0 (static).
      remat: rematerialise each step in the backward pass.

    Returns:
      theta_K, a pytree like theta0.
    """
    num_steps = int(num_steps)
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    body = jax.checkpoint(step) if remat else step

    def scan_body(theta, _):
        return body(theta, phi), None

    theta, _ = jax.lax.scan(scan_body, theta0, None, length=num_steps)
    return theta


def unrolled_hypergradient(outer_loss: Callable[[PyTree, PyTree], jax.Array],
                           step: Callable[[PyTree, PyTree], PyTree], theta0: PyTree,
                           phi: PyTree, num_steps: int, *, remat: bool = False
                           ) -> tuple[jax.Array, PyTree, PyTree]:
    """F(theta_K(phi), phi) and its gradient w.r.t. phi through K unrolled inner steps.

    theta_0 is a constant (the gradient does not flow into where it came from: truncated
    backpropagation, as in online bilevel training).

    Returns:
      (F value [], dF/dphi like phi, theta_K like theta0).
    """
    theta0 = jax.lax.stop_gradient(theta0)

    def total(p):
        theta = unroll(step, theta0, p, num_steps, remat=remat)
        return outer_loss(theta, p), theta

    (value, theta), grads = jax.value_and_grad(total, has_aux=True)(phi)
    return value, grads, theta


# ----------------------------------------------------------------------------------------------
# Implicit differentiation.


def hvp(f: Callable[[PyTree], jax.Array], x: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product (d2f/dx2) v by forward-over-reverse: jvp of grad f at x along v.

    Costs about one gradient evaluation plus a forward pass; the Hessian is never built.
    """
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def neumann_inverse_hvp(matvec: Callable[[PyTree], PyTree], v: PyTree, *, num_terms: int,
                        alpha: float) -> PyTree:
    """H^{-1} v by the truncated Neumann series (a `lax.scan` of `num_terms` HVPs):

        H^{-1} = alpha sum_{j >= 0} (I - alpha H)^j,
        x_n = alpha sum_{j=0}^{n-1} (I - alpha H)^j v,

    computed as p_0 = v, p_{j+1} = p_j - alpha H p_j, x = alpha sum_j p_j. It converges for
    a symmetric positive-definite H when 0 < alpha < 2 / lambda_max(H); the error shrinks as
    (1 - alpha lambda_min)^n. Components of v in the null space of H are kept (scaled by
    alpha n), so H must be invertible on the span of v.

    Args:
      matvec: u -> H u (e.g. `lambda u: hvp(lambda t: L(t, phi), theta, u)`).
      v: the right-hand side (pytree).
      num_terms: n >= 1 series terms (static).
      alpha: the step alpha > 0.

    Returns:
      x_n ~ H^{-1} v, like v.
    """
    num_terms = int(num_terms)
    if num_terms < 1:
        raise ValueError(f"num_terms must be >= 1, got {num_terms}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")

    def body(carry, _):
        p, acc = carry
        acc = jax.tree.map(jnp.add, acc, p)
        p = _axpy(-alpha, matvec(p), p)
        return (p, acc), None

    (_, acc), _ = jax.lax.scan(body, (v, jax.tree.map(jnp.zeros_like, v)), None,
                               length=num_terms)
    return jax.tree.map(lambda a: alpha * a, acc)


def cg_inverse_hvp(matvec: Callable[[PyTree], PyTree], v: PyTree, *, maxiter: int = 100,
                   tol: float = 1e-6, damping: float = 0.0) -> PyTree:
    """(H + damping I)^{-1} v by conjugate gradient (`jax.scipy.sparse.linalg.cg` on pytrees).

    CG needs a symmetric positive-(semi)definite operator; damping > 0 regularises a singular
    or badly conditioned H (a Levenberg-style H + lambda I). In exact arithmetic CG finishes in
    at most dim(theta) iterations.

    Args:
      matvec: u -> H u.
      v: the right-hand side.
      maxiter: the most CG iterations.
      tol: relative residual tolerance.
      damping: lambda >= 0.

    Returns:
      x ~ (H + lambda I)^{-1} v, like v.
    """
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    op = matvec if damping == 0 else (lambda u: _axpy(damping, u, matvec(u)))
    x, _ = jax.scipy.sparse.linalg.cg(op, v, tol=tol, maxiter=int(maxiter))
    return x


def inverse_hvp(matvec: Callable[[PyTree], PyTree], v: PyTree, *, method: str = "cg",
                **kwargs) -> PyTree:
    """H^{-1} v with `method` "cg" (`cg_inverse_hvp`) or "neumann" (`neumann_inverse_hvp`);
    kwargs go to that function."""
    if method == "cg":
        return cg_inverse_hvp(matvec, v, **kwargs)
    if method == "neumann":
        return neumann_inverse_hvp(matvec, v, **kwargs)
    raise ValueError(f"method must be one of {IMPLICIT_METHODS}, got {method!r}")


def implicit_vjp(inner_loss: Callable[..., jax.Array], theta_star: PyTree,
                 phi: PyTree, cotangent: PyTree, *, args: tuple = (), method: str = "cg",
                 **solver_kwargs) -> PyTree:
    """The vector-Jacobian product u^T dtheta*/dphi by the implicit function theorem:

        u^T dtheta*/dphi = -(d2L/dphi dtheta)^T (d2L/dtheta2)^{-1} u
                         = -d/dphi <grad_theta L(theta*, phi), stop_grad(H^{-1} u)>.

    Args:
      inner_loss: L(theta, phi, *args) -> scalar.
      theta_star: an inner stationary point (grad_theta L = 0).
      phi: the outer parameters.
      cotangent: u, like theta (e.g. grad_theta F).
      args: constant extra arguments of L (data; not differentiated).
      method: "cg" or "neumann"; solver_kwargs go to `inverse_hvp`.

    Returns:
      like phi.
    """
    theta_star = jax.lax.stop_gradient(theta_star)
    w = inverse_hvp(lambda u: hvp(lambda t: inner_loss(t, phi, *args), theta_star, u),
                    cotangent, method=method, **solver_kwargs)
    w = jax.lax.stop_gradient(w)
    mixed = jax.grad(lambda p: tree_vdot(jax.grad(inner_loss)(theta_star, p, *args), w))(phi)
    return jax.tree.map(jnp.negative, mixed)


def implicit_hypergradient(inner_loss: Callable[..., jax.Array],
                           outer_loss: Callable[[PyTree, PyTree], jax.Array],
                           theta_star: PyTree, phi: PyTree, *, args: tuple = (),
                           method: str = "cg", **solver_kwargs) -> tuple[jax.Array, PyTree]:
    """F(theta*, phi) and dF/dphi at an inner stationary point theta* (implicit function theorem):

        dF/dphi = partial_phi F(theta*, phi)
                  - (d2L/dphi dtheta)^T (d2L/dtheta2)^{-1} grad_theta F(theta*, phi).

    BARFI (arXiv 2310.19007, Sec. 4) writes the same gradient for the return J_p to maximise,
    grad_phi J_p = -(d2J_phi/dphi dtheta)^T (d2J_phi/dtheta2)^{-1} grad_theta J_p, with the
    inverse-Hessian-vector product by a Neumann series.

    Args:
      inner_loss: L(theta, phi, *args) -> scalar, minimised over theta.
      outer_loss: F(theta, phi) -> scalar.
      theta_star: the inner solution (treated as a constant point; gradients flow through the
        implicit formula only).
      phi: the outer parameters.
      args: constant extra arguments of L.
      method: "cg" or "neumann"; solver_kwargs go to `inverse_hvp` (cg: maxiter, tol,
        damping; neumann: num_terms, alpha).

    Returns:
      (F value [], dF/dphi like phi).
    """
    theta_star = jax.lax.stop_gradient(theta_star)
    value, (g_theta, g_phi) = jax.value_and_grad(outer_loss, argnums=(0, 1))(theta_star, phi)
    implicit = implicit_vjp(inner_loss, theta_star, phi, g_theta, args=args, method=method,
                            **solver_kwargs)
    return value, jax.tree.map(jnp.add, g_phi, implicit)


def implicit_solution(solve: Callable[..., PyTree], inner_loss: Callable[..., jax.Array], *,
                      method: str = "cg", **solver_kwargs) -> Callable[..., PyTree]:
    """theta*(theta_0, phi, *args) = solve(theta_0, phi, *args) with an implicit-function-theorem
    backward pass.

    The returned function runs `solve` forward (e.g. K unrolled steps, or any solver) and, under
    `jax.grad`, replaces differentiation through the solver by `implicit_vjp` at its output, so
    it composes with any outer objective (a custom VJP). theta_0 and args get zero cotangents
    (the solution of a well-posed inner problem does not depend on where the solver started;
    args are data). Pass traced data (e.g. a vmapped environment) through `args`, not by
    closure: a custom VJP may not close over traced values.

    Args:
      solve: (theta_0, phi, *args) -> theta*.
      inner_loss: L(theta, phi, *args), of which theta* is a stationary point.
      method, solver_kwargs: as in `implicit_vjp`.

    Returns:
      (theta_0, phi, *args) -> theta*.
    """
    if method not in IMPLICIT_METHODS:
        raise ValueError(f"method must be one of {IMPLICIT_METHODS}, got {method!r}")

    @jax.custom_vjp
    def solution(theta0, phi, *args):
        return solve(theta0, phi, *args)

    def fwd(theta0, phi, *args):
        theta = solve(theta0, phi, *args)
        return theta, (theta, phi, args)

    def bwd(res, cotangent):
        theta, phi, args = res
        g_phi = implicit_vjp(inner_loss, theta, phi, cotangent, args=args, method=method,
                             **solver_kwargs)
        return (None, g_phi, *(None for _ in args))

    solution.defvjp(fwd, bwd)
    return solution


# ----------------------------------------------------------------------------------------------
# BARFI's tabular inner problem.


def alignment_reward(primary: jax.Array, auxiliary: jax.Array, weight: jax.Array) -> jax.Array:
    """The behaviour-alignment reward of BARFI (arXiv 2310.19007, Sec. 4):

        r_phi(s, a) = r_p(s, a) + phi_1(s, a) r_aux(s, a).

    Args:
      primary: r_p [..., S, A].
      auxiliary: r_aux [..., S, A].
      weight: phi_1 [..., S, A] (broadcastable).

    Returns:
      r_phi [..., S, A].
    """
    return primary + weight * auxiliary


def alignment_discount(logit: jax.Array) -> jax.Array:
    """The learned discount gamma_phi2 = sigmoid(phi_2) in (0, 1) (the parameterisation of the
    paper's released code; phi_2 = 4.6 gives 0.99)."""
    return jax.nn.sigmoid(logit)


def tabular_return(logits: jax.Array, transitions: jax.Array, terminal: jax.Array,
                   reward: jax.Array, gamma: jax.Array, start: jax.Array) -> jax.Array:
    """Exact expected discounted return of a tabular softmax policy, differentiable in all of
    logits, reward and gamma:

        pi(a | s) = softmax_a logits(s, a),
        P_pi(s, s') = sum_a pi(a | s) P(s' | s, a),   r_pi(s) = sum_a pi(a | s) r(s, a),
        V = (I - gamma P_pi)^{-1} r_pi   (rows of terminal states zeroed: V = 0 there),
        J = sum_s start(s) V(s).

    Unlike `alignax.tasks.mdp.policy_evaluation` (iterated backups with a static gamma) this
    solves the Bellman equation by one linear solve with a traced gamma, so d/dgamma exists.
    Needs gamma < 1, or every policy to reach a terminal state.

    Args:
      logits: [S, A] policy logits.
      transitions: [S, A, S] P(s' | s, a).
      terminal: [S] bool, absorbing zero-value states.
      reward: [S, A] r(s, a).
      gamma: scalar discount.
      start: [S] start distribution.

    Returns:
      J, a scalar.
    """
    pi = jax.nn.softmax(logits, axis=-1)
    live = (~terminal).astype(pi.dtype)
    p_pi = jnp.einsum("sa,sat->st", pi, transitions) * live[:, None]
    r_pi = jnp.sum(pi * reward, axis=-1) * live
    v = jnp.linalg.solve(jnp.eye(p_pi.shape[0], dtype=p_pi.dtype) - gamma * p_pi, r_pi)
    return start @ v
