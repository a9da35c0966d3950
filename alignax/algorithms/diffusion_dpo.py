"""Diffusion-DPO fine-tuning of a denoiser on preference pairs of samples, as a `fit_small` loss.

Wallace et al. 2023, "Diffusion Model Alignment Using Direct Preference Optimization" (arXiv
2311.12908): the policy is the denoiser theta, the reference a frozen copy (the pretrained
model), the data pairs (x^w_0, x^l_0) under a condition c. Each update draws, per pair, one
timestep t ~ U{0..T-1} and one noise eps shared by the two images (the paper's code), noises
both, and takes `alignax.losses.diffusion_dpo.diffusion_dpo_loss` of the policy's and the
reference's eps predictions. The reference params travel in the batch (`ref_params`), so every
vmapped seed of `fit_small` has its own frozen reference and the reference is never in the
optimizer's tree (DESIGN: "the reference model is a separate frozen argument of the step").

NFE: an update costs 2 B policy calls (forward and backward) and 2 B reference calls; no
sampling. Shapes: B pairs per update, data [B, ...], N pairs in the data.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from alignax.losses.diffusion_dpo import diffusion_dpo_loss
from alignax.models.diffusion import Denoiser, Schedule, q_sample

def diffusion_dpo(denoiser: Denoiser, schedule: Schedule, *, beta: float | None = None,
                  reduction: str = "sum", ref_params: Any = None) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of Diffusion-DPO for `fit_small(has_aux=True)`.

    batch: {"chosen": [B, ...] x^w_0, "rejected": [B, ...] x^l_0, "key": a PRNG key (t and the
    noise), optional "cond": [B, ...] the denoiser's condition of each pair, "ref_params": the
    frozen reference (else the `ref_params` argument), "beta": [] (else the `beta` argument; a
    traced value lets one program sweep beta over vmapped runs)}.

    With t_b ~ U{0..T-1} and eps_b ~ N(0, I) drawn from batch["key"] per pair b:
    x^*_t = q_sample(x^*_0, t_b, eps_b), and the loss is mean_b of `diffusion_dpo_loss`
    (omega constant, beta as given). Metrics: loss terms averaged over the batch:
    "implicit_accuracy" (r^w > r^l), "reward_margin", "policy_mse" / "ref_mse" (the mean
    denoising error per dim of policy / reference over both images).
    """
    def loss_fn(params, batch):
        x_w = jnp.asarray(batch["chosen"], jnp.float32)
        x_l = jnp.asarray(batch["rejected"], jnp.float32)
        if x_w.shape != x_l.shape:
            raise ValueError(f"chosen {x_w.shape} and rejected {x_l.shape} must match")
        b = x_w.shape[0]
        k_t, k_n = jax.random.split(batch["key"])
        t = jax.random.randint(k_t, (b,), 0, schedule.num_timesteps, jnp.int32)
        noise = jax.random.normal(k_n, x_w.shape, jnp.float32)
        x_t = q_sample(schedule, jnp.concatenate([x_w, x_l]), jnp.concatenate([t, t]),
                       jnp.concatenate([noise, noise]))
        tt = jnp.concatenate([t, t])
        cond = batch.get("cond")
        cond = None if cond is None else jnp.concatenate([cond, cond])
        ref = batch.get("ref_params", ref_params)
        if ref is None:
            raise ValueError("diffusion_dpo needs ref_params (argument or batch['ref_params'])")
        b_val = batch.get("beta", beta)
        if b_val is None:
            raise ValueError("diffusion_dpo needs beta (argument or batch['beta'])")
        eps = denoiser.apply(params, x_t, tt, cond)
        eps_ref = jax.lax.stop_gradient(denoiser.apply(jax.lax.stop_gradient(ref), x_t, tt,
                                                       cond))
        per, m = diffusion_dpo_loss(eps[:b], eps[b:], eps_ref[:b], eps_ref[b:], noise,
                                    beta=b_val, reduction=reduction)
        dims = float(x_w[0].size) if reduction == "sum" else 1.0
        return per.mean(), {
            "implicit_accuracy": m["reward_accuracies"].mean(),
            "reward_margin": m["reward_margins"].mean(),
            "policy_mse": 0.5 * (m["policy_chosen_error"] + m["policy_rejected_error"]).mean()
            / dims,
            "ref_mse": 0.5 * (m["ref_chosen_error"] + m["ref_rejected_error"]).mean() / dims,
        }

    return loss_fn


def pair_batch_fn(batch_size: int, fields: tuple[str, ...] = ("chosen", "rejected", "cond"),
                  passthrough: tuple[str, ...] = ("ref_params", "beta")) -> Callable[..., dict]:
    """`batch_fn(data, rng) -> batch` for `diffusion_dpo`: `batch_size` pairs drawn with
    replacement (the same rows of every field present in `data`: [N, ...] each), the fields in
    `passthrough` (the reference params, beta) passed as they are, and "key" for the loss."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def batch_fn(data, rng):
        pick, key = jax.random.split(rng)
        n = data["chosen"].shape[0]
        rows = jax.random.randint(pick, (batch_size,), 0, n)
        out = {f: data[f][rows] for f in fields if f in data}
        out.update({f: data[f] for f in passthrough if f in data})
        return {**out, "key": key}

    return batch_fn


__all__ = ["diffusion_dpo", "pair_batch_fn"]
