"""Training diffusion models with the library's trainer: denoising pretraining, reward-weighted
fine-tuning and DDPO-style policy gradient on the denoising chain, as `fit_small` losses.

Everything here builds `(loss_fn, batch_fn)` pairs for `alignax.train.small.fit_small`, so a
diffusion experiment gets the trainer's guarantees (every seed vmapped into one program, logged
metrics, NaN halt, checkpoints and exact resume, selection on validation) instead of a loop of
its own:

- `denoising_loss`: the eps-prediction loss L_simple (Ho et al. 2020, arXiv 2006.11239) on
  x_t = q_sample(x_0, t, eps) with t ~ U{0..T-1}; with per-sample `weights` in the batch it is
  reward-weighted fine-tuning (Lee et al. 2023, arXiv 2302.12192).
- `minibatch_fn`: draws a minibatch of rows (with replacement) and the step's noise key.
- `pretrain`: `fit_small` of `denoising_loss` with Adam (the experiments' base models).
- `ddpo_loss`: online policy gradient on the denoising MDP (DDPO: Black et al. 2023, arXiv
  2305.13301). Each update samples B chains from the current parameters (held fixed: the
  behaviour policy), scores the final samples with `reward_fn`, normalises the rewards into
  advantages (over the batch, or within groups of samples of one condition), recomputes every
  step's log-prob with gradients (`chain_logprobs`) and takes DDPO's clipped loss over the
  steps `step_mask` selects (`alignax.losses.diffusion.ddpo_clip_loss`). One gradient step per
  sampled batch is DDPO's on-policy case: the ratio is 1 at the update, so the clip does not
  bind and the gradient is REINFORCE's, sum_k A grad log p(x_{k+1} | x_k). The sampler's
  log-probs equal the recompute (`alignax.models.diffusion`'s guarantee), which the loss's
  `approx_kl` metric (0 up to float rounding at the update) shows on every logged row.

NFE: a DDPO update costs K denoiser calls per sample to sample plus K to recompute (forward and
backward); `ddpo_loss`'s metrics report the sampling NFE of the batch (`nfe`), so an experiment
can count samples and NFE at equal budget.

Shapes: B samples per update, K steps of the timestep sequence, data [B, ...].
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from alignax.losses.diffusion import ddpo_clip_loss, epsilon_loss
from alignax.models.diffusion import Denoiser, Schedule, chain_logprobs, forward_noise, sample
from alignax.train.small import SmallFit, fit_small


def denoising_loss(denoiser: Denoiser, schedule: Schedule) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of L_simple for `fit_small(has_aux=True)`.

    batch: {"x0": [B, ...], "key": a PRNG key (t and the noise), optional "cond" (the
    denoiser's condition) and "weights" [B] (reward-weighted fine-tuning)}. loss = mean_b l_b,
    l_b = w_b mean_i (eps_theta(x_t, t) - eps)^2 (`epsilon_loss`).
    """
    def loss_fn(params, batch):
        x_t, t, noise = forward_noise(schedule, batch["key"], batch["x0"])
        eps = denoiser.apply(params, x_t, t, batch.get("cond"))
        per = epsilon_loss(eps, noise, weights=batch.get("weights"))
        return per.mean(), {"eps_mse": epsilon_loss(eps, noise).mean()}

    return loss_fn


def minibatch_fn(batch_size: int, fields: Sequence[str] = ("x0",)) -> Callable[..., dict]:
    """`batch_fn(data, rng) -> batch`: `batch_size` rows (with replacement) of each of `fields`
    of `data` (all with the same leading axis), plus "key" for the loss's own draws."""
    fields = tuple(fields)

    def batch_fn(data, rng):
        pick, key = jax.random.split(rng)
        n = data[fields[0]].shape[0]
        rows = jax.random.randint(pick, (int(batch_size),), 0, n)
        return {**{f: data[f][rows] for f in fields}, "key": key}

    return batch_fn


def pretrain(workdir: str, denoiser: Denoiser, schedule: Schedule, data: dict, *,
             num_steps: int, batch_size: int, learning_rate: float = 1e-3,
             seeds: Sequence[int] = (0,), per_seed_data: bool = False,
             fields: Sequence[str] = ("x0",), **fit_kwargs) -> SmallFit:
    """Trains `denoiser` on `data` ({"x0": [N, ...], optional "cond": [N, ...], with a leading
    [S] axis under `per_seed_data`) by L_simple with Adam, every seed in one program.

    `fields` names the data the loss reads ("x0" and, for a conditional denoiser, "cond").
    Extra keyword arguments go to `fit_small` (e.g. `eval_fn`, `select`, `steps_per_log`).
    """
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"pretrain needs num_steps >= 1 and batch_size >= 1, got {num_steps} "
                         f"and {batch_size}")
    return fit_small(workdir, loss_fn=denoising_loss(denoiser, schedule), has_aux=True,
                     init_params=denoiser.init, tx=optax.adam(learning_rate),
                     num_steps=num_steps, data=data, seeds=seeds, per_seed_data=per_seed_data,
                     batch_fn=minibatch_fn(batch_size, fields), **fit_kwargs)


