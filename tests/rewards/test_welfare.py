"""GTAlign's welfare aggregates, payoff composition, token pricing and the payoff-matrix step
(alignax.rewards.welfare) against hand computations and the published formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.rewards import welfare as wf


def test_cobb_douglas_golden_values_and_zero_floor():
    w = jax.jit(wf.cobb_douglas)(jnp.array([0.9, 0.4, 0.0, -0.5, 1.0]),
                                 jnp.array([0.4, 0.9, 0.7, 0.7, -1e-3]))
    np.testing.assert_allclose(w, [0.6, 0.6, 0.0, 0.0, 0.0], atol=1e-7)
    # alpha weights the user: U^a L^(1-a)
    np.testing.assert_allclose(wf.cobb_douglas(0.25, 0.64, alpha=0.75),
                               0.25 ** 0.75 * 0.64 ** 0.25, rtol=1e-6)
    np.testing.assert_allclose(wf.cobb_douglas(0.3, 0.8, alpha=1.0), 0.3, rtol=1e-6)
    np.testing.assert_allclose(wf.cobb_douglas(0.3, 0.8, alpha=0.0), 0.8, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        wf.cobb_douglas(0.3, 0.8, alpha=1.5)


def test_cobb_douglas_against_numpy_symmetry_and_bounds():
    rng = np.random.default_rng(0)
    u, l_ = rng.uniform(0.01, 2.0, (2, 50))
    w = np.asarray(wf.cobb_douglas(u, l_))
    np.testing.assert_allclose(w, np.sqrt(u * l_), rtol=1e-6)
    np.testing.assert_allclose(w, np.asarray(wf.cobb_douglas(l_, u)), rtol=1e-6)  # alpha 0.5
    # between the smaller and the larger payoff (a geometric mean), below the arithmetic mean
    assert np.all(w <= np.maximum(u, l_) + 1e-6) and np.all(w >= np.minimum(u, l_) - 1e-6)
    assert np.all(w <= np.asarray(wf.linear_welfare(u, l_)) + 1e-6)
    # argmax of sqrt(UL) is argmax of UL (the released inference code ranks by U * L)
    assert int(np.argmax(w)) == int(np.argmax(u * l_))
    # broadcasting: one LLM payoff against many user payoffs
    np.testing.assert_allclose(wf.cobb_douglas(u, 0.5), np.sqrt(u * 0.5), rtol=1e-6)


def test_cobb_douglas_gradients_are_finite_at_and_below_zero():
    check_grads(lambda u, l_: wf.cobb_douglas(u, l_).sum(), (jnp.array([0.3, 0.7]),
                                                            jnp.array([0.5, 0.2])),
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    gu, gl = jax.grad(lambda u, l_: wf.cobb_douglas(u, l_).sum(), argnums=(0, 1))(
        jnp.array([0.0, -1.0, 0.25]), jnp.array([0.5, 0.5, 1.0]))
    assert np.all(np.isfinite(gu)) and np.all(np.isfinite(gl))
    # dW/dU = 0.5 sqrt(L / U) where both are positive, 0 where W is floored
    np.testing.assert_allclose(gu, [0.0, 0.0, 0.5 * math.sqrt(1.0 / 0.25)], rtol=1e-5)
    np.testing.assert_allclose(gl, [0.0, 0.0, 0.5 * math.sqrt(0.25 / 1.0)], rtol=1e-5)


def test_linear_welfare_and_the_registry():
    np.testing.assert_allclose(wf.linear_welfare([0.9, 0.1], [0.4, 0.9]), [0.65, 0.5])
    np.testing.assert_allclose(wf.linear_welfare(0.9, 0.4, alpha=0.25), 0.225 + 0.3)
    u, l_ = np.array([0.9, 0.1]), np.array([0.4, 0.9])
    np.testing.assert_allclose(wf.welfare("cobb_douglas", u, l_), np.sqrt(u * l_), rtol=1e-6)
    np.testing.assert_allclose(wf.welfare("linear", u, l_), (u + l_) / 2, rtol=1e-6)
    np.testing.assert_allclose(wf.welfare("user", u, l_), u)
    np.testing.assert_allclose(wf.welfare("llm", u, 0.3), [0.3, 0.3])  # broadcast
    assert set(wf.WELFARES) == {"cobb_douglas", "linear", "user", "llm"}
    with pytest.raises(ValueError, match="unknown welfare 'nash'"):
        wf.welfare("nash", u, l_)
    # the sum tolerates a side that gets nothing, the product does not
    assert wf.linear_welfare(1.0, 0.0) > wf.linear_welfare(0.4, 0.4)
    assert wf.cobb_douglas(1.0, 0.0) < wf.cobb_douglas(0.4, 0.4)


def test_compose_payoff_reproduces_the_released_user_reward():
    # tasks/abgqa_v2.py: U = 1e-4 + 0.5 judge + 0.2 response_reward_logistic(words; 20, 500)
    #                      + 0.3 reasoning_penalty(chars; scale 500)
    words, chars, judge = 120, 600, 1.0
    left = 1 / (1 + math.exp(0.005 * (20 - words)))
    right = 1 / (1 + math.exp(0.005 * (words - 500)))
    expected = 1e-4 + 0.5 * judge + 0.2 * left * right + 0.3 * math.exp(-chars / 500)
    parts = jnp.stack([jnp.float32(judge), wf.length_window(words, 20, 500, k=0.005),
                       wf.length_decay(chars, scale=500)])
    np.testing.assert_allclose(wf.compose_payoff(parts, [0.5, 0.2, 0.3]), expected, rtol=1e-6)
    # batched components [N, C]
    c = np.array([[1.0, 0.0], [0.5, 1.0]])
    np.testing.assert_allclose(wf.compose_payoff(c, [0.4, 0.2], eps=0.0), [0.4, 0.4])
    with pytest.raises(ValueError, match="compose_payoff"):
        wf.compose_payoff(c, [0.4, 0.2, 0.1])


def test_length_terms_match_the_released_formulas():
    n = np.array([0.0, 100.0, 500.0, 800.0, 5000.0])
    ref = (1 / (1 + np.exp(0.01 * (100 - n)))) * (1 / (1 + np.exp(0.01 * (n - 2000))))
    np.testing.assert_allclose(wf.length_window(n, 100, 2000, k=0.01), ref, rtol=1e-5)
    np.testing.assert_allclose(wf.length_decay(n, scale=200), np.exp(-n / 200), rtol=1e-6)
    assert float(wf.length_decay(0.0, scale=1.0)) == 1.0
    with pytest.raises(ValueError, match="scale"):
        wf.length_decay(n, scale=0.0)


def test_token_cost_and_price_payoffs():
    np.testing.assert_allclose(wf.token_cost([0.7, 0.9], [4.0, 2.0], price=0.2), [-0.1, 0.5],
                               atol=1e-7)
    np.testing.assert_allclose(wf.token_cost(0.7, 4.0, price=-0.5), 2.7)  # earns per token
    llm = np.array([[0.4, 0.4], [0.7, 0.7], [0.9, 0.9]])  # [A=3, K=2]
    priced = wf.price_payoffs(llm, [1.0, 4.0, 2.0], price=0.2)
    np.testing.assert_allclose(priced, [[0.2, 0.2], [-0.1, -0.1], [0.5, 0.5]], atol=1e-7)
    # leading batch dims of matrices
    batch = np.stack([llm, 2 * llm])
    np.testing.assert_allclose(wf.price_payoffs(batch, [1.0, 4.0, 2.0], price=0.1)[1],
                               2 * llm - 0.1 * np.array([1.0, 4.0, 2.0])[:, None], atol=1e-6)
    with pytest.raises(ValueError, match="price_payoffs"):
        wf.price_payoffs(llm, [1.0, 2.0], price=0.1)


def test_expected_welfare_by_hand_and_against_numpy():
    user = np.array([[0.9, 0.4], [0.35, 0.9], [0.75, 0.75]])
    llm = np.array([[0.4, 0.4], [0.7, 0.7], [0.9, 0.9]])
    belief = np.array([0.4, 0.6])
    ew = wf.expected_welfare(user, llm, belief)
    hand = [0.4 * math.sqrt(0.36) + 0.6 * math.sqrt(0.16),
            0.4 * math.sqrt(0.35 * 0.7) + 0.6 * math.sqrt(0.63),
            math.sqrt(0.75 * 0.9)]
    np.testing.assert_allclose(ew, hand, rtol=1e-6)
    # the expectation of W, not W of the expected payoffs (Jensen: smaller or equal)
    w_of_mean = np.sqrt((user @ belief) * (llm @ belief))
    assert np.all(np.asarray(ew) <= w_of_mean + 1e-6) and ew[0] < w_of_mean[0] - 1e-3
    # batched matrices and beliefs [B, A, K], [B, K], any aggregate
    rng = np.random.default_rng(1)
    u, l_ = rng.uniform(0, 1, (2, 5, 3, 4))
    b = rng.dirichlet(np.ones(4), 5)
    for name in wf.WELFARES:
        ref = np.einsum("bak,bk->ba", np.asarray(wf.welfare(name, u, l_)), b)
        np.testing.assert_allclose(wf.expected_welfare(u, l_, b, welfare_name=name), ref,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected_welfare"):
        wf.expected_welfare(u, l_, b[:, :3])


def test_best_action_and_pricing_flips_the_choice():
    # the payoff block of the paper's prompt example (keys DQ_*/VQ_*: user types definite /
    # vague question, actions AQ answer + question, CQ clarify, DA direct answer), [A, K]
    llm = np.array([[2.2, 2.0], [3.1, 1.3], [4.2, 2.0]])
    user = np.array([[1.9, 2.1], [3.5, 1.2], [4.3, 1.8]])
    assert int(wf.best_action(user, llm, [1.0, 0.0])) == 2  # a definite question: DA
    assert int(wf.best_action(user, llm, [0.0, 1.0])) == 0  # a vague one: AQ (sqrt 4.2)
    # a price per token edits L only; the direct answer is the long one here (tokens 1, 1, 6):
    # at c = 0.5, DA's L becomes 1.2 and W(DA) = sqrt(4.3 * 1.2) = 2.27 < W(CQ) = 3.02
    tokens = [1.0, 1.0, 6.0]
    assert int(wf.best_action(user, llm, [1.0, 0.0], price=0.5, tokens=tokens)) == 1
    # batched beliefs, and the same call under jit (no retrace on a second call)
    beliefs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    traces = []

    def step(b):
        traces.append(1)
        return wf.best_action(user, llm, b, price=0.5, tokens=tokens)

    jitted = jax.jit(step)
    np.testing.assert_array_equal(jitted(beliefs), [1, 0, 1])
    np.testing.assert_array_equal(jitted(beliefs[::-1].copy()), [1, 0, 1])
    assert len(traces) == 1
    # ties go to the lowest index; the linear aggregate is available too
    assert int(wf.best_action(np.ones((3, 1)), np.ones((3, 1)), [1.0])) == 0
    assert int(wf.best_action(user, llm, [1.0, 0.0], welfare_name="user")) == 2
    with pytest.raises(ValueError, match="tokens"):
        wf.best_action(user, llm, [1.0, 0.0], price=0.5)
