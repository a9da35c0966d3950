"""Test-time search over diffusion seeds with pruning at intermediate steps, and its NFE
accounting (TTSnap: Yu et al. 2025, "TTSnap: Test-Time Scaling of Diffusion Models via
Noise-Aware Pruning", arXiv 2511.22242).

Best-of-N denoises N seeds fully and keeps the one the reward model scores highest on the
final images. Pruning starts N_0 seeds, runs the chain to a pruning step k_1, scores every
candidate there, keeps the top n_1 and continues them; possibly again at k_2 > k_1 with n_2,
and finally picks the best survivor by the reward of its final image. With the same denoiser
calls it explores more seeds, and it is as good as the intermediate score's ranking.

`prune_sample` runs one such search (jit-able: the pruning steps and survivor counts are
static, the scores, top-k and gathers traced; vmap it over independent searches). Candidate b
uses its own key (per-row noise, `alignax.models.diffusion.sample`), and its key travels with
it through the gathers, so a survivor's final image is exactly the image its seed gives
without pruning (tested): pruning selects, it never changes a sample.

The intermediate score of a candidate at pruning step k comes from the denoiser call of step k
itself: the chain runs through step k (which maps x_{tau_k} to x_{tau_{k+1}} and computes
Tweedie's x0_hat(x_{tau_k}, tau_k) on the way), the scorer sees (x0_hat, x_{tau_k}, tau_k), and
the survivors continue from x_{tau_{k+1}}. So scoring costs no extra denoiser call.

NFE (denoiser calls of the whole search), K steps, prune steps k_1 < ... < k_m, survivors
n_0 = N_0 > n_1 >= ... >= n_m:

    NFE = sum_{j=0..m} n_j (e_j - s_j),  s_0 = 0, s_j = k_j + 1, e_j = k_{j+1} + 1, e_m = K

(best-of-N: m = 0, NFE = N K). Reward-model calls are counted separately (`rm_calls`: the
candidates scored at each pruning step plus the finals scored). `prune_nfe`,
`keep_counts` and `candidates_for_budget` give the counts and the largest N_0 that fits a
budget, which is how methods are compared at equal NFE.

Shapes: N candidates, K steps of the timestep sequence, data [N, ...].
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.diffusion import EpsFn, Params, Schedule, sample

# score_fn(x0_hat [B, ...], x_t [B, ...], t [B] int32) -> [B]
ScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class PruneResult(NamedTuple):
    """One pruned search.

    Attributes:
      final: [n_m, ...] the survivors' final images.
      index: [n_m] int32 each survivor's candidate index in 0..N_0-1.
      final_scores: [n_m] the final reward of each survivor.
      best: [...] the survivor with the highest final reward.
      best_index: [] int32 its candidate index.
      stage_scores: a tuple of m arrays [n_{j-1}]: the intermediate scores at each pruning
        step (of the candidates alive there, in their current order).
      stage_index: a tuple of m arrays [n_{j-1}]: those candidates' indices.
      nfe: [] int32 denoiser calls of the whole search.
      rm_calls: [] int32 reward-model calls (intermediate and final).
    """

    final: jax.Array
    index: jax.Array
    final_scores: jax.Array
    best: jax.Array
    best_index: jax.Array
    stage_scores: tuple
    stage_index: tuple
    nfe: jax.Array
    rm_calls: jax.Array


def _check(num_steps: int, num_candidates: int, prune_steps: Sequence[int],
           keep: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    steps, keep = tuple(int(k) for k in prune_steps), tuple(int(n) for n in keep)
    if len(steps) != len(keep):
        raise ValueError(f"prune_steps {steps} and keep {keep} must have the same length")
    if any(b <= a for a, b in zip(steps, steps[1:])) or (steps and not
                                                          0 <= steps[0] <= steps[-1] < num_steps):
        raise ValueError(f"prune_steps must increase strictly within [0, {num_steps}), got "
                         f"{steps}")
    counts = (int(num_candidates),) + keep
    if counts[0] < 1 or any(b < 1 or b > a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"keep must be non-increasing counts in [1, {num_candidates}], got "
                         f"{keep}")
    return steps, keep


def prune_nfe(num_steps: int, num_candidates: int, prune_steps: Sequence[int] = (),
              keep: Sequence[int] = ()) -> int:
    """Denoiser calls of a pruned search (module docstring's NFE formula); best-of-N without
    prune steps: num_candidates * num_steps."""
    steps, keep = _check(num_steps, num_candidates, prune_steps, keep)
    bounds = (0,) + tuple(k + 1 for k in steps) + (num_steps,)
    counts = (int(num_candidates),) + keep
    return int(sum(n * (e - s) for n, s, e in zip(counts, bounds[:-1], bounds[1:])))


def keep_counts(num_candidates: int, fraction: float, num_prunes: int = 1) -> tuple[int, ...]:
    """Survivors after each of `num_prunes` prunes keeping the top `fraction`:
    n_j = max(1, ceil(fraction n_{j-1}))."""
    if not 0 < fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {fraction}")
    counts, n = [], int(num_candidates)
    for _ in range(int(num_prunes)):
        n = max(1, math.ceil(fraction * n - 1e-9))
        counts.append(n)
    return tuple(counts)


def candidates_for_budget(budget: int, num_steps: int, prune_steps: Sequence[int] = (),
                          fraction: float = 1.0) -> int:
    """The largest N_0 whose search (`keep_counts(N_0, fraction, len(prune_steps))`) costs at
    most `budget` denoiser calls; 0 if not even one candidate fits."""
    best, n = 0, 1
    while True:
        keep = keep_counts(n, fraction, len(prune_steps)) if prune_steps else ()
        if prune_nfe(num_steps, n, prune_steps, keep) > budget:
            return best
        best, n = n, n + 1


def prune_sample(apply: EpsFn, params: Params, schedule: Schedule, keys: jax.Array,
                 x_T: jax.Array, timesteps: Sequence[int], *, prune_steps: Sequence[int],
                 keep: Sequence[int], score_fn: ScoreFn,
                 final_score_fn: Callable[[jax.Array], jax.Array], cond: Any = None,
                 method: str = "ddim", eta: float | jax.Array = 1.0,
                 clip_x0: float | None = None) -> PruneResult:
    """One search over N_0 seeds with pruning (module docstring); prune_steps () is best-of-N.

    Args:
      apply, params, schedule: the denoiser and its noise schedule (as `sample`).
      keys: [N_0] typed PRNG keys, one per candidate (its chain's noise).
      x_T: [N_0, ...] the candidates' initial latents.
      timesteps: the K-step descending timestep sequence (static).
      prune_steps: m increasing step indices in [0, K) at which to prune (static).
      keep: m non-increasing survivor counts (static).
      score_fn: `(x0_hat, x_t, t) -> [B]` the intermediate score (e.g. a noise-aware RM of
        x0_hat at t, or a clean RM of x0_hat); the top `keep[j]` survive (ties: lower index).
      final_score_fn: `x0 -> [B]` the reward of final images (the selection among survivors).
      cond: None or [N_0, ...] per-candidate conditions (gathered with the candidates).
      method, eta, clip_x0: as `sample`.

    Returns:
      `PruneResult`; `nfe` follows `prune_nfe`.
    """
    seq = np.asarray(timesteps)
    num_steps, n0 = len(seq), x_T.shape[0]
    steps, keep = _check(num_steps, n0, prune_steps, keep)
    if keys.shape != (n0,):
        raise ValueError(f"keys must be [N_0={n0}] typed keys, got shape {keys.shape}")
    index = jnp.arange(n0, dtype=jnp.int32)
    x, start, nfe, rm_calls = x_T, 0, 0, 0
    stage_scores, stage_index = [], []
    for step, n_keep in zip(steps, keep):
        out = sample(apply, params, schedule, keys, x, seq, cond=cond, method=method, eta=eta,
                     start=start, stop=step + 1, clip_x0=clip_x0)
        nfe += x.shape[0] * (step + 1 - start)
        t = jnp.full((x.shape[0],), int(seq[step]), jnp.int32)
        scores = jnp.asarray(score_fn(out.x0_hats[-1], out.latents[-2], t), jnp.float32)
        rm_calls += x.shape[0]
        stage_scores.append(scores)
        stage_index.append(index)
        _, top = jax.lax.top_k(scores, n_keep)
        x, keys, index = out.final[top], keys[top], index[top]
        cond = None if cond is None else jax.tree.map(lambda c, top=top: c[top], cond)
        start = step + 1
    if start < num_steps:
        out = sample(apply, params, schedule, keys, x, seq, cond=cond, method=method, eta=eta,
                     start=start, clip_x0=clip_x0)
        nfe += x.shape[0] * (num_steps - start)
        x = out.final
    final_scores = jnp.asarray(final_score_fn(x), jnp.float32)
    rm_calls += x.shape[0]
    best = jnp.argmax(final_scores)
    return PruneResult(final=x, index=index, final_scores=final_scores, best=x[best],
                       best_index=index[best], stage_scores=tuple(stage_scores),
                       stage_index=tuple(stage_index), nfe=jnp.asarray(nfe, jnp.int32),
                       rm_calls=jnp.asarray(rm_calls, jnp.int32))