def group_advantages(rewards: jax.Array, group_size: int = 0, eps: float = 1e-6) -> jax.Array:
    """(r - mean) / (std + eps) over the batch (`group_size` 0) or within consecutive groups of
    `group_size` samples (samples of one condition / one shared trunk): [B] -> [B]."""
    r = jnp.asarray(rewards, jnp.float32)
    if not group_size:
        return (r - r.mean()) / (r.std() + eps)
    if r.shape[0] % group_size:
        raise ValueError(f"batch {r.shape[0]} is not a multiple of group_size {group_size}")
    g = r.reshape(-1, group_size)
    return ((g - g.mean(-1, keepdims=True)) / (g.std(-1, keepdims=True) + eps)).reshape(-1)


def ddpo_loss(denoiser: Denoiser, schedule: Schedule, timesteps: Sequence[int],
              reward_fn: Callable[[jax.Array, Any], jax.Array], *, batch_size: int,
              data_shape: Sequence[int], step_mask: jax.Array | None = None,
              method: str = "ddim", eta: float = 1.0, clip: float = 1e-4,
              advantage_clip: float | None = 5.0, group_size: int = 0,
              clip_x0: float | None = None,
              weight_fn: Callable[[jax.Array, Any], jax.Array] | None = None
              ) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of one on-policy DDPO update (module doc).

    batch: {"key": a PRNG key, optional "cond": [B, ...] conditions, optional "step_mask": [K]
    (overrides `step_mask`: a schedule over updates, e.g. B^2-DiffuRL's growing interval, drawn
    by the batch_fn)}. `reward_fn(x0 [B, ...], cond) -> [B]` (stop-gradient: a learned or gold
    reward). `step_mask` [K] selects the trained steps (default all). `weight_fn(x0, cond) -> [B]`
    (optional, stop-gradient) weighs each sample's clipped loss: loss = mean_b w_b l_b, e.g.
    PrefPaint's reward-trustiness weights of the final samples; without it w_b = 1.

    Metrics: reward and reward_std (mean and standard deviation over the batch's samples: the
    spread is the reward-hacking / mode-collapse diagnostic), approx_kl and clip_frac (~0 at the
    update: the guarantee that the sampler's log-probs equal the recompute), nfe (sampling
    denoiser calls per update).
    """
    timesteps = tuple(int(t) for t in timesteps)
    k = len(timesteps)
    default_mask = jnp.ones((k,), bool) if step_mask is None else jnp.asarray(step_mask, bool)
    if default_mask.shape != (k,):
        raise ValueError(f"step_mask must have shape ({k},), got {default_mask.shape}")

    def loss_fn(params, batch):
        cond = batch.get("cond")
        key_noise, key_x = jax.random.split(batch["key"])
        x_T = jax.random.normal(key_x, (int(batch_size), *data_shape), jnp.float32)
        behaviour = jax.lax.stop_gradient(params)
        out = sample(denoiser.apply, behaviour, schedule, key_noise, x_T, timesteps, cond=cond,
                     method=method, eta=eta, clip_x0=clip_x0)
        rewards = jax.lax.stop_gradient(reward_fn(out.final, cond))
        adv = group_advantages(rewards, group_size)
        latents = jax.lax.stop_gradient(out.latents)
        logps = chain_logprobs(denoiser.apply, params, schedule, latents, out.timesteps,
                               out.prev_timesteps, cond, method=method, eta=eta,
                               clip_x0=clip_x0)
        mask = batch.get("step_mask", default_mask)
        per, metrics = ddpo_clip_loss(logps, out.logps, adv, mask, clip=clip,
                                      advantage_clip=advantage_clip)
        if weight_fn is not None:
            weights = jax.lax.stop_gradient(jnp.asarray(weight_fn(out.final, cond), jnp.float32))
            if weights.shape != per.shape:
                raise ValueError(f"weight_fn must return [{per.shape[0]}] weights, got "
                                 f"{weights.shape}")
            per = per * weights
            metrics["weight_mean"] = weights.mean()
        metrics = {**metrics, "reward": rewards.mean(), "reward_std": rewards.std(),
                   "nfe": (out.nfe * batch_size).astype(jnp.float32)}
        return per.mean(), metrics

    return loss_fn
