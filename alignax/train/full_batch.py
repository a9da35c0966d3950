"""Full-batch training of small models inside one jitted program.

Feature-vector experiments (a few thousand pairs, MLP reward models) fit in memory whole: the
whole optimisation is then one `lax.scan` over optimizer steps, with no host round trips, and
`jax.vmap` of it trains many seeds or users at once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def fit_full_batch(loss_fn: Callable[[Any], jax.Array], params: Any,
                   tx: optax.GradientTransformation, steps: int) -> tuple[Any, jax.Array]:
    """`steps` updates of `tx` on `loss_fn(params)` (the full batch closed over), as a scan.

    Traceable: call it under `jax.jit` (or `vmap`); `steps` must be a Python int.

    Args:
      loss_fn: params -> scalar loss.
      params: the initial params (any pytree).
      tx: an optax transformation, e.g. `optax.adamw(1e-2, weight_decay=1e-4)`.
      steps: number of updates.

    Returns:
      (final params, [steps] loss before each update).
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def step(carry, _):
        p, opt = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=int(steps))
    return params, losses
