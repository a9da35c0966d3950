"""Rule and metric rewards on token ids: exact match, format, length penalties, BLEU, cosine.

Responses are `[N, R]` id arrays with a `[N, R]` mask of valid tokens (numpy or jax); every
function returns `[N]` float32 rewards.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def exact_match(answers, targets) -> np.ndarray:
    """1 where the extracted answer equals the target, 0 otherwise (None never matches).

    `answers`: a sequence of parsed answers (e.g. `alignax.tasks.arithmetic.extract_answer` of
    each response); `targets`: the gold answers. -> [N] float32.
    """
    if len(answers) != len(targets):
        raise ValueError(f"{len(answers)} answers for {len(targets)} targets")
    return np.array([float(a is not None and a == t) for a, t in zip(answers, targets)],
                    np.float32)


def verifier_reward(responses, verify: Callable[[int, np.ndarray], bool]) -> np.ndarray:
    """`verify(i, response_ids)` -> bool per row (unit tests, checkers, solvers). -> [N]."""
    return np.array([float(bool(verify(i, r))) for i, r in enumerate(np.asarray(responses))],
                    np.float32)


def contains_tokens(responses, mask, tokens: Sequence[int], *, mode: str = "any") -> jax.Array:
    """Format reward: 1 if the valid part holds any / all of `tokens` (e.g. a closing tag)."""
    r, m = jnp.asarray(responses), jnp.asarray(mask, bool)
    hits = jnp.stack([jnp.any((r == t) & m, axis=-1) for t in tokens], axis=-1)
    if mode == "any":
        return hits.any(-1).astype(jnp.float32)
    if mode == "all":
        return hits.all(-1).astype(jnp.float32)
    raise ValueError(f"mode must be 'any' or 'all', got {mode!r}")


def length_penalty(mask, *, target: float, scale: float = 1.0) -> jax.Array:
    """-scale |L - target| / target for the response length L (a verbosity control)."""
    length = jnp.asarray(mask, jnp.float32).sum(-1)
    return -scale * jnp.abs(length - target) / target


def overlong_penalty(mask, *, max_length: int, cache: int) -> jax.Array:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476):

    0 for L <= L_max - L_cache; (L_max - L_cache - L) / L_cache in between; -1 beyond L_max.
    """
    if not 0 < cache <= max_length:
        raise ValueError(f"need 0 < cache <= max_length, got cache={cache}, max={max_length}")
    length = jnp.asarray(mask, jnp.float32).sum(-1)
    soft = (max_length - cache - length) / cache
    return jnp.where(length <= max_length - cache, 0.0,
                     jnp.where(length <= max_length, soft, -1.0))


def _ngrams(tokens: Sequence[int], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(hypothesis: Sequence[int], references: Sequence[Sequence[int]], *,
                  max_n: int = 4, smoothing: float = 1.0) -> float:
    """BLEU of one token sequence against references (Papineni et al. 2002).

    BLEU = BP exp(sum_n (1/max_n) log p_n), p_n the clipped n-gram precision (max count over the
    references), BP = min(1, exp(1 - r/c)) with r the reference length closest to c. Smoothing
    adds `smoothing` to numerator and denominator of p_n for n > 1 (Lin and Och 2004, "+1"),
    so short hypotheses get a nonzero score. BLEUBERI ("BLEU as a reward for instruction
    following", 2025) uses it as a GRPO reward.
    """
    hyp = list(hypothesis)
    refs = [list(r) for r in references]
    if not refs:
        raise ValueError("BLEU needs at least one reference")
    c = len(hyp)
    if c == 0:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        counts = _ngrams(hyp, n)
        max_ref = Counter()
        for ref in refs:
            for gram, k in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref[gram], k)
        clipped = sum(min(k, max_ref[g]) for g, k in counts.items())
        total = max(c - n + 1, 0)
        add = smoothing if n > 1 else 0.0
        if clipped + add == 0 or total + add == 0:
            return 0.0
        log_p += np.log((clipped + add) / (total + add)) / max_n
    r = min((abs(len(ref) - c), len(ref)) for ref in refs)[1]
    bp = 1.0 if c > r else float(np.exp(1.0 - r / c))
    return float(bp * np.exp(log_p))


def bleu_reward(responses, mask, references: Sequence[Sequence[Sequence[int]]], *,
                max_n: int = 4, smoothing: float = 1.0) -> np.ndarray:
    """Sentence BLEU of each response's valid tokens against its own references. -> [N]."""
    responses, mask = np.asarray(responses), np.asarray(mask, bool)
    if len(references) != len(responses):
        raise ValueError(f"{len(references)} reference sets for {len(responses)} responses")
    return np.array([sentence_bleu(r[m].tolist(), refs, max_n=max_n, smoothing=smoothing)
                     for r, m, refs in zip(responses, mask, references)], np.float32)


def cosine_reward(embeddings, reference_embeddings) -> jax.Array:
    """cos(E(y), E(y_ref)) of pooled embeddings: [N, D] x2 -> [N] (a semantic reward with a
    frozen encoder E, as in "Shaping Explanations")."""
    a = jnp.asarray(embeddings, jnp.float32)
    b = jnp.asarray(reference_embeddings, jnp.float32)
    unit = lambda x: x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))  # noqa: E731
    # unit vectors first, then the dot product: the equal sum(a b) / (|a| |b|) came out wrong
    # under jit on XLA:CPU (jax 0.10.2) for broadcast shapes such as [1, 1728, 1, 16] x
    # [128, 1, 1, 16] (errors up to 1.5; tests/rewards/test_rules.py): XLA:CPU's YNNPACK
    # fusions, now off (alignax._src.xla_flags)
    return jnp.sum(unit(a) * unit(b), -1)


def mean_pooled_embeddings(apply_hidden: Callable, params, ids, mask) -> jax.Array:
    """Mean over valid tokens of `apply_hidden(params, ids, mask) -> [N, T, D]`: [N, D]."""
    h = jnp.asarray(apply_hidden(params, ids, mask), jnp.float32)
    m = jnp.asarray(mask, jnp.float32)[..., None]
    return (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
