"""Watermarked sampling (KGW, Gumbel, randomized Gumbel), detection, and Alignment Resampling.

Every watermark here is a `LogitsHook` of `alignax.sampling.sampler` (a frozen dataclass, static
under jit) whose traced `hook_args` carry the secret key (a typed PRNG key) and the strengths,
so a sweep over keys and strengths compiles one program. The pseudo-random numbers of a step
are a function of the key and the last W = `context` tokens only (prompt, then generated):

    k_t = fold_in(... fold_in(fold_in(key, y_{t-W}), y_{t-W+1}) ..., y_{t-1})

(`context_keys`), so a detector holding the key recomputes them from the text alone.

- KGW (Kirchenbauer et al. 2023, "A Watermark for Large Language Models", arXiv 2301.10226):
  the green list G_t is the round(gamma V) tokens with the smallest 32-bit draws of k_t (a
  uniformly random subset of that size), and the logits become l_v + delta 1[v in G_t]. The
  detector counts the green tokens |s|_G among T scored tokens and reports
  z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)) (one-sided p-value 1 - Phi(z)).
- Gumbel (Aaronson 2023; Kuditipudi et al. 2023, arXiv 2307.15593): u_v ~ U(0, 1) from k_t and
  y_t = argmax_v u_v^(1 / p_v) = argmax_v log p_v - log(-log u_v) (the Gumbel-max trick with
  keyed noise): over keys y_t is distributed as p (distortion-free), but for a fixed key and
  context the draw is deterministic, so n samples of one prompt are identical. p is the
  distribution the hook's own `temperature`, `top_k`, `top_p` define (`process_logits`); call
  `sample` with temperature 1 and no truncation then (its processing would apply twice to the
  randomized variant's scores). The detector's score is S = sum_t -log(1 - u_{y_t}) over T
  scored tokens; without the watermark each term is Exp(1), so S ~ Gamma(T, 1) and the p-value
  is the regularised upper incomplete gamma Q(T, S).
- Randomized ("modified") Gumbel (Verma, Phan & Trivedi 2025, "Watermarking Degrades Alignment
  in Language Models: Analysis and Mitigation", arXiv 2506.04462): the argmax is replaced by a
  draw y_t ~ Multinomial(u_v^(1 / p_v) / sum_w u_w^(1 / p_w)), with the sampler's fresh step key
  (the keyed u_v are unchanged). The injected randomness is this second-stage draw only: samples
  of one prompt differ, tokens with a large keyed u_v still win far more often (the same
  detector works), and the output is no longer distortion-free.

Alignment Resampling (AR, Verma et al. 2025): draw n watermarked samples per prompt and keep the
one an external reward model ranks first (`alignment_resampling`; the same as the sampler's
`best_of_n` with the watermark hook passed through). With the reward of a watermarked sample
roughly N(mu_w, sigma^2) and mu_w = mu - epsilon (epsilon the alignment the watermark costs),
the expected maximum of n Gaussians gives E[r_best of n] - E[r_unwatermarked] >= C sqrt(log n) -
epsilon (the paper's bound); `ar_gain_lower_bound` uses the standard constant C = sigma /
sqrt(pi ln 2) of E[max_i X_i] >= sigma sqrt(log n / (pi ln 2)) for n i.i.d. N(0, sigma^2).

Detection recomputes each generated token's context exactly as the sampler builds it
(`watermark_contexts`: the prompt's last valid tokens, left-padded with `pad_id`, then the
generated tokens) and scores only the generated tokens under `mask`. With `ignore_repeated`
(the default) a (context, token) pair seen earlier in the same row is not scored again: repeats
carry no new evidence and would break the independence the null distributions assume (the
thresholds `fpr_threshold` calibrates on unwatermarked text do not need it).

Shapes: R rows (samples), P prompt length, N generated tokens, V vocabulary, W context width.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alignax.sampling.sampler import SampleOutput, categorical, left_align, process_logits, sample

_NEG_INF = -1e30


# ---------------------------------------------------------------------------------------------
# Keyed randomness


def context_keys(key: jax.Array, recent: jax.Array) -> jax.Array:
    """One PRNG key per row from the secret key and the row's last W tokens.

    k = fold_in(...fold_in(key, recent[:, 0])..., recent[:, W - 1]): equal contexts give equal
    keys, so a detector recomputes them from the text.

    Args:
      key: a typed PRNG key (the watermark's secret).
      recent: [..., W] int token contexts (W >= 1).

    Returns:
      [...] typed PRNG keys.
    """
    recent = jnp.asarray(recent)
    if recent.ndim < 1 or recent.shape[-1] < 1:
        raise ValueError(f"recent must be [..., W] with W >= 1, got shape {recent.shape}")

    def one(ctx):
        k = key
        for j in range(ctx.shape[0]):
            k = jax.random.fold_in(k, ctx[j].astype(jnp.uint32))
        return k

    flat = recent.reshape(-1, recent.shape[-1])
    return jax.vmap(one)(flat).reshape(recent.shape[:-1])


def _green_size(gamma, vocab_size: int) -> jax.Array:
    return jnp.clip(jnp.round(jnp.asarray(gamma, jnp.float32) * vocab_size), 1,
                    vocab_size).astype(jnp.int32)


def green_lists(key: jax.Array, recent: jax.Array, vocab_size: int, gamma) -> jax.Array:
    """KGW green lists: for every row the round(gamma V) tokens with the smallest keyed draws.

    Each context key draws V 32-bit integers b_v; G = {v : b_v <= the k-th smallest b}, with
    k = round(gamma V) clipped to [1, V] (a uniformly random k-subset; a tie at the threshold,
    probability about V 2^-32, adds a token). `gamma` may be traced.

    Args:
      key: the secret PRNG key.
      recent: [R, W] contexts.
      vocab_size: V.
      gamma: the green fraction in (0, 1].

    Returns:
      [R, V] bool.
    """
    k = _green_size(gamma, vocab_size)

    def one(ck):
        bits = jax.random.bits(ck, (vocab_size,), jnp.uint32)
        return bits <= jnp.sort(bits)[k - 1]

    return jax.vmap(one)(context_keys(key, recent))


def gumbel_uniforms(key: jax.Array, recent: jax.Array, vocab_size: int) -> jax.Array:
    """The Gumbel watermark's keyed u_v ~ U(tiny, 1) of every row: [R, W] -> [R, V] float32.

    Drawn from the context key folded with 1, so they are independent of the KGW green lists
    of the same key and context.
    """
    tiny = jnp.finfo(jnp.float32).tiny
    return jax.vmap(lambda ck: jax.random.uniform(jax.random.fold_in(ck, 1), (vocab_size,),
                                                  jnp.float32, minval=tiny))(
        context_keys(key, recent))


# ---------------------------------------------------------------------------------------------
# Hooks


def kgw_args(key: jax.Array, delta: float = 2.0, gamma: float = 0.25) -> dict:
    """The traced `hook_args` of `KGWWatermark`: {"key", "delta" f32, "gamma" f32}."""
    return {"key": key, "delta": jnp.float32(delta), "gamma": jnp.float32(gamma)}


@dataclasses.dataclass(frozen=True)
class KGWWatermark:
    r"""KGW soft watermark as a sampler hook: logits + delta on the keyed green list.

    .. math::
        \tilde\ell_v = \ell_v + \delta \, 1[v \in G_t], \quad G_t = G(\text{key},
        y_{t-W:t})

    Kirchenbauer et al. 2023 (arXiv 2301.10226), Algorithm 2 with a W-token context hash.
    `hook_args` = `kgw_args(key, delta, gamma)`; delta = 0 leaves the distribution unchanged.
    The sampler's temperature and truncation then act on the shifted logits, as in
    transformers' `WatermarkLogitsProcessor`.

    Attributes:
      context: W >= 1, the previous tokens that seed the green list (KGW's h; 1 in the paper's
        experiments).
    """

    context: int = 1

    def __post_init__(self):
        if self.context < 1:
            raise ValueError(f"KGWWatermark.context must be >= 1, got {self.context}")

    def __call__(self, logits, recent, key, args):
        del key  # deterministic given (secret key, context)
        green = green_lists(args["key"], recent, logits.shape[-1], args["gamma"])
        return logits + args["delta"] * green.astype(logits.dtype), None


def gumbel_args(key: jax.Array, randomized: bool = False) -> dict:
    """The traced `hook_args` of `GumbelWatermark`: {"key", "randomized" bool} (both variants
    share one compiled program)."""
    return {"key": key, "randomized": jnp.asarray(randomized, bool)}


@dataclasses.dataclass(frozen=True)
class GumbelWatermark:
    r"""The Gumbel watermark (argmax u^(1/p)) or its randomized variant, as a sampler hook.

    .. math::
        y_t = \arg\max_v u_v^{1/p_v} \quad\text{or, randomized,}\quad
        y_t \sim u_v^{1/p_v} / \textstyle\sum_w u_w^{1/p_w}

    with u_v = `gumbel_uniforms`(key, y_{t-W:t}) and p = softmax(`process_logits`(logits,
    temperature, top_k, top_p)): the distribution after the temperature, as the watermark must
    see it. Aaronson 2023 / Kuditipudi et al. 2023; the randomized draw is Verma et al. 2025's
    modification (arXiv 2506.04462, module docstring). The hook returns the drawn tokens; its
    scores are log p (vanilla: the token's marginal over keys) or log u_v / p_v (randomized:
    the distribution the token was drawn from), so with `sample(temperature=1)` and no
    truncation `sampling_logps` are under those; `logps` stay the model's own.

    Attributes:
      context: W >= 1, the previous tokens that seed u.
      temperature, top_k, top_p: the processing that defines p (see `process_logits`).
    """

    context: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.context < 1:
            raise ValueError(f"GumbelWatermark.context must be >= 1, got {self.context}")
        if self.temperature <= 0:
            raise ValueError(f"GumbelWatermark.temperature must be > 0, got {self.temperature}")

    def __call__(self, logits, recent, key, args):
        processed = jax.nn.log_softmax(process_logits(
            logits, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p), axis=-1)
        u = gumbel_uniforms(args["key"], recent, logits.shape[-1])
        argmax = jnp.argmax(processed - jnp.log(-jnp.log(u)), axis=-1).astype(jnp.int32)
        # log u^(1/p) = log(u) / p, -1e30 for the impossible tokens (p = 0)
        tilted = jnp.maximum(jnp.log(u) * jnp.exp(-processed), _NEG_INF)
        randomized = jnp.asarray(args["randomized"], bool)
        drawn = jnp.where(randomized, categorical(key, tilted), argmax)
        return jnp.where(randomized, tilted, processed), drawn


# ---------------------------------------------------------------------------------------------
# Detection


def watermark_contexts(prompt_ids: jax.Array, prompt_mask: jax.Array, tokens: jax.Array,
                       context: int, pad_id: int = 0) -> jax.Array:
    """The W-token context every generated token was drawn with, as the sampler builds it.

    The prompt's valid tokens are left-aligned (padding first) and the padding replaced by
    `pad_id`; W `pad_id`s go in front; generated token t sees the W tokens before it.

    Args:
      prompt_ids: [R, P] prompts (any padding side; each row with >= 1 valid token).
      prompt_mask: [R, P] valid prompt tokens.
      tokens: [R, N] generated tokens.
      context: W >= 1.
      pad_id: the sampler's pad id.

    Returns:
      [R, N, W] int32.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    ids, mask = left_align(jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, bool))
    r, p = ids.shape
    n = tokens.shape[1]
    seq = jnp.concatenate([jnp.full((r, context), pad_id, jnp.int32),
                           jnp.where(mask, ids, pad_id), jnp.asarray(tokens, jnp.int32)], 1)
    index = p + jnp.arange(n)[:, None] + jnp.arange(context)[None, :]  # [N, W]
    return seq[:, index]


