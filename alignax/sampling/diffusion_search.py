"""Inference-time search over a diffusion model's latents: best-of-N, greedy per-step selection
and diffusion latent beam search with a lookahead estimator, with NFE accounting.

Diffusion latent beam search (DLBS; Oshima et al. 2025, "Inference-Time Text-to-Video Alignment
with Diffusion Latent Beam Search", arXiv 2501.19252) keeps B latents (beams) along the reverse
chain tau_1 > ... > tau_K. At step k every beam x^(b) at level tau_k gets one denoiser call,
which gives the mean and std of the stochastic step p_theta(x_s | x^(b)), s = tau_{k+1}
(`alignax.models.diffusion.step_moments`, DDIM with eta > 0 or DDPM); K_c successors

    x_s^(b, j) = mean^(b) + std^(b) z^(b, j),   z ~ N(0, I),   j = 1 .. K_c

are drawn from it (they share the call: only the noise differs). Each successor is scored by
the reward of a clean estimate x0_hat and the B best of the B K_c successors are kept. At the
last step the successors are clean samples, scored by the reward itself, and the best is the
output. B = 1 is greedy per-step selection.

The lookahead estimator (`lookahead_x0`): from a latent x at level s, L deterministic DDIM
steps (eta = 0) on the evenly spaced grid t_j = floor(s (L - j) / L), j = 0 .. L-1, one
denoiser call each, and x0_hat = Tweedie's estimate at the last grid point (equivalently the
DDIM eta = 0 step from it to the clean level). L = 1 is plain Tweedie, x0_hat(x, s), the score
of DLBS without lookahead; larger L follows the probability-flow ODE to a sample-like x0_hat,
which the reward can judge (a Tweedie mean at high noise is a blurred average of modes). This is
the grid of the authors' code (github.com/shim0114/T2V-Diffusion-Search, `num_backtrack_steps`
= L; their DLBS is L = 1). A "lookahead of n steps before Tweedie" in other write-ups is
L = n + 1 here.

NFE accounting (per final sample; one search run gives one sample):
  - best-of-N over K steps: N K denoiser calls, N reward calls;
  - beam search: K B calls on the beams (the successors share them), (K - 1) B K_c L calls in
    the lookahead (nothing to look ahead at the last step), and (K - 1) B K_c + B K_c reward
    calls. `search_nfe` gives the numbers statically (to fit a budget) and every
    `SearchResult` carries them, so methods are compared at equal denoiser calls; reward calls
    are reported separately (the paper counts NFE).

Everything is jit-able: the steps run in `jax.lax.scan` (the lookahead in a nested scan), the
B K_c successors are one batch per call, a run is a function of one PRNG key, so runs and
seeds vectorise with `jax.vmap` (over keys and over stacked params). Randomness: the initial
latents are `normal(fold_in(key, 0), ...)`, and step k's noise `normal(fold_in(fold_in(key, 1),
k), ...)` ([B, K_c, ...] successors in beam search; the sampler's `step_noise` for best-of-N), so
beam search with B = K_c = 1 is exactly one chain of `sample` (tested).

Shapes: N samples, B beams, K_c successors per beam, K steps of the timestep sequence, L
lookahead steps; data [..., *data_shape].
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.diffusion import EpsFn, Params, Schedule, sample, step_moments

# reward_fn(x0 [N, *data_shape], cond [N, ...] or None) -> [N] float rewards
RewardFn = Callable[[jax.Array, Any], jax.Array]


class SearchResult(NamedTuple):
    """One search run's output.

    Attributes:
      final: [*data_shape] the chosen sample.
      reward: [] its reward.
      samples: [M, *data_shape] the final candidates (N for best-of-N, B K_c for beam search).
      rewards: [M] their rewards.
      step_scores: [K-1] the best successor score (reward of x0_hat) kept at each non-final step
        (beam search; [0] for best-of-N).
      nfe: [] int32 denoiser calls on the chain (beams or samples) for this final sample.
      lookahead_nfe: [] int32 denoiser calls spent in the lookahead estimator.
      reward_calls: [] int32 evaluations of the reward (on x0_hat or on final samples).
    """

    final: jax.Array
    reward: jax.Array
    samples: jax.Array
    rewards: jax.Array
    step_scores: jax.Array
    nfe: jax.Array
    lookahead_nfe: jax.Array
    reward_calls: jax.Array


def search_nfe(num_steps: int, *, beams: int = 1, candidates: int = 1, lookahead: int = 1,
               num_samples: int | None = None) -> dict[str, int]:
    """The static cost of one search run (one final sample), as `SearchResult` reports it.

    Best-of-N (`num_samples` = N given): sampling N K, lookahead 0, reward calls N.
    Beam search: sampling K B, lookahead (K - 1) B K_c L, reward calls K B K_c.

    Returns:
      {"sampling", "lookahead", "nfe" (their sum: the denoiser calls), "reward_calls"}.
    """
    k = int(num_steps)
    if num_samples is not None:
        n = int(num_samples)
        return {"sampling": n * k, "lookahead": 0, "nfe": n * k, "reward_calls": n}
    b, c, la = int(beams), int(candidates), int(lookahead)
    sampling, ahead = k * b, (k - 1) * b * c * la
    return {"sampling": sampling, "lookahead": ahead, "nfe": sampling + ahead,
            "reward_calls": k * b * c}


def _rows_of(cond: Any, n: int) -> Any:
    """One search's condition (no batch axis) repeated for n rows, or None."""
    if cond is None:
        return None
    cond = jnp.asarray(cond)
    return jnp.broadcast_to(cond, (n,) + cond.shape)


