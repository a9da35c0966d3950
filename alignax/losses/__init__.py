"""Pure objectives: functions of arrays returning per-example values; the caller reduces."""

from alignax.losses.direct import (
    DPO_LOSS_TYPES,
    F_DIVERGENCE_LOSSES,
    F_DIVERGENCES,
    f_divergence_scores,
    ipo_norm_loss,
    length_desensitized_logps,
    wpo_weights,
    RunningMean,
    bco_loss,
    cream_loss,
    irepo_loss,
    selm_loss,
    tdpo_loss,
    REFERENCE_FREE_LOSSES,
    cpo_loss,
    kto_loss,
    orpo_loss,
    rdpo_loss,
    simpo_loss,
    aot_loss,
    aot_pair_loss,
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    nca_pair_loss,
    robust_dpo_loss,
    sigmoid_norm_loss,
    sppo_hard_loss,
)
from alignax.losses.policy_gradient import (
    AGGREGATIONS,
    aggregate,
    clipped_value_loss,
    entropy_bonus,
    gpo_loss,
    gspo_loss,
    off_policy_sequence_mask,
    ppo_clip_loss,
    sapo_loss,
    vespo_loss,
)
from alignax.losses.reward import (
    autoregressive_rm_loss,
    calibrated_reward_loss,
    confidence_adjusted_rewards,
    curriculum_drop_rate,
    goal_contrastive_loss,
    hedge_routing_update,
    ideal_point_loss,
    ideal_points,
    mixture_bradley_terry_loss,
    partial_return_loss,
    peer_review_masks,
    prefix_goal_values,
    regret_preference_loss,
    bradley_terry_loss,
    contrastive_representation_loss,
    flip_by_strength,
    gaussian_ranking_loss,
    gpm_loss,
    gpm_score,
    pairwise_accuracy,
    preference_strength,
    prm_step_loss,
    regression_loss,
    scaled_bradley_terry_loss,
)
from alignax.losses.detection import ordered_triplet_loss, remodetect_loss, replay_regularizer
from alignax.losses.rubric import gprc_loss, reference_projection
from alignax.losses.segment import gaussian_segment_preference_loss

# Registries: name -> loss, one call signature per registry (the keyword-only hyperparameters
# and extra inputs vary; see each docstring). Objectives with signatures of their own (GPM,
# regression, segment and ideal-point models, ...) and the pieces of reward-model training that
# are not losses are plain functions of this package, not registered.

# Pairwise reward-model losses: (chosen_rewards, rejected_rewards, *, ...) -> [B].
REWARD_LOSSES = {
    "bradley_terry": bradley_terry_loss,
    "scaled_bradley_terry": scaled_bradley_terry_loss,
}
# Direct alignment with a reference: (policy_chosen_logps, policy_rejected_logps,
# ref_chosen_logps, ref_rejected_logps, *, ...) -> ([B], metrics).
DIRECT_LOSSES = {
    "dpo": dpo_loss,
    # TRL's loss types under their TRL names ("sigmoid" is "dpo")
    **{name: fn for name, fn in DPO_LOSS_TYPES.items() if name != "sigmoid"},
    "ipo_norm": ipo_norm_loss,
    "rdpo": rdpo_loss,
    "tdpo": tdpo_loss,
    "bco": bco_loss,
    "irepo": irepo_loss,
    "selm": selm_loss,
    "cream": cream_loss,
}
# The per-pair inputs each direct or reference-free loss takes beyond the policy (and
# reference) log-probs, by name; a loss not listed takes none. The recipes compute the ones
# they can (`*_lengths`: response token counts; `*_seq_kl`: TDPO's sequential KL from both
# models' logits) and read the others from each batch.
DIRECT_LOSS_INPUTS: dict[str, tuple[str, ...]] = {
    "rdpo": ("chosen_lengths", "rejected_lengths"),
    "sigmoid_norm": ("chosen_lengths", "rejected_lengths"),
    "ipo_norm": ("chosen_lengths", "rejected_lengths"),
    "tdpo": ("chosen_seq_kl", "rejected_seq_kl"),
    "bco": ("delta",),
    "irepo": ("preference_rate",),
    "selm": ("policy_sample_logps", "ref_sample_logps"),
    "cream": ("consistency",),
    "simpo": ("chosen_lengths", "rejected_lengths"),
    "cpo": ("chosen_lengths",),
    "orpo": ("chosen_lengths", "rejected_lengths"),
}
# REFERENCE_FREE_LOSSES (from direct.py): (policy_chosen_logps, policy_rejected_logps, *, ...)
# -> ([B], metrics).
# Unpaired: (policy_logps, ref_logps, desirable, *, kl, ...) -> ([B], metrics).
UNPAIRED_LOSSES = {"kto": kto_loss}
# Policy-gradient surrogates: (logps [B, T], old_logps [B, T], advantages, mask [B, T], *, ...)
# -> (losses, metrics); PPO-clip's losses are per token [B, T] (reduce with `aggregate`), GSPO's
# per sequence [B].
POLICY_GRADIENT_LOSSES = {"ppo_clip": ppo_clip_loss, "gspo": gspo_loss, "sapo": sapo_loss,
                          "vespo": vespo_loss}