def first_occurrence(contexts: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Whether each masked (context, token) pair is the first of its kind in its row.

    Args:
      contexts: [R, N, W]; tokens: [R, N]; mask: [R, N] bool.

    Returns:
      [R, N] bool: mask and no earlier masked position s < t has the same context and token.
    """
    keyed = jnp.concatenate([contexts, tokens[..., None]], -1)  # [R, N, W + 1]
    same = (keyed[:, :, None, :] == keyed[:, None, :, :]).all(-1)  # [R, N, N]
    n = tokens.shape[1]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)[None]
    repeat = (same & earlier & mask[:, None, :]).any(-1)
    return mask & ~repeat


def _scored(prompt_ids, prompt_mask, tokens, mask, context, pad_id, ignore_repeated):
    ctx = watermark_contexts(prompt_ids, prompt_mask, tokens, context, pad_id)
    mask = jnp.asarray(mask, bool)
    keep = first_occurrence(ctx, tokens, mask) if ignore_repeated else mask
    return ctx, keep


def _over_positions(fn, ctx, tokens):
    """fn(ctx [R, W], tok [R]) -> [R] for every position, one position at a time: [R, N]."""
    return jax.lax.map(lambda xs: fn(*xs), (jnp.moveaxis(ctx, 1, 0), tokens.T)).T


@functools.partial(jax.jit, static_argnames=("vocab_size", "context", "pad_id", "ignore_repeated"))
def kgw_detect(key: jax.Array, prompt_ids, prompt_mask, tokens, mask, *, gamma, vocab_size: int,
               context: int = 1, pad_id: int = 0, ignore_repeated: bool = True) -> dict:
    r"""KGW's z-test on generated tokens, the green lists recomputed from the text.

    .. math::
        z = \frac{|s|_G - \gamma T}{\sqrt{T \gamma (1 - \gamma)}}, \quad
        p = 1 - \Phi(z)

    Kirchenbauer et al. 2023 (arXiv 2301.10226), section 4. One compiled program per shape
    (gamma and the key traced). Rows with T = 0 scored tokens get z = 0, p = 1. Under the
    null (text independent of the key, no repeated (context, token) pairs) each green indicator
    is Bernoulli(gamma), so z is approximately N(0, 1).

    Args:
      key: the watermark's secret PRNG key.
      prompt_ids, prompt_mask: [R, P]; tokens, mask: [R, N] (a `SampleOutput`'s fields).
      gamma: green fraction; vocab_size: V; context: W; pad_id: the sampler's.
      ignore_repeated: score only the first occurrence of a (context, token) pair in a row.

    Returns:
      {"z" [R], "p_value" [R], "green" [R] green count, "count" [R] T, "is_green" [R, N] bool}.
    """
    ctx, keep = _scored(prompt_ids, prompt_mask, tokens, mask, context, pad_id, ignore_repeated)
    tokens = jnp.asarray(tokens, jnp.int32)

    def green_of(c, tok):
        return jnp.take_along_axis(green_lists(key, c, vocab_size, gamma), tok[:, None], -1)[:, 0]

    is_green = _over_positions(green_of, ctx, tokens) & keep
    count = keep.sum(-1).astype(jnp.float32)
    green = is_green.sum(-1).astype(jnp.float32)
    g = _green_size(gamma, vocab_size).astype(jnp.float32) / vocab_size
    z = jnp.where(count > 0, (green - g * count) / jnp.sqrt(jnp.maximum(count, 1.0) * g * (1 - g)),
                  0.0)
    return {"z": z, "p_value": jax.scipy.stats.norm.sf(z), "green": green, "count": count,
            "is_green": is_green}


@functools.partial(jax.jit, static_argnames=("vocab_size", "context", "pad_id", "ignore_repeated"))
def gumbel_detect(key: jax.Array, prompt_ids, prompt_mask, tokens, mask, *, vocab_size: int,
                  context: int = 1, pad_id: int = 0, ignore_repeated: bool = True) -> dict:
    r"""The Gumbel watermark's score S = sum_t -log(1 - u_{y_t}) and its p-value Q(T, S).

    .. math::
        S = \sum_t -\log(1 - u_{y_t}), \quad S \sim \Gamma(T, 1) \text{ without the
        watermark}, \quad p = Q(T, S), \quad \text{normalised } (S - T) / \sqrt{T}

    Aaronson 2023; Fernandez et al. 2023 ("Three Bricks to Consolidate Watermarks for LLMs",
    arXiv 2308.00113) for the Gamma null. The same detector serves the randomized variant.

    Args:
      key, prompt_ids, prompt_mask, tokens, mask, vocab_size, context, pad_id,
      ignore_repeated: as `kgw_detect`.

    Returns:
      {"score" [R] S, "p_value" [R], "normalized" [R] (S - T) / sqrt(T) (0 when T = 0),
      "count" [R] T}.
    """
    ctx, keep = _scored(prompt_ids, prompt_mask, tokens, mask, context, pad_id, ignore_repeated)
    tokens = jnp.asarray(tokens, jnp.int32)

    def u_of(c, tok):
        return jnp.take_along_axis(gumbel_uniforms(key, c, vocab_size), tok[:, None], -1)[:, 0]

    u = _over_positions(u_of, ctx, tokens)
    score = jnp.where(keep, -jnp.log1p(-u), 0.0).sum(-1)
    count = keep.sum(-1).astype(jnp.float32)
    p_value = jnp.where(count > 0, jax.scipy.special.gammaincc(jnp.maximum(count, 1.0), score),
                        1.0)
    normalized = jnp.where(count > 0, (score - count) / jnp.sqrt(jnp.maximum(count, 1.0)), 0.0)
    return {"score": score, "p_value": p_value, "normalized": normalized, "count": count}


def fpr_threshold(null_scores, fpr: float = 0.01) -> float:
    """The detection threshold with at most `fpr` of `null_scores` (unwatermarked text) above it.

    Returns the smallest value tau among the null scores (and +inf) with
    mean(null > tau) <= fpr; a text is flagged when its score exceeds tau (`tpr_at`). Needs
    about >= 1 / fpr null scores to be informative (with fewer, tau is their maximum).
    """
    null = np.sort(np.asarray(null_scores, np.float64).ravel())
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    if null.size == 0:
        raise ValueError("fpr_threshold needs at least one null score")
    allowed = int(math.floor(fpr * null.size))  # how many may lie above
    return float(null[null.size - 1 - allowed])


def tpr_at(scores, threshold: float) -> float:
    """The fraction of `scores` above `threshold` (the detection rate at that threshold)."""
    return float(np.mean(np.asarray(scores, np.float64) > threshold))


# ---------------------------------------------------------------------------------------------
# Alignment Resampling and diversity


def alignment_resampling(model, params, prompt_ids, prompt_mask, rng, reward_fn: Callable,
                         *, num_samples: int, hook=None, hook_args: Any = None, **sample_kwargs
                         ) -> tuple[SampleOutput, jax.Array, SampleOutput, jax.Array]:
    r"""Alignment Resampling: n (watermarked) samples per prompt, keep the reward model's best.

    .. math::
        y^* = \arg\max_{i \le n} r_{ext}(x, y_i), \quad y_i \sim \pi_{watermarked}(\cdot | x)

    Verma et al. 2025 (arXiv 2506.04462), Algorithm 1. The same draw and choice as
    `alignax.sampling.sampler.best_of_n` with the watermark's `hook` and `hook_args` passed
    through (tested), but all n samples and their rewards are returned too (for
    best-of-m < n from the same draw, and diversity).

    Args:
      model, params, prompt_ids [B, P], prompt_mask [B, P], rng: as `sample`.
      reward_fn: `SampleOutput -> [B*n]` rewards (an external RM).
      num_samples: n.
      hook, hook_args: the watermark (`KGWWatermark` / `GumbelWatermark` and their args).
      **sample_kwargs: the rest of `sample`'s keywords (max_new_tokens, stop_tokens, ...).

    Returns:
      (chosen SampleOutput [B rows], their rewards [B], all samples [B*n rows], all rewards
      [B*n]).
    """
    out = sample(model, params, prompt_ids, prompt_mask, rng, num_samples=num_samples,
                 hook=hook, hook_args=hook_args, **sample_kwargs)
    rewards = reward_fn(out)
    rows = best_rows(rewards, num_samples)
    return jax.tree.map(lambda x: x[rows], out), rewards[rows], out, rewards


def best_rows(rewards: jax.Array, num_samples: int) -> jax.Array:
    """Row of the first highest-reward sample of each prompt: rewards [B*n] -> rows [B]
    (rows prompt-major, as `sample` returns them)."""
    b = rewards.shape[0] // num_samples
    return jnp.arange(b) * num_samples + jnp.argmax(rewards.reshape(b, num_samples), axis=-1)


def ar_gain_lower_bound(num_samples, sigma, epsilon=0.0):
    r"""The AR bound E[r_best of n] - E[r_unwatermarked] >= C sqrt(log n) - epsilon.

    .. math::
        C \sqrt{\log n} - \epsilon, \quad C = \sigma / \sqrt{\pi \ln 2}

    Verma et al. 2025 (arXiv 2506.04462): watermarked rewards modelled as N(mu - epsilon,
    sigma^2); C is the standard constant of E[max of n i.i.d. N(0, sigma^2)] >= sigma
    sqrt(log n / (pi ln 2)) (n >= 1; 0 at n = 1, so the bound is -epsilon there).
    """
    n = np.asarray(num_samples, np.float64)
    if np.any(n < 1):
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return np.asarray(sigma) * np.sqrt(np.log(n) / (np.pi * np.log(2.0))) - np.asarray(epsilon)


def distinct_fraction(tokens: jax.Array, mask: jax.Array, num_samples: int) -> jax.Array:
    """Distinct responses among each prompt's n samples, divided by n: [B*n, N] -> [B].

    Two samples are the same when their masked tokens agree (padding ignored). 1/n: all n
    identical (the vanilla Gumbel watermark's fixed-key behaviour); 1: all different.
    """
    b = tokens.shape[0] // num_samples
    seq = jnp.where(mask, tokens, -1).reshape(b, num_samples, -1)
    same = (seq[:, :, None, :] == seq[:, None, :, :]).all(-1)  # [B, n, n]
    earlier = jnp.tril(jnp.ones((num_samples, num_samples), bool), k=-1)[None]
    new = ~(same & earlier).any(-1)  # not equal to an earlier sample
    return new.sum(-1).astype(jnp.float32) / num_samples
