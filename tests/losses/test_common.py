"""Contract shared by every entry of LOSSES: shape [B], float32, finite, compiled once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.losses import (DIRECT_LOSSES, LOSSES, REFERENCE_FREE_LOSSES, REWARD_LOSSES,
                            UNPAIRED_LOSSES)
from tests.test_utils import count_compilations


def _args(name, b, seed):
    rng = np.random.default_rng(seed)
    if name in UNPAIRED_LOSSES:
        return (jnp.asarray(rng.normal(size=b) * 3, jnp.float32),
                jnp.asarray(rng.normal(size=b) * 3, jnp.float32),
                jnp.asarray(rng.random(b) < 0.5))
    n = 2 if name in REWARD_LOSSES or name in REFERENCE_FREE_LOSSES else 4
    out = []
    for _ in range(n):
        x = rng.normal(size=b) * 3
        if name in REFERENCE_FREE_LOSSES:  # raw log-probs are negative
            x = -np.abs(x)
        out.append(jnp.asarray(x, jnp.float32))
    return tuple(out)


LENGTH_KWARGS = {"chosen_lengths": jnp.full(5, 3.0), "rejected_lengths": jnp.full(5, 4.0)}


def _kwargs(fn):
    import inspect

    accepted = inspect.signature(fn).parameters
    kw = {k: v for k, v in LENGTH_KWARGS.items() if k in accepted}
    if "kl" in accepted:
        kw["kl"] = jnp.float32(0.3)
    if "strength" in accepted:
        kw["strength"] = jnp.array([1.0, 2.0, 3.0, 1.0, 2.0])
    extra = {
        "chosen_seq_kl": jnp.array([0.1, 0.2, 0.0, 1.0, 0.5]),
        "rejected_seq_kl": jnp.array([0.3, 0.1, 0.2, 0.0, 0.5]),
        "delta": jnp.float32(0.2),
        "preference_rate": jnp.array([0.9, 0.5, 0.7, 1.0, 0.6]),
        "policy_sample_logps": jnp.array([-3.0, -2.0, -5.0, -1.0, -4.0]),
        "ref_sample_logps": jnp.array([-2.5, -2.0, -4.0, -1.5, -4.0]),
        "consistency": jnp.array([1.0, 0.8, 0.5, 0.9, 0.7]),
    }
    kw.update({k: v for k, v in extra.items() if k in accepted})
    return kw


def _per_example(name, out):
    return out if name in REWARD_LOSSES else out[0]


def test_registries_partition_losses():
    groups = [REWARD_LOSSES, DIRECT_LOSSES, REFERENCE_FREE_LOSSES, UNPAIRED_LOSSES]
    assert set(LOSSES) == set().union(*groups)
    assert sum(len(g) for g in groups) == len(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract(name):
    fn = LOSSES[name]

    def call(*args):
        return fn(*args, **_kwargs(fn))

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
    if name not in REWARD_LOSSES:
        _, metrics = jitted(*a1)
        assert all(v.shape == (5,) for v in metrics.values())
