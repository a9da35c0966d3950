"""Judges for toy token responses: a reference-conditioned reward model and a policy's own
referee role.

- `reference_match_features` and `linear_judge_score`: a small reference-conditioned reward
  model r_phi(q, a_ref, y) over fixed-length token responses (Cooper's VerifyRM in miniature,
  arXiv 2508.05613): features are, per position t, whether y_t equals the reference answer
  token and the one-hot of y_t, scored by a linear head. The match features let it check
  correctness against the reference; the token features let it pick up spurious patterns of
  its training labels (a filler token an LLM judge was fooled by), which is what makes it
  hackable.
- `referee_scores` and `pair_agreement_reward`: one explicit policy that is also its own
  referee (URPO, arXiv 2507.17515): its referee role is its next-token distribution at a
  judging prompt whose answer tokens mean "the first candidate is better" / "the second is
  better". Its scores of a group of its own responses are rewards (open-ended prompts), and its
  verdicts on labelled pairs are themselves rollouts rewarded by agreement with the label
  (the judging prompts), so both roles train under one GRPO loss.

All functions are pure jax, vectorised over leading axes (usable inside a jitted loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reference_match_features(tokens, reference, vocab_size: int) -> jax.Array:
    """Features [..., L + L V] of responses `tokens` [..., L] against a reference answer token
    `reference` [...] (broadcast): [y_t == reference]_t for t < L, then one-hot(y_t) for each
    position (position-major)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    reference = jnp.asarray(reference, jnp.int32)
    batch = jnp.broadcast_shapes(tokens.shape[:-1], reference.shape)
    tokens = jnp.broadcast_to(tokens, (*batch, tokens.shape[-1]))
    reference = jnp.broadcast_to(reference, batch)
    match = (tokens == reference[..., None]).astype(jnp.float32)
    onehot = jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32)
    return jnp.concatenate([match, onehot.reshape(*tokens.shape[:-1], -1)], axis=-1)


def linear_judge_init(num_features: int) -> dict:
    """Params {"w": [D], "b": []} of a linear judge, all zero (every response scores 0)."""
    return {"w": jnp.zeros((int(num_features),), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def linear_judge_score(params: dict, features) -> jax.Array:
    """[...] scores w . features + b (a logit: sigma(score) is P(correct))."""
    return jnp.asarray(features, jnp.float32) @ params["w"] + params["b"]


def referee_scores(verdict_log_probs, first_token: int, second_token: int) -> jax.Array:
    """A referee's preference for the first of two candidates from its verdict distribution.

    verdict_log_probs: [..., V] the referee's log-probabilities of its verdict token at a
    judging prompt "[J] y_a y_b ->". Returns [...] P(first) / (P(first) + P(second)), the
    probability it says "first is better" when it answers with one of the two verdict tokens.
    """
    lp = jnp.asarray(verdict_log_probs, jnp.float32)
    return jax.nn.sigmoid(lp[..., first_token] - lp[..., second_token])


def pair_agreement_reward(verdicts, first_better, first_token: int, second_token: int, *,
                          tie=None) -> jax.Array:
    """[...] 1 where the referee's verdict token agrees with the gold label, 0 otherwise
    (including a verdict that is neither of the two tokens): the GRPO reward of URPO's
    judging prompts. verdicts [...] int tokens; first_better [...] bool; tie [...] bool (or
    None): pairs of equal gold, where every verdict gets 0.5 (no signal, so a referee is not
    taught a position preference on identical candidates)."""
    verdicts = jnp.asarray(verdicts)
    want = jnp.where(jnp.asarray(first_better, bool), first_token, second_token)
    reward = (verdicts == want).astype(jnp.float32)
    if tie is not None:
        reward = jnp.where(jnp.asarray(tie, bool), 0.5, reward)
    return reward


def round_robin_scores(prefer_first) -> jax.Array:
    """Each response's mean preference over the rest of its group: prefer_first [..., G, G]
    (entry i, j = P(y_i better than y_j) by a pairwise judge) -> [..., G] scores
    s_i = mean_{j != i} (P(i > j) + 1 - P(j > i)) / 2 (both orders, so a judge's position bias
    cancels). The self-judging reward of URPO's open-ended prompts."""
    p = jnp.asarray(prefer_first, jnp.float32)
    g = p.shape[-1]
    both = 0.5 * (p + 1.0 - jnp.swapaxes(p, -1, -2))
    off = 1.0 - jnp.eye(g, dtype=p.dtype)
    return jnp.sum(both * off, -1) / (g - 1)
