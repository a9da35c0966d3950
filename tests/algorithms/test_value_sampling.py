"""VAS's value objective and decoding helpers (alignax.algorithms.value_sampling): TD(lambda)
returns against a loop and hand values, the Q-head reading, the zero-head init, composition."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.value_sampling import (lambda_returns, response_q_values,
                                               terminal_rewards, value_loss, value_model_from,
                                               vas_sample)
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.sampling.sampler import sample

V = 20
BASE = make_lm(TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32))
BASE_PARAMS = BASE.init(jax.random.key(0))
PROMPTS = jnp.array([[5, 6, 7, 8], [0, 0, 11, 12], [14, 15, 16, 9]], jnp.int32)
PROMPT_MASK = PROMPTS != 0


def _loop_returns(r, q, m, gamma, lam):
    """The lambda-return by its definition, one row and position at a time."""
    b, t = r.shape
    g = np.zeros((b, t))
    for i in range(b):
        for j in reversed(range(t)):
            if not m[i, j]:
                continue
            nxt = j + 1 < t and m[i, j + 1]
            g[i, j] = r[i, j] + (gamma * ((1 - lam) * q[i, j + 1] + lam * g[i, j + 1])
                                 if nxt else 0.0)
    return g


def test_terminal_rewards_put_the_reward_on_the_last_valid_token():
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    out = jax.jit(terminal_rewards)(jnp.array([2.0, -1.0, 0.5, 3.0]), mask)
    np.testing.assert_array_equal(out, [[0, 0, 2.0, 0], [-1.0, 0, 0, 0], [0, 0, 0, 0.5],
                                        [0, 0, 0, 0]])


# gamma and lam traced: one program for every case below
_LAMBDA_RETURNS = jax.jit(lambda_returns)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 0.0), (1.0, 1.0)])
def test_lambda_returns_match_the_definition(gamma, lam):
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3, 1, 0, 4])
    m = np.arange(5)[None] < lengths[:, None]
    r = rng.normal(size=(5, 5)).astype(np.float32)
    q = rng.normal(size=(5, 5)).astype(np.float32)
    g = _LAMBDA_RETURNS(jnp.asarray(r), jnp.asarray(q), jnp.asarray(m), gamma=gamma, lam=lam)
    np.testing.assert_allclose(g, _loop_returns(r, q, m, gamma, lam), rtol=1e-6, atol=1e-6)


def test_lambda_returns_by_hand():
    # terminal reward 1 on a row of 3: G_2 = 1; G_1 = 0.5 q_2 + 0.5 G_2; G_0 = 0.5 q_1 + 0.5 G_1
    @jax.jit  # one program for both lambdas
    def returns(q):
        r = terminal_rewards(jnp.array([1.0]), jnp.ones((1, 3), bool))
        return [lambda_returns(r, q, jnp.ones((1, 3), bool), gamma=1.0, lam=lam)
                for lam in (0.5, 1.0)]

    g, g1 = returns(jnp.array([[0.2, 0.4, 0.8]]))
    np.testing.assert_allclose(g, [[0.5 * 0.4 + 0.5 * 0.9, 0.5 * 0.8 + 0.5, 1.0]], rtol=1e-6)
    # lambda 1, gamma 1: Monte Carlo, every valid token's target is the sequence reward
    np.testing.assert_allclose(g1, [[1.0, 1.0, 1.0]])


def test_value_loss_by_hand_and_its_gradient_skips_the_targets():
    q = jnp.array([[0.2, 0.4, 0.8, 7.0]])
    mask = jnp.array([[1, 1, 1, 0]], bool)

    @jax.jit  # one program for every value the assertions read
    def values(q):
        grad = jax.grad(lambda x: value_loss(x, jnp.array([1.0]), mask, lam=0.5)[0].sum())(q)
        sliced, _ = value_loss(q[:, :3], jnp.array([1.0]), mask[:, :3], lam=0.5)
        return value_loss(q, jnp.array([1.0]), mask, gamma=1.0, lam=0.5), grad, sliced

    (loss, m), grad, sliced = values(q)
    g = np.array([0.65, 0.9, 1.0])
    want = 0.5 * np.mean((np.array([0.2, 0.4, 0.8]) - g) ** 2)
    np.testing.assert_allclose(loss, [want], rtol=1e-6)
    np.testing.assert_allclose(m["mc_error"], [np.mean((np.array([0.2, 0.4, 0.8]) - 1) ** 2)],
                               rtol=1e-6)
    # semi-gradient: d loss / d q_j = (q_j - G_j) / count on valid tokens, 0 on padding
    np.testing.assert_allclose(grad, [[*((np.array([0.2, 0.4, 0.8]) - g) / 3), 0.0]],
                               rtol=1e-5)
    # masked == sliced
    np.testing.assert_allclose(loss, sliced, rtol=1e-6)


def test_response_q_values_read_the_output_before_each_token():
    resp = jnp.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], jnp.int32)

    @jax.jit  # one program, not one per op of the forwards
    def values(base_params, resp):
        vm, vp = value_model_from(BASE, base_params, head="copy")
        ids = jnp.concatenate([PROMPTS, resp], 1)
        mask = jnp.concatenate([PROMPT_MASK, jnp.ones(resp.shape, bool)], 1)
        q = response_q_values(vm.apply, vp, ids, mask, prompt_len=4)
        full = BASE.apply(base_params, ids, mask)  # the copied head: Q = the base's logits
        return q, jnp.take_along_axis(full[:, 3:6], resp[..., None], -1)[..., 0]

    q, want = values(BASE_PARAMS, resp)
    np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-5)


def test_zero_head_value_samples_the_base_exactly():
    vm, vp = value_model_from(BASE, BASE_PARAMS)
    assert not vm.config.tie_embeddings
    # the shapes of test_td_training_fits_a_token_count_reward's samples: one `sample` program
    kw = dict(max_new_tokens=4, num_samples=2)
    prompts, prompt_mask = jnp.tile(PROMPTS, (8, 1)), jnp.tile(PROMPT_MASK, (8, 1))
    out = vas_sample(BASE, BASE_PARAMS, (vm,), (vp,), jnp.array([4.0]), prompts, prompt_mask,
                     jax.random.key(3), top_k=0, **kw)
    ref = sample(BASE, BASE_PARAMS, prompts, prompt_mask, jax.random.key(3), **kw)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logps, ref.logps, atol=1e-6)
    np.testing.assert_array_equal(out.guide_logps, 0.0)  # Q = 0 everywhere


def test_two_values_compose_as_one_with_the_summed_head():
    # same decoder, heads h1, h2: b1 Q1 + b2 Q2 = Q of the head b1 h1 + b2 h2 (one guide)
    vm, vp = value_model_from(BASE, BASE_PARAMS)
    h = jax.random.normal(jax.random.key(5), (2,) + vp["lm_head"]["kernel"].shape)
    p1, p2 = ({**vp, "lm_head": {"kernel": h[i]}} for i in range(2))
    b = (0.7, -1.3)
    mixed = {**vp, "lm_head": {"kernel": b[0] * h[0] + b[1] * h[1]}}
    kw = dict(max_new_tokens=6, num_samples=3, top_k=4)
    two = vas_sample(BASE, BASE_PARAMS, (vm, vm), (p1, p2), jnp.array(b), PROMPTS, PROMPT_MASK,
                     jax.random.key(7), **kw)
    one = vas_sample(BASE, BASE_PARAMS, (vm,), (mixed,), jnp.array([1.0]), PROMPTS,
                     PROMPT_MASK, jax.random.key(7), **kw)
    np.testing.assert_array_equal(two.tokens, one.tokens)
    np.testing.assert_allclose(two.logps, one.logps, atol=1e-4)
    np.testing.assert_allclose(b[0] * two.guide_logps[0] + b[1] * two.guide_logps[1],
                               one.guide_logps[0], atol=1e-4)
    # every token drawn is among the base's top 4 at its step
    @jax.jit
    def base_rank(params, out):
        ids = jnp.concatenate([out.prompt_ids, out.tokens], 1)
        mask = jnp.concatenate([out.prompt_mask, out.mask], 1)
        base_lp = jax.nn.log_softmax(BASE.apply(params, ids, mask)[:, 3:-1], -1)
        return (base_lp > jnp.take_along_axis(base_lp, out.tokens[..., None], -1)).sum(-1)

    rank = base_rank(BASE_PARAMS, two)
    assert np.all(np.asarray(rank) < 4)


def test_td_training_fits_a_token_count_reward():
    # reward = number of token 3 in the response: TD(lambda) on fixed samples learns Q
    vm, vp = value_model_from(BASE, BASE_PARAMS)
    out = sample(BASE, BASE_PARAMS, jnp.tile(PROMPTS, (8, 1)), jnp.tile(PROMPT_MASK, (8, 1)),
                 jax.random.key(1), max_new_tokens=4, num_samples=2)
    ids = jnp.concatenate([out.prompt_ids, out.tokens], 1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], 1)
    reward = (out.tokens == 3).sum(-1).astype(jnp.float32) + (out.tokens % 2).sum(-1)
    tx = optax.adam(3e-2)

    def loss(p):
        q = response_q_values(vm.apply, p, ids, mask, 4)
        lv, m = value_loss(q, reward, out.mask, lam=0.9)
        return lv.mean(), m["mc_error"].mean()

    @jax.jit
    def step(p, s):
        (lv, mc), g = jax.value_and_grad(loss, has_aux=True)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, mc

    state = tx.init(vp)
    p, mcs = vp, []
    for _ in range(40):
        p, state, mc = step(p, state)
        mcs.append(float(mc))
    assert mcs[-1] < 0.5 * mcs[0]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="head"):
        value_model_from(BASE, BASE_PARAMS, head="random")
    with pytest.raises(ValueError, match="prompt_len"):
        response_q_values(BASE.apply, BASE_PARAMS, PROMPTS, PROMPT_MASK, 4)
    with pytest.raises(ValueError, match="mask"):
        lambda_returns(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones((2, 4), bool))
