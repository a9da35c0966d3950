"""Reward-model objectives on per-example rewards. Each returns per-example values [B]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignax._src import checks


def bradley_terry_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    *,
    margin: jax.Array | float = 0.0,
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Bradley-Terry negative log-likelihood of the preference, with margin and label smoothing.

    .. math::
        d = r_c - r_r - m, \\quad
        L = -(1 - \\epsilon) \\log \\sigma(d) - \\epsilon \\log \\sigma(-d)

    `margin` m (scalar or [B]) is the Llama-2 margin loss (Touvron et al. 2023, arXiv 2307.09288);
    `label_smoothing` epsilon is the conservative soft label of Secrets of RLHF II (Wang et al.
    2024, arXiv 2401.06080). With m = eps = 0 this is the reward-model loss of Ouyang et al. 2022
    (arXiv 2203.02155).

    Args:
      chosen_rewards: [B] rewards of the preferred responses.
      rejected_rewards: [B] rewards of the other responses.
      margin: scalar or [B] margin m.
      label_smoothing: epsilon in [0, 1), scalar or [B] (e.g. only on ambiguous pairs).

    Returns:
      [B] float32 losses.
    """
    checks.check_rank(chosen_rewards, 1, "chosen_rewards")
    checks.check_same_shape([chosen_rewards, rejected_rewards],
                            ["chosen_rewards", "rejected_rewards"])
    d = (jnp.asarray(chosen_rewards, jnp.float32) - jnp.asarray(rejected_rewards, jnp.float32)
         - jnp.asarray(margin, jnp.float32))
    eps = jnp.asarray(label_smoothing, jnp.float32)  # scalar or per-example [B]
    return -(1.0 - eps) * jax.nn.log_sigmoid(d) - eps * jax.nn.log_sigmoid(-d)


