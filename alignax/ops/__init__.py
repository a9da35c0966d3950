"""Array ops shared by losses, models and recipes."""

from alignax.ops.advantages import (
    batch_normalized_advantages,
    beta_normalization_parameters,
    beta_normalized_advantages,
    bootstrapped_reference_advantages,
    difficulty_scaled_advantages,
    gae,
    group_normalized_advantages,
    kl_estimate,
    leave_one_out_advantages,
)
from alignax.ops.logprobs import (
    kendall_tau,
    sequential_kl,
    sequence_logprobs,
    shift_for_next_token,
    token_entropy,
    token_logprobs,
)
from alignax.ops.masked import masked_mean, masked_sum

__all__ = [
    "batch_normalized_advantages",
    "beta_normalization_parameters",
    "beta_normalized_advantages",
    "bootstrapped_reference_advantages",
    "difficulty_scaled_advantages",
    "gae",
    "group_normalized_advantages",
    "kendall_tau",
    "kl_estimate",
    "sequential_kl",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_sum",
    "sequence_logprobs",
    "shift_for_next_token",
    "token_entropy",
    "token_logprobs",
]
