"""Guided decoding: GenARM in the jitted sampler (the guided log-prob guarantee) and ARGS.

The training-side forwards run jitted (eagerly every primitive of a model compiles on its own);
the samplers are jitted themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model
from alignax.ops import token_logprobs
from alignax.sampling.guidance import guided_logits
from alignax.sampling.guided import args_sample, arm_rewards, make_guided_rollout, sample_guided
from alignax.sampling.sampler import sample

BASE = make_lm(TransformerConfig(vocab_size=24, d_model=32, n_layers=1, n_heads=2, d_ff=48))
# two guides of another size than the base (the weak-to-strong case), same vocabulary
ARM = make_lm(TransformerConfig(vocab_size=24, d_model=16, n_layers=1, n_heads=2, d_ff=32))
BASE_PARAMS = BASE.init(jax.random.key(0))
ARM_PARAMS = (ARM.init(jax.random.key(1)), ARM.init(jax.random.key(2)))
PROMPTS = jnp.array([[5, 6, 7, 8], [0, 0, 11, 12], [14, 15, 16, 0]], jnp.int32)
PROMPT_MASK = PROMPTS != 0
N = 6


def _forward_logits(model, params, out):
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    return model.apply(params, ids, mask)[:, PROMPTS.shape[1] - 1:-1]  # [B*n, N, V]


def test_guided_logps_equal_full_forwards_of_all_models():
    weights, beta = jnp.array([0.7, -0.4]), 0.5
    out = sample_guided(BASE, BASE_PARAMS, (ARM, ARM), ARM_PARAMS, weights, beta, PROMPTS,
                        PROMPT_MASK, jax.random.key(3), max_new_tokens=N, num_samples=2,
                        stop_tokens=(3,))
    assert out.tokens.shape == (6, N) and out.guide_logps.shape == (2, 6, N)
    m = np.asarray(out.mask)

    @jax.jit
    def training_side(out):
        base = _forward_logits(BASE, BASE_PARAMS, out)
        arms = [_forward_logits(ARM, p, out) for p in ARM_PARAMS]
        combined = guided_logits(base, arms, beta=beta, weights=[0.7, -0.4])  # normalised
        return (token_logprobs(combined, out.tokens), token_logprobs(base, out.tokens),
                [token_logprobs(a, out.tokens) for a in arms], arm_rewards(out))

    combined_lp, base_lp, arm_lps, rewards = training_side(out)
    np.testing.assert_allclose(np.where(m, out.logps, 0), np.where(m, combined_lp, 0), atol=1e-5)
    np.testing.assert_allclose(np.where(m, out.base_logps, 0), np.where(m, base_lp, 0),
                               atol=1e-5)
    for k in range(2):
        np.testing.assert_allclose(np.where(m, out.guide_logps[k], 0),
                                   np.where(m, arm_lps[k], 0), atol=1e-5)
    np.testing.assert_array_equal(out.sampling_logps, out.logps)  # no processing asked
    np.testing.assert_allclose(rewards, np.where(m, out.guide_logps, 0).sum(-1), rtol=1e-6)
    # off the mask everything is 0
    assert np.all(np.asarray(out.logps)[~m] == 0) and np.all(np.asarray(out.base_logps)[~m] == 0)


def test_zero_weights_reproduce_the_base_sampler_exactly():
    kw = dict(max_new_tokens=N, num_samples=3, stop_tokens=(3,))
    for opts in ({}, {"temperature": 0.7, "top_k": 5}):
        plain = sample(BASE, BASE_PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(4), **kw, **opts)
        guided = sample_guided(BASE, BASE_PARAMS, (ARM, ARM), ARM_PARAMS, jnp.zeros(2), 0.3,
                               PROMPTS, PROMPT_MASK, jax.random.key(4), **kw, **opts)
        for name in ("tokens", "mask", "logps", "sampling_logps", "prompt_ids", "prompt_index"):
            np.testing.assert_array_equal(getattr(guided, name), getattr(plain, name), name)
        np.testing.assert_array_equal(guided.base_logps, plain.logps)


def test_guidance_raises_the_arm_reward_and_one_program_serves_a_sweep():
    rollout = jax.jit(make_guided_rollout(BASE, (ARM,), num_samples=8, max_new_tokens=N))

    def mean_reward(w):
        ro, base_logps, rewards = rollout(BASE_PARAMS, ARM_PARAMS[:1], jnp.array([w]), 1.0,
                                          PROMPTS, PROMPT_MASK, jax.random.key(5))
        assert rewards.shape == (1, 24) and base_logps.shape == (24, N)
        assert ro.ids.shape == (24, PROMPTS.shape[1] + N)
        return float(rewards.mean())

    # pi_base pi_r^w / Z concentrates on the ARM's likely tokens as w grows
    low, mid, high = mean_reward(0.0), mean_reward(2.0), mean_reward(8.0)
    assert low < mid < high, (low, mid, high)
    assert rollout._cache_size() == 1  # weights and beta are traced


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="weights"):
        sample_guided(BASE, BASE_PARAMS, (ARM,), ARM_PARAMS[:1], jnp.zeros(2), 1.0, PROMPTS,
                      PROMPT_MASK, jax.random.key(0), max_new_tokens=2)
    other = make_lm(TransformerConfig(vocab_size=30, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    with pytest.raises(ValueError, match="vocab_size"):
        sample_guided(BASE, BASE_PARAMS, (other,), (other.init(jax.random.key(0)),),
                      jnp.ones(1), 1.0, PROMPTS, PROMPT_MASK, jax.random.key(0),
                      max_new_tokens=2)


def test_args_scores_top_k_candidates_with_the_rm_on_prefixes():
    rm = make_reward_model(TransformerConfig(vocab_size=24, d_model=16, n_layers=1, n_heads=2,
                                             d_ff=32))
    rm_params = rm.init(jax.random.key(7))
    run = jax.jit(lambda w, key: args_sample(BASE, BASE_PARAMS, rm, rm_params, w, PROMPTS,
                                             PROMPT_MASK, key, max_new_tokens=4, top_k=3,
                                             num_samples=2))
    ro = run(0.0, jax.random.key(8))
    assert ro.ids.shape == (6, 8) and ro.response_mask.all()

    @jax.jit
    def base_side(ro):
        logits = BASE.apply(BASE_PARAMS, ro.ids, ro.mask)[:, 3:-1]
        rank = (logits > jnp.take_along_axis(logits, ro.ids[:, 4:, None], -1)).sum(-1)
        return token_logprobs(logits, ro.ids[:, 4:]), rank

    # old_logps are the base's own log-probs, and every token is among the base's top 3
    old_logps, rank = base_side(ro)
    np.testing.assert_allclose(ro.old_logps, old_logps, atol=1e-5)
    assert int(rank.max()) < 3
    # greedy with a huge weight picks, at every step, the candidate the RM scores highest
    greedy = jax.jit(lambda: args_sample(BASE, BASE_PARAMS, rm, rm_params, 1e4, PROMPTS,
                                         PROMPT_MASK, jax.random.key(0), max_new_tokens=1,
                                         top_k=3, greedy=True))()

    @jax.jit
    def rm_best():
        left_ids, left_mask = _left(PROMPTS, PROMPT_MASK)
        lp = jax.nn.log_softmax(BASE.apply(BASE_PARAMS, left_ids, left_mask)[:, -1])
        cand = jax.lax.top_k(lp, 3)[1]
        scores = jnp.stack([rm.apply(rm_params, jnp.concatenate([left_ids, cand[:, j:j + 1]], 1),
                                     jnp.concatenate([left_mask, jnp.ones((3, 1), bool)], 1))
                            for j in range(3)], 1)
        return jnp.take_along_axis(cand, jnp.argmax(scores, 1)[:, None], 1)[:, 0]

    np.testing.assert_array_equal(greedy.ids[:, -1], rm_best())
    assert run._cache_size() == 1 and run(2.0, jax.random.key(8)).ids.shape == (6, 8)


def _left(ids, mask):
    from alignax.sampling.sampler import left_align

    return left_align(ids, mask)
