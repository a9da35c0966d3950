"""Evaluators: gold reward, win rate and KL of policies; accuracy and calibration of RMs;
AUROC and pruned majority voting; RewardBench-layout files (`alignax.eval.rewardbench`)."""

from alignax.eval.metrics import expected_calibration_error, preference_accuracy, win_rate
from alignax.eval.policy import make_policy_eval, sequence_kl
from alignax.eval.ranking import PrunedVote, auroc, majority_vote, pruned_majority_vote
from alignax.eval.weak_to_strong import conflict_induced_errors, deception_score, weak_areas

__all__ = ["PrunedVote", "auroc", "conflict_induced_errors", "deception_score", "majority_vote",
           "pruned_majority_vote", "weak_areas",
           "expected_calibration_error", "make_policy_eval", "preference_accuracy",
           "sequence_kl", "win_rate"]
