"""Small tabular MDPs with known gold rewards: testbeds for learning rewards from preferences.

An MDP has S states, A actions and F reward features. The gold reward is linear in the features,
    r(s, a) = phi(s, a) . w,        phi: [S, A, F],  w: [F],  r: [S, A].
Terminal states are absorbing and worth nothing: every action self-loops and earns zero reward,
so V(s) = Q(s, a) = 0 for terminal s.

Preferences over segments sigma = (s_0, a_0, ..., s_{L-1}, a_{L-1}, s_L) (Knox et al., "Models of
human preference for learning reward functions", arXiv 2206.02231):
  partial-return model: P(sigma1 > sigma2) = sigmoid(G(sigma1) - G(sigma2)),
      G(sigma) = sum_t r(s_t, a_t);
  regret model:         P(sigma1 > sigma2) = sigmoid(regret(sigma2) - regret(sigma1)),
      regret(sigma) = -sum_t gamma^t A*(s_t, a_t),   A* = Q* - V*.
For deterministic transitions Q*(s_t, a_t) = r(s_t, a_t) + gamma V*(s_{t+1}) and the sum telescopes:
      regret(sigma) = V*(s_0) - [sum_t gamma^t r(s_t, a_t) + gamma^L V*(s_L)]
(with gamma = 1 this is the undiscounted form of the paper).

Generators use numpy and are deterministic functions of their seed; everything that has to be
differentiable w.r.t. the reward (value iteration, advantages, segment returns and regrets) is JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # np.ndarray or jax.Array

# Grid actions: (row, col) offsets of up / down / left / right.
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
GRID_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
GRID_FEATURES = ("step", "goal", "hazard", "coin")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["transitions", "features", "terminal", "start"],
    meta_fields=["gamma"],
)
@dataclasses.dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP with linear reward features (a pytree; `gamma` is static).

    Attributes:
      transitions: [S, A, S] P(s' | s, a); rows sum to 1; terminal rows are self-loops.
      features: [S, A, F] reward features phi(s, a); zero on terminal rows.
      terminal: [S] bool, absorbing zero-reward states.
      start: [S] start distribution (sums to 1).
      gamma: discount factor in [0, 1].
    """

    transitions: Array
    features: Array
    terminal: Array
    start: Array
    gamma: float = 1.0

    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_actions(self) -> int:
        return self.transitions.shape[1]

    @property
    def num_features(self) -> int:
        return self.features.shape[-1]

    def reward(self, weights: Array) -> jax.Array:
        """Linear reward r = phi @ w: [F] -> [S, A] (differentiable w.r.t. `weights`)."""
        return jnp.einsum("saf,f->sa", jnp.asarray(self.features, jnp.float32), weights)


