"""Contract shared by every entry of LOSSES: shape [B], float32, finite, compiled once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.losses import DIRECT_LOSSES, LOSSES, REWARD_LOSSES
from tests.test_utils import count_compilations


def _args(name, b, seed):
    rng = np.random.default_rng(seed)
    n = 2 if name in REWARD_LOSSES else 4
    return tuple(jnp.asarray(rng.normal(size=b) * 3, jnp.float32) for _ in range(n))


def _per_example(name, out):
    return out[0] if name in DIRECT_LOSSES else out


def test_registries_partition_losses():
    assert set(LOSSES) == set(REWARD_LOSSES) | set(DIRECT_LOSSES)
    assert not set(REWARD_LOSSES) & set(DIRECT_LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract(name):
    fn = LOSSES[name]

    def call(*args):
        if name == "sigmoid_norm":
            return fn(*args, chosen_lengths=jnp.full(5, 3.0), rejected_lengths=jnp.full(5, 4.0))
        return fn(*args)

    call.__name__ = f"contract_{name}"
    jitted = jax.jit(call)
    a1, a2 = _args(name, 5, 0), _args(name, 5, 1)
    with count_compilations(call.__name__) as n:
        out1 = _per_example(name, jitted(*a1))
        out2 = _per_example(name, jitted(*a2))
    assert n() == 1
    for out in (out1, out2):
        assert out.shape == (5,) and out.dtype == jnp.float32
        assert np.isfinite(np.asarray(out)).all()
    assert not np.allclose(out1, out2)
    if name in DIRECT_LOSSES:
        _, metrics = jitted(*a1)
        assert all(v.shape == (5,) for v in metrics.values())
