"""`make_train_step`: one jitted, donated, explicitly sharded update step."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from alignax.train.state import TrainState

# loss_fn(params, batch, rng, *frozen) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    mesh: jax.sharding.Mesh | None = None,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    frozen_shardings: Sequence[Any] = (),
    donate: bool = True,
    extra_update: Callable[[Any, dict[str, jax.Array]], Any] | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Returns `step(state, batch, *frozen) -> (state, metrics)`, jitted once.

    The step draws its randomness from `fold_in(state.rng, state.step)`, differentiates
    `loss_fn(params, batch, rng, *frozen)` with respect to `params` only, applies `tx`, and reports
    the loss function's metrics plus `loss`, `grad_norm` and `param_norm`. `frozen` holds the
    arguments that are not trained (a reference model's params, a reward model's params); they are
    neither donated nor differentiated.

    Args:
      loss_fn: `(params, batch, rng, *frozen) -> (loss, metrics)`, scalar loss, scalar metrics.
      tx: an optax transformation (use optax chains directly).
      mesh: the device mesh; None compiles without explicit shardings (single device).
      state_sharding: sharding tree of the TrainState (required with `mesh`).
      batch_sharding: sharding of every batch leaf (a single sharding or a tree).
      frozen_shardings: one sharding tree per frozen argument. Metrics come out replicated.
      donate: donate the input state buffers (the caller must not reuse the old state).
      extra_update: for evolving state outside the gradient (`TrainState.extra`): the loss is
        then called as `loss_fn(params, batch, rng, *frozen, extra=state.extra)` and, after the
        update, `state.extra <- extra_update(state.extra, metrics)` with the loss's metrics
        (e.g. a running mean of the batch's rewards). Optax-style: `extra` is a typed pytree
        made by the matching init and updated by this pure function.

    Returns:
      The jitted step. `step._cache_size()` counts its compilations.
    """

    def step(state: TrainState, batch, *frozen):
        rng = jax.random.fold_in(state.rng, state.step)
        kwargs = {} if extra_update is None else {"extra": state.extra}
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, rng, *frozen, **kwargs
        )
        extra = state.extra if extra_update is None else extra_update(state.extra, metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["param_norm"] = optax.tree.norm(params)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return TrainState(params, opt_state, state.step + 1, state.rng, extra), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,) if donate else ())
    if state_sharding is None or batch_sharding is None:
        raise ValueError("make_train_step with a mesh needs state_sharding and batch_sharding")
    metrics_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    in_shardings = (state_sharding, batch_sharding, *frozen_shardings)
    return jax.jit(
        step,
        in_shardings=in_shardings,
        out_shardings=(state_sharding, metrics_sharding),
        donate_argnums=(0,) if donate else (),
    )
