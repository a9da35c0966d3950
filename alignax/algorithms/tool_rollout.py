"""Multi-turn rollouts with an environment: the policy calls a tool, reads its output, goes on.

TRL's GRPOTrainer calls tools during generation (`max_tool_calling_iterations`): the tool's
output is appended to the completion and masked out of the loss. Here that is a rollout function
with the contract of `online.make_rollout` (`rollout(params, prompt_ids, prompt_mask, rng) ->
Rollout`), so every online recipe that takes a rollout can train through an environment
(`policy_gradient.train(rollout_fn=tool_rollout_from_config(...))`).

One rollout of N = B x n rows runs up to K + 1 turns (K = `max_tool_calls`):

    for turn in 0..K:
        sample <= T_turn tokens of every row with the jitted KV sampler (`alignax.sampling.sample`)
            from the row's whole sequence so far, until a stop token (`stop_tokens`, e.g. the
            eos or a one-token tool-call end marker) or the turn budget; on the host, a turn is
            also cut after the first token that completes one of `stop_strings` (e.g.
            "</search>", which most tokenizers split into several tokens);
        if turn < K, for every row still running: obs = env_fn(row, decode(turn tokens));
            None -> no tool call in that text: the row is finished (this turn was its answer);
            else the observation's tokens (at most T_obs) are appended, and the row goes on;
    after turn K (the K-th call's observation) a row is finished whatever it wrote.

Layout (static per config, so the sampler and the update compile once): `ids` = [prompt
(left-padded, P) | response (R)] with R = (K + 1) T_turn + K T_obs (`tool_response_length`).
The response part of a row holds, packed from its first column, turn 1, observation 1, turn 2,
..., its last turn, then padding (mask False) to R. `mask` is True on the prompt's tokens and
on every turn and observation token; `response_mask` [N, R] is True on the policy's own tokens
only (each turn's tokens up to and including its stop token): observation tokens are attended
to but are neither in the loss nor in the KL (every online loss reduces over
`response_mask`). `old_logps` [N, R] are the sampler's log-probs of the policy tokens (the
model's own, temperature 1, untruncated: `alignax.sampling` module docstring) and 0 elsewhere,
so `online.response_logps` recomputes them exactly (positions count valid tokens,
`positions_from_mask`, and the sampler left-aligns its prefix: the same positions and
attended keys as the training forward's; fp32, <= 1e-5).

Choices, kept simple:
- Re-prefill: each turn samples from a fresh prefill of the row's whole sequence (prompt,
  earlier turns, observations), not from the previous turn's KV cache. One program for every
  turn: the prefix is always P + R - T_turn columns wide (rows shorter than that are padded),
  so a turn costs a prefill of P + R - T_turn tokens plus T_turn decode steps. Simple and
  exact; reusing the cache would save the prefill.
- Every row is sampled at every turn (the batch is static); finished rows' tokens are dropped.
  A turn cut at a stop string discards the tokens sampled after it (sampling a stop string and
  stopping equals sampling the whole budget and keeping the prefix: the kept tokens' log-probs
  are unchanged).
- The observation is the environment's string encoded as plain text (`tokenizer.encode`, no
  special tokens) and appended inside the policy's own turn, as Search-R1 splices retrieved
  documents between tags into the generation; it is not rendered as a chat-template "tool"
  message (that rendering is model-specific). Pass `encode_observation` to tokenise
  otherwise. An observation longer than T_obs tokens keeps its first T_obs tokens (the end,
  e.g. a closing tag, may be cut); an observation of no tokens is an error (return None for
  "no tool call", or a non-empty string such as "<result></result>").
- `stop_strings` are found by decoding: the turn is cut after the shortest prefix whose text
  contains one (a binary search over prefixes; decoding a longer prefix never removes text).
- One process (a multi-process job raises NotImplementedError: each process would need its own
  rows' environment calls).

The number of tool calls of each row is a function of the rollout (`tool_calls`: runs of
observation tokens), and so is the text after the last observation (`final_turn_mask`), so a
reward can read both from the `Rollout` that every recipe passes to `reward_fn`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.sampling import sample
from alignax.types import Rollout

__all__ = ["final_turn_mask", "make_tool_rollout", "observation_mask", "tool_calls",
           "tool_response_length", "tool_rollout_from_config"]

EnvFn = Callable[[int, str], "str | None"]


def tool_response_length(*, max_tool_calls: int, turn_tokens: int,
                         max_observation_tokens: int) -> int:
    """R, the response length of a tool rollout: (K + 1) T_turn + K T_obs (K tool calls, each
    followed by an observation of at most T_obs tokens and a turn of at most T_turn tokens)."""
    return ((int(max_tool_calls) + 1) * int(turn_tokens)
            + int(max_tool_calls) * int(max_observation_tokens))


def _check_budget(max_tool_calls, turn_tokens, max_observation_tokens) -> None:
    for name, value, low in (("max_tool_calls", max_tool_calls, 0),
                             ("turn_tokens", turn_tokens, 1),
                             ("max_observation_tokens", max_observation_tokens, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _cut_at_stop_string(tokens: np.ndarray, decode: Callable, stop_strings) -> int:
    """The number of leading `tokens` to keep: up to the first token whose prefix text holds
    one of `stop_strings` (all of them when none occurs)."""
    def hit(k):
        text = decode(tokens[:k])
        return any(s in text for s in stop_strings)

    if not stop_strings or len(tokens) == 0 or not hit(len(tokens)):
        return len(tokens)
    lo, hi = 1, len(tokens)  # hit(hi) holds
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def make_tool_rollout(model, env_fn: EnvFn, tokenizer, *, num_samples: int,
                      max_tool_calls: int, turn_tokens: int, max_observation_tokens: int,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                      min_p: float = 0.0, repetition_penalty: float = 1.0,
                      stop_tokens: Sequence[int] = (), stop_strings: Sequence[str] = (),
                      pad_id: int = 0,
                      encode_observation: Callable[[str], Sequence[int]] | None = None
                      ) -> Callable[..., Rollout]:
    """`rollout(params, prompt_ids [B, P], prompt_mask [B, P], rng) -> Rollout` of n samples
    per prompt, each up to `max_tool_calls` tool calls long (module docstring).

    Args:
      model: a causal LM Model (with `apply_cached`), as for `alignax.sampling.sample`.
      env_fn: `env_fn(row, text) -> str | None`: `row` is the rollout row in [0, N)
        (prompt-major: the prompt batch row is row // n; the online recipes remap
        `prompt_index` to pool rows only after the rollout), `text` the decoded tokens of the
        row's latest turn; returns the observation to append, or None when the text holds no
        tool call (the row is finished). Called on the host, turn by turn, for running rows.
        A pure function of (row, text) keeps the rollout a function of (params, prompts, rng),
        so a resumed run repeats the uninterrupted one's iterations exactly.
      tokenizer: has `decode(ids) -> str` and `encode(text) -> list[int]` (alignax's
        ByteTokenizer / HFTokenizer).
      num_samples: n, samples per prompt (rows are prompt-major).
      max_tool_calls: K >= 0, the most tool calls a row makes (then one more turn).
      turn_tokens: T_turn, the most tokens a turn samples.
      max_observation_tokens: T_obs, observations are cut to this many tokens.
      temperature, top_k, top_p, min_p, repetition_penalty: the sampler's options
        (`alignax.sampling.sample`); `old_logps` stay the model's own log-probs.
      stop_tokens: ids that end a turn in the sampler (kept, in the response mask).
      stop_strings: strings that end a turn on the host (the turn keeps the token that
        completes one, drops the rest).
      pad_id: id of the padding after a row's last token.
      encode_observation: `text -> ids` of an observation (default `tokenizer.encode(text)`).

    Returns:
      The rollout function. It has attributes `response_len` (R, `tool_response_length`) and
      `num_samples`. Its Rollout: ids / mask [N, P + R], response_mask / old_logps [N, R],
      prompt_index [N] (module docstring for the layout).
    """
    _check_budget(max_tool_calls, turn_tokens, max_observation_tokens)
    k_calls, t_turn, t_obs = int(max_tool_calls), int(turn_tokens), int(max_observation_tokens)
    r_total = tool_response_length(max_tool_calls=k_calls, turn_tokens=t_turn,
                                   max_observation_tokens=t_obs)
    n = int(num_samples)
    stop_tokens = tuple(int(t) for t in stop_tokens)
    stop_strings = tuple(str(s) for s in stop_strings)
    encode = encode_observation or tokenizer.encode

    def decode(ids):
        return tokenizer.decode([int(i) for i in ids])

    def rollout(params, prompt_ids, prompt_mask, rng) -> Rollout:
        if jax.process_count() > 1:
            raise NotImplementedError("tool rollouts run in one process (the environment is "
                                      f"called on the host); this job has "
                                      f"{jax.process_count()}")
        ids0 = np.asarray(prompt_ids).astype(np.int32)
        mask0 = np.asarray(prompt_mask).astype(bool)
        order = np.argsort(mask0.astype(np.int32), axis=1, kind="stable")  # left-align
        ids0 = np.take_along_axis(ids0, order, 1)
        mask0 = np.take_along_axis(mask0, order, 1)
        b, p = ids0.shape
        rows = b * n
        ids = np.full((rows, p + r_total), pad_id, np.int32)
        mask = np.zeros((rows, p + r_total), bool)
        ids[:, :p], mask[:, :p] = np.repeat(ids0, n, 0), np.repeat(mask0, n, 0)
        response_mask = np.zeros((rows, r_total), bool)
        old_logps = np.zeros((rows, r_total), np.float32)
        length = np.zeros(rows, np.int64)  # response tokens written per row
        live = np.ones(rows, bool)
        width = p + r_total - t_turn  # the prefix of every turn (module docstring)
        for turn in range(k_calls + 1):
            if not live.any():
                break
            out = sample(model, params, jnp.asarray(ids[:, :width]),
                         jnp.asarray(mask[:, :width]), jax.random.fold_in(rng, turn),
                         max_new_tokens=t_turn, num_samples=1, temperature=temperature,
                         top_k=top_k, top_p=top_p, min_p=min_p,
                         repetition_penalty=repetition_penalty, stop_tokens=stop_tokens,
                         pad_id=pad_id)
            tokens, valid, logps = jax.device_get((out.tokens, out.mask, out.logps))
            for r in np.flatnonzero(live):
                k = int(valid[r].sum())  # the valid tokens are a prefix of the turn
                k = _cut_at_stop_string(tokens[r, :k], decode, stop_strings)
                at = p + int(length[r])
                ids[r, at:at + k], mask[r, at:at + k] = tokens[r, :k], True
                response_mask[r, at - p:at - p + k] = True
                old_logps[r, at - p:at - p + k] = logps[r, :k]
                length[r] += k
                if turn == k_calls:
                    live[r] = False
                    continue
                observation = env_fn(int(r), decode(tokens[r, :k]))
                if observation is None:
                    live[r] = False
                    continue
                obs = [int(t) for t in encode(str(observation))][:t_obs]
                if not obs:
                    raise ValueError(f"env_fn returned an observation of no tokens for row {r} "
                                     "(return None when the text holds no tool call)")
                at = p + int(length[r])
                ids[r, at:at + len(obs)], mask[r, at:at + len(obs)] = obs, True
                length[r] += len(obs)
        return Rollout(ids=jnp.asarray(ids), mask=jnp.asarray(mask),
                       response_mask=jnp.asarray(response_mask),
                       old_logps=jnp.asarray(old_logps),
                       prompt_index=jnp.asarray(np.repeat(np.arange(b, dtype=np.int32), n)))

    rollout.response_len = r_total
    rollout.num_samples = n
    return rollout


def tool_rollout_from_config(env_fn: EnvFn, tokenizer, *, max_tool_calls: int,
                             turn_tokens: int, max_observation_tokens: int,
                             stop_strings: Sequence[str] = (), pad_id: int | None = None,
                             encode_observation: Callable | None = None) -> Callable:
    """A rollout builder for `policy_gradient.train(rollout_fn=)`: `(model, cfg, n) ->
    make_tool_rollout(model, env_fn, tokenizer, num_samples=n, ...)` with the recipe config's
    sampler options (temperature, top_k, top_p, min_p, repetition_penalty, stop_tokens), as
    `online.rollout_from_config` builds the single-turn rollout.

    The recipe's `max_new_tokens` must be R = `tool_response_length(...)` (the response length
    of the update, the reference forward and the loss's `max_length`): a ValueError naming it
    otherwise. `pad_id` None: the tokenizer's `pad_id` (0 if it has none).
    """
    _check_budget(max_tool_calls, turn_tokens, max_observation_tokens)
    r_total = tool_response_length(max_tool_calls=max_tool_calls, turn_tokens=turn_tokens,
                                   max_observation_tokens=max_observation_tokens)
    pad = int(getattr(tokenizer, "pad_id", 0) or 0) if pad_id is None else int(pad_id)

    def build(model, cfg: Mapping[str, Any], num_samples: int):
        if int(cfg["max_new_tokens"]) != r_total:
            raise ValueError(f"max_new_tokens={cfg['max_new_tokens']} must be the tool "
                             f"rollout's response length {r_total} ((max_tool_calls + 1) * "
                             "turn_tokens + max_tool_calls * max_observation_tokens)")
        return make_tool_rollout(
            model, env_fn, tokenizer, num_samples=num_samples, max_tool_calls=max_tool_calls,
            turn_tokens=turn_tokens, max_observation_tokens=max_observation_tokens,
            temperature=float(cfg["temperature"]), top_k=int(cfg["top_k"]),
            top_p=float(cfg["top_p"]), min_p=float(cfg.get("min_p", 0.0)),
            repetition_penalty=float(cfg.get("repetition_penalty", 1.0)),
            stop_tokens=tuple(cfg["stop_tokens"]), stop_strings=stop_strings, pad_id=pad,
            encode_observation=encode_observation)

    build.response_len = r_total
    return build


def observation_mask(rollout: Rollout) -> jax.Array:
    """[N, R] bool: the response columns that hold observation tokens (attended to, not the
    policy's: `mask` and not `response_mask`)."""
    r = rollout.response_len
    return (jnp.asarray(rollout.mask)[:, -r:].astype(bool)
            & ~jnp.asarray(rollout.response_mask).astype(bool))


def tool_calls(rollout: Rollout) -> jax.Array:
    """[N] int32: each row's number of tool calls, the runs of observation tokens in its
    response (every call appends >= 1 token, and a turn of >= 1 policy token follows it)."""
    obs = observation_mask(rollout)
    before = jnp.pad(obs, ((0, 0), (1, 0)))[:, :-1]
    return jnp.sum(obs & ~before, axis=-1).astype(jnp.int32)


def final_turn_mask(rollout: Rollout) -> jax.Array:
    """[N, R] bool: the policy tokens after the row's last observation (its whole response
    when it made no tool call): the text a row ends with, e.g. its answer."""
    obs = observation_mask(rollout)
    r = obs.shape[1]
    last = jnp.max(jnp.where(obs, jnp.arange(r)[None, :], -1), axis=-1)  # [N], -1: none
    return jnp.asarray(rollout.response_mask).astype(bool) & (
        jnp.arange(r)[None, :] > last[:, None])
