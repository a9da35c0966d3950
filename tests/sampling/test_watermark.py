"""Watermarks as sampler hooks (KGW, Gumbel, randomized Gumbel), their detectors, and AR."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm
from alignax.ops import token_logprobs
from alignax.sampling import watermark as wm
from alignax.sampling.sampler import best_of_n, sample

V = 24
LM = make_lm(TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32))
PARAMS = LM.init(jax.random.key(0))
PROMPTS = jnp.array([[5, 6, 7, 8], [0, 0, 11, 12], [14, 15, 16, 0]], jnp.int32)
PROMPT_MASK = PROMPTS != 0
SECRET = jax.random.key(42)


def _forward_logits(out):
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    return LM.apply(PARAMS, ids, mask)[:, PROMPTS.shape[1] - 1:-1]  # [R, N, V]


def test_green_lists_have_gamma_v_tokens_and_each_token_is_green_a_gamma_share():
    recent = jnp.arange(2000, dtype=jnp.int32)[:, None]  # 2000 distinct contexts
    green = np.asarray(wm.green_lists(SECRET, recent, 40, 0.25))
    assert (green.sum(-1) == 10).all()
    # each token is green in about a quarter of the contexts (binomial sd 0.0097)
    assert np.abs(green.mean(0) - 0.25).max() < 0.04, green.mean(0)
    # equal context, equal list; another key, another list
    again = wm.green_lists(SECRET, jnp.array([[3], [3]]), 40, 0.25)
    np.testing.assert_array_equal(again[0], again[1])
    other = wm.green_lists(jax.random.key(7), jnp.array([[3]]), 40, 0.25)
    assert (np.asarray(other[0]) != np.asarray(again[0])).any()


def test_watermark_contexts_rebuild_the_samplers_window():
    ids = jnp.array([[0, 0, 4, 5], [6, 7, 8, 0]])
    ctx = wm.watermark_contexts(ids, ids != 0, jnp.array([[9, 10], [11, 12]]), 3, pad_id=0)
    np.testing.assert_array_equal(ctx, [[[0, 4, 5], [4, 5, 9]], [[6, 7, 8], [7, 8, 11]]])
    ctx1 = wm.watermark_contexts(jnp.array([[2, 3]]), jnp.array([[False, True]]),
                                 jnp.array([[4, 5, 6]]), 2, pad_id=1)
    np.testing.assert_array_equal(ctx1, [[[1, 3], [3, 4], [4, 5]]])


def test_first_occurrence_skips_repeated_pairs_and_padding():
    ctx = jnp.array([[[1], [2], [1], [2], [1]]])
    tok = jnp.array([[2, 1, 2, 3, 2]])
    mask = jnp.array([[True, True, True, True, False]])
    np.testing.assert_array_equal(wm.first_occurrence(ctx, tok, mask),
                                  [[True, True, False, True, False]])


def test_kgw_sampling_logps_are_under_the_shifted_logits_the_detector_recomputes():
    delta, gamma = 3.0, 0.25
    out = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(1), max_new_tokens=6,
                 num_samples=4, stop_tokens=(3,), hook=wm.KGWWatermark(context=2),
                 hook_args=wm.kgw_args(SECRET, delta, gamma))
    ctx = wm.watermark_contexts(out.prompt_ids, out.prompt_mask, out.tokens, 2)
    green = wm.green_lists(SECRET, ctx.reshape(-1, 2), V, gamma).reshape(ctx.shape[:2] + (V,))
    logits = _forward_logits(out)
    m = np.asarray(out.mask)
    np.testing.assert_allclose(np.where(m, out.sampling_logps, 0), np.where(
        m, token_logprobs(logits + delta * green, out.tokens), 0), atol=1e-5)
    np.testing.assert_allclose(np.where(m, out.logps, 0),
                               np.where(m, token_logprobs(logits, out.tokens), 0), atol=1e-5)
    det = wm.kgw_detect(SECRET, out.prompt_ids, out.prompt_mask, out.tokens, out.mask,
                        gamma=gamma, vocab_size=V, context=2, ignore_repeated=False)
    want = np.take_along_axis(np.asarray(green), np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(det["is_green"], want & m)
    t = m.sum(-1)
    np.testing.assert_allclose(det["z"], ((want & m).sum(-1) - 0.25 * t)
                               / np.sqrt(t * 0.25 * 0.75), rtol=1e-5, atol=1e-6)


def test_kgw_z_is_standard_normal_without_the_watermark_and_high_with_it():
    rng = np.random.default_rng(0)
    r, n = 3000, 40
    tokens = jnp.asarray(rng.integers(0, 64, (r, n)), jnp.int32)
    prompts = jnp.asarray(rng.integers(0, 64, (r, 1)), jnp.int32)
    det = wm.kgw_detect(SECRET, prompts, prompts >= 0, tokens, tokens >= 0, gamma=0.25,
                        vocab_size=64)
    z = np.asarray(det["z"])
    assert abs(z.mean()) < 0.06 and abs(z.std() - 1.0) < 0.06, (z.mean(), z.std())
    p = np.asarray(det["p_value"])
    assert abs(np.mean(p < 0.05) - 0.05) < 0.015
    out = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2), max_new_tokens=32,
                 num_samples=8, hook=wm.KGWWatermark(), hook_args=wm.kgw_args(SECRET, 4.0, 0.25))
    high = wm.kgw_detect(SECRET, out.prompt_ids, out.prompt_mask, out.tokens, out.mask,
                         gamma=0.25, vocab_size=V)["z"]
    assert np.asarray(high).min() > 3.0, high


def test_gumbel_draws_follow_p_over_keys_and_are_fixed_for_a_key_and_context():
    hook = wm.GumbelWatermark(temperature=0.7)
    logits = jnp.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    p = np.asarray(jax.nn.softmax(logits[0] / 0.7))
    recent = jnp.array([[5]])

    def draw(secret, step_key):
        return hook(logits, recent, step_key, wm.gumbel_args(secret))[1][0]

    keys = jax.random.split(jax.random.key(3), 40_000)
    toks = np.asarray(jax.jit(jax.vmap(draw))(keys, keys))
    freq = np.bincount(toks, minlength=6) / toks.size
    assert 0.5 * np.abs(freq - p).sum() < 0.01, (freq, p)
    chi2 = (((freq - p) ** 2) / p).sum() * toks.size
    assert chi2 < 20.5, chi2  # chi-square, 5 dof: P(> 20.5) ~ 0.001
    # a fixed secret and context give one token whatever the step key
    fixed = np.asarray(jax.vmap(lambda k: draw(SECRET, k))(keys[:200]))
    assert (fixed == fixed[0]).all()
    # and n samples of one prompt are identical
    out = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(4), max_new_tokens=6,
                 num_samples=4, hook=wm.GumbelWatermark(), hook_args=wm.gumbel_args(SECRET))
    np.testing.assert_array_equal(wm.distinct_fraction(out.tokens, out.mask, 4), 0.25)
    # sampling_logps are the (untempered) model's: the draw's marginal
    np.testing.assert_allclose(out.sampling_logps, out.logps, atol=1e-5)


def test_randomized_gumbel_draws_from_u_to_the_one_over_p_and_differs_across_samples():
    hook = wm.GumbelWatermark()
    logits = jnp.array([[1.0, 0.5, 0.0, -0.5]])
    recent = jnp.array([[9]])
    args = wm.gumbel_args(SECRET, randomized=True)
    keys = jax.random.split(jax.random.key(5), 30_000)
    toks = np.asarray(jax.jit(jax.vmap(lambda k: hook(logits, recent, k, args)[1][0]))(keys))
    u = np.asarray(wm.gumbel_uniforms(SECRET, recent, 4))[0].astype(np.float64)
    p = np.asarray(jax.nn.softmax(logits[0]), np.float64)
    want = u ** (1 / p) / (u ** (1 / p)).sum()
    freq = np.bincount(toks, minlength=4) / toks.size
    assert 0.5 * np.abs(freq - want).sum() < 0.015, (freq, want)
    out = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(4), max_new_tokens=6,
                 num_samples=4, hook=hook, hook_args=args)
    assert float(wm.distinct_fraction(out.tokens, out.mask, 4).mean()) > 0.5
    # sampling_logps are under the tilted distribution log u / p the token was drawn from
    ctx = wm.watermark_contexts(out.prompt_ids, out.prompt_mask, out.tokens, 1)
    uu = wm.gumbel_uniforms(SECRET, ctx.reshape(-1, 1), V).reshape(ctx.shape[:2] + (V,))
    tilted = jnp.log(uu) / jax.nn.softmax(_forward_logits(out), -1)
    np.testing.assert_allclose(out.sampling_logps, token_logprobs(tilted, out.tokens),
                               rtol=1e-4, atol=1e-4)


def test_gumbel_score_null_is_gamma_and_hand_values():
    # hand: one token, u known -> S = -log(1 - u), p = exp(-S) = 1 - u
    prompts, tok = jnp.array([[7]]), jnp.array([[2]])
    u = float(wm.gumbel_uniforms(SECRET, jnp.array([[7]]), V)[0, 2])
    det = wm.gumbel_detect(SECRET, prompts, prompts > 0, tok, tok > 0, vocab_size=V)
    np.testing.assert_allclose(det["score"], [-math.log1p(-u)], rtol=1e-5)
    np.testing.assert_allclose(det["p_value"], [1 - u], rtol=1e-4)
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 64, (2000, 30)), jnp.int32)
    prompts = jnp.asarray(rng.integers(0, 64, (2000, 1)), jnp.int32)
    null = wm.gumbel_detect(SECRET, prompts, prompts >= 0, tokens, tokens >= 0, vocab_size=64)
    p = np.asarray(null["p_value"])
    assert abs(p.mean() - 0.5) < 0.03 and abs(np.mean(p < 0.05) - 0.05) < 0.015


def test_detection_at_one_percent_fpr_on_the_toy_lm():
    kw = dict(max_new_tokens=24, num_samples=100)
    # unwatermarked = the KGW hook at delta 0 (the same distribution; one compiled sampler)
    plain = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(6), hook=wm.KGWWatermark(),
                   hook_args=wm.kgw_args(SECRET, 0.0, 0.25), **kw)
    kgw = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(7), hook=wm.KGWWatermark(),
                 hook_args=wm.kgw_args(SECRET, 2.0, 0.25), **kw)
    gum = sample(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(8),
                 hook=wm.GumbelWatermark(), hook_args=wm.gumbel_args(SECRET, True), **kw)

    def kgw_z(o):
        return np.asarray(wm.kgw_detect(SECRET, o.prompt_ids, o.prompt_mask, o.tokens, o.mask,
                                        gamma=0.25, vocab_size=V)["z"])

    def gumbel_s(o):
        return np.asarray(wm.gumbel_detect(SECRET, o.prompt_ids, o.prompt_mask, o.tokens,
                                           o.mask, vocab_size=V)["normalized"])

    thr = wm.fpr_threshold(kgw_z(plain), 0.01)
    assert wm.tpr_at(kgw_z(plain), thr) <= 0.01
    assert wm.tpr_at(kgw_z(kgw), thr) >= 0.95
    thr = wm.fpr_threshold(gumbel_s(plain), 0.01)
    assert wm.tpr_at(gumbel_s(gum), thr) >= 0.95


def test_fpr_threshold_by_hand():
    null = np.arange(100.0)
    assert wm.fpr_threshold(null, 0.01) == 98.0
    assert wm.tpr_at(null, 98.0) == 0.01
    assert wm.fpr_threshold(np.arange(10.0), 0.01) == 9.0  # too few: the maximum
    with pytest.raises(ValueError, match="fpr"):
        wm.fpr_threshold(null, 0.0)


def test_alignment_resampling_is_best_of_n_with_the_hook_passed_through():
    def reward_fn(out):
        return (out.tokens == 5).sum(-1).astype(jnp.float32) + 0.01 * out.tokens[:, 0]

    kw = dict(max_new_tokens=5, hook=wm.KGWWatermark(), hook_args=wm.kgw_args(SECRET))
    best, r, everything, all_r = wm.alignment_resampling(
        LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(9), reward_fn, num_samples=4, **kw)
    ref, ref_r = best_of_n(LM, PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(9), reward_fn,
                           num_samples=4, **kw)
    np.testing.assert_array_equal(best.tokens, ref.tokens)
    np.testing.assert_array_equal(r, ref_r)
    np.testing.assert_array_equal(r, np.asarray(all_r).reshape(3, 4).max(-1))
    assert everything.tokens.shape == (12, 5)


def test_ar_bound_and_distinct_fraction_by_hand():
    np.testing.assert_allclose(wm.ar_gain_lower_bound(1, 2.0, 0.3), -0.3)
    b4 = wm.ar_gain_lower_bound(4, 1.0)
    np.testing.assert_allclose(b4, math.sqrt(math.log(4) / (math.pi * math.log(2))))
    # below the expected maximum of 4 standard normals (1.0294)
    x = np.random.default_rng(0).standard_normal((100_000, 4)).max(-1).mean()
    assert b4 < x
    tokens = jnp.array([[1, 2], [1, 2], [1, 3], [4, 4], [1, 2], [1, 9]])
    mask = jnp.array([[1, 1], [1, 1], [1, 1], [1, 1], [1, 1], [1, 0]], bool)
    # prompt 0: (1 2), (1 2), (1 3) -> 2/3; prompt 1: (4 4), (1 2), (1 _) -> 3/3
    np.testing.assert_allclose(wm.distinct_fraction(tokens, mask, 3), [2 / 3, 1.0])


def test_hook_fields_are_checked():
    with pytest.raises(ValueError, match="context"):
        wm.KGWWatermark(context=0)
    with pytest.raises(ValueError, match="temperature"):
        wm.GumbelWatermark(temperature=0.0)
