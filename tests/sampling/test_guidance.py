"""GenARM token-level guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.sampling import guided_logits

RNG = np.random.default_rng(0)


def test_single_arm_is_base_times_arm_to_the_one_over_beta():
    base = jnp.asarray(RNG.normal(size=(2, 3, 7)), jnp.float32)
    arm = jnp.asarray(RNG.normal(size=(2, 3, 7)), jnp.float32)
    out = guided_logits(base, arm, beta=0.5)
    p = jax.nn.softmax(base) * jax.nn.softmax(arm) ** 2.0
    np.testing.assert_allclose(np.exp(out), p / p.sum(-1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)
    # a constant shift of any model's logits changes nothing
    np.testing.assert_allclose(guided_logits(base + 3.0, arm - 1.0, beta=0.5), out, atol=1e-5)


def test_multi_objective_weights_and_errors():
    base, a, b = (jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32) for _ in range(3))
    out = guided_logits(base, [a, b], beta=2.0, weights=[1.0, 0.0])
    np.testing.assert_allclose(out, guided_logits(base, a, beta=2.0), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        guided_logits(base, [a, b], weights=[1.0])
    with pytest.raises(ValueError, match="beta"):
        guided_logits(base, a, beta=0.0)
    with pytest.raises(ValueError, match="do not match"):
        guided_logits(base, a[:, :3])
