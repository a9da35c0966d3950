"""Reward functions for online training: rules, metrics, reward models, and their aggregation."""

from alignax.rewards.aggregate import (ensemble, gradient_weight_update, hypervolume,
                                       hypervolume_multiplier, log_tamed_sum, pareto_front,
                                       weighted_sum)
from alignax.rewards.cost import (cost_reward, outcome_reward, plan_rationality,
                                  utility_cost_front, utility_cost_reward)
from alignax.rewards.judges import (linear_judge_init, linear_judge_score, pair_agreement_reward, reference_match_features, referee_scores, round_robin_scores)  # noqa: F401,E501
from alignax.rewards.directional import (angle_bins, bin_centers, direction_tokens,
                                         directional_reward, select_by_direction,
                                         unit_directions)
from alignax.rewards.metrics import (bag_embeddings, bag_encoder_loss, bleu, concept_f1, embedding_similarity, init_bag_encoder, rouge1)  # noqa: F401,E501
from alignax.rewards.hybrid import eos_lengths, generalized_length_penalty, hybrid_reward  # noqa: F401
from alignax.rewards.model import ensemble_reward, reward_model_reward
from alignax.rewards.pareto_jax import hypervolume_gains, hypervolume_jax, hypervolume_multipliers  # noqa: F401,E501
from alignax.rewards.pairwise import (bootstrapped_reference_outcomes, brpo_advantages,
                                      expected_judge_outcome, judge_first_prob,
                                      pairwise_judge, swap_vote)
from alignax.rewards.relevance import (bag_of_tokens_embedding, capped_length_reward,
                                       distinct_token_ratio, r3_product_reward, r3_reward,
                                       relevance_reward)
from alignax.rewards.rubrics import (Rubric, aggregate_rubrics, consistency_filter,
                                     contrastive_rubrics, rubric_features, rubric_judge_logits,
                                     rubric_score)
from alignax.rewards.rules import (bleu_reward, contains_tokens, cosine_reward, exact_match,
                                   length_penalty, mean_pooled_embeddings, overlong_penalty,
                                   sentence_bleu, verifier_reward)

__all__ = [
    "Rubric", "aggregate_rubrics", "consistency_filter", "contrastive_rubrics", "rubric_features",
    "rubric_judge_logits", "rubric_score",
    "angle_bins", "bin_centers", "direction_tokens", "directional_reward",
    "select_by_direction", "unit_directions",
    "cost_reward", "outcome_reward", "plan_rationality", "utility_cost_front",
    "utility_cost_reward",
    "bleu_reward", "contains_tokens", "cosine_reward", "ensemble", "ensemble_reward",
    "exact_match", "gradient_weight_update", "hypervolume", "hypervolume_multiplier",
    "length_penalty", "log_tamed_sum", "mean_pooled_embeddings", "overlong_penalty",
    "pareto_front", "reward_model_reward", "sentence_bleu", "verifier_reward", "weighted_sum",
    "bootstrapped_reference_outcomes", "brpo_advantages", "expected_judge_outcome",
    "judge_first_prob", "pairwise_judge", "swap_vote",
    "bag_of_tokens_embedding", "capped_length_reward", "distinct_token_ratio",
    "r3_product_reward", "r3_reward", "relevance_reward",
]
