"""General Preference Optimization (GPO): self-play policy optimisation with a general
preference score.

Zhang et al. 2024, "General Preference Modeling with Preference Representations for Aligning
Language Models" (arXiv 2410.02197), built on SPPO (Wu et al. 2024, arXiv 2405.00675). At
iteration t the policy pi_t samples a group of responses per prompt; the preference of each
response y over the current policy is estimated with the general preference model,

    s(y > pi_t | x) = E_{y' ~ pi_t} s(y > y' | x)   (the mean over the rest of the group),

and pi_{t+1} fits the multiplicative-weights update pi_{t+1}(y) ~ pi_t(y) exp(eta s(y > pi_t))
by the square loss

    L = (log pi_theta(y | x) - log pi_t(y | x) - eta (s(y > pi_t | x) - b))^2.

With a skew-symmetric score the expected s(y > pi_t) under pi_t is 0, so b = 0 is the natural
baseline; SPPO's form is the same loss with the win probability P(y > pi_t) and b = 1/2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax.losses.reward import gpm_score


def preference_against_group(embeddings: jax.Array, eigen: jax.Array | None = None, *,
                             mask: jax.Array | None = None) -> jax.Array:
    """s(y_i > pi_t): each response's mean GPM score against the other group members.

    embeddings: [..., G, 2k] (one prompt's group on the second-to-last axis); eigen: [..., k]
    the prompt's eigenvalues (or None: all 1); mask: [..., G] 1 for real members. Returns
    [..., G]; 0 for a group of one.
    """
    v = jnp.asarray(embeddings, jnp.float32)
    g = v.shape[-2]
    vi = v[..., :, None, :]
    vj = v[..., None, :, :]
    lam = None if eigen is None else jnp.asarray(eigen, jnp.float32)[..., None, None, :]
    pairwise = gpm_score(vi, vj, lam)  # [..., G, G]: s(y_i > y_j); 0 on the diagonal
    m = jnp.ones(v.shape[:-1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    others = m[..., None, :] * (1.0 - jnp.eye(g, dtype=jnp.float32))
    return jnp.sum(pairwise * others, -1) / jnp.maximum(jnp.sum(others, -1), 1.0)


def gpo_loss(policy_logps: jax.Array, old_logps: jax.Array, preference: jax.Array, *,
             eta: float, baseline: float = 0.0) -> jax.Array:
    """GPO / SPPO square loss per response: (log pi_theta(y) - log pi_t(y) - eta (s - b))^2.

    policy_logps: [...] log pi_theta(y | x) (differentiated); old_logps: [...] log pi_t(y | x)
    (held fixed: gradients are stopped); preference: [...] s(y > pi_t | x) (held fixed); eta:
    the step size of the multiplicative-weights update; baseline: b. Returns [...].
    """
    target = eta * (jax.lax.stop_gradient(jnp.asarray(preference, jnp.float32)) - baseline)
    ratio = jnp.asarray(policy_logps, jnp.float32) - jax.lax.stop_gradient(
        jnp.asarray(old_logps, jnp.float32))
    return (ratio - target) ** 2
