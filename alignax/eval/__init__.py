"""Evaluators: gold reward, win rate and KL of policies; accuracy and calibration of RMs."""

from alignax.eval.metrics import expected_calibration_error, preference_accuracy, win_rate
from alignax.eval.policy import make_policy_eval, sequence_kl

__all__ = ["expected_calibration_error", "make_policy_eval", "preference_accuracy",
           "sequence_kl", "win_rate"]
