"""The sampler's extension points: logits hooks (watermarks) and value guides (VAS)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.models.transformer import TransformerConfig, make_lm
from alignax.ops import token_logprobs
from alignax.sampling.sampler import sample, sample_guided

V = 24
BASE = make_lm(TransformerConfig(vocab_size=V, d_model=32, n_layers=1, n_heads=2, d_ff=48))
VALUE = make_lm(TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32))
BASE_PARAMS = BASE.init(jax.random.key(0))
VALUE_PARAMS = VALUE.init(jax.random.key(1))
PROMPTS = jnp.array([[5, 6, 7, 8], [0, 0, 11, 12], [14, 15, 16, 0]], jnp.int32)
PROMPT_MASK = PROMPTS != 0
N = 6


def _forward_logits(model, params, out):
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    return model.apply(params, ids, mask)[:, PROMPTS.shape[1] - 1:-1]  # [B*n, N, V]


@dataclasses.dataclass(frozen=True)
class Bias:
    """Adds args["delta"] to the logit of the token after the previous one (mod V)."""

    context: int = 1

    def __call__(self, logits, recent, key, args):
        nxt = (recent[:, -1] + 1) % logits.shape[-1]
        return logits + args["delta"] * jax.nn.one_hot(nxt, logits.shape[-1]), None


@dataclasses.dataclass(frozen=True)
class Successor:
    """Draws (t_{-2} + t_{-1}) mod V: a deterministic, context-keyed draw."""

    context: int = 2

    def __call__(self, logits, recent, key, args):
        return logits, (recent[:, -2] + recent[:, -1]) % logits.shape[-1]


def test_a_hook_changes_the_draw_but_not_the_models_logps():
    kw = dict(max_new_tokens=N, num_samples=4, stop_tokens=(3,))
    out = sample(BASE, BASE_PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2), hook=Bias(),
                 hook_args={"delta": jnp.float32(4.0)}, **kw)
    m = np.asarray(out.mask)
    logits = _forward_logits(BASE, BASE_PARAMS, out)
    # logps are the model's own
    np.testing.assert_allclose(np.where(m, out.logps, 0),
                               np.where(m, token_logprobs(logits, out.tokens), 0), atol=1e-5)
    # sampling_logps are under the hooked logits: recompute the bias from the previous token
    prev = np.concatenate([np.asarray(out.prompt_ids)[:, -1:], np.asarray(out.tokens)[:, :-1]], 1)
    hooked = logits + 4.0 * jax.nn.one_hot((prev + 1) % V, V)
    np.testing.assert_allclose(np.where(m, out.sampling_logps, 0),
                               np.where(m, token_logprobs(hooked, out.tokens), 0), atol=1e-5)
    # the bias is visible in the draw: the successor token is far more frequent than under p
    hits = ((np.asarray(out.tokens) == (prev + 1) % V) & m).sum() / m.sum()
    assert hits > 0.5, hits
    # a sweep over the traced args compiles once
    before = sample._cache_size()
    sample(BASE, BASE_PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2), hook=Bias(),
           hook_args={"delta": jnp.float32(0.5)}, **kw)
    assert sample._cache_size() == before


def test_zero_strength_hook_draws_as_sampling_without_its_own_key():
    # the hook consumes a split of the step key, so tokens differ from the hook-free stream, but
    # a zero bias leaves the distribution unchanged: sampling_logps equal logps
    out = sample(BASE, BASE_PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(2), hook=Bias(),
                 hook_args={"delta": jnp.float32(0.0)}, max_new_tokens=N, num_samples=2)
    np.testing.assert_allclose(out.sampling_logps, out.logps, atol=1e-6)


def test_drawn_tokens_follow_the_hook_and_see_prompt_then_generated_context():
    out = sample(BASE, BASE_PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(3), hook=Successor(),
                 max_new_tokens=N, num_samples=2)
    ids = np.asarray(out.prompt_ids)  # left-padded: the last two columns are the last two tokens
    mask = np.asarray(out.prompt_mask)
    hist = [np.where(mask[:, -2], ids[:, -2], 0), ids[:, -1]]
    for t in range(N):
        want = (hist[-2] + hist[-1]) % V
        np.testing.assert_array_equal(out.tokens[:, t], want)
        hist.append(want)
    # logps are still the model's own for the drawn tokens
    logits = _forward_logits(BASE, BASE_PARAMS, out)
    np.testing.assert_allclose(out.logps, token_logprobs(logits, out.tokens), atol=1e-5)


def test_value_guide_adds_raw_values_on_the_base_top_k():
    beta, k = 0.8, 5
    out = sample_guided(BASE, BASE_PARAMS, (VALUE,), (VALUE_PARAMS,), jnp.array([1.0]), beta,
                        PROMPTS, PROMPT_MASK, jax.random.key(4), max_new_tokens=N, num_samples=3,
                        stop_tokens=(3,), guide_kinds=("value",), value_top_k=k)
    m = np.asarray(out.mask)
    base = _forward_logits(BASE, BASE_PARAMS, out)
    q = _forward_logits(VALUE, VALUE_PARAMS, out)
    base_lp = jax.nn.log_softmax(base, -1)
    kth = jax.lax.top_k(base_lp, k)[0][..., -1:]
    combined = jnp.where(base_lp < kth, -1e30, base_lp + q / beta)
    np.testing.assert_allclose(np.where(m, out.logps, 0),
                               np.where(m, token_logprobs(combined, out.tokens), 0), atol=1e-5)
    np.testing.assert_allclose(np.where(m, out.base_logps, 0),
                               np.where(m, token_logprobs(base, out.tokens), 0), atol=1e-5)
    chosen_q = jnp.take_along_axis(q, out.tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.where(m, out.guide_logps[0], 0), np.where(m, chosen_q, 0),
                               atol=1e-5)
    # every token drawn is among the base's top k at its step
    rank = (base_lp > jnp.take_along_axis(base_lp, out.tokens[..., None], -1)).sum(-1)
    assert np.all(np.asarray(rank)[m] < k)


def test_bad_guide_kinds_are_refused():
    with pytest.raises(ValueError, match="guide_kinds"):
        sample_guided(BASE, BASE_PARAMS, (VALUE,), (VALUE_PARAMS,), jnp.array([1.0]), 1.0,
                      PROMPTS, PROMPT_MASK, jax.random.key(0), max_new_tokens=2,
                      guide_kinds=("reward",))
