"""PARL: the upper-level gradient of policy alignment when the data follow the lower-level policy.

Chakraborty, Bedi, Koppel, Wang, Manocha, Wang, Huang, "PARL: A Unified Framework for Policy
Alignment in Reinforcement Learning from Human Feedback" (ICLR 2024, arXiv 2308.02585).

The problem, over reward (upper) parameters nu and policy (lower) parameters theta:

    max_nu F(nu) = E_{tau ~ rho(tau; theta*(nu))} [U(tau; nu)]
    s.t.  theta*(nu) in argmax_theta V(theta; nu),

with rho(tau; theta) the distribution of trajectories (or trajectory pairs) under pi_theta, U the
alignment utility (for preference feedback: the Bradley-Terry log-likelihood of the oracle's
label of a pair of trajectories under the reward r_nu) and V the lower-level return of r_nu. The
distribution of the upper objective depends on the lower solution, so (the paper's gradient)

    grad_nu F = E[grad_nu U(tau; nu)]
                + (grad_nu theta*)^T E[U(tau; nu) grad_theta log rho(tau; theta*)],
    grad_nu theta* = -(d2V/dtheta2)^{-1} d2V/(dtheta dnu)      (implicit function theorem).

The first term is what alternating reward learning uses (PEBBLE-like: fit the reward on the
current data, then improve the policy); the second, the data-distribution term, accounts for
how moving nu moves the policy and hence which trajectories the utility is measured on.
A-PARL alternates K lower-level policy-gradient steps with one upper step along this gradient,
the inverse-Hessian-vector product by `alignax.algorithms.bilevel` (CG or Neumann).

Pieces (pure functions, tabular softmax policies theta = logits [S, A]):
- `policy_occupancy` / `occupancy_utility`: the exact state-action visitation d_theta and
  E_rho[U] = sum d_theta(s, a) u(s, a) for a step-additive utility U(tau) = sum_t u(s_t, a_t); its
  theta-gradient is the data term's E[U grad log rho] exactly (the state-visitation gradient).
- `sample_trajectories`, `trajectory_log_prob`, `score_function_surrogate`: the sampled
  estimator (1/N) sum_i (U_i - b_i) grad_theta log rho(tau_i; theta) (REINFORCE, with an
  optional leave-one-out baseline b_i, which keeps it unbiased).
- `pair_log_likelihood`, `oracle_labels`: the preference utility and a simulated gold oracle.
- `parl_gradient`: value, gradient and its two parts for any upper objective F(theta, nu) whose
  theta-gradient is the data term (exact or the surrogate); `data_term=False` gives the
  PEBBLE-like gradient.
- `attach_implicit_gradient`: theta* as the identity in the forward pass with the implicit
  backward pass to nu, to build the PARL gradient inside a loss that `jax.grad` differentiates
  (as in `alignax.train.small.fit_small`).

Conventions as in `bilevel`: the lower problem is given as a loss L(theta, nu) = -V (minimised);
F is maximised, and `parl_gradient` returns its ascent direction.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.algorithms import bilevel

PyTree = Any

BASELINES = ("none", "loo")
TIES = ("coin", "half")


# ----------------------------------------------------------------------------------------------
# Exact visitation of a tabular softmax policy.


def policy_occupancy(logits: jax.Array, transitions: jax.Array, terminal: jax.Array,
                     start: jax.Array, gamma: float, *, horizon: int | None = None) -> jax.Array:
    """The discounted state-action visitation of pi_theta = softmax(logits):

        d(s, a) = sum_{t < H} gamma^t P(s_t = s, a_t = a | s_0 ~ start, pi),

    terminal states contributing nothing (trajectories stop there). horizon=None: H = infinity,
    by one linear solve d_S = (I - gamma P_pi^T)^{-1} start (needs gamma < 1 or every policy to
    terminate); an int H: the finite sum by a scan (the visitation of H-step trajectories, the
    ones `sample_trajectories` draws). Differentiable in logits.

    Args:
      logits: [S, A]. transitions: [S, A, S]. terminal: [S] bool. start: [S]. gamma: scalar.
      horizon: None or the number of steps H >= 1 (static).

    Returns:
      d [S, A].
    """
    pi = jax.nn.softmax(logits, axis=-1)
    live = (~terminal).astype(pi.dtype)
    p_pi = jnp.einsum("sa,sat->st", pi, transitions) * live[:, None]
    if horizon is None:
        d_s = jnp.linalg.solve(jnp.eye(p_pi.shape[0], dtype=p_pi.dtype) - gamma * p_pi.T, start)
    else:
        horizon = int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")

        def body(carry, _):
            mu, acc = carry
            return (gamma * (mu * live) @ p_pi, acc + mu), None

        (_, d_s), _ = jax.lax.scan(body, (start.astype(pi.dtype), jnp.zeros_like(live)), None,
                                   length=horizon)
    return (d_s * live)[:, None] * pi


def occupancy_utility(logits: jax.Array, utility: jax.Array, transitions: jax.Array,
                      terminal: jax.Array, start: jax.Array, gamma: float, *,
                      horizon: int | None = None) -> jax.Array:
    """E_{tau ~ rho(theta)}[U(tau)] exactly, for a step-additive utility
    U(tau) = sum_t gamma^t u(s_t, a_t):  sum_{s, a} d_theta(s, a) u(s, a) (`policy_occupancy`).

    Its gradient w.r.t. logits (u held fixed) is the PARL data term E[U grad_theta log rho]
    exactly (the likelihood-ratio identity; here the state-visitation gradient), and w.r.t. u
    it is E[grad_u U]. Args as `policy_occupancy`, utility u [S, A]. Returns a scalar.
    """
    d = policy_occupancy(logits, transitions, terminal, start, gamma, horizon=horizon)
    return jnp.sum(d * utility)


# ----------------------------------------------------------------------------------------------
# Sampled trajectories and the score-function estimator.


def sample_trajectories(key: jax.Array, logits: jax.Array, transitions: jax.Array,
                        terminal: jax.Array, start: jax.Array, num: int, length: int
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """N trajectories of L steps of pi_theta = softmax(logits), in JAX (jit/vmap-able):

        s_0 ~ start, a_t ~ pi(. | s_t), s_{t+1} ~ P(. | s_t, a_t) while s_t is not terminal;
        afterwards the trajectory stays put with valid = False and action 0
        (the convention of `alignax.tasks.mdp.Segments`).

    Args:
      key: a PRNG key. logits: [S, A]. transitions: [S, A, S]. terminal: [S] bool.
      start: [S]. num: N (static). length: L (static).

    Returns:
      states [N, L + 1] int32, actions [N, L] int32, valid [N, L] bool.
    """
    k0, key = jax.random.split(key)
    s0 = jax.random.choice(k0, start.shape[0], (int(num),), p=start)

    def body(s, k):
        ka, ks = jax.random.split(k)
        live = ~terminal[s]
        a = jax.random.categorical(ka, logits[s], axis=-1)
        nxt = jax.random.categorical(ks, jnp.log(transitions[s, a] + 1e-30), axis=-1)
        nxt = jnp.where(live, nxt, s).astype(jnp.int32)
        return nxt, (nxt, jnp.where(live, a, 0).astype(jnp.int32), live)

    _, (nxt, actions, valid) = jax.lax.scan(body, s0.astype(jnp.int32),
                                            jax.random.split(key, int(length)))
    states = jnp.concatenate([s0[None].astype(jnp.int32), nxt], axis=0)
    return states.T, actions.T, valid.T


def trajectory_log_prob(logits: jax.Array, states: jax.Array, actions: jax.Array,
                        valid: jax.Array) -> jax.Array:
    """log rho(tau; theta) up to theta-free terms (start and transition probabilities):

        sum_t [valid_t] log pi_theta(a_t | s_t),

    so grad_theta of it is grad_theta log rho(tau; theta). Trailing axes of states/actions
    may hold several trajectories of one sample (a pair: [P, 2, L + 1] -> sum over both).

    Args:
      logits: [S, A]. states: [..., L + 1] (or [..., L]). actions, valid: [..., L].

    Returns:
      [...] with the trajectory axes of `actions` beyond the first summed: [N] for [N, L],
      [P] for [P, 2, L].
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    length = actions.shape[-1]
    per_step = jnp.where(valid, logp[states[..., :length], actions], 0.0)
    return per_step.reshape(per_step.shape[0], -1).sum(-1)


