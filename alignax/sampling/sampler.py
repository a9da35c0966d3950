"""Jitted KV-cache sampling: one prefill of the prompts, then a `lax.scan` of single-token steps.

Log-probs come in two kinds, named so they cannot be confused:

- `logps`: log pi(token) under the model itself (temperature 1, no repetition penalty, no
  truncation) -- exactly what a training forward over the same tokens computes (tested to 1e-5
  in float32), so rollouts and updates agree whatever the sampling options;
- `sampling_logps`: log-probs under the processed distribution the token was drawn from (after
  the repetition penalty, temperature, top-k, top-p and min-p, in that order: transformers'
  `generate` order of its logits processors); equal to `logps` when no processing is asked for.

The policy-gradient recipes use `logps` as the behaviour policy's log-probs (`old_logps`), as
TRL's GRPOTrainer does without vLLM (it recomputes them with the training model): the sampling
options change which tokens are drawn, not the log-probs the update's ratios are taken against.

Guided decoding (`sample_guided`, GenARM: Xu et al. 2024, arXiv 2410.08193) runs K guide models
(autoregressive reward models sharing the base's tokenizer) in the same scan, each with its own KV
cache, and draws every token from

    log pi~(y_t | x, y_<t) = log pi_base(y_t | .) + sum_i (alpha_i / beta) log pi_r_i(y_t | .) + c

(`alignax.sampling.guided_logits`). The guarantee then reads, for the same three kinds:

- `logps`: log pi~(token), the guided distribution's own (temperature 1, no processing): equal to
  the log-softmax of the combined log-softmaxes of full forwards of all K + 1 models over the
  same tokens (tested to 1e-5 in float32). It is the behaviour policy's log-prob of the sample;
- `base_logps`: log pi_base(token), the base model's own, what a training forward of the base
  computes (so sum_t (logps - base_logps) is a one-sample estimate of KL(pi~ || pi_base));
- `guide_logps` [K, ...]: each guide's own log pi_r_i(token); their masked sum over t is the
  ARM's reward r_i(x, y) of the sample;
- `sampling_logps`: the processed guided distribution (temperature, truncation on the combined
  logits), equal to `logps` without processing.

With every alpha_i = 0 the combined logits equal the base's bit for bit, and `sample_guided`
returns `sample`'s tokens and log-probs for the same key.

A guide of kind "value" (`guide_kinds`; value-guided decoding as in VAS: Han et al. 2024, "Value
Augmented Sampling for Language Model Alignment and Personalization", arXiv 2405.06639) is a
model whose outputs at a context are values Q(s, v) = V(s . v) of every next token v, added raw:
log pi~(v) = log pi_base(v) + sum_i c_i Q_i(s, v) + c, restricted to the base's `value_top_k`
most likely tokens when `value_top_k` > 0. The guarantee is unchanged (`logps` are pi~'s own,
`base_logps` the base's), except that `guide_logps` of a value guide hold Q_i(s, y_t), the raw
value of the chosen token, not a log-prob.

A logits hook (`hook`, a `LogitsHook`: watermarks, `alignax.sampling.watermark`) sees the
(combined) logits, the last `hook.context` tokens of every row and a fresh key each step, and
returns the scores the token is drawn from (before temperature and truncation), or the drawn
tokens themselves. It is a sampling-side change like temperature: `logps` stay the model's (or
pi~'s) own, `sampling_logps` are under the hooked, processed distribution. Without a hook the
random stream is the same as before hooks existed.

Shapes: B prompts, n samples per prompt, P prompt length, N new tokens, S = P + N cache slots.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp

from alignax.models.transformer import Model, init_cache, positions_from_mask, repeat_cache

_NEG_INF = -1e30


class LogitsHook(Protocol):
    """A per-step change of the sampling distribution, applied inside the sampler's scan.

    Attributes:
      context: W >= 0, how many of the latest tokens (prompt, then generated) the hook reads.

    `hook(logits [R, V] float32, recent [R, W] int32 (None when W = 0), key, args) -> (scores
    [R, V], drawn [R] int32 or None)`: `scores` replace the logits the token is drawn from
    (temperature and truncation still apply); `drawn`, when not None, are the tokens taken
    instead of a draw (a keyed, deterministic sampler such as the Gumbel watermark). `recent`
    holds the prompt's last tokens left-padded with `pad_id`, then each generated token (rows
    that stopped keep theirs). `args` is a traced pytree (keys, strengths), so a sweep over it
    compiles once; the hook object is static (hashable, e.g. a frozen dataclass).
    """

    context: int

    def __call__(self, logits: jax.Array, recent: jax.Array | None, key: jax.Array, args: Any
                 ) -> tuple[jax.Array, jax.Array | None]: ...


class SampleOutput(NamedTuple):
    """Samples, row r continuing prompt `prompt_index[r]` (rows are prompt-major, n per prompt).

    Attributes:
      prompt_ids: [B*n, P] the prompts, left-aligned (padding first), as the model saw them.
      prompt_mask: [B*n, P] valid prompt tokens.
      tokens: [B*n, N] int32 generated tokens; pad after a stop token.
      mask: [B*n, N] bool, generated tokens up to and including the first stop token.
      logps: [B*n, N] float32 log-probs under the model (temperature 1, untruncated); 0 where
        mask is False.
      sampling_logps: [B*n, N] float32 log-probs under the processed sampling distribution.
      prompt_index: [B*n] int32.
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array
    logps: jax.Array
    sampling_logps: jax.Array
    prompt_index: jax.Array


