"""Pure objectives: functions of arrays returning per-example values; the caller reduces."""

from alignax.losses.direct import dpo_loss, ipo_loss
from alignax.losses.reward import bradley_terry_loss, pairwise_accuracy

REWARD_LOSSES = {
    "bradley_terry": bradley_terry_loss,
}
DIRECT_LOSSES = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
}
LOSSES = {**REWARD_LOSSES, **DIRECT_LOSSES}

__all__ = [
    "DIRECT_LOSSES",
    "LOSSES",
    "REWARD_LOSSES",
    "bradley_terry_loss",
    "dpo_loss",
    "ipo_loss",
    "pairwise_accuracy",
]
