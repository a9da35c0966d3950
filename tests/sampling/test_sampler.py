"""KV-cache sampler: log-probs equal training's, greedy equals the recompute sampler, truncation.

The training-side forwards run jitted (eagerly every primitive of the model compiles on its
own); the sampler is jitted itself."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm
from alignax.ops import token_logprobs
from alignax.sampling.naive import sample_continuations
from alignax.sampling.sampler import (best_of_n, categorical, left_align, process_logits,
                                      rejection_sample, repetition_penalty_logits, sample)

CFG = TransformerConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
# Ragged prompts: right-padded, left-padded and full rows.
PROMPTS = jnp.array([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13], [14, 15, 0, 0, 0]], jnp.int32)
PROMPT_MASK = PROMPTS != 0


@functools.partial(jax.jit, static_argnames="prompt_len")
def _training_logps(out, prompt_len):
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    logits = MODEL.apply(PARAMS, ids, mask)
    return token_logprobs(logits[:, prompt_len - 1:-1], out.tokens)


def test_logps_equal_the_training_forward_with_ragged_prompts_stops_and_n_samples():
    out = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(1), max_new_tokens=8,
                 num_samples=3, stop_tokens=(3, 4))
    assert out.tokens.shape == (9, 8) and out.logps.dtype == jnp.float32
    np.testing.assert_array_equal(out.prompt_index, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = _training_logps(out, PROMPTS.shape[1])
    np.testing.assert_allclose(np.where(out.mask, out.logps, 0.0),
                               np.where(out.mask, expected, 0.0), atol=1e-5)
    # untouched distribution: the sampling log-probs are the model's
    np.testing.assert_array_equal(out.sampling_logps, out.logps)
    assert np.all(out.logps <= 0) and np.any(out.mask)


def test_stop_tokens_end_a_sample_and_pad_the_rest():
    out = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2), max_new_tokens=12,
                 num_samples=4, stop_tokens=(3, 4, 5, 6, 7), pad_id=0)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    stopped = 0
    for row, m in zip(tokens, mask):
        stops = np.flatnonzero(np.isin(row, [3, 4, 5, 6, 7]) & m)
        if len(stops):
            stopped += 1
            first = stops[0]
            assert m[:first + 1].all() and not m[first + 1:].any()
            assert (row[first + 1:] == 0).all()
        else:
            assert m.all()
    assert stopped > 0  # with 5 of 40 ids as stops, some of the 12 samples stop
    assert np.all(np.asarray(out.logps)[~mask] == 0)


def test_greedy_matches_the_full_recompute_sampler():
    full = jnp.array([[5, 6, 7, 8], [9, 10, 11, 12]], jnp.int32)
    out = sample(MODEL, PARAMS, full, jnp.ones_like(full, bool), jax.random.key(0),
                 max_new_tokens=6, temperature=0.0)
    tokens, logps = jax.jit(lambda p: sample_continuations(
        MODEL.apply, p, full, jax.random.key(0), num_new_tokens=6, temperature=0.0))(PARAMS)
    np.testing.assert_array_equal(out.tokens, tokens)
    np.testing.assert_allclose(out.logps, logps, atol=1e-5)


def test_sampling_logps_are_those_of_the_processed_distribution():
    out = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(3), max_new_tokens=5,
                 temperature=0.7, top_k=5)
    expected = _training_logps(out, PROMPTS.shape[1])
    np.testing.assert_allclose(out.logps, np.where(out.mask, expected, 0), atol=1e-5)
    assert not np.allclose(out.sampling_logps, out.logps)
    assert np.all(out.sampling_logps >= out.logps - 1e-6)  # truncation + T<1 sharpen


def test_first_token_frequencies_follow_the_tempered_distribution():
    prompt = jnp.array([[5, 6, 7]], jnp.int32)
    out = sample(MODEL, PARAMS, prompt, jnp.ones_like(prompt, bool), jax.random.key(4),
                 max_new_tokens=1, num_samples=4000, temperature=0.5)
    probs = np.asarray(jax.jit(lambda p: jax.nn.softmax(
        MODEL.apply(p, prompt, jnp.ones_like(prompt, bool))[0, -1] / 0.5))(PARAMS))
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=CFG.vocab_size) / 4000
    # 4000 draws: each frequency's standard error is below 0.008
    np.testing.assert_allclose(freq, probs, atol=0.035)


@pytest.mark.parametrize("vocab", [37, 40, 300])
def test_categorical_draws_follow_the_distribution_and_skip_masked_tokens(vocab):
    rng = np.random.default_rng(vocab)
    logits = rng.normal(size=vocab).astype(np.float32) * 2
    logits[rng.choice(vocab, vocab // 3, replace=False)] = -1e30
    logits[-1] = -1e30  # the last token, inside the padded last block
    draws = 200_000
    toks = np.asarray(jax.jit(lambda x: categorical(
        jax.random.key(0), jnp.broadcast_to(x, (draws, vocab))))(logits))
    probs = np.asarray(jax.nn.softmax(logits))
    freq = np.bincount(toks, minlength=vocab) / draws
    assert freq[probs == 0].sum() == 0
    # 200k draws: each frequency's standard error is below 0.0012; 5 of them
    np.testing.assert_allclose(freq, probs, atol=0.006)


def test_categorical_edge_cases():
    key = jax.random.key(3)
    draw = jax.jit(categorical)
    one_hot = np.full((64, 37), -1e30, np.float32)
    one_hot[:, 36] = 0.0  # only the last token, V odd
    assert (np.asarray(draw(key, one_hot)) == 36).all()
    assert (np.asarray(draw(key, np.zeros((5, 1), np.float32))) == 0).all()
    # a token of tiny but positive probability among huge ones is still drawn only rarely
    logits = np.array([[0.0, -30.0, 0.0, -1e30]] * 4096, np.float32)
    toks = np.asarray(draw(key, logits))
    assert set(np.unique(toks)) <= {0, 1, 2} and abs((toks == 0).mean() - 0.5) < 0.05


def test_process_logits_golden():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.1]))
    kept = lambda x: np.asarray(x) > -1e29  # noqa: E731
    np.testing.assert_array_equal(kept(process_logits(logits, top_k=2)), [1, 1, 0, 0])
    # nucleus 0.7: 0.5 + 0.25 >= 0.7 -> two tokens; 0.8 -> three
    np.testing.assert_array_equal(kept(process_logits(logits, top_p=0.7)), [1, 1, 0, 0])
    np.testing.assert_array_equal(kept(process_logits(logits, top_p=0.8)), [1, 1, 1, 0])
    # min_p 0.4: keep p >= 0.4 * 0.5 = 0.2
    np.testing.assert_array_equal(kept(process_logits(logits, min_p=0.4)), [1, 1, 0, 0])
    np.testing.assert_allclose(jax.nn.softmax(process_logits(logits, temperature=2.0)),
                               np.sqrt([0.5, 0.25, 0.15, 0.1]) / np.sqrt(
                                   [0.5, 0.25, 0.15, 0.1]).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="temperature > 0"):
        process_logits(logits, temperature=0.0)


def test_repetition_penalty_golden():
    logits = jnp.array([[2.0, -1.0, 0.5, -3.0], [2.0, -1.0, 0.5, -3.0]])
    seen = jnp.array([[True, True, False, False], [False, False, True, True]])
    # seen tokens: positive logits divided by theta, negative ones multiplied (CTRL)
    np.testing.assert_allclose(repetition_penalty_logits(logits, seen, 2.0),
                               [[1.0, -2.0, 0.5, -3.0], [2.0, -1.0, 0.25, -6.0]])
    np.testing.assert_allclose(repetition_penalty_logits(logits, seen, 0.5),
                               [[4.0, -0.5, 0.5, -3.0], [2.0, -1.0, 1.0, -1.5]])
    # the penalty comes before temperature and truncation (transformers' order): token 0
    # (p = 0.5 unpenalised) falls under min_p once penalised
    probs = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
    out = process_logits(probs, min_p=0.7, repetition_penalty=3.0,
                         seen=jnp.array([[True, False, False, False]]))
    np.testing.assert_array_equal(np.asarray(out) > -1e29, [[0, 1, 0, 0]])
    with pytest.raises(ValueError, match="seen"):
        process_logits(probs, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="repetition_penalty"):
        repetition_penalty_logits(probs, seen[:1], 0.0)
    with pytest.raises(ValueError, match="min_p"):
        process_logits(probs, min_p=1.5)


def _processed_logps(out, prompt_len, **options):
    """The processed distribution's log-prob of each sampled token, recomputed from a training
    forward (seen = the prompt's valid tokens + the tokens generated before), its argmax, and
    the argmax of the unprocessed logits: [R, N] x3."""
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    logits = np.asarray(jax.jit(MODEL.apply)(PARAMS, ids, mask))[:, prompt_len - 1:-1]
    seen = np.zeros((ids.shape[0], CFG.vocab_size), bool)
    for r in range(ids.shape[0]):
        seen[r, np.asarray(out.prompt_ids[r])[np.asarray(out.prompt_mask[r])]] = True
    process = jax.jit(lambda x, s: jax.nn.log_softmax(process_logits(x, seen=s, **options), -1))
    tokens, result, argmax = np.asarray(out.tokens), [], []
    for t in range(tokens.shape[1]):
        logp = np.asarray(process(logits[:, t], seen))
        result.append(logp[np.arange(len(tokens)), tokens[:, t]])
        argmax.append(logp.argmax(-1))
        seen[np.arange(len(tokens)), tokens[:, t]] = True
    return np.stack(result, 1), np.stack(argmax, 1), logits.argmax(-1)


def test_repetition_penalty_and_min_p_keep_logps_the_models_own():
    options = dict(temperature=0.8, min_p=0.05, repetition_penalty=1.8)
    out = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(4), max_new_tokens=6,
                 num_samples=2, stop_tokens=(3,), **options)
    valid = np.asarray(out.mask)
    # the guarantee: `logps` are the model's own, what the training forward recomputes
    expected = _training_logps(out, PROMPTS.shape[1])
    np.testing.assert_allclose(np.where(valid, out.logps, 0), np.where(valid, expected, 0),
                               atol=1e-5)
    # `sampling_logps` are those of the penalised, tempered, min-p-truncated distribution
    processed, _, _ = _processed_logps(out, PROMPTS.shape[1], **options)
    np.testing.assert_allclose(np.where(valid, out.sampling_logps, 0),
                               np.where(valid, processed, 0), atol=1e-5)
    assert not np.allclose(out.sampling_logps, out.logps)
    # greedy decoding takes the argmax of the penalised logits
    greedy = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(0), max_new_tokens=6,
                    temperature=0.0, repetition_penalty=5.0)
    _, argmax, raw_argmax = _processed_logps(greedy, PROMPTS.shape[1], temperature=1.0,
                                             repetition_penalty=5.0)
    np.testing.assert_array_equal(greedy.tokens, argmax)
    assert not np.array_equal(greedy.tokens, raw_argmax)  # the penalty changed some choices


def test_left_align():
    ids, mask = left_align(PROMPTS, PROMPT_MASK)
    np.testing.assert_array_equal(ids, [[5, 6, 7, 8, 9], [0, 0, 11, 12, 13], [0, 0, 0, 14, 15]])
    np.testing.assert_array_equal(mask, ids != 0)


def test_best_of_n_and_rejection_sampling():
    def reward_fn(out):  # count of token 7 in the sample
        return jnp.sum((out.tokens == 7) & out.mask, axis=-1).astype(jnp.float32)

    kw = dict(max_new_tokens=6, num_samples=8)
    best, best_rewards = best_of_n(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(5),
                                   reward_fn, **kw)
    everything = sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(5), **kw)
    per_prompt = np.asarray(reward_fn(everything)).reshape(3, 8)
    np.testing.assert_array_equal(best_rewards, per_prompt.max(axis=1))
    np.testing.assert_array_equal(best.prompt_index, [0, 1, 2])
    _, rewards, accepted = rejection_sample(MODEL, PARAMS, PROMPTS, PROMPT_MASK,
                                            jax.random.key(5), reward_fn, threshold=1.0, **kw)
    np.testing.assert_array_equal(accepted, np.asarray(rewards) >= 1.0)


def test_gpt2_style_sampler_logps_equal_training():
    cfg = TransformerConfig.gpt2_style(vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=48,
                                       max_len=16)
    model = make_lm(cfg)
    params = model.init(jax.random.key(7))
    out = sample(model, params, PROMPTS, PROMPT_MASK, jax.random.key(8), max_new_tokens=6,
                 num_samples=2)

    @jax.jit
    def training_logps(params, out):
        ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
        mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
        return token_logprobs(model.apply(params, ids, mask)[:, PROMPTS.shape[1] - 1:-1],
                              out.tokens)

    expected = training_logps(params, out)
    np.testing.assert_allclose(out.logps, np.where(out.mask, expected, 0.0), atol=1e-5)
