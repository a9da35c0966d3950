"""Training pairs from multi-dimensional annotations, and score-based data selection.

Host-side NumPy builders (outputs have data-dependent length, so they run before jit).
Shapes: P annotated pairs, K quality dimensions, M built training pairs, N items.
"""

from __future__ import annotations

import numpy as np

OVERALL = -1  # dimension index of an overall (aggregate) training pair


def _verdicts(x, name: str) -> np.ndarray:
    v = np.asarray(x)
    if not np.issubdtype(v.dtype, np.integer) and not np.issubdtype(v.dtype, np.bool_):
        if not np.all(np.isin(v, (-1.0, 0.0, 1.0))):
            raise ValueError(f"{name} must hold verdicts in {{-1, 0, 1}}")
    v = v.astype(np.int64)
    if not np.all(np.isin(v, (-1, 0, 1))):
        raise ValueError(f"{name} must hold verdicts in {{-1, 0, 1}}")
    return v


def tie_disentangled_pairs(
    overall, dimension_verdicts, *, disentangle_ties: bool = True, include_overall: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension training pairs, turning overall ties with opposite verdicts into pairs.

    Each annotated pair (A, B) has an overall verdict o in {-1, 0, 1} (+1: A better, 0: tie) and
    per-dimension verdicts v_k in {-1, 0, 1}. The builder emits

    - for o != 0: one pair (dimension k, sign v_k) for every dimension with v_k != 0, and with
      `include_overall` one overall pair (dimension `OVERALL`, sign o);
    - for o = 0 with opposite per-dimension verdicts (some v_k = +1 and some v_l = -1) and
      `disentangle_ties`: one pair per non-zero verdict, e.g. A > B on k and B > A on l;
    - nothing for the other ties (no dimension separates A and B, or all point the same way
      while the annotator still called it a tie, or `disentangle_ties` is off: "drop ties").

    Tie disentanglement of EditReward: Wu et al. 2025, "EditReward: A Human-Aligned Reward Model
    for Instruction-Guided Image Editing" (arXiv 2509.26346).

    Args:
      overall: [P] overall verdicts in {-1, 0, 1}.
      dimension_verdicts: [P, K] per-dimension verdicts in {-1, 0, 1}.
      disentangle_ties: keep the opposite-verdict overall ties (else drop every overall tie).
      include_overall: also emit the overall pairs of the non-tie annotations.

    Returns:
      (pair_index [M] int64 into the P annotations, dimension [M] int64 in 0..K-1 or OVERALL,
      first_wins [M] bool: True where A is the chosen response), sorted by annotation.
    """
    o = _verdicts(overall, "overall")
    v = _verdicts(dimension_verdicts, "dimension_verdicts")
    if o.ndim != 1 or v.ndim != 2 or v.shape[0] != o.shape[0]:
        raise ValueError(f"expected overall [P] and dimension_verdicts [P, K], got {o.shape} and "
                         f"{v.shape}")
    p, k = v.shape
    opposite = np.any(v > 0, axis=1) & np.any(v < 0, axis=1)
    keep_dims = (o != 0) | (opposite & disentangle_ties)
    use = (v != 0) & keep_dims[:, None]  # [P, K]
    idx = np.repeat(np.arange(p)[:, None], k, axis=1)
    dims = np.repeat(np.arange(k)[None, :], p, axis=0)
    parts = [(idx[use], dims[use], v[use] > 0)]
    if include_overall:
        nt = np.flatnonzero(o != 0)
        parts.append((nt, np.full(len(nt), OVERALL), o[nt] > 0))
    pair_index = np.concatenate([a for a, _, _ in parts]).astype(np.int64)
    dimension = np.concatenate([b for _, b, _ in parts]).astype(np.int64)
    first_wins = np.concatenate([c for _, _, c in parts]).astype(bool)
    order = np.lexsort((dimension, pair_index))
    return pair_index[order], dimension[order], first_wins[order]


def select_top_fraction(scores, fraction: float) -> np.ndarray:
    """Mask of the ceil(fraction N) highest-scoring items: [N] -> [N] bool.

    Ties at the threshold are broken by position (stable), so exactly ceil(fraction N) items are
    kept; `fraction` in (0, 1]. Reward-model data filtering ("keep the top fraction").
    """
    s = np.asarray(scores, np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must have rank 1, got shape {s.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_keep = int(np.ceil(fraction * len(s)))
    order = np.argsort(-s, kind="stable")
    mask = np.zeros(len(s), bool)
    mask[order[:n_keep]] = True
    return mask
