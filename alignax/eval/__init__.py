"""Evaluators: gold reward, win rate and KL of policies; accuracy and calibration of RMs;
AUROC and pruned majority voting; RewardBench-layout files (`alignax.eval.rewardbench`)."""

from alignax.eval.judges import (discretize_scores, gini, gini_equality_score, judge_accuracy,
                                  normalized_dispersion_score)
from alignax.eval.metrics import expected_calibration_error, preference_accuracy, win_rate
from alignax.eval.policy import make_policy_eval, sequence_kl
from alignax.eval.ranking import PrunedVote, auroc, majority_vote, pruned_majority_vote
from alignax.eval.weak_to_strong import conflict_induced_errors, deception_score, weak_areas

__all__ = [
    "auroc",
    "conflict_induced_errors",
    "deception_score",
    "discretize_scores",
    "expected_calibration_error",
    "gini",
    "gini_equality_score",
    "judge_accuracy",
    "majority_vote",
    "make_policy_eval",
    "normalized_dispersion_score",
    "preference_accuracy",
    "pruned_majority_vote",
    "PrunedVote",
    "sequence_kl",
    "weak_areas",
    "win_rate",
]
