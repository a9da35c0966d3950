"""Mutual-welfare rewards and the payoff-matrix decision of GTAlign.

GTAlign (Zhu, Zhang, Cisneros-Velarde, You 2025, "GTAlign: Game-Theoretic Alignment of LLM
Assistants for Mutual Welfare", arXiv 2510.08872) scores a response by two payoffs, the user's
welfare U and the LLM's welfare L, and trains with GRPO on their Cobb-Douglas aggregate

    W(U, L) = sqrt(U * L),

which, unlike the sum, is 0 whenever one side gets nothing, so a response cannot buy LLM
welfare (verbosity, clarifying questions, format) with the user's. The paper compares it with
the linear aggregate (U + L) / 2 and with training on U or on L alone. Its payoffs are weighted
sums of [0, 1] components plus a small epsilon (1e-4) that keeps both, and so W, positive;
in the released reward functions, e.g. for ambiguous questions,

    U = eps + 0.5 answer + 0.2 length_window(response words; 20, 500) + 0.3 exp(-chars / 500),
    L = eps + 0.2 format + 0.2 payoff_block + 0.4 answer + 0.2 length_window(words; 500, 1000).

At inference the model writes a payoff matrix over (its action a) x (the user's type k) with
(U, L) in each cell and picks the action of highest welfare; a change of the service's pricing
is applied by editing that matrix (no retraining). The token-cost model here is
L' = L - c * tokens(a): c > 0 is a provider that pays for each generated token (a flat
subscription), c < 0 one that earns per token (per-token API billing). The released inference
code applies such per-action additive shifts to the payoff block and keeps the actions that
maximise U * L (equivalently W).

Pieces (pure jax, elementwise over leading dims, usable under jit):
- `cobb_douglas`, `linear_welfare`, `welfare` (the registry `WELFARES`: "cobb_douglas",
  "linear", "user", "llm");
- `compose_payoff` (eps + sum_k w_k c_k), `token_cost` (L - c * tokens), the paper's length
  terms `length_window` and `length_decay`;
- the payoff-matrix step: `price_payoffs`, `expected_welfare` (E_{k ~ b}[W(U_ak, L_ak)]) and
  `best_action` (its argmax over actions).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _pair(user, llm) -> tuple[jax.Array, jax.Array]:
    u = jnp.asarray(user, jnp.float32)
    l_ = jnp.asarray(llm, jnp.float32)
    return jnp.broadcast_arrays(u, l_)


def _check_alpha(alpha: float, name: str) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name}: alpha must be in [0, 1], got {alpha}")
    return alpha


def cobb_douglas(user, llm, *, alpha: float = 0.5) -> jax.Array:
    """Cobb-Douglas welfare W = U^alpha * L^(1 - alpha); alpha = 0.5 is GTAlign's sqrt(U L).

    Payoffs at or below 0 count as 0 (W = 0: a side that gets nothing, or an action a price
    made a loss, has no welfare), so W >= 0 and W <= max(U, L). The gradient is finite
    everywhere (0 where a payoff is <= 0).

    Args:
      user: [...] U, the user's payoff.
      llm: [...] L, the LLM's payoff (broadcast against `user`).
      alpha: the user's weight in [0, 1].

    Returns:
      [...] W, float32.
    """
    alpha = _check_alpha(alpha, "cobb_douglas")
    u, l_ = _pair(user, llm)
    pos = (u > 0) & (l_ > 0)
    # safe logs: the untaken branch of the where must not produce NaN gradients
    log_w = (alpha * jnp.log(jnp.where(pos, u, 1.0))
             + (1.0 - alpha) * jnp.log(jnp.where(pos, l_, 1.0)))
    return jnp.where(pos, jnp.exp(log_w), 0.0)


def linear_welfare(user, llm, *, alpha: float = 0.5) -> jax.Array:
    """Linear (utilitarian) welfare alpha U + (1 - alpha) L; alpha = 0.5 is the paper's
    (U + L) / 2 baseline. [...], [...] -> [...]."""
    alpha = _check_alpha(alpha, "linear_welfare")
    u, l_ = _pair(user, llm)
    return alpha * u + (1.0 - alpha) * l_


WELFARES: dict[str, Callable[..., jax.Array]] = {
    "cobb_douglas": cobb_douglas,
    "linear": linear_welfare,
    "user": lambda user, llm, **_: _pair(user, llm)[0],
    "llm": lambda user, llm, **_: _pair(user, llm)[1],
}


def welfare(name: str, user, llm, **kwargs) -> jax.Array:
    """The aggregate `name` of `WELFARES` ("cobb_douglas", "linear", "user": U alone, "llm":
    L alone) of payoffs [...], [...] -> [...]; kwargs (alpha) go to the aggregate."""
    if name not in WELFARES:
        raise ValueError(f"unknown welfare {name!r}; one of {sorted(WELFARES)}")
    return WELFARES[name](user, llm, **kwargs)


def compose_payoff(components, weights, *, eps: float = 1e-4) -> jax.Array:
    """A payoff as GTAlign composes U and L: eps + sum_k w_k c_k.

    Args:
      components: [..., C] the payoff's terms (each in [0, 1] in the paper: answer judged
        correct, format, length terms, ...).
      weights: [C] their weights.
      eps: the constant that keeps the payoff positive (the paper's 1e-4).

    Returns:
      [...] the payoff.
    """
    c = jnp.asarray(components, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim != 1 or c.shape[-1:] != w.shape:
        raise ValueError(f"compose_payoff: {w.shape} weights for components of shape {c.shape}")
    return eps + jnp.tensordot(c, w, axes=1)


def token_cost(llm, tokens, *, price: float) -> jax.Array:
    """The LLM's payoff under a token price: L' = L - price * tokens. [...], [...] -> [...]
    (price < 0: the LLM earns per token)."""
    u, t = _pair(llm, tokens)
    return u - float(price) * t


def length_window(length, low: float, high: float, *, k: float = 0.005) -> jax.Array:
    """GTAlign's logistic length window sigmoid(k (n - low)) * sigmoid(k (high - n)): near 1
    for low << n << high, falling off outside (`response_reward_logistic` of the released
    code, n in words). [...] -> [...]."""
    n = jnp.asarray(length, jnp.float32)
    return jax.nn.sigmoid(k * (n - low)) * jax.nn.sigmoid(k * (high - n))


def length_decay(length, *, scale: float) -> jax.Array:
    """GTAlign's reasoning-length term exp(-n / scale) (1 for an empty reasoning block, the
    released code's `reasoning_penalty` with n in characters). [...] -> [...]."""
    if scale <= 0:
        raise ValueError(f"length_decay: scale must be > 0, got {scale}")
    return jnp.exp(-jnp.asarray(length, jnp.float32) / float(scale))


def price_payoffs(llm, tokens, *, price: float) -> jax.Array:
    """A payoff matrix's LLM payoffs under a token price: L'[..., a, k] = L[..., a, k] - price
    * tokens[a]. llm [..., A, K], tokens [A] -> [..., A, K]."""
    l_ = jnp.asarray(llm, jnp.float32)
    t = jnp.asarray(tokens, jnp.float32)
    if t.ndim != 1 or l_.shape[-2:-1] != t.shape:
        raise ValueError(f"price_payoffs: tokens {t.shape} for a payoff matrix {l_.shape} "
                         "([..., A, K])")
    return l_ - float(price) * t[:, None]


def expected_welfare(user, llm, belief, *, welfare_name: str = "cobb_douglas",
                     **kwargs) -> jax.Array:
    """The welfare each action earns in expectation over the user's type:
    E_{k ~ b}[W(U[a, k], L[a, k])] = sum_k b_k W(U_ak, L_ak).

    The expectation is of the welfare, not the welfare of expected payoffs: each user type
    receives the action and judges it with its own payoffs.

    Args:
      user: [..., A, K] U of each (LLM action, user type).
      llm: [..., A, K] L.
      belief: [..., K] the probability of each user type (rows sum to 1).
      welfare_name: a `WELFARES` name.
      **kwargs: the aggregate's arguments (alpha).

    Returns:
      [..., A].
    """
    u, l_ = _pair(user, llm)
    b = jnp.asarray(belief, jnp.float32)
    if u.ndim < 2 or b.shape[-1:] != u.shape[-1:]:
        raise ValueError(f"expected_welfare: belief {b.shape} for payoff matrices {u.shape} "
                         "([..., A, K] and [..., K])")
    w = welfare(welfare_name, u, l_, **kwargs)
    return jnp.sum(w * b[..., None, :], axis=-1)


def best_action(user, llm, belief, *, welfare_name: str = "cobb_douglas", price: float = 0.0,
                tokens=None, **kwargs) -> jax.Array:
    """The payoff-matrix step: the action of highest expected welfare after pricing.

    a* = argmax_a sum_k b_k W(U[a, k], L[a, k] - price * tokens[a]) (ties: the lowest index).
    A price change edits the matrix, not the model: with the same U, L and belief the choice
    may flip (GTAlign's inference-time steering).

    Args:
      user: [..., A, K]; llm: [..., A, K]; belief: [..., K] (see `expected_welfare`).
      welfare_name: a `WELFARES` name.
      price: the token price c (0: the matrix as written).
      tokens: [A] the tokens of each action (needed when price != 0).
      **kwargs: the aggregate's arguments.

    Returns:
      [...] int32 action indices.
    """
    if price:
        if tokens is None:
            raise ValueError("best_action: a price needs the tokens of each action")
        llm = price_payoffs(llm, tokens, price=price)
    return jnp.argmax(expected_welfare(user, llm, belief, welfare_name=welfare_name, **kwargs),
                      axis=-1).astype(jnp.int32)