def score_function_surrogate(log_probs: jax.Array, utilities: jax.Array, *,
                             baseline: str = "loo") -> jax.Array:
    """A scalar whose value is 0 and whose gradient is the sampled data term

        g = (1 / N) sum_i (U_i - b_i) grad_theta log rho(tau_i; theta),

    an unbiased estimate of E[U grad_theta log rho] (score function / REINFORCE), with
    b_i = 0 (`baseline="none"`) or the leave-one-out mean b_i = (sum_{j != i} U_j) / (N - 1)
    (`"loo"`; unbiased because b_i does not depend on tau_i, needs N >= 2). Utilities carry no
    gradient here (stop_gradient): their nu-gradient is the direct term, not this one.

    Args:
      log_probs: [N] `trajectory_log_prob` (differentiable in theta).
      utilities: [N] U(tau_i; nu).
      baseline: "none" or "loo".

    Returns:
      a scalar (value 0).
    """
    u = jax.lax.stop_gradient(utilities)
    n = u.shape[0]
    if baseline == "loo":
        if n < 2:
            raise ValueError("baseline='loo' needs at least 2 samples")
        u = u - (jnp.sum(u) - u) / (n - 1)
    elif baseline != "none":
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    centred = log_probs - jax.lax.stop_gradient(log_probs)
    return jnp.mean(u * centred)