def lookahead_grid(level: jax.Array, lookahead: int) -> jax.Array:
    """The lookahead's timesteps from level s: t_j = floor(s (L - j) / L), j = 0 .. L: [L+1]
    int32 (t_0 = s, t_L = 0; repeats when s < L, where a step is the identity)."""
    la = int(lookahead)
    j = jnp.arange(la + 1, dtype=jnp.int32)
    return (jnp.asarray(level, jnp.int32) * (la - j)) // la


def lookahead_x0(apply: EpsFn, params: Params, schedule: Schedule, x: jax.Array,
                 level: jax.Array, lookahead: int, cond: Any = None, *,
                 clip_x0: float | None = None) -> jax.Array:
    """The lookahead estimate of x_0 from latents x at level s (module docstring).

    With the grid t_0 = s > ... > t_{L-1} of `lookahead_grid`: x^(0) = x; for j < L - 1,
    x^(j+1) = the DDIM eta = 0 step of x^(j) from t_j to t_{j+1}; the output is Tweedie's
    x0_hat(x^(L-1), t_{L-1}) = (x - sqrt(1 - abar) eps_theta) / sqrt(abar). L denoiser calls
    per row; L = 1 is x0_hat(x, s).

    Args:
      apply, params: the denoiser.
      schedule: the noise schedule.
      x: [N, *data_shape] latents at level s.
      level: [] int s >= 0 (traced).
      lookahead: L >= 1 (static).
      cond: the denoiser's condition for the N rows ([N, ...]) or None.
      clip_x0: None or c > 0, as in `sample`.

    Returns:
      [N, *data_shape] float32 x0_hat.
    """
    la = int(lookahead)
    if la < 1:
        raise ValueError(f"lookahead must be an int >= 1 (1 = Tweedie), got {lookahead!r}")
    grid = lookahead_grid(level, la)
    n = x.shape[0]

    def body(x, ts):
        t, s = ts
        eps = apply(params, x, jnp.full((n,), t, jnp.int32), cond)
        mean, _, x0_hat = step_moments(schedule, eps, x, t, s, method="ddim", eta=0.0,
                                       clip_x0=clip_x0)
        return mean, x0_hat

    _, x0_hats = jax.lax.scan(body, jnp.asarray(x, jnp.float32), (grid[:-1], grid[1:]))
    return x0_hats[-1]


def _check_sequence(timesteps: Sequence[int], schedule: Schedule) -> np.ndarray:
    seq = np.asarray(timesteps)
    if seq.ndim != 1 or not np.issubdtype(seq.dtype, np.integer) or not len(seq):
        raise ValueError(f"timesteps must be a non-empty 1-D int sequence, got {seq!r}")
    if np.any(np.diff(seq) >= 0) or seq[0] >= schedule.num_timesteps or seq[-1] < 0:
        raise ValueError(f"timesteps must descend strictly within [0, "
                         f"{schedule.num_timesteps}), got {seq.tolist()}")
    return seq.astype(np.int32)


