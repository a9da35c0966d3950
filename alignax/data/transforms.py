"""Data transforms on preference records."""

from __future__ import annotations

from typing import Callable, Sequence

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