# ----------------------------------------------------------------------------------------------
# The preference utility.


def pair_log_likelihood(reward: jax.Array, states: jax.Array, actions: jax.Array,
                        valid: jax.Array, labels: jax.Array) -> jax.Array:
    """U(tau^0, tau^1; nu) = the Bradley-Terry log-likelihood of the label under r_nu:

        R(tau) = sum_t [valid_t] r_nu(s_t, a_t),   p = sigmoid(R(tau^0) - R(tau^1)),
        U = y log p + (1 - y) log(1 - p),          y = 1 when tau^0 is preferred.

    Args:
      reward: r_nu [S, A]. states: [P, 2, L + 1]. actions, valid: [P, 2, L]. labels: [P] in
        {0, 1} (or soft, in [0, 1]).

    Returns:
      U [P] (<= 0).
    """
    length = actions.shape[-1]
    ret = jnp.sum(jnp.where(valid, reward[states[..., :length], actions], 0.0), -1)  # [P, 2]
    margin = ret[:, 0] - ret[:, 1]
    y = labels.astype(margin.dtype)
    return y * jax.nn.log_sigmoid(margin) + (1.0 - y) * jax.nn.log_sigmoid(-margin)


def oracle_labels(key: jax.Array, gold_reward: jax.Array, states: jax.Array,
                  actions: jax.Array, valid: jax.Array, *, temperature: float = 1.0,
                  ties: str = "coin") -> jax.Array:
    """A simulated gold preference oracle over trajectory pairs (Bradley-Terry on the gold
    partial return G(tau) = sum_t [valid_t] r*(s_t, a_t), Knox et al. 2022):

        temperature > 0:  y ~ Bernoulli(sigmoid((G(tau^0) - G(tau^1)) / temperature));
        temperature = 0:  y = [G0 > G1], exact ties by a fair coin (`ties="coin"`) or labelled
                          1/2, "equally preferable" (`ties="half"`, as in Christiano et al.
                          2017, arXiv 1706.03741).

    Args:
      key: PRNG key. gold_reward: r* [S, A]. states [P, 2, L + 1]; actions, valid [P, 2, L].
      temperature: >= 0 (static). ties: "coin" or "half" (temperature 0 only).

    Returns:
      labels [P] float32 in {0, 1} (and 1/2 for ties with `ties="half"`).
    """
    length = actions.shape[-1]
    ret = jnp.sum(jnp.where(valid, gold_reward[states[..., :length], actions], 0.0), -1)
    d = ret[:, 0] - ret[:, 1]
    u = jax.random.uniform(key, d.shape)
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if temperature > 0:
        return (u < jax.nn.sigmoid(d / temperature)).astype(jnp.float32)
    if temperature == 0:
        tie = 0.5 if ties == "half" else (u < 0.5).astype(jnp.float32)
        return jnp.where(d == 0, tie, (d > 0).astype(jnp.float32))
    raise ValueError(f"temperature must be >= 0, got {temperature}")


# ----------------------------------------------------------------------------------------------
# The PARL gradient.


