"""Verifiable multi-step modular arithmetic: a testbed with exact answers and per-step gold labels.

A problem is a start value a_0 and k operations (op_i, b_i), op_i in {+, -, *}, all mod p:

    a_i = (a_{i-1} op_i b_i) mod p,   i = 1..k,   answer = a_k.

The operations are applied strictly LEFT TO RIGHT, one at a time, each reduced mod p; there is no
operator precedence ("3+4*2" is (3+4)*2, not 3+(4*2)). Subtraction is reduced into [0, p) like
Python's `%` (3-4 mod 10 = 9). Numbers are written in decimal without leading zeros, so with the
default p = 10 every number is one digit; a larger p gives multi-digit numbers (the "digits"
difficulty, `digits(p) = len(str(p - 1))`). Difficulty = (number of steps k, digits).

Text format (every character is one token):

    prompt:    "3+4*2-1?"               a_0, then op_i b_i for each step, then the query mark '?'
    solution:  "3+4=7;7*2=4;4-1=3;>3"   one "a_{i-1} op_i b_i = a_i" per step, each terminated by
                                        the step separator ';', then the answer marker '>' and a_k

A model sequence is `[BOS] + prompt + solution + [EOS]`; `prompt_ids` gives `[BOS] + prompt` and
`solution_ids` gives `solution + [EOS]`.

Vocabulary: PAD_ID = 0, BOS_ID = 1, EOS_ID = 2 (reserved, never produced by `encode` of plain
text), then the digits '0'..'9' (ids 3..12) and '+', '-', '*', '=', ';', '?', '>' (ids 13..19).
`decode` writes the special ids as "<pad>", "<bos>", "<eos>" and `encode` reads them back.

Reading a response (`extract_answer`, `step_labels`, `step_end_positions`): tokens after the first
EOS are ignored (garbage after EOS is harmless), PAD tokens are skipped wherever they are, and if
the sequence contains a '?' (it includes the prompt) only the tokens after the last '?' are read.
The answer is the canonical decimal number after the single '>' that must end the response;
anything else (no '>', two '>', nothing or a non-digit after it, a leading zero) is malformed.

Everything random is a deterministic function of `ArithmeticTask.seed` and the seed (or the numpy
Generator) passed to a method.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence, Union

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
NUM_SPECIAL = 3

SPECIAL_TOKENS = {PAD_ID: "<pad>", BOS_ID: "<bos>", EOS_ID: "<eos>"}
OPS = ("+", "-", "*")
STEP_SEP = ";"
QUERY = "?"
ANSWER_MARK = ">"
EQUALS = "="

CHARS = "0123456789" + "".join(OPS) + EQUALS + STEP_SEP + QUERY + ANSWER_MARK
CHAR_TO_ID = {c: NUM_SPECIAL + i for i, c in enumerate(CHARS)}
ID_TO_CHAR = {i: c for c, i in CHAR_TO_ID.items()}
VOCAB_SIZE = NUM_SPECIAL + len(CHARS)

SEP_ID = CHAR_TO_ID[STEP_SEP]
QUERY_ID = CHAR_TO_ID[QUERY]
ANSWER_ID = CHAR_TO_ID[ANSWER_MARK]

RULES = ("prefix", "local")

_NUM = r"(0|[1-9][0-9]*)"
_STEP_RE = re.compile(_NUM + r"([+\-*])" + _NUM + EQUALS + _NUM)
_ANSWER_RE = re.compile(_NUM)

Response = Union[str, Sequence[int], np.ndarray]


# ----------------------------------------------------------------------------- vocabulary


def encode(text: str) -> list[int]:
    """Text -> token ids, one id per character; "<pad>", "<bos>", "<eos>" are the special ids.

    Raises ValueError on a character outside the vocabulary.
    """
    out, i = [], 0
    specials = {s: i for i, s in SPECIAL_TOKENS.items()}
    while i < len(text):
        if text[i] == "<":
            for s, sid in specials.items():
                if text.startswith(s, i):
                    out.append(sid)
                    i += len(s)
                    break
            else:
                raise ValueError(f"unknown token at position {i} of {text!r}")
            continue
        if text[i] not in CHAR_TO_ID:
            raise ValueError(f"character {text[i]!r} at position {i} of {text!r} not in vocab")
        out.append(CHAR_TO_ID[text[i]])
        i += 1
    return out


def decode(ids: Sequence[int] | np.ndarray, *, skip_special: bool = False) -> str:
    """Token ids -> text (inverse of `encode`); special ids as "<pad>" etc. or dropped.

    Raises ValueError on an id outside [0, VOCAB_SIZE).
    """
    out = []
    for t in np.asarray(ids, np.int64).reshape(-1).tolist():
        if t in SPECIAL_TOKENS:
            if not skip_special:
                out.append(SPECIAL_TOKENS[t])
        elif t in ID_TO_CHAR:
            out.append(ID_TO_CHAR[t])
        else:
            raise ValueError(f"id {t} outside the vocabulary [0, {VOCAB_SIZE})")
    return "".join(out)


def pad_sequences(seqs: Sequence[Sequence[int]], *, max_len: int | None = None,
                  pad_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Pads id lists with PAD_ID to [N, max_len] int32 ids and an int32 mask (1 on real tokens).

    `max_len` None = the longest sequence; a longer sequence raises ValueError (never truncated).
    `pad_side` "right" puts the tokens first (training); "left" puts them last (generation).
    """
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    lens = [len(s) for s in seqs]
    longest = max(lens, default=0)
    if max_len is None:
        max_len = longest
    if longest > max_len:
        raise ValueError(f"a sequence of {longest} tokens exceeds max_len={max_len}")
    ids = np.full((len(seqs), max_len), PAD_ID, np.int32)
    mask = np.zeros((len(seqs), max_len), np.int32)
    for i, (s, n) in enumerate(zip(seqs, lens)):
        if n == 0:
            continue
        sl = slice(0, n) if pad_side == "right" else slice(max_len - n, max_len)
        ids[i, sl] = np.asarray(s, np.int32)
        mask[i, sl] = 1
    return ids, mask


