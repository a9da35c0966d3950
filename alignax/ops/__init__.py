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
from alignax.ops.chunked import chunked_cross_entropy, chunked_token_logprobs
from alignax.ops.logprobs import (
    sequential_kl,
    sequence_logprobs,
    shift_for_next_token,
    token_entropy,
    token_logprobs,
)
from alignax.ops.masked import masked_mean, masked_sum
from alignax.ops.rank import average_ranks, kendall_tau, spearman
from alignax.ops.regression import decorrelate, decorrelation_coefficients, masked_ridge_regression
from alignax.ops.transport import (
    entropic_gromov_wasserstein,
    gromov_wasserstein_cost,
    sinkhorn,
    transfer_preference_labels,
)

__all__ = [
    "average_ranks",
    "decorrelate",
    "decorrelation_coefficients",
    "entropic_gromov_wasserstein",
    "gromov_wasserstein_cost",
    "masked_ridge_regression",
    "sinkhorn",
    "spearman",
    "transfer_preference_labels",
    "batch_normalized_advantages",
    "chunked_cross_entropy",
    "chunked_token_logprobs",
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
