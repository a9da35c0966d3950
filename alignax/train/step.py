"""`make_train_step`: one jitted, donated, explicitly sharded update step, optionally accumulating
gradients over micro-batches inside it.

Accumulation is a `jax.lax.scan` here rather than optax's. `optax.MultiSteps` accumulates
across k calls of the step (k dispatches, a params-sized accumulator in the optimizer state,
the loop feeding micro-batches). `optax.microbatching.microbatch` (optax 0.2.8) runs a function
over micro-batches inside one call with the same strided reshape (`reshape_batch_axis`,
column-major, so a row-sharded batch stays sharded), but it requires every batch leaf to have
the same leading dim (so no `ref_logps` [2B] beside [B] pair fields), gives every micro-batch
the same arguments (no per-micro-batch rng), accumulates by fixed MEAN/SUM rules (no weighting
by a data-dependent normaliser such as SFT's token count), and adds no sharding constraint on
meshes with Auto axes. The scan below does those in a few lines.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from alignax.train.state import TrainState

# loss_fn(params, batch, rng, *frozen) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]

ACCUM_DTYPES = ("float32", None)


def split_microbatches(batch: Any, accum_steps: int, batch_sharding: Any = None) -> Any:
    """Every leaf [c B, ...] of `batch` -> [k, c B / k, ...]: micro-batch i takes rows
    i, i + k, i + 2k, ... (k = `accum_steps`).

    The strided split keeps each micro-batch where its rows already are: a batch split by rows
    over n devices (contiguous blocks of B / n rows) gives micro-batches split the same way
    over the same devices, with no data moved, when (B / k) is divisible by n. With
    `batch_sharding` (a NamedSharding of the [B, ...] batch, or a tree of them) the result is
    constrained to that sharding with a leading unsharded micro-batch axis.

    A leaf may stack c blocks of B rows (c = 1, 2, ...; B the smallest leading dim), e.g.
    `ref_logps` [2B] (chosen rows, then rejected rows) or stacked rollout rows: since B is
    divisible by k, micro-batch i of such a leaf holds block by block the rows of the pairs
    i, i + k, ..., so the stacked layout is kept inside every micro-batch. When every leaf is
    stacked (the rollout rows `ids` [2B] of online DPO) the smallest leading dim is 2B, and
    the pairs stay aligned only if the pair count B is divisible by k: this function cannot
    check that, the caller must.

    Raises:
      ValueError (at trace time): a leaf without a leading dim, a leading dim that is not a
        multiple of B, B not divisible by k, or (with a sharding) B / k rows that do not split
        over the batch's shards.
    """
    leaves = jax.tree.leaves(batch)
    if not leaves:
        return jax.tree.map(lambda x: x, batch)
    dims = [jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves]
    if None in dims:
        raise ValueError("gradient accumulation splits every batch leaf along its leading dim; "
                         "the batch has a scalar leaf")
    b = min(dims)
    if any(d % b for d in dims):
        raise ValueError(f"gradient accumulation: batch leading dims {sorted(set(dims))} are not "
                         f"all multiples of the batch size {b}")
    if b % accum_steps:
        raise ValueError(f"batch size {b} is not divisible by accum_steps={accum_steps}")
    if batch_sharding is None or isinstance(batch_sharding, NamedSharding):
        shardings = [batch_sharding] * len(leaves)
    else:  # a tree of shardings, possibly a prefix of the batch's tree (None: unconstrained)
        is_sharding = lambda s: s is None or isinstance(s, NamedSharding)  # noqa: E731
        spread = jax.tree.map(lambda s, sub: jax.tree.map(lambda _: (s,), sub), batch_sharding,
                              batch, is_leaf=is_sharding)
        shardings = [s for (s,) in jax.tree.leaves(spread, is_leaf=lambda x: isinstance(
            x, tuple) and len(x) == 1 and is_sharding(x[0]))]

    def split(x, sharding):
        k = accum_steps
        rows = x.shape[0] // k
        out = jnp.swapaxes(x.reshape(rows, k, *x.shape[1:]), 0, 1)  # [k, rows, ...]
        if sharding is None:
            return out
        spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
        shards = _axes_size(sharding.mesh, spec[0])
        if (b // k) % shards:
            raise ValueError(f"accum_steps={k}: micro-batches of {b // k} rows do not split "
                             f"over the batch's {shards} shards")
        micro = NamedSharding(sharding.mesh, PartitionSpec(None, *spec))
        return jax.lax.with_sharding_constraint(out, micro)

    out = [split(x, s) for x, s in zip(leaves, shardings)]
    return jax.tree.unflatten(jax.tree.structure(batch), out)


def _axes_size(mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    size = 1
    for a in axes:
        size *= mesh.shape[a]
    return size


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
    accum_steps: int = 1,
    accum_dtype: str | None = "float32",
    accum_weight: str | None = None,
    extra_post_update: Callable[[Any, Any, jax.Array], Any] | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Returns `step(state, batch, *frozen) -> (state, metrics)`, jitted once.

    The step draws its randomness from `rng = fold_in(state.rng, state.step)`, differentiates
    `loss_fn(params, batch, rng, *frozen)` with respect to `params` only, applies `tx`, and
    reports the loss function's metrics plus `loss`, `grad_norm` and `param_norm`. `frozen`
    holds the arguments that are not trained (a reference model's params, a reward model's
    params); they are neither donated nor differentiated.

    Gradient accumulation (`accum_steps` = k > 1) trades time for memory: the global batch
    (every leaf [B, ...]) is split into k micro-batches of B / k rows (micro-batch i = rows
    i, i + k, i + 2k, ...: `split_microbatches`, which keeps each micro-batch sharded over
    data x fsdp like the batch), a `jax.lax.scan` runs `value_and_grad` on one micro-batch at
    a time, so activations are held for B / k rows only, and one update applies the mean
    gradient

        g = (1 / k) sum_i grad L_i(params),   L_i = loss_fn(params, micro-batch i, fold_in(rng, i))

    The loss and every metric are the mean over micro-batches (right for metrics that are
    means over equally sized micro-batches; a max is averaged too). This equals the k = 1 step
    on the whole batch (to float rounding) exactly when the loss uses no randomness and is
    the plain mean of the micro-batches' losses: a mean over rows of per-row terms is; a mean
    over all target tokens of the batch (SFT) is only if every micro-batch holds the same
    number of target tokens; a weighted mean over a `weight` field, sum(w l) / sum(w), only if
    every micro-batch has the same sum of weights. For such normalised losses name the
    normaliser in `accum_weight`: with the loss reporting W_i (its token count, its sum of
    weights) as that metric, the step uses

        g = sum_i W_i grad L_i / sum_i W_i,   loss and metrics = sum_i W_i m_i / sum_i W_i,

    and reports the metric `accum_weight` itself summed (sum_i W_i), which for
    L_i = S_i / W_i is exactly the whole batch's sum_i S_i / sum_i W_i (a loss that clamps its
    normaliser, S / max(W, 1), and reports the clamped value differs where a micro-batch has
    W_i < 1, e.g. no target tokens). A loss that draws
    from `rng` sees other keys (fold_in(rng, i) instead of rng). With k = 1 the step is the
    plain one (no scan, `rng` itself, `accum_weight` unused).

    Gradients are summed over micro-batches in `accum_dtype` (float32 by default, so k bf16
    micro-gradients of bf16 params add without bf16 rounding at every step; None: in the
    params' dtype), and the mean is cast back to the params' dtype before `tx`, as a plain
    `jax.grad` would return it (so the optimizer state keeps its dtypes; see
    alignax.train.optim for moments in float32 with bf16 params).

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
        made by the matching init and updated by this pure function. With accumulation every
        micro-batch sees the same `state.extra` and `extra_update` gets the metrics' mean.
      extra_post_update: `(extra, new_params, new_step) -> extra`, applied after the optimizer
        update (and after `extra_update`), for state that follows the trained params, e.g.
        TR-DPO's reference, moved toward the policy every k steps. The loss receives
        `extra=` whenever either hook is set.
      accum_steps: k, the number of micro-batches per update (1: no accumulation). The
        batch's leading dim must be divisible by k (ValueError when the step is traced) and,
        with a mesh, B / k by the data x fsdp shards.
      accum_dtype: "float32" or None (the params' dtype): the dtype of the gradient sum.
      accum_weight: None (micro-batches weigh equally) or the name of a scalar metric of the
        loss holding its normaliser (e.g. SFT's "tokens"); ValueError at trace time if the loss
        does not report it.

    Returns:
      The jitted step. `step._cache_size()` counts its compilations.

    Raises:
      ValueError: accum_steps is not a positive int, an unknown accum_dtype, or a mesh without
        shardings.
    """
    if isinstance(accum_steps, bool) or not isinstance(accum_steps, (int, np.integer)) or (
            accum_steps < 1):
        raise ValueError(f"accum_steps must be a positive int, got {accum_steps!r}")
    accum_steps = int(accum_steps)
    if accum_dtype not in ACCUM_DTYPES:
        raise ValueError(f"accum_dtype must be one of {ACCUM_DTYPES}, got {accum_dtype!r}")
    if mesh is not None and (state_sharding is None or batch_sharding is None):
        raise ValueError("make_train_step with a mesh needs state_sharding and batch_sharding")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(params, batch, rng, frozen, kwargs):
        """(Weighted) mean loss, metrics and gradient over `accum_steps` micro-batches."""
        k = accum_steps
        micro = split_microbatches(batch, k, batch_sharding if mesh is not None else None)
        # the gradient sum is sharded like the params (a TrainState of shardings, or one)
        params_sharding = None if mesh is None else getattr(state_sharding, "params",
                                                            state_sharding)

        def zeros(p, sharding=None):
            z = jnp.zeros(p.shape, accum_dtype or p.dtype)
            return z if sharding is None else jax.lax.with_sharding_constraint(z, sharding)

        if params_sharding is None or isinstance(params_sharding, NamedSharding):
            acc = jax.tree.map(lambda p: zeros(p, params_sharding), params)
        else:
            acc = jax.tree.map(zeros, params, params_sharding)

        def body(acc, xs):
            i, mb = xs
            (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i), *frozen,
                                             **kwargs)
            metrics = {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}
            if accum_weight is None:
                w = jnp.float32(1.0)
            elif accum_weight in metrics:
                w = metrics[accum_weight]
            else:
                raise ValueError(f"accum_weight={accum_weight!r}: the loss reports no such "
                                 f"metric (it reports {sorted(metrics)})")
            acc = jax.tree.map(lambda a, g: a + (w * g).astype(a.dtype), acc, grads)
            return acc, (jnp.asarray(loss, jnp.float32), metrics, w)

        acc, (losses, metrics, weights) = jax.lax.scan(body, acc, (jnp.arange(k), micro))
        total = weights.sum()
        total = jnp.where(total > 0, total, 1.0)  # all weights 0: the gradient sum is 0 too
        grads = jax.tree.map(lambda a, p: (a / total).astype(p.dtype), acc, params)
        mean = lambda v: (v * weights).sum(0) / total  # noqa: E731
        metrics = {name: v.sum(0) if name == accum_weight else mean(v)
                   for name, v in metrics.items()}
        return (mean(losses), metrics), grads

    def step(state: TrainState, batch, *frozen):
        rng = jax.random.fold_in(state.rng, state.step)
        kwargs = ({} if extra_update is None and extra_post_update is None
                  else {"extra": state.extra})
        if accum_steps == 1:
            (loss, metrics), grads = grad_fn(state.params, batch, rng, *frozen, **kwargs)
        else:
            (loss, metrics), grads = accumulate(state.params, batch, rng, frozen, kwargs)
        extra = state.extra if extra_update is None else extra_update(state.extra, metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if extra_post_update is not None:
            extra = extra_post_update(extra, params, state.step + 1)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["param_norm"] = optax.tree.norm(params)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return TrainState(params, opt_state, state.step + 1, state.rng, extra), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,) if donate else ())
    metrics_sharding = NamedSharding(mesh, PartitionSpec())
    in_shardings = (state_sharding, batch_sharding, *frozen_shardings)

    def step_on_mesh(state, batch, *frozen):
        # traced with the mesh as the abstract mesh, so that the model can pin its activations'
        # rows to the batch axes (`alignax.models.transformer.rows_on_batch_axes`): without it
        # XLA may follow the params' fsdp-sharded embed dim into the activations and hold the
        # whole global batch's activations on every device (benchmarks/SCALE.md)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return step(state, batch, *frozen)

    return jax.jit(
        step_on_mesh,
        in_shardings=in_shardings,
        out_shardings=(state_sharding, metrics_sharding),
        donate_argnums=(0,) if donate else (),
    )