# ----------------------------------------------------------------------------- problems


def apply_op(a: int, op: str, b: int, modulus: int) -> int:
    """`a op b` modulo `modulus` for op in "+", "-", "*"."""
    if op == "+":
        return (a + b) % modulus
    if op == "-":
        return (a - b) % modulus
    if op == "*":
        return (a * b) % modulus
    raise ValueError(f"unknown op {op!r}")


def num_digits(modulus: int) -> int:
    """Digits of the largest number mod `modulus`: the "digits" difficulty."""
    return len(str(modulus - 1))


@dataclasses.dataclass(frozen=True)
class Problem:
    """One chain a_i = a_{i-1} op_i b_i mod p (see the module docstring).

    Attributes:
      modulus: p >= 2.
      start: a_0 in [0, p).
      ops: op_1..op_k, each in OPS.
      operands: b_1..b_k in [0, p).
    """

    modulus: int
    start: int
    ops: tuple[str, ...]
    operands: tuple[int, ...]

    def __post_init__(self):
        if len(self.ops) != len(self.operands):
            raise ValueError("ops and operands differ in length")
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")
        if any(op not in OPS for op in self.ops):
            raise ValueError(f"ops must be in {OPS}, got {self.ops}")

    @property
    def num_steps(self) -> int:
        return len(self.ops)

    @property
    def digits(self) -> int:
        return num_digits(self.modulus)

    @property
    def results(self) -> tuple[int, ...]:
        """a_1..a_k."""
        out, a = [], self.start
        for op, b in zip(self.ops, self.operands):
            a = apply_op(a, op, b, self.modulus)
            out.append(a)
        return tuple(out)

    @property
    def answer(self) -> int:
        """a_k (a_0 for a problem of zero steps)."""
        r = self.results
        return r[-1] if r else self.start


def prompt_text(problem: Problem) -> str:
    """Prompt text, e.g. "3+4*2-1?": a_0, then op_i b_i for each step, then '?'."""
    return str(problem.start) + "".join(f"{op}{b}" for op, b in
                                        zip(problem.ops, problem.operands)) + QUERY


