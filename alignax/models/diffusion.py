"""Gaussian diffusion: noise schedules, epsilon-predicting denoisers, DDPM / DDIM samplers with
per-step log-probs and Tweedie estimates, and the training-side recompute of those log-probs.

Conventions (those of `diffusers`, so configs and checkpoints translate):

- Timesteps are 0-indexed, t = 0 .. T-1. `alpha_bars[t] = prod_{s <= t} (1 - betas[s])`, and the
  forward process is q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).
- A sampler visits a descending timestep sequence tau_1 > ... > tau_K (`timestep_sequence`);
  step k maps x_{tau_k} to x_{tau_{k+1}}, and the last step maps x_{tau_K} to the output, whose
  level is "timestep -1" with alpha bar `schedule.final_alpha_bar`: 1 (clean data, the default,
  `set_alpha_to_one=True`), or abar_0 (`set_alpha_to_one=False`, Stable Diffusion's setting,
  which with a sequence ending at tau_K >= 1 makes every step stochastic, as in DDPO).
- Every step is the generalised (DDIM) update from level t to level s < t, with
  abar_{t|s} = abar_t / abar_s and the posterior variance sigma~^2 = (1 - abar_s) / (1 - abar_t)
  (1 - abar_{t|s}):

      x0_hat = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t)     (Tweedie, eps form)
      ddim:  x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - eta^2 sigma~^2) eps + eta sigma~ z
      ddpm:  x_s = mean of q(x_s | x_t, x0_hat) + sigma~ z                       (Ho et al. 2020)

  with z ~ N(0, I). DDIM with eta = 1 is DDPM (equal to float rounding), eta = 0 is the
  deterministic DDIM ODE step (Song et al. 2021, arXiv 2010.02502, eq. 12 and 16).

The denoising chain as an MDP (DDPO: Black et al. 2023, arXiv 2305.13301; DPOK: Fan et al. 2023,
arXiv 2305.16381): the state is (x_t, t, cond), the action the drawn x_s, the policy
p_theta(x_s | x_t) = N(mean_theta(x_t, t), sigma_t^2 I). `sample` returns, for every step,
log p_theta(x_s | x_t) of the drawn x_s, summed over all data dimensions (the exact log-density;
DDPO's reference code averages over dimensions instead, which only rescales the policy ratio's
exponent). The guarantee, as for the language sampler (`alignax.sampling.sampler`): these
log-probs equal `step_logprob` recomputed by a training step on the stored trajectory (tested to
1e-5 in float32, for DDPM and DDIM with eta > 0), because both evaluate the same `step_moments`
and `gaussian_logp` on the same inputs. A step with sigma = 0 (eta = 0, or the step into a level
with the same alpha bar) is deterministic: its log-prob is reported as 0 and it carries no
policy gradient; leave such steps out of a policy loss's timestep mask.

Randomness: the noise of step k (its index in the full timestep sequence, not in the sub-range)
is `normal(fold_in(key, k), x.shape)` for one key, or row b's `normal(fold_in(key[b], k),
x.shape[1:])` for a [B] array of keys (then each row is independent of its batch neighbours). So a
run split at any step index j -- a trunk `sample(..., start=0, stop=j)`, then
`sample(trunk.final, ..., start=j)` with the same key -- equals one full run; branches from a
shared prefix use different keys (or per-row keys) for their continuation.

Shapes: B batch, K steps of a run, T diffusion timesteps; data points are [B, D] (MLP) or images
[B, H, W, C] (U-Net); E embedding width; L condition tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Params = dict[str, Any]
# apply(params, x_t [B, ...], t [B] int32, cond) -> eps [B, ...] float32
EpsFn = Callable[..., jax.Array]

SCHEDULES = ("linear", "cosine")
METHODS = ("ddpm", "ddim")
KINDS = ("mlp", "unet")
COND_KINDS = ("none", "class", "tokens", "vector")


# ----------------------------------------------------------------------------------------------
# Noise schedules and the forward process


class Schedule(NamedTuple):
    """A discrete noise schedule of T steps (a pytree of float32 arrays; T is static via shapes).

    Attributes:
      betas: [T] beta_t, the variance added at step t.
      alphas: [T] alpha_t = 1 - beta_t.
      alpha_bars: [T] abar_t = prod_{s <= t} alpha_s (decreasing).
      final_alpha_bar: [] the alpha bar of "timestep -1", the level a sampler's last step lands
        on: 1.0 (clean data) or abar_0.
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    final_alpha_bar: jax.Array

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]