def pairwise_accuracy(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> jax.Array:
    """1 where r_c > r_r, 0.5 on ties, 0 otherwise: [B] float32."""
    checks.check_same_shape([chosen_rewards, rejected_rewards],
                            ["chosen_rewards", "rejected_rewards"])
    c = jnp.asarray(chosen_rewards, jnp.float32)
    r = jnp.asarray(rejected_rewards, jnp.float32)
    return jnp.where(c > r, 1.0, jnp.where(c == r, 0.5, 0.0))


def scaled_bradley_terry_loss(chosen_rewards, rejected_rewards, *, strength):
    """Scaled BT: the BT loss weighted by the preference strength m (e.g. 1-3 on a Likert gap).

    .. math:: L = -m \\log\\sigma(r_c - r_r)

    Wang et al. 2024, "HelpSteer2-Preference: Complementing Ratings with Preferences"
    (arXiv 2410.01257), "Scaled Bradley-Terry". [B], [B], scalar or [B] -> [B].
    """
    return jnp.asarray(strength, jnp.float32) * bradley_terry_loss(chosen_rewards,
                                                                    rejected_rewards)


def regression_loss(predictions, targets, mask=None):
    """Rating regression: mean squared error over the (masked) attributes of each example.

    [B] or [B, K] predictions and targets (K attributes, e.g. HelpSteer helpfulness/correctness/
    ...), optional [B, K] mask of the attributes that are rated -> [B].
    """
    checks.check_same_shape([predictions, targets], ["predictions", "targets"])
    err = jnp.square(jnp.asarray(predictions, jnp.float32) - jnp.asarray(targets, jnp.float32))
    if err.ndim == 1:
        return err if mask is None else err * jnp.asarray(mask, jnp.float32)
    m = jnp.ones_like(err) if mask is None else jnp.asarray(mask, jnp.float32)
    return jnp.sum(err * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def gaussian_ranking_loss(chosen_mean, chosen_log_var, rejected_mean, rejected_log_var):
    """Uncertainty-aware (probit / Thurstone) ranking of Gaussian rewards.

    .. math::
        P(c \\succ r) = \\Phi\\left(\\frac{\\mu_c - \\mu_r}
                                  {\\sqrt{\\sigma_c^2 + \\sigma_r^2}}\\right), \\quad L = -\\log P

    computed with log_ndtr (stable for large negative arguments). EditReward (Wu et al. 2025)
    uses this per quality dimension; Thurstone 1927 (case V with learned variances). [B] x4 -> [B].
    """
    checks.check_same_shape([chosen_mean, chosen_log_var, rejected_mean, rejected_log_var],
                            ["chosen_mean", "chosen_log_var", "rejected_mean", "rejected_log_var"])
    var = jnp.exp(jnp.asarray(chosen_log_var, jnp.float32)) + jnp.exp(
        jnp.asarray(rejected_log_var, jnp.float32))
    z = (jnp.asarray(chosen_mean, jnp.float32) - jnp.asarray(rejected_mean, jnp.float32)) / (
        jnp.sqrt(var))
    return -jax.scipy.special.log_ndtr(z)


def gpm_loss(chosen_embedding, rejected_embedding, eigen=None, *, beta: float = 1.0):
    """General preference model: -log sigma(beta s(y_c, y_r)) with the skew-symmetric score.

    s(v1, v2) = sum_l lambda_l (v1[2l+1] v2[2l] - v1[2l] v2[2l+1]) (see
    `alignax.models.heads.gpm_score`). Zhang et al. 2024, "General Preference Modeling with
    Preference Representations" (arXiv 2410.02197). [B, 2k] x2, optional [B, k] -> [B].
    """
    from alignax.models.heads import gpm_score

    checks.check_same_shape([chosen_embedding, rejected_embedding],
                            ["chosen_embedding", "rejected_embedding"])
    s = gpm_score(jnp.asarray(chosen_embedding, jnp.float32),
                  jnp.asarray(rejected_embedding, jnp.float32), eigen)
    return -jax.nn.log_sigmoid(beta * s)


def prm_step_loss(step_logits, step_labels, step_mask):
    """Process reward model: binary cross-entropy per reasoning step, averaged over steps.

    Lightman et al. 2023, "Let's Verify Step by Step" (arXiv 2305.20050). [B, S] logits, [B, S]
    labels in {0, 1} (or soft), [B, S] mask of real steps -> [B].
    """
    checks.check_same_shape([step_logits, step_labels, step_mask],
                            ["step_logits", "step_labels", "step_mask"])
    x = jnp.asarray(step_logits, jnp.float32)
    y = jnp.asarray(step_labels, jnp.float32)
    m = jnp.asarray(step_mask, jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    return jnp.sum(bce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def ensemble_rewards(rewards, *, mode: str = "mean", lam: float = 1.0):
    """Aggregates an ensemble's rewards [M, B] -> [B]: "mean", "min" (worst case) or
    "mean_minus_std" (mean - lam * std over members, uncertainty-weighted).

    Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization" (arXiv 2310.02743);
    Eisenstein et al. 2023, "Helping or Herding?" (arXiv 2312.09244).
    """
    checks.check_rank(rewards, 2, "rewards")
    r = jnp.asarray(rewards, jnp.float32)
    if mode == "mean":
        return r.mean(axis=0)
    if mode == "min":
        return r.min(axis=0)
    if mode == "mean_minus_std":
        return r.mean(axis=0) - lam * r.std(axis=0)
    raise ValueError(f"unknown ensemble mode {mode!r}; use mean, min or mean_minus_std")


def contrastive_representation_loss(anchors, positives, *, temperature: float = 0.1):
    """InfoNCE over the batch: each anchor's positive against the other rows' positives.

    .. math::
        L_i = -\\log \\frac{e^{\\cos(a_i, p_i)/\\tau}}{\\sum_j e^{\\cos(a_i, p_j)/\\tau}}

    The contrastive term Secrets of RLHF II adds to reward-model training (SimCSE style; Wang et
    al. 2024, arXiv 2401.06080). [B, D] x2 -> [B].
    """
    checks.check_same_shape([anchors, positives], ["anchors", "positives"])
    a = jnp.asarray(anchors, jnp.float32)
    p = jnp.asarray(positives, jnp.float32)
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
    p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-6)
    logits = a @ p.T / temperature
    return -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))


def preference_strength(member_margins):
    """Mean and std over an ensemble of each pair's reward margin r_m(y_c) - r_m(y_r).

    Secrets of RLHF II (Wang et al. 2024, arXiv 2401.06080), section 3: the mean estimates the
    preference strength (negative: the label is probably wrong; near zero: ambiguous).
    [M, B] -> ([B], [B]).
    """
    checks.check_rank(member_margins, 2, "member_margins")
    m = jnp.asarray(member_margins, jnp.float32)
    return m.mean(axis=0), m.std(axis=0)


def flip_by_strength(chosen, rejected, strength, *, threshold: float = 0.0):
    """Swaps chosen and rejected where the strength is below `threshold` (likely wrong labels).

    Works on any arrays with a leading [B] axis (rewards, or token ids of the responses).
    Returns (chosen, rejected, strength with the flipped signs, flipped [B] bool).
    """
    strength = jnp.asarray(strength, jnp.float32)
    flipped = strength < threshold
    expand = lambda m, x: m.reshape(m.shape + (1,) * (jnp.ndim(x) - 1))  # noqa: E731
    new_chosen = jnp.where(expand(flipped, chosen), rejected, chosen)
    new_rejected = jnp.where(expand(flipped, rejected), chosen, rejected)
    return new_chosen, new_rejected, jnp.where(flipped, -strength, strength), flipped