def best_of_n(apply: EpsFn, params: Params, schedule: Schedule, key: jax.Array,
              timesteps: Sequence[int], reward_fn: RewardFn, *, num_samples: int,
              data_shape: Sequence[int], cond: Any = None, method: str = "ddim",
              eta: float | jax.Array = 1.0, clip_x0: float | None = None) -> SearchResult:
    """Best-of-N: N independent chains of `sample`, the one with the highest reward.

    x_T ~ N(0, I) from fold_in(key, 0), the chains' noise from fold_in(key, 1); output
    argmax_n r(x_0^(n)) (ties: the first). Cost: N K denoiser calls, N reward calls.

    Args:
      apply, params, schedule: the denoiser and its schedule.
      key: one typed PRNG key (vmap over keys for several runs).
      timesteps: the static descending timestep sequence (K steps).
      reward_fn: `(x0 [N, ...], cond [N, ...] or None) -> [N]`.
      num_samples: N >= 1. data_shape: one sample's shape.
      cond: this run's condition (no batch axis, repeated for the N rows) or None.
      method, eta, clip_x0: as `alignax.models.diffusion.sample`.

    Returns:
      `SearchResult` with samples [N, ...].
    """
    seq = _check_sequence(timesteps, schedule)
    n = int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
    cond_n = _rows_of(cond, n)
    x_T = jax.random.normal(jax.random.fold_in(key, 0), (n, *data_shape), jnp.float32)
    out = sample(apply, params, schedule, jax.random.fold_in(key, 1), x_T, seq, cond=cond_n,
                 method=method, eta=eta, clip_x0=clip_x0)
    rewards = jnp.asarray(reward_fn(out.final, cond_n), jnp.float32)
    best = jnp.argmax(rewards)
    cost = search_nfe(len(seq), num_samples=n)
    return SearchResult(final=out.final[best], reward=rewards[best], samples=out.final,
                        rewards=rewards, step_scores=jnp.zeros((0,), jnp.float32),
                        nfe=jnp.asarray(cost["sampling"], jnp.int32),
                        lookahead_nfe=jnp.asarray(0, jnp.int32),
                        reward_calls=jnp.asarray(cost["reward_calls"], jnp.int32))


def beam_search(apply: EpsFn, params: Params, schedule: Schedule, key: jax.Array,
                timesteps: Sequence[int], reward_fn: RewardFn, *, beams: int, candidates: int,
                lookahead: int = 1, data_shape: Sequence[int], cond: Any = None,
                method: str = "ddim", eta: float | jax.Array = 1.0,
                clip_x0: float | None = None) -> SearchResult:
    """Diffusion latent beam search with the lookahead estimator (module docstring).

    Beams x^(1..B) ~ N(0, I) at tau_1. Step k < K-1: one denoiser call per beam gives
    (mean, std) of p_theta(x_s | x^(b)); successors x^(b, j) = mean + std z (K_c per beam);
    score^(b, j) = r(`lookahead_x0`(x^(b, j), s, L)); keep the top B scores (`lax.top_k`,
    ties to the lower index). Step K-1 lands on the output level: the B K_c successors are
    scored by r itself and the best is returned. beams = 1 is greedy per-step selection.

    Args:
      apply, params, schedule: the denoiser and its schedule.
      key: one typed PRNG key.
      timesteps: the static descending timestep sequence (K steps).
      reward_fn: `(x0 [N, ...], cond [N, ...] or None) -> [N]`.
      beams: B >= 1. candidates: K_c >= 1 successors per beam. lookahead: L >= 1 denoiser
        calls per successor score (1 = Tweedie).
      data_shape: one sample's shape.
      cond: this run's condition (no batch axis) or None.
      method, eta, clip_x0: the stochastic step, as `alignax.models.diffusion.sample`
        (use eta > 0: with a deterministic step all successors of a beam coincide).

    Returns:
      `SearchResult` with samples [B K_c, ...] (the last step's successors).
    """
    seq = _check_sequence(timesteps, schedule)
    b, c, la = int(beams), int(candidates), int(lookahead)
    if b < 1 or c < 1 or la < 1:
        raise ValueError(f"beams, candidates and lookahead must be ints >= 1, got {beams!r}, "
                         f"{candidates!r}, {lookahead!r}")
    num_steps = len(seq)
    prev = np.concatenate([seq[1:], [-1]]).astype(np.int32)
    cond_b, cond_bc = _rows_of(cond, b), _rows_of(cond, b * c)
    x = jax.random.normal(jax.random.fold_in(key, 0), (b, *data_shape), jnp.float32)
    noise_key = jax.random.fold_in(key, 1)

    def successors(x, k, t, s):
        eps = apply(params, x, jnp.full((b,), t, jnp.int32), cond_b)
        mean, std, _ = step_moments(schedule, eps, x, t, s, method=method, eta=eta,
                                    clip_x0=clip_x0)
        z = jax.random.normal(jax.random.fold_in(noise_key, k), (b, c, *data_shape),
                              jnp.float32)
        out = mean[:, None] + std.reshape((b, 1) + (1,) * len(data_shape)) * z
        return out.reshape((b * c, *data_shape))

    def body(x, inputs):
        k, t, s = inputs
        cand = successors(x, k, t, s)
        x0_hat = lookahead_x0(apply, params, schedule, cand, s, la, cond_bc, clip_x0=clip_x0)
        scores = jnp.asarray(reward_fn(x0_hat, cond_bc), jnp.float32)
        top, idx = jax.lax.top_k(scores, b)
        return cand[idx], top[0]

    if num_steps > 1:
        x, step_scores = jax.lax.scan(body, x, (jnp.arange(num_steps - 1, dtype=jnp.int32),
                                                jnp.asarray(seq[:-1]), jnp.asarray(prev[:-1])))
    else:
        step_scores = jnp.zeros((0,), jnp.float32)
    finals = successors(x, num_steps - 1, seq[-1], prev[-1])
    rewards = jnp.asarray(reward_fn(finals, cond_bc), jnp.float32)
    best = jnp.argmax(rewards)
    cost = search_nfe(num_steps, beams=b, candidates=c, lookahead=la)
    return SearchResult(final=finals[best], reward=rewards[best], samples=finals,
                        rewards=rewards, step_scores=step_scores,
                        nfe=jnp.asarray(cost["sampling"], jnp.int32),
                        lookahead_nfe=jnp.asarray(cost["lookahead"], jnp.int32),
                        reward_calls=jnp.asarray(cost["reward_calls"], jnp.int32))


