"""A sequence's reward and log-probs do not depend on batch size, neighbours or padding side."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model
from alignax.ops import sequence_logprobs, shift_for_next_token

CFG = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
T = 12


def _batch(target, neighbours, side, rng):
    """Pads `target` and random-length neighbours to T on `side`; target at a random row."""
    rows = [target] + [rng.integers(2, 50, size=rng.integers(1, T + 1)) for _ in range(neighbours)]
    order = rng.permutation(len(rows))
    ids = np.zeros((len(rows), T), np.int32)
    mask = np.zeros((len(rows), T), bool)
    for slot, i in enumerate(order):
        n = len(rows[i])
        cols = slice(0, n) if side == "right" else slice(T - n, T)
        ids[slot, cols], mask[slot, cols] = rows[i], True
    return ids, mask, int(np.flatnonzero(order == 0)[0])


@pytest.mark.parametrize("kind", ["reward", "logps"])
def test_invariance(kind):
    rng = np.random.default_rng(0)
    model = (make_reward_model if kind == "reward" else make_lm)(CFG)
    params = model.init(jax.random.key(0))

    @jax.jit
    def score(ids, mask):
        if kind == "reward":
            return model.apply(params, ids, mask)
        targets, target_mask = shift_for_next_token(ids, mask, mask)
        return sequence_logprobs(model.apply(params, ids, mask), targets, target_mask)

    target = rng.integers(2, 50, size=7)
    values = []
    for neighbours in (0, 3, 7):
        for side in ("right", "left"):
            ids, mask, row = _batch(target, neighbours, side, rng)
            values.append(float(score(jnp.asarray(ids), jnp.asarray(mask))[row]))
    np.testing.assert_allclose(values, values[0], atol=1e-5)
