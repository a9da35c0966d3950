"""Pure objectives: functions of arrays returning per-example values; the caller reduces."""

from alignax.losses.direct import (
    DPO_LOSS_TYPES,
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
    gspo_loss,
    ppo_clip_loss,
)
from alignax.losses.reward import (
    bradley_terry_loss,
    contrastive_representation_loss,
    ensemble_rewards,
    flip_by_strength,
    gaussian_ranking_loss,
    gpm_loss,
    pairwise_accuracy,
    preference_strength,
    prm_step_loss,
    regression_loss,
    scaled_bradley_terry_loss,
)

# Pairwise reward-model losses: (chosen_rewards, rejected_rewards, *, ...) -> [B].
REWARD_LOSSES = {
    "bradley_terry": bradley_terry_loss,
    "scaled_bradley_terry": scaled_bradley_terry_loss,
}
# Other reward-model objectives (their own signatures; see each docstring).
REWARD_OBJECTIVES = {
    "regression": regression_loss,
    "gaussian_ranking": gaussian_ranking_loss,
    "gpm": gpm_loss,
    "prm_step": prm_step_loss,
    "contrastive_representation": contrastive_representation_loss,
}
DIRECT_LOSSES = {
    "dpo": dpo_loss,
    # TRL's loss types under their TRL names ("sigmoid" is "dpo")
    **{name: fn for name, fn in DPO_LOSS_TYPES.items() if name != "sigmoid"},
    "rdpo": rdpo_loss,
    "tdpo": tdpo_loss,
    "bco": bco_loss,
    "irepo": irepo_loss,
    "selm": selm_loss,
    "cream": cream_loss,
}
# Losses of the policy's log-probs only: (policy_chosen_logps, policy_rejected_logps, *, ...).
# KTO is unpaired: kto_loss(policy_logps, ref_logps, desirable, *, kl, ...).
UNPAIRED_LOSSES = {"kto": kto_loss}
LOSSES = {**REWARD_LOSSES, **DIRECT_LOSSES, **REFERENCE_FREE_LOSSES, **UNPAIRED_LOSSES}

# Token-level policy-gradient losses (reduced with `aggregate`).
POLICY_GRADIENT_LOSSES = {"ppo_clip": ppo_clip_loss, "gspo": gspo_loss}

__all__ = [
    "AGGREGATIONS",
    "POLICY_GRADIENT_LOSSES",
    "aggregate",
    "clipped_value_loss",
    "entropy_bonus",
    "gspo_loss",
    "ppo_clip_loss",
    "DIRECT_LOSSES",
    "DPO_LOSS_TYPES",
    "REFERENCE_FREE_LOSSES",
    "REWARD_OBJECTIVES",
    "RunningMean",
    "bco_loss",
    "cream_loss",
    "irepo_loss",
    "selm_loss",
    "tdpo_loss",
    "contrastive_representation_loss",
    "ensemble_rewards",
    "flip_by_strength",
    "preference_strength",
    "gaussian_ranking_loss",
    "gpm_loss",
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
