"""A model's apply outside a trace is one compiled program; inside a trace it is inlined."""

import jax
import jax.numpy as jnp
import numpy as np

from alignax._src.eager import jit_when_concrete
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model


def test_eager_calls_trace_once_per_shape_and_static_value():
    traces = []

    @jit_when_concrete
    def f(x, *, scale=1.0, flip=False, y=None):
        traces.append((x.shape, scale, flip))
        out = x * scale if y is None else x * scale + y
        return -out if flip else out

    x = np.arange(4.0, dtype=np.float32)
    np.testing.assert_array_equal(f(x), x)
    np.testing.assert_array_equal(f(x + 1), x + 1)          # same shape: no new trace
    assert len(traces) == 1
    np.testing.assert_array_equal(f(x, flip=True), -x)      # a static bool retraces
    np.testing.assert_array_equal(f(x, y=jnp.ones(4)), x + 1)  # an array keyword is traced
    np.testing.assert_array_equal(f(x, y=np.zeros(4, np.float32)), x)
    assert len(traces) == 3
    f(np.zeros(3, np.float32))                               # a new shape retraces
    assert len(traces) == 4


def test_inside_a_trace_the_function_is_called_directly():
    calls = []

    def raw(x):
        calls.append(type(x))
        return jnp.sin(x)

    f = jit_when_concrete(raw)
    x = jnp.linspace(0.0, 1.0, 5)
    g = jax.grad(lambda v: f(v).sum())(x)
    np.testing.assert_allclose(g, jnp.cos(x), rtol=1e-6)
    v = jax.vmap(f)(x[:, None])
    np.testing.assert_allclose(v[:, 0], jnp.sin(x), rtol=1e-6)
    assert all(issubclass(t, jax.core.Tracer) for t in calls)


def test_model_apply_eager_is_one_program_equal_to_the_traced_forward():
    # a config no other test uses: models are memoised per config, and another test of the
    # same process calling this model at this shape first would leave nothing to compile
    cfg = TransformerConfig(vocab_size=37, d_model=24, n_layers=1, n_heads=2, d_ff=56, max_len=11)
    ids = np.array([[1, 5, 7, 9, 2, 0], [3, 4, 4, 8, 0, 0]], np.int32)
    mask = ids > 0
    rm = make_reward_model(cfg)
    params = rm.init(jax.random.key(0))
    # an eager call at a new shape compiles exactly one program (op by op, the same forward
    # compiles a few hundred one-primitive programs); a persistent-cache hit counts too
    compiles = []

    def on_duration(name, _secs, **_kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        fast = rm.apply(params, ids, mask)
        fast.block_until_ready()
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
    assert len(compiles) == 1, len(compiles)
    # the same values as the forward traced inside an enclosing jit (and under grad, which
    # inlines it: jit_when_concrete's other branch)
    np.testing.assert_allclose(fast, jax.jit(rm.apply)(params, ids, mask), rtol=1e-6, atol=1e-6)
    grad_value = jax.value_and_grad(lambda p: rm.apply(p, ids, mask).sum())(params)[0]
    # rtol 1e-5: the traced forward is fused with the sum and the AD program, so XLA may round
    # a reduction differently at the last ulps of float32 (the 1e-6 above compares one program)
    np.testing.assert_allclose(grad_value, fast.sum(), rtol=1e-5)
    lm = make_lm(cfg)
    params = lm.init(jax.random.key(1))
    full = lm.apply(params, ids, mask)
    part = lm.apply(params, ids, mask, logits_range=(2, 5))   # a static tuple keyword
    np.testing.assert_allclose(part, full[:, 2:5], rtol=1e-5, atol=1e-6)