def linear_betas(num_timesteps: int, beta_start: float | None = None,
                 beta_end: float | None = None) -> np.ndarray:
    """Ho et al. 2020's linear schedule: beta_t from beta_start to beta_end, [T] float64.

    The defaults are DDPM's (1e-4, 0.02) at T = 1000, rescaled by 1000 / T as in Nichol &
    Dhariwal 2021 (arXiv 2102.09672, their `get_named_beta_schedule`), so a short chain still
    ends near pure noise (abar_{T-1} ~ 4e-5 for every T >= 50); below T = 50 the default end is
    capped at 0.999 (where 20 / T would reach 1).
    """
    scale = 1000.0 / num_timesteps
    start = scale * 1e-4 if beta_start is None else beta_start
    end = min(scale * 0.02, 0.999) if beta_end is None else beta_end
    if not 0.0 < start <= end < 1.0:
        raise ValueError(f"beta_start, beta_end must satisfy 0 < start <= end < 1, got "
                         f"{start}, {end}")
    return np.linspace(start, end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021's cosine schedule (arXiv 2102.09672, eq. 17), [T] float64.

        f(u) = cos(((u / T) + s) / (1 + s) * pi / 2)^2,
        beta_t = min(1 - f(t + 1) / f(t), max_beta),  t = 0 .. T-1,

    so abar_t = f(t + 1) / f(0) (until the clip bites at the very end).
    """
    u = np.arange(num_timesteps + 1, dtype=np.float64)
    f = np.cos((u / num_timesteps + s) / (1 + s) * np.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def make_schedule(kind: str = "linear", num_timesteps: int = 100, *,
                  beta_start: float | None = None, beta_end: float | None = None,
                  cosine_s: float = 0.008, set_alpha_to_one: bool = True) -> Schedule:
    """The `Schedule` of a named beta schedule ("linear" or "cosine") with T steps.

    Products are taken in float64 and stored in float32. `set_alpha_to_one` picks the output
    level of a sampler's last step (module docstring): abar = 1 (True) or abar_0 (False).
    """
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an int >= 1, got {num_timesteps!r}")
    if kind == "linear":
        betas = linear_betas(num_timesteps, beta_start, beta_end)
    elif kind == "cosine":
        betas = cosine_betas(num_timesteps, cosine_s)
    else:
        raise ValueError(f"schedule kind must be one of {SCHEDULES}, got {kind!r}")
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    final = 1.0 if set_alpha_to_one else alpha_bars[0]
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return Schedule(f32(betas), f32(alphas), f32(alpha_bars), f32(final))


def alpha_bar(schedule: Schedule, t: jax.Array) -> jax.Array:
    """abar_t for integer t of any shape; t = -1 gives `final_alpha_bar`. float32, t's shape."""
    t = jnp.asarray(t, jnp.int32)
    return jnp.where(t >= 0, schedule.alpha_bars[jnp.maximum(t, 0)], schedule.final_alpha_bar)


def timestep_sequence(num_timesteps: int, num_steps: int, *, last: int = 0) -> np.ndarray:
    """K evenly spaced descending timesteps from T-1 down to `last`: [K] int32 numpy.

    tau_k = round(T - 1 - k (T - 1 - last) / (K - 1)); K = T with last = 0 is every timestep
    (the full DDPM chain). Use last >= 1 with `set_alpha_to_one=False` so that every step,
    the final one included, is stochastic.
    """
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_timesteps - last:
        raise ValueError(f"num_steps must be an int in [1, {num_timesteps - last}], got "
                         f"{num_steps!r}")
    if not 0 <= last < num_timesteps:
        raise ValueError(f"last must be in [0, {num_timesteps}), got {last}")
    seq = np.round(np.linspace(num_timesteps - 1, last, num_steps)).astype(np.int32)
    return seq if num_steps > 1 else np.array([num_timesteps - 1], np.int32)


def _rows(a: jax.Array, x: jax.Array) -> jax.Array:
    """A per-row [B] (or scalar) array shaped to broadcast against x [B, ...]."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def _batch_t(t: jax.Array, batch: int) -> jax.Array:
    t = jnp.asarray(t, jnp.int32)
    if t.ndim == 0:
        return jnp.full((batch,), t, jnp.int32)
    if t.shape != (batch,):
        raise ValueError(f"timesteps must be a scalar or [B={batch}], got shape {t.shape}")
    return t


def q_moments(schedule: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).

    Args:
      x0: [B, ...] clean data. t: [B] or scalar int timesteps.

    Returns:
      mean [B, ...] and variance [B] float32.
    """
    ab = alpha_bar(schedule, _batch_t(t, x0.shape[0]))
    return jnp.sqrt(_rows(ab, x0)) * x0, 1.0 - ab


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """A draw of q(x_t | x_0): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, [B, ...]."""
    ab = _rows(alpha_bar(schedule, _batch_t(t, x0.shape[0])), x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def forward_noise(schedule: Schedule, key: jax.Array, x0: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The inputs of the denoising loss: t ~ U{0..T-1}, noise ~ N(0, I), x_t = q_sample(...).

    Returns:
      (x_t [B, ...], t [B] int32, noise [B, ...]); the target of an eps-predictor is `noise`.
    """
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (x0.shape[0],), 0, schedule.num_timesteps, jnp.int32)
    noise = jax.random.normal(kn, x0.shape, jnp.float32)
    return q_sample(schedule, x0, t, noise), t, noise


def posterior_moments(schedule: Schedule, x_t: jax.Array, x0: jax.Array, t: jax.Array,
                      t_prev: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the forward posterior q(x_s | x_t, x_0), s = t_prev < t.

    With abar_{t|s} = abar_t / abar_s and beta_{t|s} = 1 - abar_{t|s} (s = t - 1: beta_t):

        mean = sqrt(abar_s) beta_{t|s} / (1 - abar_t) x_0
               + sqrt(abar_{t|s}) (1 - abar_s) / (1 - abar_t) x_t,
        var  = (1 - abar_s) / (1 - abar_t) beta_{t|s}

    (Ho et al. 2020, arXiv 2006.11239, eq. 6-7; Kingma et al. 2021 for the jump s < t - 1).

    Args:
      x_t, x0: [B, ...]. t: [B] or scalar ints. t_prev: the same, default t - 1 (-1 is the
        output level, `final_alpha_bar`).

    Returns:
      mean [B, ...] and variance [B], float32.
    """
    t = _batch_t(t, x_t.shape[0])
    t_prev = t - 1 if t_prev is None else _batch_t(t_prev, x_t.shape[0])
    ab_t, ab_s = alpha_bar(schedule, t), alpha_bar(schedule, t_prev)
    a_ts = ab_t / ab_s
    b_ts = 1.0 - a_ts
    c0 = jnp.sqrt(ab_s) * b_ts / (1.0 - ab_t)
    ct = jnp.sqrt(a_ts) * (1.0 - ab_s) / (1.0 - ab_t)
    mean = _rows(c0, x0) * x0 + _rows(ct, x_t) * x_t
    return mean, (1.0 - ab_s) / (1.0 - ab_t) * b_ts


# ----------------------------------------------------------------------------------------------
# One reverse step: shared by the sampler and the training-side recompute


def tweedie_x0(x_t: jax.Array, eps: jax.Array, abar_t: jax.Array) -> jax.Array:
    """Tweedie's estimate of x_0 in eps form: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).

    With the MMSE eps = E[eps | x_t] this is E[x_0 | x_t] (Efron 2011; Chung et al. 2023,
    arXiv 2209.14687). Args: x_t, eps [B, ...]; abar_t [B] or scalar. Returns [B, ...].
    """
    ab = _rows(abar_t, x_t)
    return (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def step_moments(schedule: Schedule, eps: jax.Array, x_t: jax.Array, t: jax.Array,
                 t_prev: jax.Array, *, method: str = "ddim", eta: float | jax.Array = 1.0,
                 clip_x0: float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean and std of the reverse step p_theta(x_s | x_t), s = t_prev, and the x0_hat used.

    x0_hat = tweedie_x0(x_t, eps, abar_t), clipped to [-clip_x0, clip_x0] when given, and eps
    then recomputed from the clipped x0_hat, eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t),
    so DDIM with eta = 1 stays DDPM under clipping too. With sigma~^2 the posterior variance of
    `posterior_moments`:
      "ddpm": mean = posterior mean of q(x_s | x_t, x0_hat), std = sigma~;
      "ddim": mean = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - eta^2 sigma~^2) eps,
              std = eta sigma~ (Song et al. 2021, arXiv 2010.02502, eq. 12, 16).

    Args:
      eps: [B, ...] the denoiser's prediction at (x_t, t). x_t: [B, ...].
      t, t_prev: [B] or scalar ints, t_prev < t (-1: the output level).
      method: "ddpm" or "ddim" (static). eta: DDIM noise scale in [0, 1] (traced; unused by
        "ddpm"). clip_x0: None or c > 0 (static).

    Returns:
      (mean [B, ...], std [B], x0_hat [B, ...]), float32.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    batch = x_t.shape[0]
    x_t = jnp.asarray(x_t, jnp.float32)
    eps = jnp.asarray(eps, jnp.float32)
    ab_t = alpha_bar(schedule, _batch_t(t, batch))
    ab_s = alpha_bar(schedule, _batch_t(t_prev, batch))
    x0_hat = tweedie_x0(x_t, eps, ab_t)
    if clip_x0 is not None:
        x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
        eps = (x_t - jnp.sqrt(_rows(ab_t, x_t)) * x0_hat) / jnp.sqrt(1.0 - _rows(ab_t, x_t))
    b_ts = 1.0 - ab_t / ab_s
    var_post = jnp.maximum((1.0 - ab_s) / (1.0 - ab_t) * b_ts, 0.0)
    if method == "ddpm":
        mean, _ = posterior_moments(schedule, x_t, x0_hat, _batch_t(t, batch),
                                    _batch_t(t_prev, batch))
        return mean, jnp.sqrt(var_post), x0_hat
    var = jnp.asarray(eta, jnp.float32) ** 2 * var_post
    direction = jnp.sqrt(jnp.maximum(1.0 - ab_s - var, 0.0))
    mean = jnp.sqrt(_rows(ab_s, x_t)) * x0_hat + _rows(direction, x_t) * eps
    return mean, jnp.sqrt(var), x0_hat


def gaussian_logp(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log N(x; mean, std^2 I) summed over all but the batch axis; 0 where std == 0.

        log p = -sum_i (x_i - mean_i)^2 / (2 std^2) - D log std - D/2 log(2 pi),  D = prod(dims)

    Args: x, mean [B, ...]; std [B]. Returns [B] float32 (gradient-safe at std == 0).
    """
    d = math.prod(x.shape[1:])
    positive = std > 0
    s = jnp.where(positive, std, 1.0)
    z = (x - mean) / _rows(s, x)
    lp = (-0.5 * jnp.sum(jnp.square(z), axis=tuple(range(1, x.ndim)))
          - d * jnp.log(s) - 0.5 * d * math.log(2 * math.pi))
    return jnp.where(positive, lp, 0.0)


def step_logprob(apply: EpsFn, params: Params, schedule: Schedule, x_t: jax.Array,
                 t: jax.Array, t_prev: jax.Array, x_prev: jax.Array, cond: Any = None, *,
                 method: str = "ddim", eta: float | jax.Array = 1.0,
                 clip_x0: float | None = None) -> jax.Array:
    """log p_theta(x_prev | x_t) of one reverse step: what a DDPO / DPOK update differentiates.

    One denoiser call, then `step_moments` and `gaussian_logp`, the same functions `sample` runs
    on the same inputs: on a stored trajectory it returns the sampler's `logps` (module
    docstring, the guarantee).

    Args:
      apply: the denoiser, `apply(params, x_t, t [B], cond) -> eps [B, ...]`.
      x_t, x_prev: [B, ...] the state and the drawn next latent. t, t_prev: [B] or scalar ints
        (per-row timesteps allowed, e.g. DDPO's per-sample shuffled steps).
      cond: the denoiser's condition or None. method, eta, clip_x0: as `sample`.

    Returns:
      [B] float32 log-probs (0 on deterministic steps).
    """
    t = _batch_t(t, x_t.shape[0])
    eps = apply(params, x_t, t, cond)
    mean, std, _ = step_moments(schedule, eps, x_t, t, t_prev, method=method, eta=eta,
                                clip_x0=clip_x0)
    return gaussian_logp(jnp.asarray(x_prev, jnp.float32), mean, std)


def chain_logprobs(apply: EpsFn, params: Params, schedule: Schedule, latents: jax.Array,
                   timesteps: jax.Array, prev_timesteps: jax.Array, cond: Any = None, *,
                   method: str = "ddim", eta: float | jax.Array = 1.0,
                   clip_x0: float | None = None) -> jax.Array:
    """`step_logprob` of every step of a stored trajectory, one `lax.map` over steps: [K, B].

    Args:
      latents: [K+1, B, ...] (`DiffusionSample.latents`). timesteps, prev_timesteps: [K] ints
        (`DiffusionSample.timesteps`, `.prev_timesteps`). The rest as `step_logprob`.
    """
    def one(args):
        x_t, x_prev, t, s = args
        return step_logprob(apply, params, schedule, x_t, t, s, x_prev, cond, method=method,
                            eta=eta, clip_x0=clip_x0)

    return jax.lax.map(one, (latents[:-1], latents[1:], jnp.asarray(timesteps, jnp.int32),
                             jnp.asarray(prev_timesteps, jnp.int32)))


# ----------------------------------------------------------------------------------------------
# Samplers


class DiffusionSample(NamedTuple):
    """One run of the reverse chain over steps start .. stop-1 of a timestep sequence (K steps).

    Attributes:
      final: [B, ...] the last latent: x_0 when the run reaches the end of the sequence, else
        x at `timesteps[stop]` (a trunk to continue from).
      latents: [K+1, B, ...] x_{tau_start}, ..., the states visited, ending with `final`.
      x0_hats: [K, B, ...] Tweedie's x0_hat(x_t, t) at every step's input (clipped if asked).
      timesteps: [K] int32 the input timestep of every step.
      prev_timesteps: [K] int32 the level each step lands on (-1: the output level).
      logps: [K, B] float32 log p_theta(x_s | x_t) of the drawn x_s (0 on deterministic steps).
      nfe: [] int32 denoiser calls per sample in this run (K).
    """

    final: jax.Array
    latents: jax.Array
    x0_hats: jax.Array
    timesteps: jax.Array
    prev_timesteps: jax.Array
    logps: jax.Array
    nfe: jax.Array


def _is_key(key) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def step_noise(key: jax.Array, step: jax.Array, shape: Sequence[int]) -> jax.Array:
    """The N(0, I) noise of step index `step`: one key -> [B, ...]; [B] keys -> row-wise."""
    if jnp.ndim(key) == 0:
        return jax.random.normal(jax.random.fold_in(key, step), shape, jnp.float32)
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape[1:],
                                                jnp.float32))(key)


def sample(apply: EpsFn, params: Params, schedule: Schedule, key: jax.Array, x_T: jax.Array,
           timesteps: Sequence[int], *, cond: Any = None, method: str = "ddim",
           eta: float | jax.Array = 1.0, start: int = 0, stop: int | None = None,
           clip_x0: float | None = None) -> DiffusionSample:
    """Runs the reverse chain (DDPM ancestral or DDIM) inside one `jax.lax.scan`.

    Step k in [start, stop) maps x_{tau_k} to x_{tau_{k+1}} (tau_{K} := -1, the output level):
    eps = apply(params, x, tau_k, cond); (mean, std, x0_hat) = `step_moments`;
    x' = mean + std * `step_noise(key, k, x.shape)`; logp = `gaussian_logp(x', mean, std)`.

    Args:
      apply: the denoiser (`Denoiser.apply` or `gaussian_denoiser(...)`).
      params: its parameters.
      schedule: the noise schedule.
      key: a typed PRNG key (`jax.random.key`), or [B] keys for row-wise noise.
      x_T: [B, ...] the latents at timesteps[start] (N(0, I) for a fresh run; given latents for
        beam or branch search).
      timesteps: a concrete descending int sequence of K_all timesteps in [0, T) (static;
        `timestep_sequence`).
      cond: the denoiser's condition (e.g. [B] class ids), or None.
      method: "ddpm" or "ddim" (static).
      eta: DDIM noise scale in [0, 1] (traced, so sweeping it does not recompile).
      start, stop: the sub-range of step indices to run, 0 <= start < stop <= K_all (static;
        stop None = K_all). Noise is keyed by the absolute index, so runs compose (module
        docstring).
      clip_x0: None or c > 0: clip x0_hat to [-c, c] (static).

    Returns:
      `DiffusionSample` with K = stop - start steps.
    """
    if not _is_key(key):
        raise ValueError("key must be a typed key from jax.random.key (or an array of them)")
    seq = np.asarray(timesteps)
    if seq.ndim != 1 or not np.issubdtype(seq.dtype, np.integer) or not len(seq):
        raise ValueError(f"timesteps must be a non-empty 1-D int sequence, got {seq!r}")
    if np.any(np.diff(seq) >= 0) or seq[0] >= schedule.num_timesteps or seq[-1] < 0:
        raise ValueError(f"timesteps must descend strictly within [0, "
                         f"{schedule.num_timesteps}), got {seq.tolist()}")
    stop = len(seq) if stop is None else stop
    if not 0 <= start < stop <= len(seq):
        raise ValueError(f"need 0 <= start < stop <= {len(seq)}, got start={start}, stop={stop}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if jnp.ndim(key) not in (0, 1) or (jnp.ndim(key) == 1 and key.shape[0] != x_T.shape[0]):
        raise ValueError(f"key must be one key or [B={x_T.shape[0]}] keys, got {key.shape}")
    prev = np.concatenate([seq[1:], [-1]]).astype(np.int32)
    steps = np.arange(start, stop, dtype=np.int32)
    ts = jnp.asarray(seq[start:stop], jnp.int32)
    ps = jnp.asarray(prev[start:stop])
    batch = x_T.shape[0]

    def body(x, inputs):
        k, t, s = inputs
        eps = apply(params, x, jnp.full((batch,), t, jnp.int32), cond)
        mean, std, x0_hat = step_moments(schedule, eps, x, t, s, method=method, eta=eta,
                                         clip_x0=clip_x0)
        x_next = mean + _rows(std, mean) * step_noise(key, k, x.shape)
        return x_next, (x_next, x0_hat, gaussian_logp(x_next, mean, std))

    x_T = jnp.asarray(x_T, jnp.float32)
    final, (xs, x0_hats, logps) = jax.lax.scan(body, x_T, (jnp.asarray(steps), ts, ps))
    return DiffusionSample(final=final, latents=jnp.concatenate([x_T[None], xs]),
                           x0_hats=x0_hats, timesteps=ts, prev_timesteps=ps, logps=logps,
                           nfe=jnp.asarray(stop - start, jnp.int32))


# ----------------------------------------------------------------------------------------------
# The exact denoiser of Gaussian data (a reference for tests and toy baselines)


def gaussian_denoiser(schedule: Schedule, mean: jax.Array | float, std: float) -> EpsFn:
    """The MMSE eps-predictor for data x_0 ~ N(mean, std^2 I), usable in place of `apply`.

    With x_t = sqrt(a) x_0 + sqrt(1 - a) eps, a = abar_t, and v = a std^2 + 1 - a:

        E[eps | x_t] = sqrt(1 - a) / v (x_t - sqrt(a) mean),
        E[x_0 | x_t] = mean + sqrt(a) std^2 / v (x_t - sqrt(a) mean)

    (jointly Gaussian conditioning; `tweedie_x0` of the first is the second).

    Returns:
      apply(params, x_t [B, ...], t [B], cond=None) -> eps [B, ...] (params and cond ignored).
    """
    mu = jnp.asarray(mean, jnp.float32)

    def apply(params, x_t, t, cond=None):
        del params, cond
        a = _rows(alpha_bar(schedule, _batch_t(t, x_t.shape[0])), x_t)
        v = a * std ** 2 + 1.0 - a
        return jnp.sqrt(1.0 - a) / v * (x_t - jnp.sqrt(a) * mu)

    return apply


def gaussian_posterior_x0(schedule: Schedule, mean: jax.Array | float, std: float,
                          x_t: jax.Array, t: jax.Array) -> jax.Array:
    """E[x_0 | x_t] for x_0 ~ N(mean, std^2 I) (see `gaussian_denoiser`): [B, ...]."""
    a = _rows(alpha_bar(schedule, _batch_t(t, x_t.shape[0])), x_t)
    mu = jnp.asarray(mean, jnp.float32)
    return mu + jnp.sqrt(a) * std ** 2 / (a * std ** 2 + 1.0 - a) * (x_t - jnp.sqrt(a) * mu)


# ----------------------------------------------------------------------------------------------
# Denoisers


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """An eps-predicting denoiser: an MLP for points or a small U-Net for images.

    Attributes:
      kind: "mlp" (data [B, *data_shape], flattened; residual MLP blocks) or "unet" (images
        [B, H, W, C]; one resolution level per entry of `channels`).
      data_shape: the shape of one sample: (D,) for points, (H, W, C) for images; for the
        U-Net H and W must be divisible by 2^(len(channels) - 1).
      hidden: MLP width.
      n_blocks: MLP residual blocks (each LayerNorm -> Linear + FiLM-free embedding add ->
        activation -> Linear).
      channels: U-Net widths per level (each divisible by `groups`).
      res_blocks: U-Net residual blocks per level on the way down (and up).
      groups: GroupNorm groups of the U-Net.
      time_dim: E, the width of the time (and condition) embedding.
      cond_kind: "none"; "class": cond is [B] int ids in [0, cond_vocab] where id cond_vocab is
        the null (unconditional) class, for classifier-free dropout; "tokens": cond is [B, L]
        int token ids in [0, cond_vocab), negative ids are padding, embedded and mean-pooled
        (a bag-of-tokens text encoder); "vector": cond is [B, cond_dim] float (e.g. the known
        part of an input to inpaint), mapped by a linear layer into the embedding; the
        classifier-free null condition is the zero vector.
      cond_vocab: number of classes or token vocabulary size (>= 1 for "class" and "tokens").
      cond_dim: the width of a "vector" condition (>= 1 for cond_kind "vector", else unused).
      activation: a jax.nn function name.
      max_period: the sinusoidal time embedding's longest period.
      dtype: compute dtype ("float32" or "bfloat16") of the matmuls and convolutions.
      param_dtype: the dtype parameters are created and stored in. Norm statistics and the
        time embedding are float32 whatever the dtypes; eps is returned in float32.
    """

    kind: str = "mlp"
    data_shape: tuple = (2,)
    hidden: int = 128
    n_blocks: int = 3
    channels: tuple = (16, 32)
    res_blocks: int = 1
    groups: int = 8
    time_dim: int = 64
    cond_kind: str = "none"
    cond_vocab: int = 0
    cond_dim: int = 0
    activation: str = "silu"
    max_period: float = 10000.0
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "data_shape", tuple(self.data_shape))
        object.__setattr__(self, "channels", tuple(self.channels))
        for name, allowed in (("kind", KINDS), ("cond_kind", COND_KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"{name} must be 'float32' or 'bfloat16', got "
                                 f"{getattr(self, name)!r}")
        if not hasattr(jax.nn, self.activation):
            raise ValueError(f"activation must be a jax.nn function, got {self.activation!r}")
        if self.cond_kind in ("class", "tokens") and self.cond_vocab < 1:
            raise ValueError(f"cond_vocab must be >= 1 with cond_kind={self.cond_kind!r}")
        if self.cond_kind == "vector" and self.cond_dim < 1:
            raise ValueError(f"cond_dim must be >= 1 with cond_kind='vector', got {self.cond_dim}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"time_dim must be an even int >= 2, got {self.time_dim}")
        if self.kind == "unet":
            if len(self.data_shape) != 3:
                raise ValueError(f"data_shape must be (H, W, C) for kind='unet', got "
                                 f"{self.data_shape}")
            if not self.channels or any(c % self.groups for c in self.channels):
                raise ValueError(f"channels {self.channels} must be non-empty and divisible by "
                                 f"groups={self.groups}")
            factor = 2 ** (len(self.channels) - 1)
            if self.data_shape[0] % factor or self.data_shape[1] % factor:
                raise ValueError(f"data_shape {self.data_shape} must have H, W divisible by "
                                 f"{factor} for channels={self.channels}")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (float) timesteps: [B] -> [B, dim] float32.

    e = [cos(t w_i), sin(t w_i)]_{i < dim/2}, w_i = max_period^(-i / (dim/2))
    (Vaswani et al. 2017; Ho et al. 2020's time embedding).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class _Embedding(nnx.Module):
    """Time embedding MLP plus the optional condition embedding: -> [B, E]."""

    def __init__(self, cfg: DenoiserConfig, rngs: nnx.Rngs):
        e, dt, pdt = cfg.time_dim, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.fc1 = nnx.Linear(e, e, dtype=dt, param_dtype=pdt, rngs=rngs)
        self.fc2 = nnx.Linear(e, e, dtype=dt, param_dtype=pdt, rngs=rngs)
        rows = cfg.cond_vocab + (cfg.cond_kind == "class")
        if cfg.cond_kind == "vector":
            self.cond = nnx.Linear(cfg.cond_dim, e, dtype=dt, param_dtype=pdt, rngs=rngs)
        else:
            self.cond = (nnx.Embed(rows, e, dtype=dt, param_dtype=pdt, rngs=rngs)
                         if cfg.cond_kind != "none" else None)
        self.cfg = cfg

    def __call__(self, t, cond):
        cfg = self.cfg
        act = getattr(jax.nn, cfg.activation)
        emb = timestep_embedding(t, cfg.time_dim, cfg.max_period).astype(jnp.dtype(cfg.dtype))
        emb = self.fc2(act(self.fc1(emb)))
        if cfg.cond_kind == "class":
            emb = emb + self.cond(cond)
        elif cfg.cond_kind == "tokens":
            valid = (cond >= 0).astype(jnp.float32)
            vecs = self.cond(jnp.maximum(cond, 0)).astype(jnp.float32)
            pooled = (vecs * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1), 1.0)[:, None]
            emb = emb + pooled.astype(emb.dtype)
        elif cfg.cond_kind == "vector":
            emb = emb + self.cond(cond.astype(jnp.dtype(cfg.dtype)))
        return emb


class _MLPDenoiser(nnx.Module):
    def __init__(self, cfg: DenoiserConfig, rngs: nnx.Rngs):
        d, h, e = math.prod(cfg.data_shape), cfg.hidden, cfg.time_dim
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        lin = lambda a, b, **kw: nnx.Linear(a, b, dtype=dt, param_dtype=pdt, rngs=rngs, **kw)  # noqa: E731
        self.embed = _Embedding(cfg, rngs)
        self.inp = lin(d, h)
        self.norms = nnx.List([nnx.LayerNorm(h, dtype=jnp.float32, param_dtype=pdt, rngs=rngs)
                               for _ in range(cfg.n_blocks)])
        self.fc1 = nnx.List([lin(h, h) for _ in range(cfg.n_blocks)])
        self.emb = nnx.List([lin(e, h) for _ in range(cfg.n_blocks)])
        self.fc2 = nnx.List([lin(h, h) for _ in range(cfg.n_blocks)])
        self.out_norm = nnx.LayerNorm(h, dtype=jnp.float32, param_dtype=pdt, rngs=rngs)
        self.out = lin(h, d, kernel_init=nnx.initializers.zeros)
        self.cfg = cfg

    def __call__(self, x, t, cond):
        cfg = self.cfg
        act, dt = getattr(jax.nn, cfg.activation), jnp.dtype(cfg.dtype)
        emb = act(self.embed(t, cond))
        h = self.inp(x.reshape(x.shape[0], -1).astype(dt))
        for norm, fc1, proj, fc2 in zip(self.norms, self.fc1, self.emb, self.fc2):
            u = fc1(norm(h.astype(jnp.float32)).astype(dt)) + proj(emb)
            h = h + fc2(act(u))
        out = self.out(act(self.out_norm(h.astype(jnp.float32)).astype(dt)))
        return out.astype(jnp.float32).reshape(x.shape)


class _ResBlock(nnx.Module):
    """GroupNorm -> act -> conv3x3 (+ embedding) -> GroupNorm -> act -> conv3x3, residual."""

    def __init__(self, cin: int, cout: int, cfg: DenoiserConfig, rngs: nnx.Rngs):
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin, cfg.groups), dtype=jnp.float32,
                                   param_dtype=pdt, rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), dtype=dt, param_dtype=pdt, rngs=rngs)
        self.emb = nnx.Linear(cfg.time_dim, cout, dtype=dt, param_dtype=pdt, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=cfg.groups, dtype=jnp.float32,
                                   param_dtype=pdt, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), dtype=dt, param_dtype=pdt, rngs=rngs)
        self.skip = (nnx.Conv(cin, cout, (1, 1), dtype=dt, param_dtype=pdt, rngs=rngs)
                     if cin != cout else None)
        self.act = getattr(jax.nn, cfg.activation)
        self.dt = dt

    def __call__(self, x, emb):
        h = self.conv1(self.act(self.norm1(x.astype(jnp.float32))).astype(self.dt))
        h = h + self.emb(emb)[:, None, None, :]
        h = self.conv2(self.act(self.norm2(h.astype(jnp.float32))).astype(self.dt))
        return (x if self.skip is None else self.skip(x)) + h


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is <= groups (for the concatenated skips)."""
    return max(g for g in range(1, groups + 1) if channels % g == 0)


class _UNetDenoiser(nnx.Module):
    def __init__(self, cfg: DenoiserConfig, rngs: nnx.Rngs):
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        ch, cin = cfg.channels, cfg.data_shape[-1]
        conv = lambda a, b, k=3, s=1, **kw: nnx.Conv(a, b, (k, k), strides=s, dtype=dt,  # noqa: E731
                                                    param_dtype=pdt, rngs=rngs, **kw)
        self.embed = _Embedding(cfg, rngs)
        self.conv_in = conv(cin, ch[0])
        self.down = nnx.List([nnx.List([_ResBlock(c, c, cfg, rngs) for _ in range(cfg.res_blocks)])
                              for c in ch])
        self.downsample = nnx.List([conv(ch[i], ch[i + 1], s=2) for i in range(len(ch) - 1)])
        self.mid = _ResBlock(ch[-1], ch[-1], cfg, rngs)
        self.up = nnx.List([_ResBlock(2 * c, c, cfg, rngs) for c in ch])
        self.upsample = nnx.List([conv(ch[i], ch[i - 1]) for i in range(1, len(ch))])
        self.out_norm = nnx.GroupNorm(ch[0], num_groups=cfg.groups, dtype=jnp.float32,
                                      param_dtype=pdt, rngs=rngs)
        self.conv_out = conv(ch[0], cin, kernel_init=nnx.initializers.zeros)
        self.cfg = cfg

    def __call__(self, x, t, cond):
        cfg = self.cfg
        act, dt, n = getattr(jax.nn, cfg.activation), jnp.dtype(cfg.dtype), len(cfg.channels)
        emb = act(self.embed(t, cond))
        h = self.conv_in(x.astype(dt))
        skips = []
        for i in range(n):
            for block in self.down[i]:
                h = block(h, emb)
            skips.append(h)
            if i < n - 1:
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i in reversed(range(n)):
            h = self.up[i](jnp.concatenate([h, skips[i]], axis=-1), emb)
            if i > 0:
                b, hh, ww, c = h.shape
                h = self.upsample[i - 1](jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
        h = self.conv_out(act(self.out_norm(h.astype(jnp.float32))).astype(dt))
        return h.astype(jnp.float32)


class Denoiser(NamedTuple):
    """`params = init(rng)`; `eps = apply(params, x_t [B, ...], t [B] or [], cond=None)`."""

    init: Callable[[jax.Array], Params]
    apply: EpsFn
    logical_axes: Callable[[Params], Any]
    config: DenoiserConfig


_ZERO_INIT = ("out", "conv_out")  # output layers start at eps = 0 (Ho et al. 2020's code)


def make_denoiser(cfg: DenoiserConfig) -> Denoiser:
    """The pure (init, apply) pair of a `DenoiserConfig`.

    Initialisation: kernels ~ N(0, 1 / fan_in) (LeCun normal; fan_in = prod of all but the last
    axis), the output layer's kernel 0 (the untrained model predicts eps = 0), biases 0, norm
    scales 1, embedding tables N(0, 1).

    apply(params, x_t [B, *data_shape], t [B] or scalar int, cond) -> eps [B, *data_shape]
    float32; cond is None, [B] class ids, [B, L] token ids or [B, cond_dim] floats (see
    `DenoiserConfig.cond_kind`).
    Parameters are replicated on a mesh (`logical_axes` all None): the batch is what shards.
    """
    module = _MLPDenoiser if cfg.kind == "mlp" else _UNetDenoiser
    abstract = nnx.eval_shape(lambda: module(cfg, nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract, nnx.Param)

    abstract_params = nnx.to_pure_dict(abstract_state)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    sizes = [math.prod(leaf.shape) for _, leaf in leaves]

    @jax.jit
    def init(rng):
        # One normal draw for all parameters, sliced: XLA:CPU compiles one threefry per random
        # call, and one per parameter took tens of seconds for the U-Net.
        z = jax.random.normal(rng, (sum(sizes),), jnp.float32)
        out, offset = [], 0
        for (path, leaf), size in zip(leaves, sizes):
            names = [str(getattr(k, "key", k)) for k in path]
            draw = z[offset:offset + size].reshape(leaf.shape)
            offset += size
            if names[-1] == "kernel" and names[0] not in _ZERO_INIT:
                value = draw / math.sqrt(math.prod(leaf.shape[:-1]))
            elif names[-1] == "embedding":
                value = draw
            elif names[-1] == "scale":
                value = jnp.ones(leaf.shape)
            else:  # biases, zero-initialised output layers
                value = jnp.zeros(leaf.shape)
            out.append(value.astype(leaf.dtype))
        return jax.tree.unflatten(treedef, out)

    def apply(params, x_t, t, cond=None):
        if tuple(x_t.shape[1:]) != cfg.data_shape:
            raise ValueError(f"expected x_t [B, *{cfg.data_shape}], got {x_t.shape}")
        batch = x_t.shape[0]
        t = jnp.asarray(t)
        t = jnp.broadcast_to(t, (batch,)) if t.ndim == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"expected t [B={batch}] or a scalar, got {t.shape}")
        if cfg.cond_kind == "none" and cond is not None:
            raise ValueError("cond given but cond_kind is 'none'")
        if cfg.cond_kind != "none":
            want = 1 if cfg.cond_kind == "class" else 2
            if cond is None or jnp.ndim(cond) != want or jnp.shape(cond)[0] != batch:
                raise ValueError(f"cond_kind={cfg.cond_kind!r} needs cond of rank {want} with "
                                 f"B={batch} rows, got {None if cond is None else jnp.shape(cond)}")
            if cfg.cond_kind == "vector":
                if jnp.shape(cond)[1] != cfg.cond_dim:
                    raise ValueError(f"cond_kind='vector' needs cond [B, cond_dim="
                                     f"{cfg.cond_dim}], got {jnp.shape(cond)}")
                cond = jnp.asarray(cond, jnp.float32)
            else:
                cond = jnp.asarray(cond, jnp.int32)
        state = jax.tree.map(lambda v: v, abstract_state)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)(x_t, t, cond)

    def logical_axes(params):  # small: replicated everywhere
        return jax.tree.map(lambda p: (None,) * p.ndim, params)

    return Denoiser(init=init, apply=apply, logical_axes=logical_axes, config=cfg)
