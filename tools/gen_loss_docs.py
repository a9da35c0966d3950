"""Writes docs/losses.md from the loss registries and docstrings.

Run: python tools/gen_loss_docs.py

tests/losses/test_docs.py checks that the page is up to date, so it cannot drift from the code.
"""

from __future__ import annotations

import inspect
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from alignax import losses  # noqa: E402
from alignax.ops import advantages  # noqa: E402
from alignax.sampling.guidance import guided_logits  # noqa: E402


def _by_name(*fns):
    return {fn.__name__: fn for fn in fns}


# A registry's section lists its entries under their registered names; the unregistered
# functions (signatures of their own) are listed under their own names.
SECTIONS = [
    ("Reward models: pairwise losses", losses.REWARD_LOSSES),
    ("Reward models: other objectives", _by_name(
        losses.regression_loss, losses.gaussian_ranking_loss, losses.gpm_loss,
        losses.prm_step_loss, losses.contrastive_representation_loss,
        losses.partial_return_loss, losses.regret_preference_loss, losses.ideal_point_loss,
        losses.mixture_bradley_terry_loss, losses.calibrated_reward_loss,
        losses.goal_contrastive_loss, losses.autoregressive_rm_loss,
        losses.gaussian_segment_preference_loss, losses.gprc_loss, losses.ordered_triplet_loss,
        losses.remodetect_loss)),
    ("Reward models: scores, metrics, routing, selection, shaping", _by_name(
        losses.gpm_score, losses.pairwise_accuracy, losses.ideal_points,
        losses.hedge_routing_update, losses.confidence_adjusted_rewards,
        losses.prefix_goal_values, losses.peer_review_masks, losses.curriculum_drop_rate,
        losses.preference_strength, losses.flip_by_strength, losses.reference_projection,
        losses.replay_regularizer)),
    ("Direct alignment (with a reference)", losses.DIRECT_LOSSES),
    ("Direct alignment: TRL's DPOConfig options (docs/trl.md)", _by_name(
        losses.f_divergence_scores, losses.length_desensitized_logps, losses.wpo_weights)),
    ("Direct alignment (reference-free)", losses.REFERENCE_FREE_LOSSES),
    ("Direct alignment (unpaired)", losses.UNPAIRED_LOSSES),
    ("Policy gradient", {**losses.POLICY_GRADIENT_LOSSES, **_by_name(
        losses.clipped_value_loss, losses.entropy_bonus, losses.aggregate,
        losses.off_policy_sequence_mask)}),
    ("Self-play policy objectives", losses.SELF_PLAY_LOSSES),
    ("Advantages and KL estimators (alignax.ops)", {
        name: getattr(advantages, name) for name in (
            "gae", "group_normalized_advantages", "leave_one_out_advantages",
            "batch_normalized_advantages", "beta_normalization_parameters",
            "beta_normalized_advantages", "difficulty_scaled_advantages",
            "bootstrapped_reference_advantages", "kl_estimate")}),
    ("Decoding-time guidance (alignax.sampling)", {"guided_logits": guided_logits}),
]


def render() -> str:
    lines = ["# Losses", "",
             "Generated from the registries and docstrings by `tools/gen_loss_docs.py`; every",
             "function returns per-example (or per-token) values unless stated, and takes its",
             "hyperparameters as keyword arguments.", ""]
    for title, registry in SECTIONS:
        lines += [f"## {title}", ""]
        for key, fn in registry.items():
            doc = inspect.getdoc(fn) or ""
            lines += [f"### `{key}` — `{fn.__module__}.{fn.__name__}{inspect.signature(fn)}`", "",
                      doc, ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    path = os.path.join(HERE, "docs", "losses.md")
    with open(path, "w") as f:
        f.write(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
