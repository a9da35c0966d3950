"""alignax turns XLA:CPU's YNNPACK fusions off: they miscompiled ordinary programs."""

import jax
import jax.numpy as jnp
import numpy as np

import alignax  # noqa: F401  (sets the flag before jax's CPU client exists)
from alignax._src.xla_flags import YNN_FLAG, ensure_cpu_flags
from alignax.models import sequence_table as st


def test_flag_is_added_once_and_a_users_choice_is_kept():
    env = {}
    assert ensure_cpu_flags(env) and env["XLA_FLAGS"] == YNN_FLAG
    assert not ensure_cpu_flags(env) and env["XLA_FLAGS"] == YNN_FLAG
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert ensure_cpu_flags(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {YNN_FLAG}"
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"}
    assert not ensure_cpu_flags(mine)
    assert mine["XLA_FLAGS"].endswith("LIBRARY_FUSION_TYPE_DOT")


def test_programs_that_the_fusions_miscompiled_are_exact():
    # 1. the broadcast cosine (errors up to 1.9 with the fusions on)
    a = jax.random.normal(jax.random.key(0), (1, 1728, 1, 16))
    b = jax.random.normal(jax.random.key(1), (128, 1, 1, 16))

    def cos(a, b):
        return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1))

    an, bn = np.asarray(a, np.float64), np.asarray(b, np.float64)
    want = (an * bn).sum(-1) / (np.linalg.norm(an, axis=-1) * np.linalg.norm(bn, axis=-1))
    np.testing.assert_allclose(jax.jit(cos)(a, b), want, atol=1e-5)
    # 2. log-probs of a zero table made inside jit (NaN and 1e38 with the fusions on)
    space = st.SequenceSpace(7, 4)
    table = st.init_table(space, 5)
    feats = jax.random.normal(jax.random.key(2), (8, 5))
    lq = jax.jit(lambda p, f: st.sequence_log_probs(
        space, jax.tree.map(jnp.zeros_like, p), f))(table, feats)
    np.testing.assert_allclose(lq, -4 * np.log(7), rtol=1e-6)
