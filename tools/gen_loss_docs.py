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

SECTIONS = [
    ("Reward models: pairwise losses", losses.REWARD_LOSSES),
    ("Reward models: other objectives", losses.REWARD_OBJECTIVES),
    ("Reward models: routing, selection, shaping", losses.REWARD_HELPERS),
    ("Direct alignment (with a reference)", losses.DIRECT_LOSSES),
    ("Direct alignment (reference-free)", losses.REFERENCE_FREE_LOSSES),
    ("Direct alignment (unpaired)", losses.UNPAIRED_LOSSES),
    ("Policy gradient", {**losses.POLICY_GRADIENT_LOSSES,
                         "clipped_value_loss": losses.clipped_value_loss,
                         "entropy_bonus": losses.entropy_bonus,
                         "aggregate": losses.aggregate}),
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