def validate_mdp(mdp: TabularMDP, atol: float = 1e-5) -> None:
    """Raises ValueError if shapes or the probability / terminal conventions are violated."""
    p = np.asarray(mdp.transitions, np.float64)
    phi = np.asarray(mdp.features)
    term = np.asarray(mdp.terminal)
    start = np.asarray(mdp.start, np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[2]:
        raise ValueError(f"transitions must be [S, A, S], got {p.shape}")
    s, a = p.shape[:2]
    if phi.ndim != 3 or phi.shape[:2] != (s, a):
        raise ValueError(f"features must be [{s}, {a}, F], got {phi.shape}")
    if term.shape != (s,) or term.dtype != bool:
        raise ValueError(f"terminal must be a [{s}] bool array, got {term.shape} {term.dtype}")
    if start.shape != (s,):
        raise ValueError(f"start must be [{s}], got {start.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(-1), 1.0, atol=atol):
        raise ValueError("transition rows must be probability distributions")
    if np.any(start < 0) or abs(start.sum() - 1.0) > atol:
        raise ValueError("start must be a probability distribution")
    idx = np.flatnonzero(term)
    if idx.size and not np.allclose(p[idx, :, idx], 1.0, atol=atol):
        raise ValueError("terminal states must be absorbing")
    if np.any(phi[idx] != 0):
        raise ValueError("terminal states must have zero features")
    if not 0.0 <= mdp.gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {mdp.gamma}")


# ----------------------------------------------------------------------------------------------
# Generators.


class GridLayout(NamedTuple):
    """Cells (flat index row * width + col) of a gridworld instance."""

    goal: int
    hazards: np.ndarray  # [num_hazards] int
    coins: np.ndarray  # [num_coins] int


def gridworld_layout(
    height: int, width: int, *, seed: int, num_hazards: int = 2, num_coins: int = 2
) -> GridLayout:
    """Random distinct goal / hazard / coin cells; a deterministic function of `seed`."""
    n = height * width
    if height < 1 or width < 1 or n < 2:
        raise ValueError(f"grid must have at least 2 cells, got {height}x{width}")
    if num_hazards < 0 or num_coins < 0 or 1 + num_hazards + num_coins > n:
        raise ValueError(f"cannot place 1 goal, {num_hazards} hazards, {num_coins} coins in {n}")
    cells = np.random.default_rng([seed, 7919, 1]).permutation(n)
    return GridLayout(
        goal=int(cells[0]),
        hazards=np.sort(cells[1 : 1 + num_hazards]),
        coins=np.sort(cells[1 + num_hazards : 1 + num_hazards + num_coins]),
    )


def gridworld(
    height: int,
    width: int,
    *,
    seed: int,
    num_hazards: int = 2,
    num_coins: int = 2,
    gamma: float = 0.95,
    step_cost: float = 1.0,
    goal_reward: float = 10.0,
    hazard_cost: float = 5.0,
    coin_reward: float = 1.5,
) -> tuple[TabularMDP, np.ndarray]:
    """A "delivery"-style grid: reach the goal, avoid hazards, pick up coins on the way.

    States are cells s = row * width + col (S = height * width); actions are UP, DOWN, LEFT, RIGHT
    and are deterministic: a move into the outer wall leaves the agent where it is. The goal cell is
    terminal; hazards and coins are ordinary cells (coins are not consumed: the state is the cell).
    The start distribution is uniform over the non-terminal cells. Cells come from
    `gridworld_layout(height, width, seed=seed, ...)`.

    Features of a non-terminal (s, a) with s' = move(s, a), F = 4 (names in GRID_FEATURES):
      0 step:   1                          (every action costs)
      1 goal:   [s' == goal]
      2 hazard: [s' is a hazard and s' != s]  (entered a hazard)
      3 coin:   [s' is a coin and s' != s]    (entered a coin cell)
    Terminal rows are all zero. Gold weights: w = [-step_cost, goal_reward, -hazard_cost,
    coin_reward]. Entering a coin then stepping off it earns coin_reward - 2 step_cost per loop;
    keep that negative (the default -0.5) so the optimal policy goes to the goal.

    Returns:
      (mdp, w): the MDP (features [S, 4, 4] float32) and the gold weights [4] float32.
    """
    layout = gridworld_layout(
        height, width, seed=seed, num_hazards=num_hazards, num_coins=num_coins
    )
    n, num_actions = height * width, len(GRID_MOVES)
    hazard = np.zeros(n, bool)
    hazard[layout.hazards] = True
    coin = np.zeros(n, bool)
    coin[layout.coins] = True
    terminal = np.zeros(n, bool)
    terminal[layout.goal] = True

    transitions = np.zeros((n, num_actions, n), np.float32)
    features = np.zeros((n, num_actions, len(GRID_FEATURES)), np.float32)
    for s in range(n):
        row, col = divmod(s, width)
        for a, (dr, dc) in enumerate(GRID_MOVES):
            if terminal[s]:
                transitions[s, a, s] = 1.0
                continue
            r2, c2 = row + dr, col + dc
            nxt = r2 * width + c2 if 0 <= r2 < height and 0 <= c2 < width else s
            transitions[s, a, nxt] = 1.0
            moved = nxt != s
            features[s, a] = [1.0, nxt == layout.goal, hazard[nxt] and moved, coin[nxt] and moved]
    start = (~terminal).astype(np.float32) / (~terminal).sum()
    weights = np.array([-step_cost, goal_reward, -hazard_cost, coin_reward], np.float32)
    mdp = TabularMDP(transitions, features, terminal, start, float(gamma))
    return mdp, weights


def tree_mdp(
    depth: int, branching: int, *, num_features: int = 4, seed: int, gamma: float = 1.0
) -> tuple[TabularMDP, np.ndarray]:
    """A deterministic complete tree: every action moves to a distinct child; leaves are terminal.

    Nodes are numbered breadth first: the root is 0 and action a from node i leads to
    child(i, a) = branching * i + 1 + a. There are S = sum_{d=0}^{depth} branching^d nodes; the
    first (S - branching^depth) are internal, the rest are terminal leaves. The start distribution
    is the root. Features of internal (s, a) are i.i.d. N(0, 1), zero on leaves; the gold weights
    are i.i.d. N(0, 1). Episodes last exactly `depth` steps, so with gamma = 1 value iteration is
    exact after `depth` iterations.

    Returns:
      (mdp, w): the MDP (features [S, branching, num_features] float32) and weights [F] float32.
    """
    if depth < 1 or branching < 1 or num_features < 1:
        raise ValueError("depth, branching and num_features must be positive")
    n = sum(branching**d for d in range(depth + 1))
    num_internal = n - branching**depth
    rng = np.random.default_rng([seed, 7919, 2])
    transitions = np.zeros((n, branching, n), np.float32)
    features = np.zeros((n, branching, num_features), np.float32)
    for s in range(n):
        for a in range(branching):
            transitions[s, a, branching * s + 1 + a if s < num_internal else s] = 1.0
    features[:num_internal] = rng.standard_normal((num_internal, branching, num_features))
    weights = rng.standard_normal(num_features).astype(np.float32)
    terminal = np.arange(n) >= num_internal
    start = np.zeros(n, np.float32)
    start[0] = 1.0
    return TabularMDP(transitions, features, terminal, start, float(gamma)), weights


# ----------------------------------------------------------------------------------------------
# Planning (JAX, differentiable w.r.t. the reward).


def default_num_iters(mdp: TabularMDP, tol: float = 1e-6) -> int:
    """Backups used when `num_iters` is None.

    gamma < 1: ceil(log(tol) / log(gamma)), so gamma^n <= tol (the error of V is at most
    gamma^n max|V*|). gamma = 1: S, which is exact for acyclic MDPs (every path has fewer than S
    steps, e.g. `tree_mdp`); pass `num_iters` explicitly for cyclic undiscounted problems.
    """
    if mdp.gamma >= 1.0:
        return int(mdp.num_states)
    if mdp.gamma <= 0.0:
        return 1
    return max(1, math.ceil(math.log(tol) / math.log(mdp.gamma)))


def _backup_q(transitions, terminal, gamma, reward, v):
    """Q(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V(s'), and 0 on terminal rows."""
    q = reward + gamma * jnp.einsum("sat,t->sa", transitions, v)
    return jnp.where(terminal[:, None], 0.0, q)


def _soft_max(q, temperature):
    if temperature == 0:
        return jnp.max(q, axis=-1)
    return temperature * jax.nn.logsumexp(q / temperature, axis=-1)


@functools.partial(jax.jit, static_argnames=("num_iters", "temperature"))
def _value_iteration(transitions, terminal, gamma, reward, *, num_iters, temperature):
    def v_of(q):
        return jnp.where(terminal, 0.0, _soft_max(q, temperature))

    def body(v, _):
        return v_of(_backup_q(transitions, terminal, gamma, reward, v)), None

    v, _ = jax.lax.scan(body, jnp.zeros(reward.shape[0], reward.dtype), None, length=num_iters - 1)
    q = _backup_q(transitions, terminal, gamma, reward, v)
    return v_of(q), q


def value_iteration(
    mdp: TabularMDP, reward: Array, *, num_iters: int | None = None, temperature: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """(Soft) value iteration from V_0 = 0, differentiable w.r.t. `reward`.

    For k = 1..num_iters:
        Q_k(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V_{k-1}(s')
        V_k(s)    = max_a Q_k(s, a)                                  (temperature = 0)
                  = temperature * logsumexp_a(Q_k(s, a) / temperature)  (temperature > 0)
    with Q_k = V_k = 0 on terminal states. Returns (V_n, Q_n), so V = max_a Q exactly (hard) and
    the advantages Q - V are <= 0. Soft values upper-bound hard ones:
        0 <= V_soft - V_hard <= temperature log(A) (1 - gamma^n) / (1 - gamma).

    Args:
      mdp: the MDP.
      reward: [S, A] float reward (e.g. `mdp.reward(w)`).
      num_iters: backups n >= 1 (static); None = `default_num_iters(mdp)`.
      temperature: a static Python float >= 0.

    Returns:
      V [S] and Q [S, A], in reward's float dtype.
    """
    n = default_num_iters(mdp) if num_iters is None else int(num_iters)
    if n < 1:
        raise ValueError(f"num_iters must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    reward = jnp.asarray(reward, jnp.result_type(reward, jnp.float32))
    return _value_iteration(
        jnp.asarray(mdp.transitions, reward.dtype),
        jnp.asarray(mdp.terminal, bool),
        mdp.gamma,
        reward,
        num_iters=n,
        temperature=float(temperature),
    )


def optimal_advantages(mdp: TabularMDP, reward: Array, **vi_kwargs) -> jax.Array:
    """A*(s, a) = Q*(s, a) - V*(s), [S, A] (<= 0; 0 on terminal rows). kwargs: `value_iteration`."""
    v, q = value_iteration(mdp, reward, **vi_kwargs)
    return q - v[:, None]


def greedy_policy(q: Array) -> jax.Array:
    """One-hot pi(a|s) = [a = argmax_a' Q(s, a')] (first maximum on ties): [S, A] -> [S, A]."""
    q = jnp.asarray(q)
    return jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=jnp.float32)


def uniform_policy(mdp: TabularMDP) -> jax.Array:
    """pi(a|s) = 1 / A, [S, A]."""
    return jnp.full((mdp.num_states, mdp.num_actions), 1.0 / mdp.num_actions, jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def _policy_evaluation(transitions, terminal, gamma, reward, policy, *, num_iters):
    def body(v, _):
        q = _backup_q(transitions, terminal, gamma, reward, v)
        return jnp.where(terminal, 0.0, jnp.sum(policy * q, axis=-1)), None

    v, _ = jax.lax.scan(body, jnp.zeros(reward.shape[0], reward.dtype), None, length=num_iters)
    return v


def policy_evaluation(
    mdp: TabularMDP, reward: Array, policy: Array, *, num_iters: int | None = None
) -> jax.Array:
    """V^pi by iterating V_k(s) = sum_a pi(a|s) [r(s, a) + gamma sum_s' P(s'|s, a) V_{k-1}(s')].

    Starts from V_0 = 0 and keeps V = 0 on terminal states; differentiable w.r.t. `reward` and
    `policy` ([S, A], rows summing to 1). num_iters: None = `default_num_iters(mdp)`. Returns [S].
    """
    n = default_num_iters(mdp) if num_iters is None else int(num_iters)
    reward = jnp.asarray(reward, jnp.result_type(reward, jnp.float32))
    return _policy_evaluation(
        jnp.asarray(mdp.transitions, reward.dtype),
        jnp.asarray(mdp.terminal, bool),
        mdp.gamma,
        reward,
        jnp.asarray(policy, reward.dtype),
        num_iters=n,
    )


def normalized_return(
    mdp: TabularMDP,
    gold_reward: Array,
    policy: Array,
    *,
    num_iters: int | None = None,
    eps: float = 1e-5,
) -> jax.Array:
    """Return of `policy` rescaled so the uniform random policy scores 0 and the optimal one 1.

        J(pi) = sum_s start(s) V^pi(s)      (expected return from the start distribution)
        normalized = (J(pi) - J(uniform)) / (J(*) - J(uniform))

    i.e. the ratio of start-averaged values (not the average of per-state ratios). J(*) uses hard
    value iteration on `gold_reward` [S, A]. If J(*) - J(uniform) <= eps * max(1, |J(*)|) the
    uniform policy is already optimal on every state it reaches, so every policy is optimal from
    the start distribution and the result is 1. Can be negative (worse than random). Returns a
    float32 scalar.
    """
    v_star, _ = value_iteration(mdp, gold_reward, num_iters=num_iters)
    v_uni = policy_evaluation(mdp, gold_reward, uniform_policy(mdp), num_iters=num_iters)
    v_pi = policy_evaluation(mdp, gold_reward, policy, num_iters=num_iters)
    start = jnp.asarray(mdp.start, v_star.dtype)
    j_star, j_uni, j_pi = start @ v_star, start @ v_uni, start @ v_pi
    denom = j_star - j_uni
    ok = denom > eps * jnp.maximum(1.0, jnp.abs(j_star))
    return jnp.where(ok, (j_pi - j_uni) / jnp.where(ok, denom, 1.0), 1.0)


# ----------------------------------------------------------------------------------------------
# Segments and preferences.


class Segments(NamedTuple):
    """A batch of N segments of L steps.

    states: [N, L + 1] int32, s_0 .. s_L.
    actions: [N, L] int32, a_t taken in s_t (0 where not valid).
    valid: [N, L] bool, s_t is not terminal (once a segment reaches a terminal state it stays
      there and every later step is invalid).
    """

    states: np.ndarray
    actions: np.ndarray
    valid: np.ndarray


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of probs [N, K] (rows need not be normalized)."""
    cum = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0])[:, None] * cum[:, -1:]
    return np.minimum((u >= cum).sum(axis=-1), probs.shape[-1] - 1)


def sample_segments(
    mdp: TabularMDP,
    rng: np.random.Generator | int,
    num_segments: int,
    length: int,
    *,
    policy: Array | None = None,
    from_start: bool = False,
) -> Segments:
    """Rolls out N segments of `length` steps with numpy (deterministic given `rng`).

    s_0 is uniform over the non-terminal states (or drawn from `mdp.start` if `from_start`);
    a_t ~ policy(.|s_t) (uniform if None; [S, A], rows are renormalized) and
    s_{t+1} ~ P(.|s_t, a_t) while s_t is non-terminal; afterwards the segment stays put with
    valid = False and action 0.
    """
    rng = np.random.default_rng(rng)
    p = np.asarray(mdp.transitions, np.float64)
    term = np.asarray(mdp.terminal, bool)
    num_s, num_a = p.shape[:2]
    pi = np.full((num_s, num_a), 1.0) if policy is None else np.asarray(policy, np.float64)
    pi = pi / pi.sum(-1, keepdims=True)
    p0 = np.asarray(mdp.start, np.float64) if from_start else (~term).astype(np.float64)
    if p0.sum() <= 0:
        raise ValueError("no state to start a segment from")
    states = np.zeros((num_segments, length + 1), np.int32)
    actions = np.zeros((num_segments, length), np.int32)
    valid = np.zeros((num_segments, length), bool)
    s = _categorical(rng, np.broadcast_to(p0, (num_segments, num_s)))
    states[:, 0] = s
    for t in range(length):
        live = ~term[s]
        a = _categorical(rng, pi[s])
        nxt = _categorical(rng, p[s, a])
        actions[:, t] = np.where(live, a, 0)
        valid[:, t] = live
        s = np.where(live, nxt, s)
        states[:, t + 1] = s
    return Segments(states, actions, valid)


def segment_partial_return(
    reward: Array, states: Array, actions: Array, valid: Array, *, gamma: float = 1.0
) -> jax.Array:
    """G(sigma) = sum_t gamma^t r(s_t, a_t) [valid_t], [N] (differentiable w.r.t. `reward`).

    reward [S, A]; states [N, L + 1] (or [N, L]: only s_0 .. s_{L-1} are used); actions and
    valid [N, L]. gamma = 1 is the partial return of Knox et al.
    """
    reward = jnp.asarray(reward)
    actions = jnp.asarray(actions)
    r = reward[jnp.asarray(states)[:, : actions.shape[1]], actions]  # [N, L]
    disc = jnp.asarray(gamma, r.dtype) ** jnp.arange(actions.shape[1], dtype=r.dtype)
    return jnp.sum(jnp.where(jnp.asarray(valid), r * disc, 0.0), axis=-1)


def segment_regret(
    mdp: TabularMDP,
    reward: Array,
    states: Array,
    actions: Array,
    valid: Array,
    *,
    form: str = "advantage",
    **vi_kwargs,
) -> jax.Array:
    """Regret of each segment under `reward` [S, A], [N] (differentiable w.r.t. `reward`).

    form="advantage": regret = -sum_t gamma^t A*(s_t, a_t) [valid_t]  (expected form; >= 0)
    form="value":     regret = V*(s_0) - [sum_t gamma^t r(s_t, a_t) [valid_t] + gamma^L V*(s_L)]
    with gamma = mdp.gamma and V*, A* from `value_iteration(mdp, reward, **vi_kwargs)`. The two
    agree exactly for deterministic transitions (telescoping; V* = 0 once terminal); with
    stochastic transitions the value form uses the realised next states and equals the advantage
    form only in expectation. Lower regret = better segment.
    """
    v, q = value_iteration(mdp, reward, **vi_kwargs)
    gamma = mdp.gamma
    if form == "advantage":
        return -segment_partial_return(q - v[:, None], states, actions, valid, gamma=gamma)
    if form == "value":
        states = jnp.asarray(states)
        ret = segment_partial_return(reward, states, actions, valid, gamma=gamma)
        tail = jnp.asarray(gamma, v.dtype) ** jnp.asarray(actions).shape[1] * v[states[:, -1]]
        return v[states[:, 0]] - ret - tail
    raise ValueError(f"form must be 'advantage' or 'value', got {form!r}")


def simulate_segment_preferences(
    scores1: Array, scores2: Array, *, rng: np.random.Generator | int, temperature: float = 1.0
) -> np.ndarray:
    """Bradley-Terry labels: 1 if segment 1 is preferred, else 0; [N] int32.

        P(label = 1) = sigmoid((scores1 - scores2) / temperature)
    Scores are "higher is better": partial returns for the partial-return model, negative regrets
    for the regret model. temperature = 0 picks the higher score, breaking exact ties by a fair
    coin. Deterministic given `rng` (a numpy Generator or a seed).
    """
    rng = np.random.default_rng(rng)
    d = np.asarray(scores1, np.float64) - np.asarray(scores2, np.float64)
    u = rng.random(d.shape)
    if temperature > 0:
        p = 0.5 * (1.0 + np.tanh(d / (2.0 * temperature)))  # = sigmoid(d / T), overflow-free
        return (u < p).astype(np.int32)
    if temperature == 0:
        return np.where(d == 0, u < 0.5, d > 0).astype(np.int32)
    raise ValueError(f"temperature must be >= 0, got {temperature}")