def _solution_from_chain(lhs: Sequence[int], problem: Problem, res: Sequence[int]) -> str:
    steps = [f"{a}{op}{b}{EQUALS}{r}{STEP_SEP}"
             for a, op, b, r in zip(lhs, problem.ops, problem.operands, res)]
    final = res[-1] if len(res) else problem.start
    return "".join(steps) + f"{ANSWER_MARK}{final}"


def solution_text(problem: Problem) -> str:
    """Solution text, e.g. "3+4=7;7*2=4;4-1=3;>3": "a_{i-1} op_i b_i = a_i;" per step, '>' a_k.

    No EOS (`solution_ids` appends it).
    """
    res = problem.results
    return _solution_from_chain((problem.start,) + res[:-1], problem, res)


def prompt_ids(problems: Sequence[Problem], *, max_len: int | None = None,
               pad_side: str = "left", add_bos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`[BOS] + encode(prompt_text)` of each problem -> ids [N, Lp] int32, mask [N, Lp] int32.

    Left-padded by default (ready for generation: the last column is every prompt's last token).
    """
    bos = [BOS_ID] if add_bos else []
    return pad_sequences([bos + encode(prompt_text(p)) for p in problems], max_len=max_len,
                         pad_side=pad_side)


def solution_ids(problems: Sequence[Problem], *, max_len: int | None = None,
                 pad_side: str = "right", add_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`encode(solution_text) + [EOS]` of each problem -> ids [N, Ls] int32, mask [N, Ls] int32."""
    eos = [EOS_ID] if add_eos else []
    return pad_sequences([encode(solution_text(p)) + eos for p in problems], max_len=max_len,
                         pad_side=pad_side)


def sft_examples(problems: Sequence[Problem], *, max_len: int | None = None
                 ) -> list[dict[str, np.ndarray]]:
    """`[BOS] + prompt + solution + [EOS]`, right-padded, in the SFT record format.

    Each example: `input_ids` [T] int32, `mask` [T] int32 (real tokens), `loss_mask` [T] int32
    (the solution tokens and the EOS: the targets).
    """
    prompts = [[BOS_ID] + encode(prompt_text(p)) for p in problems]
    seqs = [q + encode(solution_text(p)) + [EOS_ID] for q, p in zip(prompts, problems)]
    ids, mask = pad_sequences(seqs, max_len=max_len, pad_side="right")
    loss_mask = mask.copy()
    for i, q in enumerate(prompts):
        loss_mask[i, :len(q)] = 0
    return [{"input_ids": ids[i], "mask": mask[i], "loss_mask": loss_mask[i]}
            for i in range(len(problems))]


# ----------------------------------------------------------------------------- reading responses


def _to_ids(response: Response) -> list[int]:
    if isinstance(response, str):
        return encode(response)
    arr = np.asarray(response, np.int64)
    if arr.ndim != 1:
        raise ValueError(f"expected one sequence of ids, got shape {arr.shape}")
    return arr.tolist()


def _response_tokens(ids: Sequence[int]) -> list[tuple[int, int]]:
    """(position, id) of the read tokens: before the first EOS, after the last '?', no PAD."""
    ids = list(ids)
    if EOS_ID in ids:
        ids = ids[:ids.index(EOS_ID)]
    start = len(ids) - ids[::-1].index(QUERY_ID) if QUERY_ID in ids else 0
    return [(i, t) for i, t in enumerate(ids) if i >= start and t != PAD_ID]


def _chars(ids: Sequence[int]) -> str | None:
    """Plain-character text of ids, None if any id is special or out of the vocabulary."""
    if any(t not in ID_TO_CHAR for t in ids):
        return None
    return "".join(ID_TO_CHAR[t] for t in ids)


def extract_answer(response: Response, *, require_eos: bool = False) -> int | None:
    """The final answer of a response (text or ids), None when malformed.

    Well formed = (after dropping everything from the first EOS on, PAD tokens, and anything up
    to the last '?') exactly one '>' followed by a canonical decimal number that ends the
    response. What precedes '>' is not checked. `require_eos`: also None without an EOS (a
    truncated generation).
    """
    try:
        ids = _to_ids(response)
    except ValueError:
        return None
    if require_eos and EOS_ID not in ids:
        return None
    toks = [t for _, t in _response_tokens(ids)]
    if toks.count(ANSWER_ID) != 1:
        return None
    text = _chars(toks[toks.index(ANSWER_ID) + 1:])
    if text is None or not _ANSWER_RE.fullmatch(text):
        return None
    return int(text)


def is_correct(problem: Problem, response: Response, *, require_eos: bool = False) -> bool:
    """Exact match of the response's final answer with a_k (malformed = wrong)."""
    return extract_answer(response, require_eos=require_eos) == problem.answer


def exact_match_reward(problems: Sequence[Problem],
                       responses: np.ndarray | Sequence[Response], *,
                       require_eos: bool = False) -> np.ndarray:
    """1.0 where the response's final answer equals the problem's answer, else 0.0: [N] float32.

    `responses`: generated ids [N, L] (the prompt may be included; any padding), or a sequence of
    id lists or strings.
    """
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
    return np.array([is_correct(p, r, require_eos=require_eos)
                     for p, r in zip(problems, responses)], np.float32)


def _segments(ids: Sequence[int]) -> list[tuple[int, list[int]]]:
    """(end position, token ids) of each written step: the tokens up to each ';' (the ';' is the
    end), then a last non-empty unterminated run before '>' / the end (its last token is the end).
    """
    out, cur = [], []
    for pos, t in _response_tokens(ids):
        if t == ANSWER_ID:
            break
        if t == SEP_ID:
            out.append((pos, [x for _, x in cur]))
            cur = []
        else:
            cur.append((pos, t))
    if cur:
        out.append((cur[-1][0], [x for _, x in cur]))
    return out


def step_end_positions(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Token positions (indices into `ids`) where each written step ends: [S] int32.

    The end of a step is its ';' (or its last token if the step is not terminated before the '>'
    or the end); one entry per label of `step_labels`. A PRM reads its step score there.
    """
    return np.array([e for e, _ in _segments(_to_ids(ids))], np.int32)


def step_labels(problem: Problem, response: Response, *, rule: str = "prefix") -> list[int]:
    """Gold 1/0 label of every written step of a response (text or ids): list of S ints.

    A step "x op b = y" is LOCALLY correct iff it is well formed (canonical numbers), op and b are
    the problem's i-th operation (i = its 1-based index; a step beyond k is wrong), its left
    operand x equals the previous written step's result (a_0 for step 1; a malformed previous
    step has no result, so its successor is wrong) and y == (x op b) mod p.

    rule="local": label = locally correct. After one wrong result followed by steps computed
      consistently from it, the labels are 1,..,1,0,1,..,1.
    rule="prefix": label = this step and every step before it are locally correct (equivalently
      the chain so far is the true one); 0 from the first error on: 1,..,1,0,0,..,0.

    Steps are delimited as in `step_end_positions`; missing steps get no label. Raises
    ValueError on text outside the vocabulary.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    labels, prev, ok_so_far = [], problem.start, True
    for i, (_, toks) in enumerate(_segments(_to_ids(response))):
        text = _chars(toks)
        m = _STEP_RE.fullmatch(text) if text is not None else None
        good = False
        if m is None:
            prev = None
        else:
            x, op, b, y = int(m[1]), m[2], int(m[3]), int(m[4])
            good = (i < problem.num_steps and op == problem.ops[i] and b == problem.operands[i]
                    and prev is not None and x == prev and y == apply_op(x, op, b, problem.modulus))
            prev = y
        ok_so_far = ok_so_far and good
        labels.append(int(good if rule == "local" else ok_so_far))
    return labels


def prm_targets(problems: Sequence[Problem], responses: np.ndarray | Sequence[Sequence[int]], *,
                rule: str = "prefix", max_steps: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched `step_end_positions` + `step_labels` for PRM training.

    Returns positions [N, S] int32 (0 where padded), labels [N, S] int32, mask [N, S] int32 (1 on
    real steps); S = `max_steps` or the most steps written (extra steps are dropped).
    """
    pos = [step_end_positions(r) for r in responses]
    lab = [step_labels(p, r, rule=rule) for p, r in zip(problems, responses)]
    s = max((len(x) for x in pos), default=0) if max_steps is None else max_steps
    out_pos = np.zeros((len(pos), s), np.int32)
    out_lab = np.zeros((len(pos), s), np.int32)
    mask = np.zeros((len(pos), s), np.int32)
    for i, (p, lb) in enumerate(zip(pos, lab)):
        n = min(len(p), s)
        out_pos[i, :n], out_lab[i, :n], mask[i, :n] = p[:n], lb[:n], 1
    return out_pos, out_lab, mask


# ----------------------------------------------------------------------------- corruption


def _propagate(problem: Problem, step: int, wrong: int) -> tuple[list[int], list[int]]:
    """Left operands and results when step `step` writes `wrong` and later steps follow it."""
    res = list(problem.results)
    lhs = [problem.start] + res[:-1]
    res[step] = wrong
    for j in range(step + 1, problem.num_steps):
        lhs[j] = res[j - 1]
        res[j] = apply_op(lhs[j], problem.ops[j], problem.operands[j], problem.modulus)
    return lhs, res


def corruptible_steps(problem: Problem) -> list[int]:
    """0-based steps where some wrong result, followed consistently, changes the final answer.

    The last step always qualifies; with a prime modulus every step does (x -> x*b is then a
    bijection for b != 0). With p = 10 an error can be erased, e.g. by "*5" then "*2".
    """
    out = []
    for s in range(problem.num_steps):
        true = problem.results[s]
        if any(_propagate(problem, s, w)[1][-1] != problem.answer
               for w in range(problem.modulus) if w != true):
            out.append(s)
    return out


def corrupt_solution(problem: Problem, *, rng: np.random.Generator, step: int | None = None,
                     continue_consistently: bool = True) -> tuple[str, int]:
    """A solution whose step `step` (0-based) writes a wrong result: (text, first_error_step).

    The error: step `step` writes y != a_step (uniform among the admissible wrong values); the
    earlier steps are the true ones.

    continue_consistently=True: later steps take the wrong value as their left operand and are
      computed correctly from it, and the answer is the last written result. The wrong value is
      chosen so that the final answer is wrong; `step` None draws uniformly from
      `corruptible_steps` (a given `step` outside it raises ValueError). Labels: "local"
      1,..,1,0,1,..,1; "prefix" 1,..,1,0,..,0.
    continue_consistently=False: later steps ignore the error and continue the true chain (their
      left operands are the true a_{i-1}), so the step after the error has a left operand that is
      not the previous written result. Labels: "local" 1,..,1,0,0,1,..,1 (one 0 if the error is
      the last step); "prefix" 1,..,1,0,..,0. The final answer is then the TRUE answer unless the
      error is at the last step ("right answer, wrong reasoning").
    """
    k = problem.num_steps
    if k == 0:
        raise ValueError("a problem of zero steps has no step to corrupt")
    if continue_consistently:
        allowed = corruptible_steps(problem)
    else:
        allowed = list(range(k))
    if step is None:
        step = int(allowed[rng.integers(len(allowed))])
    elif not 0 <= step < k:
        raise ValueError(f"step must be in [0, {k}), got {step}")
    elif step not in allowed:
        raise ValueError(f"no wrong result at step {step} changes the final answer of {problem}")
    true = problem.results[step]
    candidates = [w for w in range(problem.modulus) if w != true]
    if continue_consistently:
        candidates = [w for w in candidates
                      if _propagate(problem, step, w)[1][-1] != problem.answer]
    wrong = int(candidates[rng.integers(len(candidates))])
    if continue_consistently:
        lhs, res = _propagate(problem, step, wrong)
    else:
        res = list(problem.results)
        lhs = [problem.start] + res[:-1]
        res[step] = wrong
    return _solution_from_chain(lhs, problem, res), step


# ----------------------------------------------------------------------------- difficulty


def difficulty(problem: Problem) -> tuple[int, int]:
    """(number of steps, digits): the two difficulty axes."""
    return problem.num_steps, problem.digits


def difficulty_bucket(problems: Sequence[Problem], boundaries: Sequence[int]) -> np.ndarray:
    """Bucket of each problem by its number of steps: [N] int32.

    Bucket j holds boundaries[j-1] < k <= boundaries[j] (ascending `boundaries`); bucket 0 is the
    easiest, len(boundaries) the hardest. E.g. boundaries=(2, 4): k <= 2 -> 0, 3..4 -> 1, >= 5 -> 2.
    """
    b = np.asarray(boundaries)
    if np.any(np.diff(b) <= 0):
        raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
    k = np.array([p.num_steps for p in problems], np.int64)
    return np.searchsorted(b, k, side="left").astype(np.int32)


def easy_hard_split(problems: Sequence[Problem], *, max_easy_steps: int
                    ) -> tuple[list[Problem], list[Problem]]:
    """(easy, hard): problems with at most / more than `max_easy_steps` steps, order kept."""
    easy = [p for p in problems if p.num_steps <= max_easy_steps]
    hard = [p for p in problems if p.num_steps > max_easy_steps]
    return easy, hard


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """A distribution over modular-arithmetic chains.

    Attributes:
      modulus: p >= 2 (10: one-digit numbers; 100: up to two digits; ...).
      min_steps, max_steps: the number of steps k is uniform in [min_steps, max_steps].
      ops: the operations drawn (uniformly, per step).
      seed: seed of the task; every draw depends on it and on the per-call seed.
    Operands b are uniform in [1, p) (no zero operand); a_0 is uniform in [0, p).
    """

    modulus: int = 10
    min_steps: int = 1
    max_steps: int = 4
    ops: tuple[str, ...] = OPS
    seed: int = 0

    def __post_init__(self):
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, "
                             f"{self.max_steps}")
        if not self.ops or any(op not in OPS for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {self.ops}")

    @property
    def digits(self) -> int:
        return num_digits(self.modulus)

    def max_prompt_len(self, num_steps: int | None = None) -> int:
        """Upper bound of `prompt_ids` lengths (with BOS) for `num_steps` (default max_steps)."""
        k = self.max_steps if num_steps is None else num_steps
        return 1 + self.digits + k * (1 + self.digits) + 1

    def max_solution_len(self, num_steps: int | None = None) -> int:
        """Upper bound of `solution_ids` lengths (with EOS) for `num_steps` (default max_steps)."""
        k = self.max_steps if num_steps is None else num_steps
        return k * (3 * self.digits + 3) + 1 + self.digits + 1

    def rng(self, seed: int = 0) -> np.random.Generator:
        """The Generator of this task for a per-call `seed`."""
        return np.random.default_rng([self.seed, seed, 11])

    def sample_problems(self, n: int, *, seed: int | None = None,
                        rng: np.random.Generator | None = None,
                        num_steps: int | None = None) -> list[Problem]:
        """n problems drawn from `rng`, or from `self.rng(seed)` (seed default 0), not both.

        `num_steps` fixes k for all of them (it may lie outside [min_steps, max_steps], e.g. for
        harder held-out problems); None draws k uniformly in [min_steps, max_steps].
        """
        if rng is not None and seed is not None:
            raise ValueError("pass seed or rng, not both")
        if rng is None:
            rng = self.rng(0 if seed is None else seed)
        if num_steps is not None and num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        p = self.modulus
        out = []
        for _ in range(n):
            k = (int(rng.integers(self.min_steps, self.max_steps + 1)) if num_steps is None
                 else num_steps)
            start = int(rng.integers(0, p))
            ops = tuple(self.ops[int(i)] for i in rng.integers(0, len(self.ops), size=k))
            operands = tuple(int(b) for b in rng.integers(1, p, size=k))
            out.append(Problem(p, start, ops, operands))
        return out
