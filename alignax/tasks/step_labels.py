"""Automatic step labels for candidate solutions of `chains` problems, and what they cost.

Process reward models need a label per step. Two automatic labellers stand in for human
annotation (PRM800K) on the modular-arithmetic chains of `alignax.tasks.chains`:

1. Monte-Carlo rollouts (Math-Shepherd: Wang et al. 2024, "Math-Shepherd: Verify and Reinforce
   LLMs Step-by-step without Human Annotations", arXiv 2312.08935). Step j of a candidate is
   judged by the outcomes of M completions of its prefix s_1..s_j drawn from a completer
   (the policy): with answers ans_1..ans_M and the gold answer a*,

       hard_j = 1[exists m: ans_m = a*],        soft_j = (1/M) sum_m 1[ans_m = a*].

   The completer is a parameter, `complete(prefixes, rng) -> answers [B]`, so an experiment
   passes its policy; `noisy_completer(step_accuracy)` is a reference completer that writes each
   remaining step right with probability q (else a wrong value, uniform among the p - 1 others)
   and continues the chain from what it wrote. A perfect completer (q = 1) gives
   hard_j = 1 iff the written result y_j propagates to a*; on consistent corruptions that change
   the answer this is the "prefix" rule of `chains.step_labels` (and the "first_error" rule on
   its mask). The labels of the last step need no rollout (the answer is the last written
   result).
   Cost: the completion steps (6 tokens each) and answer tokens ("> y [EOS]", 3 per rollout)
   generated over all rollouts, sum_j M (k - 1 - j) steps per candidate of k steps.
   `make_policy_completer(logits_fn)(params)` is the policy completer: the LM that wrote the
   candidates continues each prefix (`make_policy_sampler`: `chains.continue_values`, the same
   program also draws fresh candidates from empty prefixes), as in Math-Shepherd;
   `completion_cost` is what one completion generates.

2. Reference-guided single-pass labelling (SPARE: Rizvi et al. 2025, "SPARE: Single-Pass
   Annotation with Reference-Guided Evaluation for Automatic Process Supervision and Reward
   Modelling", arXiv 2506.15498). The abstract: "per-step annotation by aligning each solution
   step to one or multiple steps in a reference solution, accompanied by explicit reasoning for
   evaluation", in one generation. Here the reference solution is the gold chain a_1..a_k.
   Alignment (alignment="step", the default): candidate step j is aligned to the reference
   step with the same operation, "a_{j-1} op_j b_j = a_j" (in a chain the operation and operand
   of step j are always the problem's, so that is reference step j). Evaluation: while the
   candidate is on the reference path (its previous written result equals a_{j-1}), the step is
   correct iff it writes a_{j-1} as left operand and a_j as result (same operation, same value);
   off the path, the "explicit reasoning" re-derives the reference step from the candidate's
   own previous written value: correct iff x_j = y_{j-1} and y_j = (y_{j-1} op_j b_j) mod p.
   These labels equal `chains.step_labels` for every candidate (all three rules), at the cost of
   reading each candidate step once: k steps, 6 k tokens.
   alignment="value" is the looser matching "the written result appears among the reference
   intermediate values a_1..a_k", kept as an ablation: with p <= 10 values collide, so it
   marks wrong steps correct (false positives) and is not SPARE's rule.

Both return a `StepLabels`: labels [N, K] in {0, 1}, mask [N, K] (1 where a step is labelled),
soft labels [N, K] in [0, 1], and the cost per candidate [N] in steps and tokens. Shapes: N
candidates, K step columns, M rollouts, B prefixes in one completer call. Everything random is
a deterministic function of the numpy Generator passed in.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import numpy as np

from alignax.tasks import chains as ch

ALIGNMENTS = ("step", "value")
ANSWER_TOKENS = 3  # "> y [EOS]" after the last step


class StepLabels(NamedTuple):
    """Step labels of N candidates and the cost of computing them.

    Attributes:
      labels: [N, K] int32 in {0, 1} (hard labels; 0 where not labelled).
      mask: [N, K] int32, 1 where a step is labelled.
      soft: [N, K] float32 in [0, 1] (the fraction of rollouts that reach the gold answer;
        equal to `labels` for a deterministic labeller; 0 where not labelled).
      cost_steps: [N] int64 steps generated (rollouts) or read (single pass) per candidate.
      cost_tokens: [N] int64 the same in tokens.
    """

    labels: np.ndarray
    mask: np.ndarray
    soft: np.ndarray
    cost_steps: np.ndarray
    cost_tokens: np.ndarray


@dataclasses.dataclass(frozen=True)
class Prefixes:
    """B solution prefixes to complete: the first `length` steps of a candidate are kept.

    Attributes:
      chains: the B problems (`chains.Chains`, K step columns).
      values: [B, K] int32 results written by the candidate (only columns < length are part of
        the prefix; the others must be ignored by a completer).
      lhs: [B, K] int32 left operands written by the candidate (same convention).
      length: [B] int32 steps kept, in [1, k - 1] (a complete solution is never rolled out).
    """

    chains: ch.Chains
    values: np.ndarray
    lhs: np.ndarray
    length: np.ndarray

    def last_values(self) -> np.ndarray:
        """[B] the last written result of each prefix, y_length (where a completion continues)."""
        return np.asarray(self.values)[np.arange(self.chains.size), np.asarray(self.length) - 1]


Completer = Callable[[Prefixes, np.random.Generator], np.ndarray]


def noisy_completer(step_accuracy: float) -> Completer:
    """A reference completer: continues each prefix from its last written result y_L and writes
    every remaining step right with probability q = `step_accuracy`, else a wrong result
    (uniform among the p - 1 others); later steps take what it wrote as left operand.

        v_L = y_L,  v_t = (v_{t-1} op_t b_t) mod p  w.p. q,  else uniform on [0, p) \\ {that},
        answer = v_k.

    q = 1 is the perfect completer (the answer is y_L propagated through the remaining steps).

    Args:
      step_accuracy: q in [0, 1].

    Returns:
      `complete(prefixes, rng) -> answers [B] int32`.
    """
    q = float(step_accuracy)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"step_accuracy must be in [0, 1], got {step_accuracy}")

    def complete(prefixes: Prefixes, rng: np.random.Generator) -> np.ndarray:
        c = prefixes.chains
        p, b = c.modulus, c.size
        a = prefixes.last_values().astype(np.int64)
        length, k = np.asarray(prefixes.length), np.asarray(c.num_steps)
        for t in range(c.max_steps):
            live = (t >= length) & (t < k)
            right = ch.apply_ops(a, c.ops[:, t], c.operands[:, t].astype(np.int64), p)
            wrong = (right + rng.integers(1, p, size=b)) % p  # uniform among the p - 1 others
            a = np.where(live, np.where(rng.random(b) < q, right, wrong), a)
        return a.astype(np.int32)

    return complete


def _values_and_lhs(chains: ch.Chains, values, lhs):
    values = np.asarray(values)
    if values.shape != chains.ops.shape:
        raise ValueError(f"values must be [N, K] = {chains.ops.shape}, got {values.shape}")
    values = values.astype(np.int32)
    lhs = ch.consistent_lhs(chains, values) if lhs is None else np.asarray(lhs, np.int32)
    if lhs.shape != chains.ops.shape:
        raise ValueError(f"lhs must be [N, K] = {chains.ops.shape}, got {lhs.shape}")
    return values, lhs


def rollout_labels(chains: ch.Chains, values, lhs=None, *, complete: Completer,
                   num_rollouts: int, rng: np.random.Generator,
                   batch_size: int | None = None) -> StepLabels:
    """Math-Shepherd step labels from M completions of every prefix (module docstring).

        hard_j = 1[exists m <= M: ans_m(s_1..s_j) = a*],   soft_j = mean_m 1[ans_m = a*],

    for every real step j (all steps labelled: mask = the real steps). The last step is labelled
    by the candidate's own answer (no rollout). Cost per candidate of k steps:
    steps = M sum_{j < k} (k - 1 - j) = M k (k - 1) / 2 generated steps, tokens =
    6 steps + 3 M (k - 1) (each rollout also writes "> y [EOS]").

    Args:
      chains: the N problems.
      values: [N, K] results written by the candidates.
      lhs: optional [N, K] left operands written (default consistent).
      complete: `complete(prefixes, rng) -> answers [B]` (e.g. `noisy_completer(q)`, or a
        policy sampler).
      num_rollouts: M >= 1.
      rng: numpy Generator (passed to `complete`).
      batch_size: optional most prefixes per `complete` call (default: all in one call; the
        draws, so the labels, depend on it as on `rng`).

    Returns:
      `StepLabels` (labels = hard, soft = the fraction).
    """
    m = int(num_rollouts)
    if m < 1:
        raise ValueError(f"num_rollouts must be >= 1, got {num_rollouts}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    values, lhs = _values_and_lhs(chains, values, lhs)
    n, width = chains.ops.shape
    k = np.asarray(chains.num_steps, np.int64)
    gold = ch.answers(chains)
    valid = chains.valid()
    # prefixes that need a rollout: steps j < k - 1 (length j + 1 < k), each M times
    rows, cols = np.nonzero(valid & (np.arange(width)[None, :] < (k - 1)[:, None]))
    rows_m, cols_m = np.repeat(rows, m), np.repeat(cols, m)
    hits = np.zeros((n, width), np.int64)
    total = rows_m.size
    step = total if batch_size is None else int(batch_size)
    for lo in range(0, total, max(step, 1)):
        r, j = rows_m[lo:lo + step], cols_m[lo:lo + step]
        pre = Prefixes(chains.take(r), values[r], lhs[r], (j + 1).astype(np.int32))
        ans = np.asarray(complete(pre, rng))
        if ans.shape != r.shape:
            raise ValueError(f"complete must return [B] = {r.shape} answers, got {ans.shape}")
        np.add.at(hits, (r, j), (ans == gold[r]).astype(np.int64))
    soft = hits / m
    # the last step: the candidate's own answer
    last_ok = ch.outcome_labels(chains, values).astype(np.float64)
    soft[np.arange(n), k - 1] = last_ok
    soft = np.where(valid, soft, 0.0).astype(np.float32)
    labels = (soft > 0).astype(np.int32)
    cost_steps = m * k * (k - 1) // 2
    cost_tokens = ch.STEP_TOKENS * cost_steps + ANSWER_TOKENS * m * (k - 1)
    return StepLabels(labels, valid.astype(np.int32), soft, cost_steps, cost_tokens)


def reference_labels(chains: ch.Chains, values, lhs=None, *, rule: str = "first_error",
                     alignment: str = "step") -> StepLabels:
    """SPARE-style single-pass step labels from the reference solution (module docstring).

    With r_j = a_j the reference values (r_0 = a_0) and y_0 = a_0, step j is judged

        step:   ok_j = [x_j = y_{j-1}] and [y_j = r_j]                    if y_{j-1} = r_{j-1}
                ok_j = [x_j = y_{j-1}] and [y_j = (y_{j-1} op_j b_j) mod p]  otherwise
        value:  ok_j = [y_j in {r_1, .., r_k}]

    and `rule` turns ok into labels and a mask as in `chains.step_labels` ("first_error": 1 up
    to the first step that is not ok, 0 there, masked after; "prefix"; "local"). With
    alignment="step" the labels equal `chains.step_labels(..., rule=rule)`.
    Cost: one pass, each candidate step read once: k steps, 6 k tokens.

    Args:
      chains: the N problems.
      values: [N, K] results written by the candidates.
      lhs: optional [N, K] left operands written (default consistent).
      rule: "first_error" (default), "prefix" or "local".
      alignment: "step" (default; same operation, same value) or "value" (ablation).

    Returns:
      `StepLabels` (soft = labels as float).
    """
    if rule not in ch.LABEL_RULES:
        raise ValueError(f"rule must be one of {ch.LABEL_RULES}, got {rule!r}")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    values, lhs = _values_and_lhs(chains, values, lhs)
    valid = chains.valid()
    ref = ch.reference_values(chains)
    if alignment == "step":
        prev = ch.consistent_lhs(chains, values)  # y_0 = a_0, y_1, .., y_{k-1}
        ref_prev = ch.consistent_lhs(chains, ref)  # a_0, a_1, .., a_{k-1}
        derived = ch.apply_ops(prev, chains.ops, chains.operands, chains.modulus)
        target = np.where(prev == ref_prev, ref, derived)
        ok = (lhs == prev) & (values == target)
    else:
        in_ref = (values[:, :, None] == ref[:, None, :]) & valid[:, None, :]
        ok = in_ref.any(-1)
    ok = ok & valid
    j = np.arange(chains.max_steps)[None, :]
    bad = ~ok & valid
    first = np.where(bad.any(1), bad.argmax(1), chains.num_steps)[:, None]
    if rule == "local":
        labels, mask = ok, valid
    else:
        labels = (j < first) & valid
        mask = valid & (j <= first) if rule == "first_error" else valid
    k = np.asarray(chains.num_steps, np.int64)
    labels = labels.astype(np.int32)
    return StepLabels(labels, mask.astype(np.int32), labels.astype(np.float32), k.copy(),
                      ch.STEP_TOKENS * k)


# ----------------------------------------------------------------------------- policy completer


def completion_cost(prefixes: Prefixes) -> tuple[np.ndarray, np.ndarray]:
    """What completing each prefix generates: (steps [B], tokens [B]) int64.

        steps_b = k_b - L_b,    tokens_b = 6 steps_b + 3   ("> y [EOS]" after the last step),

    so that summed over the M (k - 1 - j) rollouts of `rollout_labels` they give its
    `cost_steps` and `cost_tokens`.
    """
    steps = (np.asarray(prefixes.chains.num_steps, np.int64)
             - np.asarray(prefixes.length, np.int64))
    return steps, ch.STEP_TOKENS * steps + ANSWER_TOKENS


def _bucket(n: int, chunk_size: int) -> int:
    """The rows of one compiled call: the next power of two >= n, at most `chunk_size`."""
    return min(int(chunk_size), 1 << max(int(n) - 1, 0).bit_length())


PrefixSampler = Callable[[Prefixes, np.random.Generator], np.ndarray]


def make_policy_sampler(logits_fn: Callable, *, temperature: float = 1.0,
                        chunk_size: int = 4096) -> Callable[[object], PrefixSampler]:
    """The policy writing the rest of solution prefixes: `bind(params)(prefixes, rng) ->
    values [B, K] int32`.

    Each prefix s_1..s_L (the candidate's results y_1..y_L and left operands; L = 0: nothing
    kept, a fresh sample) is written into its chain's template, and the LM
    `logits_fn(params, ids [B, T], mask [B, T]) -> logits [B, T, V]` writes the results of steps
    L + 1..k (`chains.continue_values` at `temperature`) starting from x_{L+1} = y_L (a_0 for
    L = 0). One jitted program serves every params of the same structure (e.g. each seed's
    generator) and every prefix length: the B prefixes go in chunks of `_bucket(B,
    chunk_size)` rows (the last one padded with copies of its first row), T =
    `chains.max_length(K)`. The key of a call is drawn from `rng` (one integer), so the values
    are a deterministic function of (params, prefixes, rng state).

    Args:
      logits_fn: `(params, ids, mask) -> logits` of a causal LM over the `arithmetic` vocabulary.
      temperature: >= 0 sampling temperature (0: greedy).
      chunk_size: most rows per compiled call.

    Returns:
      `bind(params) -> sample`, sample(prefixes, rng) -> values [B, K] (the kept results, then
      the written ones; 0 in padding).
    """
    if float(temperature) < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    @functools.partial(jax.jit, static_argnames=("modulus",))
    def run(params, ids, mask, rpos, k, start, key, *, modulus):
        return ch.continue_values(lambda x: logits_fn(params, x, mask), ids, rpos, k, start,
                                  key, modulus=modulus, temperature=float(temperature))[0]

    def bind(params) -> PrefixSampler:
        def sample(prefixes: Prefixes, rng: np.random.Generator) -> np.ndarray:
            c = prefixes.chains
            b, width = c.ops.shape
            length = np.asarray(prefixes.length, np.int32)
            if length.shape != (b,) or np.any(length < 0) or np.any(length > c.num_steps):
                raise ValueError("prefixes.length must be [B] in [0, k]")
            kept = np.arange(width)[None, :] < length[:, None]
            values = np.where(kept, np.asarray(prefixes.values), 0).astype(np.int32)
            # the kept left operands as written, then x_{L+1} = y_L and consistent after
            lhs = np.where(kept, np.asarray(prefixes.lhs), ch.consistent_lhs(c, values))
            lhs = np.where(c.valid(), lhs, 0).astype(np.int32)
            ids, mask = ch.encode(c, values, lhs)
            rpos, k = ch.result_positions(c), np.asarray(c.num_steps, np.int32)
            key = jax.random.key(int(rng.integers(0, 2 ** 31 - 1)))
            size = _bucket(b, chunk_size)
            out = []
            for i, lo in enumerate(range(0, b, size)):
                part = [x[lo:lo + size] for x in (ids, mask, rpos, k, length)]
                pad = size - part[0].shape[0]
                part = [np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) for x in part]
                vals = run(params, *part, jax.random.fold_in(key, i), modulus=c.modulus)
                out.append(np.asarray(vals)[:size - pad])
            return np.concatenate(out).astype(np.int32)

        return sample

    return bind


def as_completer(sample: PrefixSampler) -> Completer:
    """A prefix sampler (`make_policy_sampler(...)(params)`) as a completer: the answer is the
    last result it writes, `chains.final_values`."""
    def complete(prefixes: Prefixes, rng: np.random.Generator) -> np.ndarray:
        return ch.final_values(prefixes.chains, sample(prefixes, rng)).astype(np.int32)

    return complete


def make_policy_completer(logits_fn: Callable, *, temperature: float = 1.0,
                          chunk_size: int = 4096) -> Callable[[object], Completer]:
    """A completer that continues prefixes with the policy itself (Math-Shepherd's rollouts).

    `make_policy_completer(fn)(params)` is `complete(prefixes, rng) -> answers [B]`: the
    policy `fn` writes steps L + 1..k of each prefix (`make_policy_sampler`) and the answer is
    the last result it writes. This is the Monte-Carlo estimate of Wang et al. 2024
    (Math-Shepherd, arXiv 2312.08935) with the same policy that wrote the candidates; its cost
    is `completion_cost` per prefix.

    Args:
      logits_fn: `(params, ids, mask) -> logits` of a causal LM over the `arithmetic` vocabulary.
      temperature: >= 0 sampling temperature (0: greedy completions).
      chunk_size: most rows per compiled call.

    Returns:
      `bind(params) -> complete`.
    """
    sampler = make_policy_sampler(logits_fn, temperature=temperature, chunk_size=chunk_size)
    return lambda params: as_completer(sampler(params))
