"""Batches of modular-arithmetic chains as arrays: token layout, step spans, gold step labels.

The problems of `alignax.tasks.arithmetic` (a_i = a_{i-1} op_i b_i mod p, applied left to right)
held as numpy arrays, so that thousands of problems and candidate solutions are encoded,
segmented and labelled without a Python loop per row: the testbed of process reward models
(Lightman et al. 2023, "Let's Verify Step by Step", arXiv 2305.20050) and of easy-to-hard
generalisation (Sun et al. 2024, "Easy-to-Hard Generalization: Scalable Alignment Beyond Human
Supervision", arXiv 2403.09472), where difficulty = the number of steps k.

Shapes: N problems (or candidate solutions), K = the most steps a batch holds (columns j >= k
of a row are padding), T tokens.

A batch is a `Chains` (a_0 [N], op indices [N, K] into `OPS`, operands b [N, K], k [N], the
modulus p). A candidate solution of it is the array `values` [N, K] of the results y_j each
step writes, and optionally `lhs` [N, K], the left operands x_j it writes (default: the
consistent chain x_1 = a_0, x_j = y_{j-1}); the operation and operand of step j are always the
problem's (only results and left operands can be wrong). `reference_values` is the gold
solution (y_j = a_j).

Token layout (`encode`; the format of `arithmetic`, one token per number, so p <= 10):

    [BOS] a_0 op_1 b_1 ... op_k b_k ?  x_1 op_1 b_1 = y_1 ;  ...  x_k op_k b_k = y_k ;  > y_k [EOS]
    '-------- prompt: P = 2k + 3 -----'  '---- step j: 6 tokens at P + 6 (j - 1) ----'  3 tokens

so a row holds 8k + 6 tokens, e.g. "3+4*2?3+4=7;7*2=4;>4" between BOS and EOS, the exact text
of `arithmetic.prompt_text` + `arithmetic.solution_text` for the gold solution. The answer after
'>' is the last written result. `step_spans` gives each step's [start, end) token span (its ';'
at end - 1: `step_end_positions`, where a PRM reads its step score), `result_positions` the
token of each y_j.

Step labels (`step_labels`), with "locally correct" = step j's left operand equals the
previous written result (a_0 for step 1) and its result is right given that left operand,
y_j = (x_j op_j b_j) mod p:
  - "first_error" (the default, PRM800K's convention): labels 1 up to the first step that is not
    locally correct, 0 there, and the steps after it are masked out (not labelled); the
    solution's quality is decided by its first error;
  - "prefix": 1 while every step so far is locally correct, 0 from the first error on, all
    steps labelled;
  - "local": each step's own local correctness, all steps labelled (after one wrong result that
    later steps follow consistently: 1, .., 1, 0, 1, .., 1).
They agree with `arithmetic.step_labels` (rules "prefix", "local") on the same text.

`sample_values` fills the results of the template (prompt, left operands, operations and
operands written by the format, results drawn from an LM one step at a time): a generator whose
errors are arithmetic errors only. `continue_values` does the same from a written prefix on
(the policy's Monte-Carlo completions of `alignax.tasks.step_labels`).

Everything random is a deterministic function of the numpy Generator (or jax key) passed in.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.tasks import arithmetic

OPS = arithmetic.OPS  # ("+", "-", "*"): op index 0, 1, 2
LABEL_RULES = ("first_error", "prefix", "local")
STEP_TOKENS = 6  # "x op b = y ;"
DIGIT0 = arithmetic.CHAR_TO_ID["0"]  # token id of digit d is DIGIT0 + d
OP_TOKENS = np.array([arithmetic.CHAR_TO_ID[o] for o in OPS], np.int32)


@dataclasses.dataclass(frozen=True)
class Chains:
    """N chains a_j = a_{j-1} op_j b_j mod p, j = 1..k (k may differ per row).

    Attributes:
      start: [N] int32 a_0 in [0, p).
      ops: [N, K] int32 op indices into OPS (0 in the padding columns j >= k).
      operands: [N, K] int32 b_j in [0, p) (0 in the padding columns).
      num_steps: [N] int32 k in [1, K].
      modulus: p in [2, 10] (one token per number).
    """

    start: np.ndarray
    ops: np.ndarray
    operands: np.ndarray
    num_steps: np.ndarray
    modulus: int = 10

    def __post_init__(self):
        n = np.shape(self.start)
        if len(n) != 1 or np.ndim(self.ops) != 2 or np.shape(self.ops)[0] != n[0]:
            raise ValueError(f"start must be [N] and ops [N, K], got {np.shape(self.start)} and "
                             f"{np.shape(self.ops)}")
        if np.shape(self.operands) != np.shape(self.ops) or np.shape(self.num_steps) != n:
            raise ValueError(f"operands must be {np.shape(self.ops)} and num_steps {n}, got "
                             f"{np.shape(self.operands)} and {np.shape(self.num_steps)}")
        if not 2 <= int(self.modulus) <= 10:
            raise ValueError(f"modulus must be in [2, 10] (one token per number), got "
                             f"{self.modulus}")
        k = np.asarray(self.num_steps)
        if k.size and (k.min() < 1 or k.max() > self.max_steps):
            raise ValueError(f"num_steps must be in [1, {self.max_steps}], got "
                             f"[{k.min()}, {k.max()}]")

    @property
    def size(self) -> int:
        """N."""
        return int(np.shape(self.start)[0])

    @property
    def max_steps(self) -> int:
        """K, the number of step columns."""
        return int(np.shape(self.ops)[1])

    def valid(self) -> np.ndarray:
        """[N, K] bool: the real steps (column j < k)."""
        return np.arange(self.max_steps)[None, :] < np.asarray(self.num_steps)[:, None]

    def take(self, rows) -> "Chains":
        """The chains of `rows` (indices or a boolean mask)."""
        return Chains(np.asarray(self.start)[rows], np.asarray(self.ops)[rows],
                      np.asarray(self.operands)[rows], np.asarray(self.num_steps)[rows],
                      self.modulus)

    def repeat(self, n: int) -> "Chains":
        """Every chain n times in a row (N n rows: chain i at rows i n .. i n + n - 1), e.g. to
        sample n solutions per problem."""
        return self.take(np.repeat(np.arange(self.size), int(n)))


def concatenate(parts: Sequence[Chains], max_steps: int | None = None) -> Chains:
    """The chains of `parts`, in order, padded to `max_steps` columns (default the widest)."""
    if not parts or len({c.modulus for c in parts}) != 1:
        raise ValueError("concatenate needs at least one Chains, all of one modulus")
    width = max(c.max_steps for c in parts) if max_steps is None else int(max_steps)
    parts = [pad_steps(c, width) for c in parts]
    return Chains(*(np.concatenate([getattr(c, f) for c in parts])
                    for f in ("start", "ops", "operands", "num_steps")), parts[0].modulus)


def pad_steps(chains: Chains, max_steps: int) -> Chains:
    """The same chains with K = `max_steps` step columns (>= every row's k)."""
    extra = int(max_steps) - chains.max_steps
    if extra < 0:
        raise ValueError(f"max_steps={max_steps} < the batch's {chains.max_steps} columns")
    pad = ((0, 0), (0, extra))
    return Chains(chains.start, np.pad(chains.ops, pad), np.pad(chains.operands, pad),
                  chains.num_steps, chains.modulus)


def sample_chains(n: int, *, rng: np.random.Generator, num_steps: int | tuple[int, int],
                  modulus: int = 10, ops: Sequence[str] = OPS,
                  max_steps: int | None = None) -> Chains:
    """n chains drawn from `rng`: k uniform in [lo, hi] (`num_steps` = (lo, hi) or one k),
    a_0 uniform in [0, p), each op uniform in `ops`, each b uniform in [1, p) (as
    `arithmetic.ArithmeticTask`). K = `max_steps` (default hi).
    """
    lo, hi = (num_steps, num_steps) if np.isscalar(num_steps) else tuple(num_steps)
    lo, hi = int(lo), int(hi)
    if not 1 <= lo <= hi:
        raise ValueError(f"num_steps must be k >= 1 or (lo, hi) with 1 <= lo <= hi, got "
                         f"{num_steps}")
    if not ops or any(o not in OPS for o in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS}, got {tuple(ops)}")
    width = hi if max_steps is None else int(max_steps)
    if width < hi:
        raise ValueError(f"max_steps={max_steps} < the largest k {hi}")
    n, p = int(n), int(modulus)
    k = rng.integers(lo, hi + 1, size=n).astype(np.int32)
    start = rng.integers(0, p, size=n).astype(np.int32)
    op_idx = np.array([OPS.index(o) for o in ops], np.int32)[rng.integers(0, len(ops),
                                                                         size=(n, width))]
    b = rng.integers(1, p, size=(n, width)).astype(np.int32)
    valid = np.arange(width)[None, :] < k[:, None]
    return Chains(start, np.where(valid, op_idx, 0).astype(np.int32),
                  np.where(valid, b, 0).astype(np.int32), k, p)


def from_problems(problems: Sequence[arithmetic.Problem], max_steps: int | None = None
                  ) -> Chains:
    """`arithmetic.Problem`s (one modulus <= 10) -> Chains."""
    if not problems or len({p.modulus for p in problems}) != 1:
        raise ValueError("from_problems needs at least one problem, all of one modulus")
    width = max(p.num_steps for p in problems) if max_steps is None else int(max_steps)
    n = len(problems)
    ops, operands = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
    for i, p in enumerate(problems):
        ops[i, :p.num_steps] = [OPS.index(o) for o in p.ops]
        operands[i, :p.num_steps] = p.operands
    return Chains(np.array([p.start for p in problems], np.int32), ops, operands,
                  np.array([p.num_steps for p in problems], np.int32), problems[0].modulus)


def to_problems(chains: Chains) -> list[arithmetic.Problem]:
    """Chains -> `arithmetic.Problem`s (for text, `arithmetic.step_labels`, ...)."""
    out = []
    for i in range(chains.size):
        k = int(chains.num_steps[i])
        out.append(arithmetic.Problem(chains.modulus, int(chains.start[i]),
                                      tuple(OPS[int(o)] for o in chains.ops[i, :k]),
                                      tuple(int(b) for b in chains.operands[i, :k])))
    return out


# ----------------------------------------------------------------------------- values


def apply_ops(x, op, b, modulus: int):
    """(x op b) mod p elementwise for op indices into OPS (numpy or jax arrays alike)."""
    xp = jnp if isinstance(x, jax.Array) or isinstance(b, jax.Array) else np
    return xp.where(op == 0, x + b, xp.where(op == 1, x - b, x * b)) % modulus


def reference_values(chains: Chains) -> np.ndarray:
    """The gold solution: [N, K] int32 a_1..a_k (0 in the padding columns)."""
    out = np.zeros(chains.ops.shape, np.int32)
    a = np.asarray(chains.start, np.int64)
    for j in range(chains.max_steps):
        a = apply_ops(a, chains.ops[:, j], chains.operands[:, j].astype(np.int64), chains.modulus)
        out[:, j] = a
    return np.where(chains.valid(), out, 0).astype(np.int32)


def answers(chains: Chains) -> np.ndarray:
    """[N] int32 gold answers a_k."""
    return final_values(chains, reference_values(chains))


def final_values(chains: Chains, values) -> np.ndarray:
    """[N] the last written result y_k of each solution `values` [N, K] (its answer)."""
    k = np.asarray(chains.num_steps)
    return np.asarray(values)[np.arange(chains.size), k - 1]


def outcome_labels(chains: Chains, values) -> np.ndarray:
    """[N] int32: 1 where the solution's answer equals the gold answer (the ORM's label)."""
    return (final_values(chains, values) == answers(chains)).astype(np.int32)


def consistent_lhs(chains: Chains, values) -> np.ndarray:
    """[N, K] the left operands of a consistent chain: x_1 = a_0, x_j = y_{j-1}."""
    values = np.asarray(values)
    lhs = np.concatenate([np.asarray(chains.start)[:, None], values[:, :-1]], axis=1)
    return np.where(chains.valid(), lhs, 0).astype(np.int32)


def _check_values(chains: Chains, values, name: str = "values") -> np.ndarray:
    values = np.asarray(values)
    if values.shape != chains.ops.shape:
        raise ValueError(f"{name} must be [N, K] = {chains.ops.shape}, got {values.shape}")
    return values.astype(np.int32)


def locally_correct(chains: Chains, values, lhs=None) -> np.ndarray:
    """[N, K] bool: step j writes the previous written result as its left operand (a_0 for
    j = 1) and the right result for it, y_j = (x_j op_j b_j) mod p (False in padding)."""
    values = _check_values(chains, values)
    lhs = consistent_lhs(chains, values) if lhs is None else _check_values(chains, lhs, "lhs")
    prev = consistent_lhs(chains, values)  # a_0, y_1, .., y_{k-1}
    ok = (lhs == prev) & (values == apply_ops(lhs, chains.ops, chains.operands, chains.modulus))
    return ok & chains.valid()


def first_error(chains: Chains, values, lhs=None) -> np.ndarray:
    """[N] int32 index (0-based) of the first step that is not locally correct; k if none."""
    bad = ~locally_correct(chains, values, lhs) & chains.valid()
    return np.where(bad.any(1), bad.argmax(1), chains.num_steps).astype(np.int32)


def step_labels(chains: Chains, values, lhs=None, *, rule: str = "first_error"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Gold step labels of candidate solutions (module docstring for the rules).

    Args:
      chains: the N problems.
      values: [N, K] the results each solution writes.
      lhs: optional [N, K] the left operands it writes (default: consistent, x_j = y_{j-1}).
      rule: "first_error" (default), "prefix" or "local".

    Returns:
      (labels [N, K] int32 in {0, 1}, mask [N, K] int32: 1 where a step is labelled).
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"rule must be one of {LABEL_RULES}, got {rule!r}")
    ok = locally_correct(chains, values, lhs)
    valid = chains.valid()
    j = np.arange(chains.max_steps)[None, :]
    fe = first_error(chains, values, lhs)[:, None]
    if rule == "local":
        labels, mask = ok, valid
    else:
        labels, mask = (j < fe) & valid, valid & ((j <= fe) if rule == "first_error" else True)
    return labels.astype(np.int32), mask.astype(np.int32)


def corrupt(chains: Chains, step, *, rng: np.random.Generator, consistent: bool = True,
            change_answer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Solutions that are gold up to step `step` and write a wrong result there.

    The wrong value is uniform among the p - 1 others. consistent=True: the later steps take
    it as their left operand and compute correctly from it (the answer is the last written
    result); with `change_answer` the wrong value is drawn among those whose propagated answer
    differs from the gold one (when one exists: with p = 10 an error can be erased, e.g. by
    "*5" then "*2"). consistent=False: the later steps keep the gold chain (their left operand
    is the gold a_{j-1}, not the written wrong value), so the step after the error is not
    locally correct either and the answer is gold unless the error is at the last step.
    Labels ("first_error"): 1, .., 1, 0 at `step`, masked after.

    Args:
      chains: the N problems.
      step: [N] (or one int) 0-based step of the error, in [0, k).
      rng: numpy Generator.
      consistent: see above.
      change_answer: see above (consistent only).

    Returns:
      (values [N, K] int32, lhs [N, K] int32) of the corrupted solutions.
    """
    n, width, p = chains.size, chains.max_steps, chains.modulus
    step = np.broadcast_to(np.asarray(step, np.int64), (n,))
    if np.any(step < 0) or np.any(step >= chains.num_steps):
        raise ValueError("step must be in [0, k) for every chain")
    gold = reference_values(chains)
    rows = np.arange(n)
    true = gold[rows, step]
    cand = np.arange(p)[None, :]  # [1, p] every value w
    wrong = cand != true[:, None]
    if consistent:
        # propagate each candidate w written at `step` through the later steps: [N, p] answers
        a = np.broadcast_to(cand, (n, p)).astype(np.int64)
        for j in range(width):
            later = (j > step) & (j < chains.num_steps)
            nxt = apply_ops(a, chains.ops[:, j:j + 1], chains.operands[:, j:j + 1].astype(np.int64),
                            p)
            a = np.where(later[:, None], nxt, a)
        allowed = wrong & (a != answers(chains)[:, None]) if change_answer else wrong
        allowed = np.where(allowed.any(1, keepdims=True), allowed, wrong)
    else:
        allowed = wrong
    # uniform among the allowed values: the argmax of uniform noise on them
    noise = np.where(allowed, rng.random((n, p)), -1.0)
    value = noise.argmax(1).astype(np.int32)
    values = gold.copy()
    values[rows, step] = value
    if consistent:
        a = value.astype(np.int64)
        for j in range(width):
            later = (j > step) & (j < chains.num_steps)
            a = np.where(later, apply_ops(a, chains.ops[:, j], chains.operands[:, j].astype(
                np.int64), p), a)
            values[:, j] = np.where(later, a, values[:, j])
        return values, consistent_lhs(chains, values)
    return values, consistent_lhs(chains, gold)


def difficulty(chains: Chains) -> np.ndarray:
    """[N] int32 difficulty = the number of steps k."""
    return np.asarray(chains.num_steps, np.int32)


# ----------------------------------------------------------------------------- tokens


def max_length(max_steps: int, *, with_prompt: bool = True) -> int:
    """Tokens of a row of `max_steps` steps: 8 K + 6 (6 K + 4 without the prompt)."""
    return (8 if with_prompt else 6) * int(max_steps) + (6 if with_prompt else 4)


def prompt_lengths(chains: Chains, *, with_prompt: bool = True) -> np.ndarray:
    """[N] P = 2k + 3 tokens of [BOS] + prompt (1 without the prompt: [BOS] only)."""
    k = np.asarray(chains.num_steps, np.int32)
    return 2 * k + 3 if with_prompt else np.ones_like(k)


def lengths(chains: Chains, *, with_prompt: bool = True) -> np.ndarray:
    """[N] tokens of a whole row: 8k + 6 ([BOS] prompt solution [EOS]), 6k + 4 without the
    prompt."""
    k = np.asarray(chains.num_steps, np.int32)
    return prompt_lengths(chains, with_prompt=with_prompt) + STEP_TOKENS * k + 3


def step_spans(chains: Chains, *, with_prompt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Token span [start, end) of each step in the `encode` layout: (start, end) [N, K] int32,
    -1 in the padding columns. Step j (0-based) is "x op b = y ;" at P + 6 j .. P + 6 j + 5
    (P = `prompt_lengths`)."""
    start = (prompt_lengths(chains, with_prompt=with_prompt)[:, None]
             + STEP_TOKENS * np.arange(chains.max_steps)[None, :])
    valid = chains.valid()
    return (np.where(valid, start, -1).astype(np.int32),
            np.where(valid, start + STEP_TOKENS, -1).astype(np.int32))


def step_end_positions(chains: Chains, *, with_prompt: bool = True) -> np.ndarray:
    """[N, K] int32 position of each step's ';' (-1 in padding): where a PRM reads its step
    score (the `reward_positions` of `alignax.models.transformer.ScalarRewardModel`)."""
    _, end = step_spans(chains, with_prompt=with_prompt)
    return np.where(end >= 0, end - 1, -1).astype(np.int32)


def result_positions(chains: Chains, *, with_prompt: bool = True) -> np.ndarray:
    """[N, K] int32 position of each step's result token y_j (-1 in padding)."""
    start, _ = step_spans(chains, with_prompt=with_prompt)
    return np.where(start >= 0, start + 4, -1).astype(np.int32)


def last_positions(chains: Chains, *, with_prompt: bool = True) -> np.ndarray:
    """[N] int32 position of the EOS (the last token; where an ORM reads its score)."""
    return lengths(chains, with_prompt=with_prompt) - 1


def encode(chains: Chains, values, lhs=None, *, length: int | None = None,
           with_prompt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of candidate solutions in the layout of the module docstring.

    Args:
      chains: the N problems.
      values: [N, K] results y_j written by each solution.
      lhs: optional [N, K] written left operands (default consistent).
      length: T (default `max_length(K, with_prompt=...)`); right-padded with PAD.
      with_prompt: False leaves the prompt out: [BOS] + solution + [EOS] (the solution
        restates every operation and operand, so it alone determines every label; the
        positions helpers take the same flag).

    Returns:
      (ids [N, T] int32, mask [N, T] bool: the real tokens).
    """
    if not with_prompt:
        full, _ = encode(chains, values, lhs)
        t = max_length(chains.max_steps, with_prompt=False) if length is None else int(length)
        n_tok = lengths(chains, with_prompt=False)
        if t < int(n_tok.max(initial=0)):
            raise ValueError(f"length={t} < the longest row's {int(n_tok.max())} tokens")
        # token i >= 1 of the short row is token P - 1 + i of the full row
        src = prompt_lengths(chains)[:, None] - 1 + np.arange(t)[None, :]
        mask = np.arange(t)[None, :] < n_tok[:, None]
        ids = np.take_along_axis(full, np.minimum(src, full.shape[1] - 1), axis=1)
        ids = np.where(mask, ids, arithmetic.PAD_ID).astype(np.int32)
        ids[:, 0] = arithmetic.BOS_ID
        return ids, mask
    values = _check_values(chains, values)
    lhs = consistent_lhs(chains, values) if lhs is None else _check_values(chains, lhs, "lhs")
    if np.any((values < 0) | (values >= chains.modulus) | (lhs < 0) | (lhs >= chains.modulus)):
        raise ValueError(f"values and lhs must be in [0, {chains.modulus})")
    n, width = chains.size, chains.max_steps
    t = max_length(width) if length is None else int(length)
    if t < int(lengths(chains).max(initial=0)):
        raise ValueError(f"length={t} < the longest row's {int(lengths(chains).max())} tokens")
    ids = np.full((n, t), arithmetic.PAD_ID, np.int32)
    rows = np.arange(n)
    k = np.asarray(chains.num_steps)
    ids[:, 0] = arithmetic.BOS_ID
    ids[:, 1] = DIGIT0 + chains.start
    r, j = np.nonzero(chains.valid())
    ids[r, 2 + 2 * j] = OP_TOKENS[chains.ops[r, j]]
    ids[r, 3 + 2 * j] = DIGIT0 + chains.operands[r, j]
    p = prompt_lengths(chains)
    ids[rows, p - 1] = arithmetic.QUERY_ID
    s = p[r] + STEP_TOKENS * j
    ids[r, s] = DIGIT0 + lhs[r, j]
    ids[r, s + 1] = OP_TOKENS[chains.ops[r, j]]
    ids[r, s + 2] = DIGIT0 + chains.operands[r, j]
    ids[r, s + 3] = arithmetic.CHAR_TO_ID[arithmetic.EQUALS]
    ids[r, s + 4] = DIGIT0 + values[r, j]
    ids[r, s + 5] = arithmetic.SEP_ID
    end = p + STEP_TOKENS * k
    ids[rows, end] = arithmetic.ANSWER_ID
    ids[rows, end + 1] = DIGIT0 + final_values(chains, values)
    ids[rows, end + 2] = arithmetic.EOS_ID
    mask = np.arange(t)[None, :] < lengths(chains)[:, None]
    return ids, mask


def gold_rows(chains: Chains) -> dict[str, np.ndarray]:
    """Gold solutions as SFT rows: ids, mask [N, T] (`encode` of the reference values, prompt
    included) and the result positions `rpos` [N, K] (-1 in padding)."""
    ids, mask = encode(chains, reference_values(chains))
    return {"ids": ids, "mask": mask, "rpos": result_positions(chains)}


def result_nll(apply_fn: Callable, params, rows: Mapping[str, jax.Array]) -> jax.Array:
    """Mean negative log-likelihood of the result tokens y_j of rows {ids, mask, rpos}
    (`gold_rows`, or any rows with `result_positions`): the SFT loss of a generator that writes
    the results into the chain's template,

        -(1 / |J|) sum_{(b, j) in J} log pi(ids[b, rpos_bj] | ids[b, < rpos_bj]),

    J the valid (b, j) (rpos >= 0). `apply_fn(params, ids, mask) -> logits [B, T, V]`.
    """
    logp = jax.nn.log_softmax(apply_fn(params, rows["ids"], rows["mask"]), axis=-1)
    pos = jnp.maximum(rows["rpos"], 0)
    target = jnp.take_along_axis(rows["ids"], pos, axis=1)
    lp = jnp.take_along_axis(jnp.take_along_axis(logp, (pos - 1)[..., None], axis=1),
                             target[..., None], axis=2)[..., 0]
    m = (rows["rpos"] >= 0).astype(jnp.float32)
    return -(lp * m).sum() / jnp.maximum(m.sum(), 1.0)


def prompt_ids(chains: Chains, *, length: int | None = None, pad_side: str = "left"
               ) -> tuple[np.ndarray, np.ndarray]:
    """[BOS] + prompt of each chain: (ids [N, P] int32, mask [N, P] bool), left-padded by
    default (for free generation with `alignax.sampling`); equals `arithmetic.prompt_ids`."""
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    ids, _ = encode(chains, np.zeros(chains.ops.shape, np.int32))
    p = prompt_lengths(chains)
    t = int(p.max(initial=0)) if length is None else int(length)
    if t < int(p.max(initial=0)):
        raise ValueError(f"length={t} < the longest prompt's {int(p.max())} tokens")
    out = np.full((chains.size, t), arithmetic.PAD_ID, np.int32)
    mask = np.zeros((chains.size, t), bool)
    for i, n in enumerate(p):
        sl = slice(0, n) if pad_side == "right" else slice(t - n, t)
        out[i, sl], mask[i, sl] = ids[i, :n], True
    return out, mask


def decode_values(chains: Chains, ids, *, with_prompt: bool = True) -> np.ndarray:
    """[N, K] the results written at the result positions of token rows `ids` [N, T] (digit
    tokens; -1 where the token is not a digit; 0 in padding)."""
    ids = np.asarray(ids)
    pos = result_positions(chains, with_prompt=with_prompt)
    tok = ids[np.arange(chains.size)[:, None], np.maximum(pos, 0)] - DIGIT0
    tok = np.where((tok >= 0) & (tok < 10), tok, -1)
    return np.where(pos >= 0, tok, 0).astype(np.int32)


# ----------------------------------------------------------------------------- sampling


def sample_values(logits_fn: Callable[[jax.Array], jax.Array], ids, result_pos, num_steps,
                  key: jax.Array, *, modulus: int, temperature=1.0
                  ) -> tuple[jax.Array, jax.Array]:
    """Fills the results of template rows, one step at a time (jit- and vmap-able).

    Step j's result is drawn from the LM's next-token distribution after "x_j op_j b_j =",
    restricted to the p digit tokens: y_j ~ softmax(l[DIGIT0 : DIGIT0 + p] / temperature), or
    its argmax where the temperature is 0; it is written at its position, and as the next step's
    left operand (two tokens on), or after '>' as the answer when j is the last step. The
    other tokens are the template's (`encode(chains, zeros)`), so the solution is a consistent
    chain whose only possible errors are wrong results.

    Args:
      logits_fn: `ids [B, T] -> logits [B, T, V]` (a causal LM with its params bound; the
        tokens after a position do not change its logits).
      ids: [B, T] int32 template rows (`encode(chains, np.zeros(...))`).
      result_pos: [B, K] int32 (`result_positions`, -1 in padding).
      num_steps: [B] int32 k.
      key: PRNG key.
      modulus: p <= 10.
      temperature: >= 0 (0: greedy), one for all rows or [B] per row (e.g. greedy rows
        beside sampled ones in one program).

    Returns:
      (values [B, K] int32 (0 in padding), logps [B, K] float32: log-prob of each written
      result under the untempered digit-restricted distribution (0 in padding)).
    """
    num_steps = jnp.asarray(num_steps, jnp.int32)
    return continue_values(logits_fn, ids, result_pos, num_steps, jnp.zeros_like(num_steps),
                           key, modulus=modulus, temperature=temperature)


def continue_values(logits_fn: Callable[[jax.Array], jax.Array], ids, result_pos, num_steps,
                    start_step, key: jax.Array, *, modulus: int, temperature=1.0
                    ) -> tuple[jax.Array, jax.Array]:
    """Completes written solution prefixes: `sample_values` from step `start_step` on.

    Row b keeps the results of its steps j < L_b = start_step[b] as written in `ids` (a
    prefix y_1..y_L, with the left operand of step L + 1 written as y_L: `encode(chains,
    values, lhs)` with x_{L+1} = y_L) and draws the results of steps L_b + 1..k from the LM as
    `sample_values` does: y_j ~ softmax(l[DIGIT0 : DIGIT0 + p] / temperature) after
    "x_j op_j b_j =", written at its position and as the next left operand (or after '>' as the
    answer at the last step). The draw of step j uses the key `fold_in(key, j)`, so with
    start_step = 0 this is `sample_values` draw for draw. The Monte-Carlo completion of a prefix
    by the policy (Math-Shepherd: Wang et al. 2024, arXiv 2312.08935), one program for every
    prefix length.

    Args:
      logits_fn: `ids [B, T] -> logits [B, T, V]` (a causal LM with its params bound).
      ids: [B, T] int32 rows holding each prefix (`encode`; the later results are ignored).
      result_pos: [B, K] int32 (`result_positions`, -1 in padding).
      num_steps: [B] int32 k.
      start_step: [B] int32 L in [0, k]: the steps kept (0: the whole solution is drawn).
      key: PRNG key.
      modulus: p <= 10.
      temperature: >= 0 (0: greedy), scalar or [B].

    Returns:
      (values [B, K] int32: the kept results, then the drawn ones (0 in padding), logps [B, K]
      float32: log-prob of each drawn result under the untempered digit-restricted
      distribution (0 for kept steps and padding)).
    """
    ids = jnp.asarray(ids, jnp.int32)
    result_pos = jnp.asarray(result_pos, jnp.int32)
    num_steps = jnp.asarray(num_steps, jnp.int32)
    start_step = jnp.asarray(start_step, jnp.int32)
    b, width = result_pos.shape
    rows = jnp.arange(b)
    temp = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (b,))
    written = ids[rows[:, None], jnp.maximum(result_pos, 0)] - DIGIT0
    kept = (jnp.arange(width)[None, :] < jnp.minimum(start_step, num_steps)[:, None])
    values0 = jnp.where(kept, written, 0).astype(jnp.int32)

    def body(j, carry):
        ids, values, logps = carry
        pos = result_pos[:, j]
        live = (j < num_steps) & (j >= start_step)
        at = jnp.maximum(pos - 1, 0)
        logits = logits_fn(ids)[rows, at, DIGIT0:DIGIT0 + modulus].astype(jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        drawn = jax.random.categorical(jax.random.fold_in(key, j),
                                       logits / jnp.where(temp > 0, temp, 1.0)[:, None])
        y = jnp.where(temp > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        tok = DIGIT0 + y
        keep = jnp.where(live, tok, ids[rows, jnp.maximum(pos, 0)])
        ids = ids.at[rows, jnp.maximum(pos, 0)].set(keep)
        nxt = jnp.where(j == num_steps - 1, pos + 3, pos + 2)  # answer, or next x
        ids = ids.at[rows, jnp.where(live, nxt, 0)].set(jnp.where(live, tok, ids[rows, 0]))
        values = values.at[:, j].set(jnp.where(live, y, values[:, j]))
        logps = logps.at[:, j].set(jnp.where(live, jnp.take_along_axis(
            logp, y[:, None], axis=1)[:, 0], 0.0))
        return ids, values, logps

    init = (ids, values0, jnp.zeros((b, width), jnp.float32))
    _, values, logps = jax.lax.fori_loop(0, width, body, init)
    return values, logps
