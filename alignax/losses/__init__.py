"""Pure objectives: functions of arrays returning per-example values; the caller reduces."""

from alignax.losses.direct import (
    DPO_LOSS_TYPES,
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
from alignax.losses.reward import bradley_terry_loss, pairwise_accuracy

REWARD_LOSSES = {
    "bradley_terry": bradley_terry_loss,
}
DIRECT_LOSSES = {
    "dpo": dpo_loss,
    # TRL's loss types under their TRL names ("sigmoid" is "dpo")
    **{name: fn for name, fn in DPO_LOSS_TYPES.items() if name != "sigmoid"},
}
LOSSES = {**REWARD_LOSSES, **DIRECT_LOSSES}

__all__ = [
    "DIRECT_LOSSES",
    "DPO_LOSS_TYPES",
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
