"""Weight-space model averaging between a pre-RLHF and an RLHF policy (Lin et al. 2024).

"Mitigating the Alignment Tax of RLHF" (arXiv 2309.06256) interpolates the weights of the
model before RLHF, theta_0 (SFT / pretrained), and after, theta_1 (RLHF):

    theta(alpha) = (1 - alpha) theta_0 + alpha theta_1                       (uniform averaging)

and, heterogeneously (HMA), per layer group k = 1..K with its own ratio alpha_k:

    theta^(k)(alpha) = (1 - alpha_k) theta_0^(k) + alpha_k theta_1^(k),
    max_{alpha in [0, 1]^K} E_x E_{y ~ pi_theta(alpha)} r(x, y)
        s.t.  (1 / K) sum_k alpha_k = alpha_bar,

the alpha's trained by an RLHF objective on the alpha's only (the weights stay fixed).

- `interpolate(params0, params1, alpha)`: uniform averaging of two pytrees of the same
  structure (alpha a scalar, or any array that broadcasts against every leaf).
- `layer_groups(params, assign)`: a pytree of int group ids of the same structure as params,
  from `assign(path) -> k` (path the `jax.tree_util.keystr` of the leaf) or a list of path
  prefixes per group.
- `interpolate_groups(params0, params1, alphas, groups)`: per-group averaging, alphas [K].
- `constrained_alphas(logits, mean_alpha)`: alpha_k = sigmoid(z_k + c), c solved so that
  mean_k alpha_k = alpha_bar (bisection), every alpha_k in (0, 1); its gradient is the exact
  implicit-function gradient (one Newton step from the solved c, whose value is c itself).
- `hma_loss(groups, mean_alpha, reward_fn)`: the `fit_small` loss of the alpha-only
  optimisation over the logits z [K]: -reward_fn(theta(alpha(z)), batch) with the two models in
  `batch["params0"]`, `batch["params1"]` (per seed, through `per_seed_data`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def interpolate(params0: Any, params1: Any, alpha) -> Any:
    """(1 - alpha) params0 + alpha params1, leaf by leaf (the two trees share one structure).

    Args:
      params0: the model before RLHF (alpha = 0).
      params1: the RLHF model (alpha = 1).
      alpha: a scalar (or an array broadcasting against every leaf).
    """
    alpha = jnp.asarray(alpha, jnp.float32)
    return jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b, params0, params1)


def layer_groups(params: Any, assign: Callable[[str], int] | Sequence[Sequence[str]]) -> Any:
    """A pytree of int group ids (one per leaf, the structure of `params`).

    Args:
      params: a params tree.
      assign: `path -> group id` (path = `jax.tree_util.keystr` of the leaf, e.g.
        "['layers'][0]['kernel']"), or a list of groups, each a list of path prefixes: a leaf
        belongs to the first group one of whose prefixes starts its path.

    Raises:
      ValueError: a leaf that no group claims, or a negative id.
    """
    if not callable(assign):
        groups = [list(g) for g in assign]

        def assign(path: str) -> int:  # noqa: F811 (the list form, as a function)
            for k, prefixes in enumerate(groups):
                if any(path.startswith(p) for p in prefixes):
                    return k
            raise ValueError(f"no layer group claims the parameter {path}")

    def one(path, _):
        k = int(assign(jax.tree_util.keystr(path)))
        if k < 0:
            raise ValueError(f"group ids are >= 0, got {k} for {jax.tree_util.keystr(path)}")
        return k

    return jax.tree_util.tree_map_with_path(one, params)


def num_groups(groups: Any) -> int:
    """K = 1 + the largest group id of a `layer_groups` tree."""
    return 1 + max(int(k) for k in jax.tree.leaves(groups))


def interpolate_groups(params0: Any, params1: Any, alphas, groups: Any) -> Any:
    """Per-group averaging: the leaves of group k get (1 - alphas[k]) p0 + alphas[k] p1.

    Args:
      params0, params1: two params trees of one structure.
      alphas: [K] interpolation ratios (any leading batch axes are not supported: vmap).
      groups: the `layer_groups` tree of int ids in [0, K).
    """
    alphas = jnp.asarray(alphas, jnp.float32)
    if alphas.ndim != 1:
        raise ValueError(f"alphas must be [K], got shape {alphas.shape}")
    if num_groups(groups) > alphas.shape[0]:
        raise ValueError(f"{num_groups(groups)} layer groups but only {alphas.shape[0]} alphas")
    return jax.tree.map(lambda k, a, b: (1.0 - alphas[k]) * a + alphas[k] * b,
                        groups, params0, params1)


def constrained_alphas(logits, mean_alpha: float, *, iterations: int = 60) -> jax.Array:
    """[K] alphas in (0, 1) with mean exactly `mean_alpha`: alpha_k = sigmoid(z_k + c(z)).

    c(z) is the root of mean_k sigmoid(z_k + c) = alpha_bar (monotone in c), found by
    `iterations` bisection steps on a bracket that always contains it. Its derivative is
    dc/dz_k = -s'_k / sum_j s'_j (implicit function theorem, s'_k = sigmoid'(z_k + c)); it is
    obtained by one Newton step from the (gradient-stopped) bisection root, whose value equals
    the root (the residual is ~0) and whose gradient is exactly the implicit one. Equal logits
    give alpha_k = alpha_bar for every k (uniform averaging).

    Args:
      logits: [K] free parameters z.
      mean_alpha: alpha_bar in (0, 1).
      iterations: bisection steps (60 reach float32 precision on the bracket).
    """
    mean_alpha = float(mean_alpha)
    if not 0.0 < mean_alpha < 1.0:
        raise ValueError(f"mean_alpha must be in (0, 1), got {mean_alpha}")
    z = jnp.asarray(logits, jnp.float32)
    target = jnp.log(mean_alpha) - jnp.log1p(-mean_alpha)  # logit(alpha_bar)
    zs = jax.lax.stop_gradient(z)
    # sigmoid(z_k + c) <= alpha_bar for all k when c <= target - max z: a bracket of the root
    lo, hi = target - jnp.max(zs), target - jnp.min(zs)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = jnp.mean(jax.nn.sigmoid(zs + mid)) > mean_alpha
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iterations, bisect, (lo, hi))
    c0 = jax.lax.stop_gradient(0.5 * (lo + hi))
    s = jax.nn.sigmoid(z + c0)
    slope = jax.lax.stop_gradient(jnp.mean(s * (1.0 - s)))
    c = c0 - (jnp.mean(s) - mean_alpha) / jnp.maximum(slope, 1e-12)
    return jax.nn.sigmoid(z + c)


def hma_loss(groups: Any, mean_alpha: float,
             reward_fn: Callable[[Any, Any], jax.Array]) -> Callable[[jax.Array, dict], tuple]:
    """The alpha-only RLHF objective of heterogeneous model averaging, as a `fit_small` loss.

    Args:
      groups: the `layer_groups` tree (K groups).
      mean_alpha: alpha_bar in (0, 1), the constraint on the alphas' mean.
      reward_fn: `(params, batch) -> scalar` the policy's expected reward under the merged
        params (e.g. an exact expectation over training prompts, or a REINFORCE surrogate).

    Returns:
      `loss_fn(logits [K], batch) -> (-reward, {"reward", "alpha_<k>"...})` for
      `fit_small(has_aux=True, per_seed_data=True)`; `batch` holds "params0" and "params1"
      (each seed's pre-RLHF and RLHF params) and whatever `reward_fn` reads. Start from zero
      logits (uniform averaging at alpha_bar).
    """
    k = num_groups(groups)

    def loss_fn(logits, batch):
        alphas = constrained_alphas(logits, mean_alpha)
        params = interpolate_groups(batch["params0"], batch["params1"], alphas, groups)
        reward = reward_fn(params, batch)
        return -reward, {"reward": reward, **{f"alpha_{i}": alphas[i] for i in range(k)}}

    return loss_fn
