"""A multi-objective regression reward model: K rating heads fit to per-objective ratings.

Directional preference alignment (Wang et al. 2024, arXiv 2402.18571) and HelpSteer-style reward
models score a response on K attributes (helpfulness, verbosity, ...) by regression on rated
data, r(x, y) in R^K, and a user preference is then a direction over them (v^T r,
`alignax.rewards.directional`). This module holds the reusable parts of such a model, for any
`apply_fn(params, input_ids, mask) -> [B, K]` (or a dict with "objectives", e.g.
`alignax.models.heads.make_multi_objective_reward_model`):

- `rating_scale(ratings)`: the per-objective center and scale the heads are trained in, so that
  objectives of different ranges (a length of 0..12 and a score of -40..3) weigh alike in the
  loss;
- `make_regression_loss(apply_fn, center, scale)`: the mean squared error of the standardised
  heads (`alignax.losses.reward.regression_loss`), with per-objective RMSEs in rating units;
- `predict(apply_fn, params, ids, mask, center, scale)`: the ratings the model predicts, [N, K];
- `regression_report(pred, target, names)`: per-objective RMSE, R^2 and Pearson correlation on
  held-out data.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.losses.reward import regression_loss


def _objectives(out) -> jax.Array:
    if isinstance(out, dict):
        if "objectives" not in out:
            raise KeyError(f"the model's output has no 'objectives' (keys: {sorted(out)})")
        out = out["objectives"]
    out = jnp.asarray(out, jnp.float32)
    if out.ndim != 2:
        raise ValueError(f"a multi-objective model returns [B, K], got shape {out.shape}")
    return out


def rating_scale(ratings, mask=None, *, min_scale: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The per-objective mean and standard deviation of ratings [N, K] (over the rated entries
    when `mask` [N, K] is given); a scale below `min_scale` (a constant objective) becomes 1.

    Returns (center [K], scale [K]) float32.
    """
    r = np.asarray(ratings, np.float64)
    if r.ndim != 2:
        raise ValueError(f"ratings must be [N, K], got shape {r.shape}")
    m = np.ones_like(r) if mask is None else np.asarray(mask, np.float64)
    count = m.sum(0)
    if np.any(count == 0):
        raise ValueError(f"an objective has no rated example (counts {count.tolist()})")
    center = (r * m).sum(0) / count
    scale = np.sqrt((((r - center) ** 2) * m).sum(0) / count)
    scale = np.where(scale < min_scale, 1.0, scale)
    return center.astype(np.float32), scale.astype(np.float32)


def make_regression_loss(apply_fn: Callable, center, scale) -> Callable:
    """`loss_fn(params, batch) -> (loss, metrics)` of a K-head regression reward model.

    batch: "input_ids" [B, T], "mask" [B, T], "ratings" [B, K] and optionally "rating_mask"
    [B, K] (1 where the objective is rated). The heads are trained in standardised units:
    loss = mean_b regression_loss(out_b, (ratings_b - center) / scale), so
    `predict` = center + scale * out. metrics: "rmse_<k>" per objective, in rating units.
    """
    center = jnp.asarray(center, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)

    def loss_fn(params, batch):
        out = _objectives(apply_fn(params, batch["input_ids"], batch["mask"]))
        target = (jnp.asarray(batch["ratings"], jnp.float32) - center) / scale
        mask = batch.get("rating_mask")
        loss = jnp.mean(regression_loss(out, target, mask))
        m = jnp.ones_like(out) if mask is None else jnp.asarray(mask, jnp.float32)
        sq = jnp.square((out - target) * scale) * m
        rmse = jnp.sqrt(jnp.sum(sq, 0) / jnp.maximum(jnp.sum(m, 0), 1.0))
        return loss, {f"rmse_{k}": rmse[k] for k in range(out.shape[-1])}

    return loss_fn


def predict(apply_fn: Callable, params, input_ids, mask, center, scale, *,
            batch_size: int | None = None) -> jax.Array:
    """The predicted ratings center + scale * heads, [N, K] float32 (in chunks of `batch_size`
    rows when given)."""
    center = jnp.asarray(center, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    ids, mask = jnp.asarray(input_ids), jnp.asarray(mask)
    n = ids.shape[0]
    step = n if batch_size is None else int(batch_size)
    parts = [_objectives(apply_fn(params, ids[i:i + step], mask[i:i + step]))
             for i in range(0, n, max(step, 1))]
    return center + scale * jnp.concatenate(parts, 0)


def regression_report(pred, target, names: Sequence[str]) -> dict[str, float]:
    """Held-out quality of each head: {"rmse_<name>", "r2_<name>", "pearson_<name>"} from
    predictions and targets [N, K] (R^2 = 1 - SSE / SST; Pearson 0 for a constant column)."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != len(names):
        raise ValueError(f"pred {p.shape} and target {t.shape} must be [N, {len(names)}]")
    out = {}
    for k, name in enumerate(names):
        err = p[:, k] - t[:, k]
        sst = float(np.sum((t[:, k] - t[:, k].mean()) ** 2))
        out[f"rmse_{name}"] = float(np.sqrt(np.mean(err ** 2)))
        out[f"r2_{name}"] = float(1.0 - np.sum(err ** 2) / sst) if sst > 0 else float("nan")
        sp, st = p[:, k].std(), t[:, k].std()
        out[f"pearson_{name}"] = (float(np.mean((p[:, k] - p[:, k].mean())
                                                 * (t[:, k] - t[:, k].mean())) / (sp * st))
                                  if sp > 0 and st > 0 else 0.0)
    return out
