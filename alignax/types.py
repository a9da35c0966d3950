"""Batch and rollout pytrees shared across layers (sampling, rewards, algorithms).

Shapes: P prompt tokens (left-padded), R generated tokens, N = prompts x n rows (prompt-major).
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class Rollout(NamedTuple):
    """Samples of the behaviour policy, ready for scoring and training.

    Attributes:
      ids: [N, P + R] prompt (left-padded) then response tokens.
      mask: [N, P + R] attention mask.
      response_mask: [N, R] generated, valid tokens (False after a stop token).
      old_logps: [N, R] behaviour-policy log-probs (0 off the mask).
      prompt_index: [N] row of the prompt batch; the online recipes remap it to the row of
        their prompt pool before calling `reward_fn`, so a reward can look up each sample's
        problem, answer or references.
    """

    ids: jax.Array
    mask: jax.Array
    response_mask: jax.Array
    old_logps: jax.Array
    prompt_index: jax.Array

    @property
    def response_len(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> jax.Array:
        return self.ids[:, -self.response_len:]

    @property
    def prompts(self) -> jax.Array:
        return self.ids[:, :-self.response_len]

    @property
    def lengths(self) -> jax.Array:
        return self.response_mask.sum(-1)