# Sequence-level policy losses on samples of the current policy (GPM's self-play objective):
# (policy_logps, behaviour_logps, preference_scores, *, ...) -> ([B], metrics).
SELF_PLAY_LOSSES = {"gpo": gpo_loss}

# Every registry, by family; a loss name is in exactly one of them.
LOSSES = {
    "reward": REWARD_LOSSES,
    "direct": DIRECT_LOSSES,
    "reference_free": REFERENCE_FREE_LOSSES,
    "unpaired": UNPAIRED_LOSSES,
    "policy_gradient": POLICY_GRADIENT_LOSSES,
    "self_play": SELF_PLAY_LOSSES,
}

__all__ = [
    "ordered_triplet_loss",
    "remodetect_loss",
    "replay_regularizer",
    "gaussian_segment_preference_loss",
    "gprc_loss",
    "reference_projection",
    "SELF_PLAY_LOSSES",
    "autoregressive_rm_loss",
    "calibrated_reward_loss",
    "confidence_adjusted_rewards",
    "curriculum_drop_rate",
    "goal_contrastive_loss",
    "gpo_loss",
    "hedge_routing_update",
    "ideal_point_loss",
    "ideal_points",
    "mixture_bradley_terry_loss",
    "partial_return_loss",
    "peer_review_masks",
    "prefix_goal_values",
    "regret_preference_loss",
    "AGGREGATIONS",
    "POLICY_GRADIENT_LOSSES",
    "off_policy_sequence_mask",
    "sapo_loss",
    "vespo_loss",
    "aggregate",
    "clipped_value_loss",
    "entropy_bonus",
    "gspo_loss",
    "ppo_clip_loss",
    "DIRECT_LOSSES",
    "DIRECT_LOSS_INPUTS",
    "DPO_LOSS_TYPES",
    "F_DIVERGENCES",
    "F_DIVERGENCE_LOSSES",
    "f_divergence_scores",
    "ipo_norm_loss",
    "length_desensitized_logps",
    "wpo_weights",
    "REFERENCE_FREE_LOSSES",
    "RunningMean",
    "bco_loss",
    "cream_loss",
    "irepo_loss",
    "selm_loss",
    "tdpo_loss",
    "contrastive_representation_loss",
    "flip_by_strength",
    "preference_strength",
    "gaussian_ranking_loss",
    "gpm_loss",
    "gpm_score",
    "prm_step_loss",
    "regression_loss",
    "scaled_bradley_terry_loss",
    "UNPAIRED_LOSSES",
    "cpo_loss",
    "kto_loss",
    "orpo_loss",
    "rdpo_loss",
    "simpo_loss",
    "aot_loss",
    "aot_pair_loss",
    "apo_down_loss",
    "apo_zero_loss",
    "bco_pair_loss",
    "discopop_loss",
    "exo_pair_loss",
    "hinge_loss",
    "nca_pair_loss",
    "robust_dpo_loss",
    "sigmoid_norm_loss",
    "sppo_hard_loss",
    "LOSSES",
    "REWARD_LOSSES",
    "bradley_terry_loss",
    "dpo_loss",
    "ipo_loss",
    "pairwise_accuracy",
]
