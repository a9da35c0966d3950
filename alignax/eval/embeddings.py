"""Frozen sequence embeddings of a causal LM: the input of the embedding-level reward models.

ArmoRM's ridge heads and gate, MiCRo's mixture of Bradley-Terry heads and PAL's ideal-point
mixture are functions of a frozen backbone's representation of (prompt, response). On a
checkpoint (`alignax.algorithms.pretrained.load_pretrained(..., "lm")`) that representation
is the final-layer hidden state h(x) [D] (after the final norm, the input of the LM head):

    pool = "last":  h at the last valid position of the row (the position a
                    sequence-classification head reads; left or right padding),
    pool = "mean":  the mean of h over the valid positions.

`sequence_embeddings` computes them in float32 for [N, T] token rows in chunks of
`batch_size` rows (one jitted program per chunk shape; the last chunk is padded by repeating
its last row and the padding dropped), so N can be a whole dataset on one device.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.transformer import Model, last_token_index

POOLS = ("last", "mean")


def pool_hidden(hidden, mask, pool: str = "last") -> jax.Array:
    """[B, T, D] hidden states and [B, T] mask -> [B, D] float32 (see the module doc).

    A row without a valid position pools position 0 ("last") or gives zeros ("mean").
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    h = jnp.asarray(hidden, jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    if pool == "last":
        idx = last_token_index(m)
        return jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
    return (h * m[..., None]).sum(1) / jnp.maximum(m.sum(1), 1.0)[:, None]


@partial(jax.jit, static_argnames=("apply", "pool"))
def _embed_chunk(apply, params, ids, mask, pool):
    _, hidden = apply(params, ids, mask, return_hidden=True)
    return pool_hidden(hidden, mask, pool)


def sequence_embeddings(model: Model, params, input_ids, mask, *, pool: str = "last",
                        batch_size: int = 32) -> np.ndarray:
    """Frozen embeddings [N, D] float32 (host array) of the rows of `input_ids` [N, T].

    model: a causal LM (`make_lm` or an imported checkpoint), whose `apply` accepts
    `return_hidden=True`. mask: [N, T], 1 at valid tokens. batch_size: rows per forward pass
    (memory); every chunk has this many rows, so one program serves the whole array.

    Raises:
      ValueError: mismatched shapes, an unknown pool or batch_size < 1.
    """
    ids, m = np.asarray(input_ids), np.asarray(mask)
    if ids.ndim != 2 or ids.shape != m.shape:
        raise ValueError(f"input_ids and mask must both be [N, T], got {ids.shape} and "
                         f"{m.shape}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = ids.shape[0]
    if n == 0:
        return np.zeros((0, model.config.d_model), np.float32)
    b = min(batch_size, n)
    out = []
    for start in range(0, n, b):
        stop = min(start + b, n)
        rows = np.arange(start, start + b).clip(max=stop - 1)  # pad by the last row
        e = _embed_chunk(model.apply, params, jax.device_put(ids[rows]),
                         jax.device_put(m[rows]), pool)
        out.append(np.asarray(e)[:stop - start])
    return np.concatenate(out)
