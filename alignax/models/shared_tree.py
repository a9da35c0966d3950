"""Node logits of a prefix-tree policy with parameters shared across prefixes (a tiny "LM").

`alignax.models.sequence_table` gives every prefix (node) its own logits: a table, which moves
the probability of one response without touching any response that does not share its prefix.
A language model shares its parameters across prefixes, so an update that raises a token after
one prefix raises it after similar prefixes too, including prefixes the data never showed. This
module gives the enumerable tree that sharing in its simplest form, a residual on top of base
node logits (e.g. pi_ref's table):

    logits[n, a] = base[n, a] + position[depth(n), a] + previous[last(n), a],

with `position` [L, V] (a token's bias at each position) and `previous` [V + 1, V] (a bigram:
the bias of token a after token last(n); row V is the start of the sequence). Zero params give
the base policy back. Feed the logits to `sequence_table` as the bias of a prompt-free table
(`table_params`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from alignax.models.sequence_table import SequenceSpace


@functools.lru_cache(maxsize=None)
def node_context(space: SequenceSpace) -> tuple[np.ndarray, np.ndarray]:
    """(depth [M], last [M]) int32 of every node of `space` (breadth-first numbering as in
    `sequence_table`): the number of tokens in the prefix and its last token (V at the root)."""
    depth = np.zeros(space.num_nodes, np.int32)
    last = np.full(space.num_nodes, space.vocab_size, np.int32)
    for node in range(1, space.num_nodes):
        parent, token = divmod(node - 1, space.vocab_size)
        depth[node] = depth[parent] + 1
        last[node] = token
    return depth, last


def init_shared(space: SequenceSpace) -> dict:
    """Zero params {"position": [L, V], "previous": [V + 1, V]} (the base policy)."""
    v = space.vocab_size
    return {"position": jnp.zeros((space.length, v), jnp.float32),
            "previous": jnp.zeros((v + 1, v), jnp.float32)}


def shared_node_logits(space: SequenceSpace, params: dict, base) -> jax.Array:
    """[M, V] node logits base [M, V] + position[depth] + previous[last]."""
    depth, last = node_context(space)
    base = jnp.asarray(base, jnp.float32)
    if base.shape != (space.num_nodes, space.vocab_size):
        raise ValueError(f"base must be [{space.num_nodes}, {space.vocab_size}], got "
                         f"{base.shape}")
    return (base + jnp.take(params["position"], jnp.asarray(depth), axis=0)
            + jnp.take(params["previous"], jnp.asarray(last), axis=0))


def table_params(logits) -> dict:
    """`sequence_table` params of a prompt-free table whose node logits are `logits` [M, V]."""
    logits = jnp.asarray(logits, jnp.float32)
    return {"bias": logits,
            "weight": jnp.zeros((logits.shape[0], 0, logits.shape[1]), jnp.float32)}
