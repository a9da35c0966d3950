"""Data transforms on preference records."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from alignax.data.readers import PreferenceRecord


def default_score_prefix(score: float) -> str:
    return f"<target score: {score:g}>\n"


def reward_augmented_pairs(
    records: Sequence[PreferenceRecord],
    chosen_scores: Sequence[float],
    rejected_scores: Sequence[float],
    *,
    prefix: Callable[[float], str] = default_score_prefix,
) -> list[PreferenceRecord]:
    """Reward-augmented data: each pair becomes two, conditioned on a target score.

    From (x, y_w, y_l, s_w, s_l): (g(s_w) + x, y_w > y_l) and (g(s_l) + x, y_l > y_w), where g(s)
    is a "target score = s" prefix. Any direct-alignment loss then learns the whole quality
    range instead of unlearning good rejected responses; at inference, condition on the best
    score. Zhang et al. 2024, "Reward-Augmented Data Enhances Direct Preference Alignment of
    LLMs" (arXiv 2410.08067).
    """
    if not len(records) == len(chosen_scores) == len(rejected_scores):
        raise ValueError("records, chosen_scores and rejected_scores differ in length")
    out = []
    for rec, s_w, s_l in zip(records, chosen_scores, rejected_scores):
        extras = {**rec.extras, "target_score": float(s_w)}
        out.append(PreferenceRecord(prefix(s_w) + rec.prompt, rec.chosen, rec.rejected, extras))
        extras = {**rec.extras, "target_score": float(s_l)}
        out.append(PreferenceRecord(prefix(s_l) + rec.prompt, rec.rejected, rec.chosen, extras))
    return out


def reward_augmented_arrays(pairs, chosen_scores, rejected_scores, *, chosen_key: str = "chosen",
                            rejected_key: str = "rejected") -> dict:
    """`reward_augmented_pairs` on arrays: B pairs become 2B score-conditioned pairs.

    Args:
      pairs: a mapping of [B, ...] arrays, one row per pair (prompt ids or features, the chosen
        and rejected responses under `chosen_key` / `rejected_key`, anything else per pair).
      chosen_scores, rejected_scores: [B] the scores s_w, s_l of the chosen and rejected
        responses (judge or reward-model scores).

    Returns:
      the same keys with [2B] rows plus "target_score" [2B]: rows 0..B-1 are the pairs as given
      with target s_w (y_w > y_l under g(s_w)); rows B..2B-1 are the pairs with chosen and
      rejected swapped and target s_l (y_l > y_w under g(s_l)). Every other field is repeated.
    """
    s_w = np.asarray(chosen_scores, np.float32)
    s_l = np.asarray(rejected_scores, np.float32)
    if s_w.ndim != 1 or s_w.shape != s_l.shape:
        raise ValueError(f"chosen_scores and rejected_scores must be [B], got {s_w.shape} and "
                         f"{s_l.shape}")
    for key in (chosen_key, rejected_key):
        if key not in pairs:
            raise ValueError(f"pairs has no {key!r} field")
    out = {}
    for key, value in pairs.items():
        value = np.asarray(value)
        if value.shape[:1] != s_w.shape:
            raise ValueError(f"pairs[{key!r}] has {value.shape[:1]} rows, the scores {s_w.shape}")
        other = (np.asarray(pairs[rejected_key]) if key == chosen_key else
                 np.asarray(pairs[chosen_key]) if key == rejected_key else value)
        out[key] = np.concatenate([value, other], axis=0)
    out["target_score"] = np.concatenate([s_w, s_l])
    return out


def score_conditioned_features(features, target_score, *, low: float = 0.0,
                               high: float = 10.0, encoding: str = "scalar"):
    """Prompt features conditioned on a target score, for a policy log-linear in its features
    (the array counterpart of the "target score = s" prefix of `reward_augmented_pairs`).

    The score interacts with every prompt feature, as a prefix does in an LM:

    - encoding "scalar": c = 2 (s - low) / (high - low) - 1 in [-1, 1]; returns [z, c z, c]
      ([..., 2F + 1]);
    - encoding "onehot": the integer scores low..high (K = high - low + 1 levels; s is rounded
      and clipped); returns [z, e(s) (x) z, e(s)] ([..., F + K F + K]), e(s) the one-hot level,
      so every score level has its own prompt-dependent table;
    - encoding "both": the scalar blocks then the one-hot blocks, [z, c z, c, e(s) (x) z, e(s)]
      (a shared quality direction plus a table per level).

    features z [..., F]; target_score s [...] (broadcast), or None for no conditioning: the
    score blocks are zero, [z, 0, 0] (with "scalar" that is also the middle score). A policy
    that never sees a non-zero score block (plain DPO) has no use for it.
    """
    z = np.asarray(features, np.float32)
    batch = z.shape[:-1]
    if encoding == "scalar":
        if target_score is None:
            code = np.zeros(batch + (1,), np.float32)
        else:
            c = 2.0 * (np.asarray(target_score, np.float32) - low) / (high - low) - 1.0
            code = np.broadcast_to(c, batch)[..., None].astype(np.float32)
    elif encoding == "onehot":
        levels = int(round(high - low)) + 1
        if target_score is None:
            code = np.zeros(batch + (levels,), np.float32)
        else:
            k = np.clip(np.rint(np.asarray(target_score, np.float64) - low), 0, levels - 1)
            code = np.eye(levels, dtype=np.float32)[np.broadcast_to(k, batch).astype(int)]
    elif encoding == "both":
        scalar = score_conditioned_features(z, target_score, low=low, high=high)
        onehot = score_conditioned_features(z, target_score, low=low, high=high,
                                            encoding="onehot")
        return np.concatenate([scalar, onehot[..., z.shape[-1]:]], axis=-1)
    else:
        raise ValueError(f"encoding must be 'scalar', 'onehot' or 'both', got {encoding!r}")
    inter = (code[..., :, None] * z[..., None, :]).reshape(batch + (-1,))
    return np.concatenate([z, inter, code], axis=-1)


def score_feature_count(num_features: int, *, low: float = 0.0, high: float = 10.0,
                        encoding: str = "scalar") -> int:
    """The width of `score_conditioned_features` for F = num_features prompt features."""
    levels = {"scalar": 1, "onehot": int(round(high - low)) + 1,
              "both": int(round(high - low)) + 2}[encoding]
    return num_features + levels * num_features + levels
