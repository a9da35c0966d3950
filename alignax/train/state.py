"""The training state: one pytree carried through the jitted step and checkpointed whole."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """Everything a training run needs to continue exactly.

    Attributes:
      params: trainable parameters (nested dict of arrays).
      opt_state: the optax state of `params`.
      step: int32 scalar, number of updates applied.
      rng: typed PRNG key; the step uses `jax.random.fold_in(rng, step)`, so the key never changes
        and a resumed run draws the same randomness as an uninterrupted one.
      extra: evolving state that is not trained by gradients (e.g. BCO's running reward shift, a
        curriculum rate): a typed pytree updated in the step by `make_train_step`'s
        `extra_update` and checkpointed with the rest; `()` when unused.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array
    extra: Any = ()

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
               extra: Any = ()) -> "TrainState":
        return cls(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32), rng=rng,
                   extra=extra)