def parl_gradient(inner_loss: Callable[..., jax.Array],
                  upper: Callable[[PyTree, PyTree], jax.Array], theta_star: PyTree,
                  nu: PyTree, *, args: tuple = (), data_term: bool = True, method: str = "cg",
                  **solver_kwargs) -> tuple[jax.Array, PyTree, dict]:
    """F(theta*, nu) and the PARL gradient grad_nu F (arXiv 2308.02585, Lemma 1):

        grad_nu F = d_nu F(theta*, nu)                                   (E[grad_nu U])
                    - (d2L/dnu dtheta)^T (d2L/dtheta2)^{-1} d_theta F(theta*, nu)
                  = E[grad_nu U] + (grad_nu theta*)^T E[U grad_theta log rho(tau; theta*)],

    with L = -V the lower-level loss (so grad_nu theta* = -(d2V/dtheta2)^{-1} d2V/dtheta dnu)
    and `upper` any F(theta, nu) whose partial derivatives are the two expectations: exact,
    e.g. `occupancy_utility(theta, u_nu, ...)`, or sampled, e.g. mean_i U(tau_i; nu) +
    `score_function_surrogate(trajectory_log_prob(theta, tau), U)`. The inverse-HVP is
    `bilevel.inverse_hvp` (method "cg": maxiter, tol, damping; "neumann": num_terms, alpha).

    Args:
      inner_loss: L(theta, nu, *args) -> scalar (minimised by theta*).
      upper: F(theta, nu) -> scalar (maximised over nu).
      theta_star: the lower solution (a constant point).
      nu: the upper parameters.
      args: constant extra arguments of L.
      data_term: False drops the second term: the PEBBLE-like gradient d_nu F(theta*, nu).
      method, solver_kwargs: as `bilevel.implicit_vjp`.

    Returns:
      (F [], grad_nu F like nu, {"direct": E[grad_nu U], "data": the second term (zeros
      without data_term)}).
    """
    theta_star = jax.lax.stop_gradient(theta_star)
    value, (g_theta, g_nu) = jax.value_and_grad(upper, argnums=(0, 1))(theta_star, nu)
    if data_term:
        data = bilevel.implicit_vjp(inner_loss, theta_star, nu, g_theta, args=args,
                                    method=method, **solver_kwargs)
    else:
        data = jax.tree.map(jnp.zeros_like, g_nu)
    return value, jax.tree.map(jnp.add, g_nu, data), {"direct": g_nu, "data": data}


def attach_implicit_gradient(inner_loss: Callable[..., jax.Array], theta_star: PyTree,
                             nu: PyTree, *args, method: str = "cg", **solver_kwargs) -> PyTree:
    """theta* in the forward pass; under `jax.grad` w.r.t. nu, the implicit-function-theorem
    VJP u -> -(d2L/dnu dtheta)^T (d2L/dtheta2)^{-1} u (`bilevel.implicit_vjp`).

    For a loss G(attach(theta*, nu), nu), jax.grad gives d_nu G + (dtheta*/dnu)^T d_theta G,
    so with G = -(mean U + score_function_surrogate) it is minus the sampled PARL gradient,
    computed at a theta* that is already there (e.g. K policy-gradient steps whose trajectories
    were sampled from it), with no second solve (unlike `bilevel.implicit_solution`). args are
    constant data of L (pass traced data here, not by closure: a custom VJP may not close over
    traced values).

    Args:
      inner_loss: L(theta, nu, *args). theta_star: the lower solution. nu: the upper params.
      method, solver_kwargs: as `bilevel.implicit_vjp`.

    Returns:
      theta_star (value), with the implicit gradient to nu.
    """
    if method not in bilevel.IMPLICIT_METHODS:
        raise ValueError(f"method must be one of {bilevel.IMPLICIT_METHODS}, got {method!r}")

    @jax.custom_vjp
    def point(theta, p, *a):
        return theta

    def fwd(theta, p, *a):
        return theta, (theta, p, a)

    def bwd(res, cotangent):
        theta, p, a = res
        g = bilevel.implicit_vjp(inner_loss, theta, p, cotangent, args=a, method=method,
                                 **solver_kwargs)
        return (jax.tree.map(jnp.zeros_like, theta), g, *(None for _ in a))

    point.defvjp(fwd, bwd)
    return point(jax.lax.stop_gradient(theta_star), nu, *args)
