"""Contract of the loss registries: one call signature per registry, and every pairwise or
unpaired loss returns [B] float32, finite, compiled once."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.losses import LOSSES
from tests.test_utils import count_compilations


def _args(family, b, seed):
    rng = np.random.default_rng(seed)
    if family == "unpaired":
        return (jnp.asarray(rng.normal(size=b) * 3, jnp.float32),
                jnp.asarray(rng.normal(size=b) * 3, jnp.float32),
                jnp.asarray(rng.random(b) < 0.5))
    n = 2 if family in ("reward", "reference_free") else 4
    out = []
    for _ in range(n):
        x = rng.normal(size=b) * 3
        if family == "reference_free":  # raw log-probs are negative
            x = -np.abs(x)
        out.append(jnp.asarray(x, jnp.float32))
    return tuple(out)


LENGTH_KWARGS = {"chosen_lengths": jnp.full(5, 3.0), "rejected_lengths": jnp.full(5, 4.0)}


def _kwargs(fn):
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


def _per_example(family, out):
    return out if family == "reward" else out[0]


def _positional(fn):
    return tuple(p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def test_each_registry_holds_one_call_signature():
    for family, registry in LOSSES.items():
        signatures = {name: _positional(fn) for name, fn in registry.items()}
        assert len(set(signatures.values())) == 1, (family, signatures)
    names = [name for registry in LOSSES.values() for name in registry]
    assert len(names) == len(set(names)), "a loss name is in two registries"


# The [B] contract holds for the pairwise and unpaired families (the policy-gradient and
# self-play losses have their own tests).
PER_EXAMPLE = [(family, name) for family in ("reward", "direct", "reference_free", "unpaired")
               for name in sorted(LOSSES[family])]


@pytest.mark.parametrize("family,name", PER_EXAMPLE)
def test_contract(family, name):
    fn = LOSSES[family][name]

    def call(*args):
        return fn(*args, **_kwargs(fn))

    call.__name__ = f"contract_{name}"
    jitted = jax.jit(call)
    a1, a2 = _args(family, 5, 0), _args(family, 5, 1)
    with count_compilations(call.__name__) as n:
        out1 = _per_example(family, jitted(*a1))
        out2 = _per_example(family, jitted(*a2))
    assert n() == 1
    for out in (out1, out2):
        chex.assert_shape(out, (5,))
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)
    assert not np.allclose(out1, out2)
    if family != "reward":
        _, metrics = jitted(*a1)
        chex.assert_shape(list(metrics.values()), (5,))