def greedy_search(apply: EpsFn, params: Params, schedule: Schedule, key: jax.Array,
                  timesteps: Sequence[int], reward_fn: RewardFn, *, candidates: int,
                  lookahead: int = 1, **kwargs) -> SearchResult:
    """Greedy per-step selection: `beam_search` with one beam (at every step the best of K_c
    successors by r(x0_hat)). Keyword arguments as `beam_search`."""
    return beam_search(apply, params, schedule, key, timesteps, reward_fn, beams=1,
                       candidates=candidates, lookahead=lookahead, **kwargs)


def lookahead_fidelity(apply: EpsFn, params: Params, schedule: Schedule, key: jax.Array,
                       timesteps: Sequence[int], reward_fn: RewardFn, *, num_samples: int,
                       data_shape: Sequence[int], step: int, lookaheads: Sequence[int],
                       continuations: int = 1, cond: Any = None, method: str = "ddim",
                       eta: float | jax.Array = 1.0, clip_x0: float | None = None
                       ) -> tuple[jax.Array, jax.Array]:
    """Intermediate reward estimates and the final rewards of the same chains.

    N chains run to step index `step` (x at level tau_step, `sample(..., stop=step)`), each is
    scored by r(`lookahead_x0`(x, tau_step, L)) for every L in `lookaheads`, and then continued
    M times to x_0: continuation 0 with the trunk's key (`sample(..., start=step)`: trunk and
    continuation 0 are one full run, the chains of `best_of_n` with the same key), continuation
    m >= 1 with the key fold_in(fold_in(key, 2), m). The rank correlation of an estimate row
    with the final rewards (one continuation's, or their mean: a Monte-Carlo estimate of the
    value E[r(x_0) | x_t]) measures how well the estimator predicts where a latent ends
    (alignax.ops.rank.spearman).

    Args:
      step: 1 <= step < K, the step index of the intermediate latent (static).
      lookaheads: the L values (static ints >= 1).
      continuations: M >= 1 (static).
      Others as `best_of_n`.

    Returns:
      (estimates [len(lookaheads), N], final rewards [M, N]), float32.
    """
    seq = _check_sequence(timesteps, schedule)
    if not 1 <= int(step) < len(seq):
        raise ValueError(f"step must be in [1, {len(seq)}), got {step!r}")
    n, step = int(num_samples), int(step)
    cond_n = _rows_of(cond, n)
    x_T = jax.random.normal(jax.random.fold_in(key, 0), (n, *data_shape), jnp.float32)
    noise_key = jax.random.fold_in(key, 1)
    kw = dict(cond=cond_n, method=method, eta=eta, clip_x0=clip_x0)
    trunk = sample(apply, params, schedule, noise_key, x_T, seq, stop=step, **kw)
    level = jnp.asarray(seq[step], jnp.int32)
    estimates = jnp.stack([
        jnp.asarray(reward_fn(lookahead_x0(apply, params, schedule, trunk.final, level, la,
                                           cond_n, clip_x0=clip_x0), cond_n), jnp.float32)
        for la in lookaheads])
    m = int(continuations)
    if m < 1:
        raise ValueError(f"continuations must be >= 1, got {continuations!r}")
    extra = jax.random.fold_in(key, 2)
    keys = jnp.stack([noise_key] + [jax.random.fold_in(extra, i) for i in range(1, m)])

    def finish(k):
        final = sample(apply, params, schedule, k, trunk.final, seq, start=step, **kw)
        return jnp.asarray(reward_fn(final.final, cond_n), jnp.float32)

    return estimates, jax.vmap(finish)(keys)
