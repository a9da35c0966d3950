"""Reward-vs-KL frontiers compared at matched KL budgets, exact win rates against a reference, and
the pairwise accuracy of a policy's implicit reward.

Alignment methods trade a gain in (gold) reward for a divergence KL(pi || pi_ref); two methods
are compared at the same KL budget, not at their last step (Gao et al. 2022; Tang et al. 2024,
"Understanding the performance gap between online and offline alignment algorithms").

- `ref_win_table(values, ref_log_probs)`: for every response y, the probability that it beats a
  reference sample, P_{y' ~ pi_ref}(v(y) > v(y')) + 1/2 P(v(y) = v(y')). The exact win rate of
  a policy against the reference is then E_{y ~ pi}[table(y)] (a `sequence_table.expectation`).
- `envelope(kl, score, budgets)`: the best score among the points whose KL is within each budget
  (the upper frontier of a set of checkpoints).
- `interpolate_at_kl(kl, score, budget)`: along one trajectory (checkpoints in training order,
  starting at KL 0), the score where its KL first reaches the budget, by linear interpolation.
- `frontier_area(kl, score, max_kl)`: the mean of the envelope over a uniform grid of budgets in
  (0, max_kl] (the normalised area under the frontier).
- `budget_choice(names, val_kl, val_score, budget)`: the checkpoint with the best validation
  score among those within the KL budget on validation, with a JSON-able record (the
  protocol's `choose_on_validation` on the feasible candidates).
- `implicit_reward_accuracy`: the pairwise-classification accuracy of a policy's implicit reward
  h(x, y) = log pi(y|x) - log pi_ref(y|x) on held-out labelled pairs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.protocol import choose_on_validation


def _win_row(values, ref_probs):
    order = jnp.argsort(values)
    v, p = values[order], ref_probs[order]
    cdf = jnp.concatenate([jnp.zeros((1,), p.dtype), jnp.cumsum(p)])
    lo = jnp.searchsorted(v, values, side="left")
    hi = jnp.searchsorted(v, values, side="right")
    return cdf[lo] + 0.5 * (cdf[hi] - cdf[lo])


@jax.jit
def _win_table(values, probs):
    fn = _win_row
    for _ in range(values.ndim - 1):
        fn = jax.vmap(fn)
    return fn(values, probs)


def ref_win_table(values, ref_log_probs) -> jax.Array:
    """[..., N] P_{y' ~ pi_ref}(v(y) > v(y')) + 1/2 P_{y' ~ pi_ref}(v(y) = v(y')) for every y.

    Args:
      values: [..., N] a value (the gold reward) of every response.
      ref_log_probs: [..., N] the reference's log-probabilities of the same responses (they
        logsumexp to 0 over the last axis).

    Returns:
      [..., N] float32 in [0, 1]; E_{y ~ pi}[table] is the exact win rate of pi against pi_ref
      (ties count 1/2), and it is 1/2 for pi = pi_ref.
    """
    values = jnp.asarray(values, jnp.float32)
    probs = jnp.exp(jnp.asarray(ref_log_probs, jnp.float32))
    if values.shape != probs.shape:
        raise ValueError(f"values and ref_log_probs differ in shape: {values.shape} vs "
                         f"{probs.shape}")
    return _win_table(values, probs)


def _check_points(kl, score):
    kl, score = np.asarray(kl, np.float64), np.asarray(score, np.float64)
    if kl.ndim != 1 or kl.shape != score.shape:
        raise ValueError(f"kl and score must be equal-length vectors, got {kl.shape}, "
                         f"{score.shape}")
    return kl, score


def envelope(kl: Sequence[float], score: Sequence[float], budgets: Sequence[float]
             ) -> np.ndarray:
    """[B] the best score among the points with kl <= budget, for each budget (NaN where no
    point fits; non-finite points never count)."""
    kl, score = _check_points(kl, score)
    ok = np.isfinite(kl) & np.isfinite(score)
    out = []
    for b in np.asarray(budgets, np.float64).reshape(-1):
        fit = ok & (kl <= b)
        out.append(score[fit].max() if fit.any() else np.nan)
    return np.asarray(out)


def interpolate_at_kl(kl: Sequence[float], score: Sequence[float], budget: float) -> float:
    """The score of a trajectory where its KL first reaches `budget`.

    Args:
      kl, score: [T] checkpoints in training order (the first one usually the reference, KL 0).
      budget: the KL budget.

    Returns:
      Linear interpolation between the last point below the budget and the first point at or
      above it; the first point's score if it already is at or above the budget; NaN if the
      trajectory never reaches the budget.
    """
    kl, score = _check_points(kl, score)
    reach = np.nonzero(kl >= budget)[0]
    if reach.size == 0:
        return float("nan")
    j = int(reach[0])
    if j == 0:
        return float(score[0])
    k0, k1 = kl[j - 1], kl[j]
    w = (budget - k0) / (k1 - k0) if k1 > k0 else 1.0
    return float(score[j - 1] + w * (score[j] - score[j - 1]))


def frontier_area(kl: Sequence[float], score: Sequence[float], max_kl: float, *,
                  num_budgets: int = 64) -> float:
    """The mean of `envelope` over `num_budgets` evenly spaced budgets in (0, max_kl]: the area
    under the frontier divided by max_kl (NaN if some budget has no point: add the reference
    point (0, its score) to the set)."""
    if max_kl <= 0:
        raise ValueError(f"max_kl must be positive, got {max_kl}")
    budgets = max_kl * np.arange(1, num_budgets + 1) / num_budgets
    return float(np.mean(envelope(kl, score, budgets)))


def budget_choice(names: Sequence[str], val_kl: Sequence[float], val_score: Sequence[float],
                  budget: float) -> tuple[str | None, dict]:
    """The checkpoint with the best validation score among those whose validation KL is within
    `budget` (ties: the earliest).

    Returns:
      (chosen name or None when no candidate fits, record): the record of
      `choose_on_validation` over the feasible candidates plus the budget and how many
      candidates were feasible.
    """
    val_kl, val_score = _check_points(val_kl, val_score)
    if len(names) != len(val_kl):
        raise ValueError(f"{len(names)} names for {len(val_kl)} points")
    feasible = {n: s for n, k, s in zip(names, val_kl, val_score)
                if np.isfinite(k) and k <= budget}
    if not feasible or not any(np.isfinite(s) for s in feasible.values()):
        return None, {"budget": float(budget), "feasible": len(feasible), "chosen": None}
    chosen, record = choose_on_validation(feasible, float)
    record.update(budget=float(budget), feasible=len(feasible),
                  procedure="argmax of the validation score over the checkpoints whose "
                            "validation KL is within the budget (ties: the earliest)")
    return chosen, record


def implicit_reward_accuracy(policy_logp_a, ref_logp_a, policy_logp_b, ref_logp_b, a_better
                             ) -> jax.Array:
    """Pairwise-classification accuracy of the implicit reward h = log pi - log pi_ref.

    Args:
      policy_logp_a, ref_logp_a, policy_logp_b, ref_logp_b: [B] log-probabilities of the two
        responses of each pair under the policy and the reference.
      a_better: [B] bool, the label (response a is preferred).

    Returns:
      scalar float32: the mean of 1[sign(h_a - h_b) agrees with the label], ties 1/2 (the
      reference itself scores 1/2).
    """
    h = ((jnp.asarray(policy_logp_a, jnp.float32) - jnp.asarray(ref_logp_a, jnp.float32))
         - (jnp.asarray(policy_logp_b, jnp.float32) - jnp.asarray(ref_logp_b, jnp.float32)))
    label = jnp.asarray(a_better, bool)
    if h.shape != label.shape:
        raise ValueError(f"log-probs {h.shape} and labels {label.shape} differ in shape")
    right = jnp.where(label, h > 0, h < 0).astype(jnp.float32)
    return jnp.mean(jnp.where(h == 0, 0.5, right))