def left_align(ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Moves padding to the front of each row, keeping token order: [B, P] -> [B, P] x2."""
    order = jnp.argsort(mask.astype(jnp.int32), axis=-1, stable=True)
    return jnp.take_along_axis(ids, order, axis=-1), jnp.take_along_axis(mask, order, axis=-1)


def repetition_penalty_logits(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    r"""CTRL's repetition penalty: the logits of tokens already in the sequence pushed down.

    .. math::
        \ell'_v = \ell_v / \theta \text{ if } \ell_v > 0, \quad \ell_v \theta
        \text{ otherwise}, \quad \text{for every } v \text{ with seen}_v

    (theta > 1 discourages repeats, theta < 1 encourages them). Keskar et al. 2019, "CTRL"
    (arXiv 1909.05858); transformers' RepetitionPenaltyLogitsProcessor (`generate(
    repetition_penalty=)`, which TRL's GRPO/RLOO pass on), applied to the raw logits before
    temperature. `seen` holds the prompt's valid tokens and every token generated so far; a
    padded prompt's padding is not counted (transformers counts the pad id of a left-padded
    batch too, an artefact of padding; vLLM does not).

    Args:
      logits: [.., V] logits.
      seen: [.., V] bool, the tokens that occurred.
      penalty: theta > 0 (1 leaves the logits unchanged).

    Returns:
      [.., V] float32 logits.
    """
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    logits = logits.astype(jnp.float32)
    penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalised, logits)


def process_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   seen: jax.Array | None = None) -> jax.Array:
    """The repetition penalty, temperature, then top-k, top-p (nucleus) and min-p truncation, as
    masked logits [.., V].

    repetition_penalty=1, top_k=0, top_p=1 and min_p=0 disable their step. Removed tokens get a
    logit of -1e30. min-p keeps the tokens with p >= min_p * max_v p_v under the distribution
    after temperature, top-k and top-p (Nguyen et al. 2024, "Turning Up the Heat: Min-p
    Sampling", arXiv 2407.01082; transformers' MinPLogitsWarper); the most likely token is
    always kept. `seen` [.., V] bool (the tokens that occurred) is needed with a repetition
    penalty (`repetition_penalty_logits`).
    """
    logits = logits.astype(jnp.float32)
    if temperature <= 0:
        raise ValueError("process_logits needs temperature > 0 (temperature 0 is greedy)")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must lie in [0, 1], got {min_p}")
    if repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("a repetition_penalty needs `seen`, the tokens that occurred")
        logits = repetition_penalty_logits(logits, seen, repetition_penalty)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, _NEG_INF, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep_sorted = before < top_p  # always keeps the most likely token
        cutoff = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, _NEG_INF, logits)
    if min_p > 0.0:
        logp = jax.nn.log_softmax(logits, axis=-1)
        threshold = jnp.max(logp, axis=-1, keepdims=True) + jnp.log(min_p)
        logits = jnp.where(logp < threshold, _NEG_INF, logits)
    return logits


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One draw per row of `logits` [B, V] (any scale; -1e30 marks impossible tokens): [B] int32.

    The same distribution as `jax.random.categorical`, drawn by inverting the CDF with one
    uniform number per row instead of Gumbel noise on every logit (V random numbers and 2V
    logarithms per row): 0.15 instead of 2.1 ms for 16 rows of 8192 on a 2-core CPU. The CDF is
    searched in two levels: blocks of about sqrt(V) tokens, then the tokens of the chosen block.
    Only a token of positive probability is ever returned, whatever the rounding.
    """
    b, v = logits.shape
    probs = jnp.exp(logits.astype(jnp.float32) - logits.max(-1, keepdims=True).astype(jnp.float32))
    block = 1 << (((v - 1).bit_length() + 1) // 2)  # about sqrt(V), a power of two
    n = -(-v // block)
    probs = jnp.pad(probs, ((0, 0), (0, n * block - v))).reshape(b, n, block)
    within = jnp.cumsum(probs, axis=-1)  # [B, n, block]
    totals = within[..., -1]
    ends = jnp.cumsum(totals, axis=-1)  # [B, n]
    u = jax.random.uniform(key, (b, 1), jnp.float32) * ends[:, -1:]
    u = jnp.minimum(u, jnp.nextafter(ends[:, -1:], 0.0))

    def first(cond, positive):
        # first index where cond holds among positive entries; else the last positive one
        ok = cond & positive
        last = positive.shape[-1] - 1 - jnp.argmax(positive[..., ::-1], axis=-1)
        return jnp.where(ok.any(-1), jnp.argmax(ok, axis=-1), last)

    j = first(ends > u, totals > 0)  # [B]
    start = jnp.where(j > 0, jnp.take_along_axis(ends, jnp.maximum(j - 1, 0)[:, None], -1)[:, 0],
                      0.0)
    row = jnp.take_along_axis(within, j[:, None, None], axis=1)[:, 0]  # [B, block]
    row_probs = jnp.take_along_axis(probs, j[:, None, None], axis=1)[:, 0]
    k = first(row > (u - start[:, None]), row_probs > 0)
    return (j * block + k).astype(jnp.int32)


class GuidedSampleOutput(NamedTuple):
    """Samples of guided decoding (`sample_guided`), rows as in `SampleOutput`.

    Attributes:
      prompt_ids, prompt_mask, tokens, mask, sampling_logps, prompt_index: as `SampleOutput`.
      logps: [B*n, N] float32 log-probs under the guided distribution pi~ (temperature 1,
        untruncated: the module docstring); 0 where mask is False.
      base_logps: [B*n, N] float32 log-probs under the base model itself.
      guide_logps: [K, B*n, N] float32 log-probs under each guide model itself.
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array
    logps: jax.Array
    sampling_logps: jax.Array
    prompt_index: jax.Array
    base_logps: jax.Array
    guide_logps: jax.Array


def _decode(models, params, prompt_ids, prompt_mask, rng, coefs, *, max_new_tokens, num_samples,
            temperature, top_k, top_p, min_p, repetition_penalty, stop_tokens, pad_id,
            guide_kinds=None, value_top_k=0, hook=None, hook_args=None):
    """The sampler's one prefill + `lax.scan`, for `models[0]` alone (`coefs` None) or guided by
    `models[1:]` with combined logits `models[0]`'s + sum_i coefs[i] g_i, where g_i is
    log_softmax(models[i+1]'s logits) for kind "logprob" and its raw outputs for kind "value"
    (then only the base's `value_top_k` most likely tokens stay possible, when > 0). `hook`
    (a `LogitsHook`) processes the combined logits before temperature and truncation.

    Returns (ids, mask, tokens, live, logps, sampling_logps, base_logps, guide_logps) with the
    last two None unguided; rows prompt-major as `SampleOutput`.
    """
    for m in models:
        if m.apply_cached is None:
            raise ValueError("sample needs a causal LM model (with apply_cached)")
    b, p = prompt_ids.shape
    n, s = num_samples, prompt_ids.shape[1] + max_new_tokens
    ids, mask = left_align(prompt_ids.astype(jnp.int32), prompt_mask.astype(bool))
    guided = coefs is not None
    if guided and guide_kinds is None:
        guide_kinds = ("logprob",) * len(coefs)
    width = 0 if hook is None else int(hook.context)

    # Prefill: the prompts fill cache slots [0, P) of every model's own cache.
    slots = jnp.arange(s)
    key_valid = jnp.concatenate([mask, jnp.zeros((b, max_new_tokens), bool)], axis=1)  # [B, S]
    attn = (slots[None, None, :] <= jnp.arange(p)[None, :, None]) & key_valid[:, None, :]
    positions = positions_from_mask(mask)
    lasts, caches = [], []
    for m, prm in zip(models, params):
        logits, cache = m.apply_cached(prm, ids, positions, attn, init_cache(m.config, b, s), 0)
        lasts.append(logits[:, -1])  # [B, V]: left alignment puts every prompt's last at P - 1
        caches.append(cache)
    next_pos = mask.sum(axis=-1).astype(jnp.int32)

    def repeat(x):
        return jnp.repeat(x, n, axis=0)

    penalise = repetition_penalty != 1.0
    seen = None
    if penalise:  # [B, V]: the prompt's valid tokens
        rows = jnp.arange(b)[:, None]
        seen = jnp.zeros(lasts[0].shape, jnp.int32).at[rows, ids].max(mask.astype(jnp.int32)) > 0
    recent = None
    if width:  # [B, W] the last W prompt tokens (pad_id where the prompt is shorter)
        padded = jnp.concatenate([jnp.full((b, width), pad_id, jnp.int32),
                                  jnp.where(mask, ids, pad_id)], axis=1)
        recent = padded[:, -width:]
    lasts, next_pos, key_valid, seen, recent = jax.tree.map(
        repeat, (lasts, next_pos, key_valid, seen, recent))
    caches = [repeat_cache(c, n) for c in caches]  # the batch axis of stacked caches is not 0
    stop = jnp.asarray(stop_tokens if stop_tokens else [-1], jnp.int32)

    def step(carry, i):
        caches, lasts, next_pos, key_valid, done, rng, seen, recent = carry
        rng, key = jax.random.split(rng)
        last = lasts[0]
        if guided:  # log pi_base + sum_i c_i g_i, up to a constant
            base_lp = jax.nn.log_softmax(last.astype(jnp.float32), axis=-1)
            guide_lp = [jax.nn.log_softmax(g.astype(jnp.float32), axis=-1) if kind == "logprob"
                        else g.astype(jnp.float32) for g, kind in zip(lasts[1:], guide_kinds)]
            last = last.astype(jnp.float32)
            for c, lp in zip(coefs, guide_lp):
                last = last + c * lp
            if "value" in guide_kinds and value_top_k and value_top_k < last.shape[-1]:
                kth = jax.lax.top_k(base_lp, value_top_k)[0][..., -1:]
                last = jnp.where(base_lp < kth, _NEG_INF, last)
        model_logp = jax.nn.log_softmax(last.astype(jnp.float32), axis=-1)
        drawn = None
        if hook is not None:
            hook_key, key = jax.random.split(key)
            scores, drawn = hook(last.astype(jnp.float32), recent, hook_key, hook_args)
        else:
            scores = last
        if temperature == 0:
            if drawn is not None:
                tok = drawn.astype(jnp.int32)
            else:
                if penalise:
                    scores = repetition_penalty_logits(scores, seen, repetition_penalty)
                tok = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            sampling_logp = jnp.zeros(tok.shape, jnp.float32)
        else:
            processed = jax.nn.log_softmax(
                process_logits(scores, temperature=temperature, top_k=top_k, top_p=top_p,
                               min_p=min_p, repetition_penalty=repetition_penalty, seen=seen),
                axis=-1)
            # a hook's own draw replaces the categorical one (not drawn as well)
            tok = categorical(key, processed) if drawn is None else drawn.astype(jnp.int32)
            sampling_logp = jnp.take_along_axis(processed, tok[:, None], axis=-1)[:, 0]

        def pick(lp):
            return jnp.take_along_axis(lp, tok[:, None], axis=-1)[:, 0]

        logp = pick(model_logp)
        live = ~done
        tok = jnp.where(live, tok, pad_id)
        done = done | (live & jnp.isin(tok, stop))
        if penalise:
            seen = seen.at[jnp.arange(tok.shape[0]), tok].max(live)
        if width:
            recent = jnp.where(live[:, None], jnp.concatenate([recent[:, 1:], tok[:, None]], 1),
                               recent)
        slot = p + i
        key_valid = key_valid.at[:, slot].set(live)
        attn = ((slots <= slot)[None, :] & key_valid)[:, None, :]  # [B*n, 1, S]
        new_lasts, new_caches = [], []
        for m, prm, cache in zip(models, params, caches):
            logits, cache = m.apply_cached(prm, tok[:, None], next_pos[:, None], attn, cache, slot)
            new_lasts.append(logits[:, 0])
            new_caches.append(cache)
        out = (tok, live, jnp.where(live, logp, 0.0), jnp.where(live, sampling_logp, 0.0))
        if guided:
            out += (jnp.where(live, pick(base_lp), 0.0),
                    jnp.stack([jnp.where(live, pick(lp), 0.0) for lp in guide_lp]))
        return (new_caches, new_lasts, next_pos + live, key_valid, done, rng, seen, recent), out

    done0 = jnp.zeros((b * n,), bool)
    _, outs = jax.lax.scan(
        step, (caches, lasts, next_pos, key_valid, done0, rng, seen, recent),
        jnp.arange(max_new_tokens))
    tokens, live, logps, sampling_logps = (x.T for x in outs[:4])
    base_logps = guide_logps = None
    if guided:
        base_logps, guide_logps = outs[4].T, jnp.moveaxis(outs[5], 0, -1)  # [B*n,N], [K,B*n,N]
    return (repeat(ids), repeat(mask), tokens, live, logps, sampling_logps, base_logps,
            guide_logps)


_SAMPLE_STATIC = ("max_new_tokens", "num_samples", "temperature", "top_k", "top_p", "min_p",
                  "repetition_penalty", "stop_tokens", "pad_id", "hook")


@functools.partial(jax.jit, static_argnames=("model",) + _SAMPLE_STATIC)
def sample(
    model: Model,
    params,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    hook: LogitsHook | None = None,
    hook_args: Any = None,
) -> SampleOutput:
    """Samples `num_samples` continuations of each prompt with a KV cache.

    Args:
      model: a causal LM Model (with `apply_cached`).
      params: its parameters.
      prompt_ids: [B, P] int prompts, padded on either side (each needs >= 1 valid token).
      prompt_mask: [B, P] valid prompt tokens.
      rng: PRNG key.
      max_new_tokens: N.
      num_samples: n continuations per prompt, all sharing one prefill.
      temperature: 0 is greedy; otherwise the softmax temperature.
      top_k, top_p, min_p: truncation (see `process_logits`).
      repetition_penalty: theta != 1 penalises the logits of the prompt's valid tokens and of
        the tokens generated so far (`repetition_penalty_logits`), before temperature and
        truncation; with temperature 0 greedy decoding takes the argmax of the penalised
        logits (as transformers). `logps` stay the model's own (the docstring of this module).
      stop_tokens: ids that end a sample (the stop token is kept, with mask True).
      pad_id: id written after a sample has stopped.
      hook: an optional `LogitsHook` (static; e.g. a watermark) and `hook_args` its traced
        arguments; `logps` stay the model's own (the module docstring).

    Returns:
      SampleOutput (see its docstring).
    """
    ids, mask, tokens, live, logps, sampling_logps, _, _ = _decode(
        (model,), (params,), prompt_ids, prompt_mask, rng, None, max_new_tokens=max_new_tokens,
        num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, stop_tokens=stop_tokens, pad_id=pad_id, hook=hook,
        hook_args=hook_args)
    b = prompt_ids.shape[0]
    return SampleOutput(
        prompt_ids=ids, prompt_mask=mask, tokens=tokens, mask=live, logps=logps,
        sampling_logps=sampling_logps,
        prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_samples))


@functools.partial(jax.jit, static_argnames=("model", "guides", "guide_kinds", "value_top_k")
                   + _SAMPLE_STATIC)
def sample_guided(
    model: Model,
    params,
    guides: tuple[Model, ...],
    guide_params: Sequence[Any],
    weights: jax.Array,
    beta: jax.Array | float,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    guide_kinds: tuple[str, ...] | None = None,
    value_top_k: int = 0,
    hook: LogitsHook | None = None,
    hook_args: Any = None,
) -> GuidedSampleOutput:
    r"""GenARM guided sampling: every token from pi~ = pi_base prod_i pi_r_i^(alpha_i / beta) / Z.

    .. math::
        \log\tilde\pi(y_t \mid x, y_{<t}) = \log\pi_{base}(y_t \mid \cdot)
            + \sum_i \tfrac{\alpha_i}{\beta} \log\pi_{r_i}(y_t \mid \cdot) - \log Z_t

    Xu et al. 2024, "GenARM: Reward Guided Generation with Autoregressive Reward Model for
    Test-time Alignment" (arXiv 2410.08193), eq. for multi-objective guidance; with one guide
    and alpha = 1 it is the KL-regularised optimum pi_base exp(r / beta) / Z of the ARM reward
    r(x, y) = sum_t log pi_r(y_t | x, y_<t). The base and the K guides (autoregressive reward
    models, `alignax.losses.autoregressive_rm_loss`, sharing the base's vocabulary; any sizes)
    each keep their own KV cache in the one `lax.scan` of `sample`; each step runs one
    single-token forward per model. `weights` and `beta` are traced: a sweep over them reuses
    one compiled program. The log-prob guarantee of the guided case (`logps`, `base_logps`,
    `guide_logps`) is stated in the module docstring.

    Args:
      model, params: the base causal LM and its parameters.
      guides: K >= 1 causal LMs (static; a tuple of `Model`s).
      guide_params: their K parameter trees.
      weights: [K] alpha_i (0 switches a guide off; all 0 reproduce `sample` exactly).
      beta: > 0, the KL strength of the guided objective (scalar).
      prompt_ids .. pad_id: as `sample`; temperature and truncation act on the combined logits.
      guide_kinds: per guide, "logprob" (GenARM's ARM, the default) or "value" (its outputs are
        token values Q(s, v), added raw: VAS; see the module docstring).
      value_top_k: with a "value" guide, only the base's k most likely tokens can be drawn
        (0: all).
      hook, hook_args: as `sample`, applied to the combined logits.

    Returns:
      GuidedSampleOutput (see its docstring).
    """
    guides = tuple(guides)
    if not guides or len(guide_params) != len(guides):
        raise ValueError(f"sample_guided needs K >= 1 guides with K param trees, got "
                         f"{len(guides)} guides and {len(guide_params)} param trees")
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (len(guides),):
        raise ValueError(f"weights must have shape ({len(guides)},), got {weights.shape}")
    for g in guides:
        if g.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"guide vocab_size {g.config.vocab_size} != the base's "
                             f"{model.config.vocab_size}")
    kinds = ("logprob",) * len(guides) if guide_kinds is None else tuple(guide_kinds)
    if len(kinds) != len(guides) or any(k not in ("logprob", "value") for k in kinds):
        raise ValueError(f"guide_kinds must give 'logprob' or 'value' for each of the "
                         f"{len(guides)} guides, got {guide_kinds!r}")
    if value_top_k < 0:
        raise ValueError(f"value_top_k must be >= 0, got {value_top_k}")
    coefs = weights / jnp.asarray(beta, jnp.float32)
    ids, mask, tokens, live, logps, sampling_logps, base_logps, guide_logps = _decode(
        (model, *guides), (params, *guide_params), prompt_ids, prompt_mask, rng,
        [coefs[i] for i in range(len(guides))], max_new_tokens=max_new_tokens,
        num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, stop_tokens=stop_tokens, pad_id=pad_id,
        guide_kinds=kinds, value_top_k=value_top_k, hook=hook, hook_args=hook_args)
    b = prompt_ids.shape[0]
    return GuidedSampleOutput(
        prompt_ids=ids, prompt_mask=mask, tokens=tokens, mask=live, logps=logps,
        sampling_logps=sampling_logps,
        prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_samples),
        base_logps=base_logps, guide_logps=guide_logps)


def _best_rows(rewards: jax.Array, num_samples: int) -> jax.Array:
    """Row of the highest-reward sample of each prompt: rewards [B*n] -> rows [B]."""
    b = rewards.shape[0] // num_samples
    best = jnp.argmax(rewards.reshape(b, num_samples), axis=-1)
    return jnp.arange(b) * num_samples + best


def best_of_n(model: Model, params, prompt_ids, prompt_mask, rng, reward_fn: Callable,
              *, num_samples: int, **sample_kwargs) -> tuple[SampleOutput, jax.Array]:
    """Best-of-N: n samples per prompt, keep the one `reward_fn(SampleOutput) -> [B*n]` ranks top.

    Returns the SampleOutput restricted to the B chosen rows and their rewards [B].
    """
    out = sample(model, params, prompt_ids, prompt_mask, rng, num_samples=num_samples,
                 **sample_kwargs)
    rewards = reward_fn(out)
    rows = _best_rows(rewards, num_samples)
    return jax.tree.map(lambda x: x[rows], out), rewards[rows]


def rejection_sample(model: Model, params, prompt_ids, prompt_mask, rng, reward_fn: Callable,
                     *, num_samples: int, threshold: float, **sample_kwargs):
    """Rejection sampling: n samples per prompt, accepted where `reward >= threshold`.

    Returns (SampleOutput of all B*n rows, rewards [B*n], accepted [B*n] bool); the caller keeps
    `accepted` rows (a data-dependent count, so it is not sliced under jit).
    """
    out = sample(model, params, prompt_ids, prompt_mask, rng, num_samples=num_samples,
                 **sample_kwargs)
    rewards = reward_fn(out)
    return out, rewards, rewards >= threshold
