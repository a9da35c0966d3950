"""Reward-model objectives on per-example rewards. Each returns per-example values [B]."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def bradley_terry_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    *,
    margin: jax.Array | float = 0.0,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
) -> jax.Array:
    """Bradley-Terry negative log-likelihood of the preference, with margin and label smoothing.

    .. math::
        d = r_c - r_r - m, \\quad
        L = -(1 - \\epsilon) \\log \\sigma(d) - \\epsilon \\log \\sigma(-d)

    `margin` m (scalar or [B]) is the Llama-2 margin loss (Touvron et al. 2023, arXiv 2307.09288);
    `label_smoothing` epsilon is the conservative soft label of Secrets of RLHF II (Wang et al.
    2024, arXiv 2401.06080). With m = eps = 0 this is the reward-model loss of Ouyang et al. 2022
    (arXiv 2203.02155). `center_coef` c adds c (r_c + r_r)^2, which pins the rewards' mean
    near 0 (Eisenstein et al. 2023, "Helping or Herding?", arXiv 2312.09244; TRL's
    `center_rewards_coefficient`).

    Args:
      chosen_rewards: [B] rewards of the preferred responses.
      rejected_rewards: [B] rewards of the other responses.
      margin: scalar or [B] margin m.
      label_smoothing: epsilon in [0, 1), scalar or [B] (e.g. only on ambiguous pairs).
      center_coef: c >= 0 (0: no centring term).

    Returns:
      [B] float32 losses.
    """
    chex.assert_rank(chosen_rewards, 1, custom_message="chosen_rewards")
    chex.assert_equal_shape([chosen_rewards, rejected_rewards],
                            custom_message="chosen_rewards, rejected_rewards")
    d = (jnp.asarray(chosen_rewards, jnp.float32) - jnp.asarray(rejected_rewards, jnp.float32)
         - jnp.asarray(margin, jnp.float32))
    eps = jnp.asarray(label_smoothing, jnp.float32)  # scalar or per-example [B]
    loss = -(1.0 - eps) * jax.nn.log_sigmoid(d) - eps * jax.nn.log_sigmoid(-d)
    if center_coef:
        total = (jnp.asarray(chosen_rewards, jnp.float32)
                 + jnp.asarray(rejected_rewards, jnp.float32))
        loss = loss + center_coef * total ** 2
    return loss


def pairwise_accuracy(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> jax.Array:
    """1 where r_c > r_r, 0.5 on ties, 0 otherwise: [B] float32."""
    chex.assert_equal_shape([chosen_rewards, rejected_rewards],
                            custom_message="chosen_rewards, rejected_rewards")
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
    chex.assert_equal_shape([predictions, targets], custom_message="predictions, targets")
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
    chex.assert_equal_shape(
        [chosen_mean, chosen_log_var, rejected_mean, rejected_log_var],
        custom_message="chosen_mean, chosen_log_var, rejected_mean, rejected_log_var")
    var = jnp.exp(jnp.asarray(chosen_log_var, jnp.float32)) + jnp.exp(
        jnp.asarray(rejected_log_var, jnp.float32))
    z = (jnp.asarray(chosen_mean, jnp.float32) - jnp.asarray(rejected_mean, jnp.float32)) / (
        jnp.sqrt(var))
    return -jax.scipy.special.log_ndtr(z)


def gpm_score(v1: jax.Array, v2: jax.Array, eigen: jax.Array | None = None) -> jax.Array:
    """s(y1 > y2) = v1^T R v2 with R = diag(lambda_l [[0, -1], [1, 0]]): [B, 2k] x2 -> [B].

    Skew-symmetric: s(v1, v2) = -s(v2, v1), s(v, v) = 0. P(y1 > y2) = sigmoid(s). `eigen`
    [B, k] are the eigenvalue gates lambda (all 1 when None). Zhang et al. 2024, "General
    Preference Modeling with Preference Representations" (arXiv 2410.02197).
    """
    a1, b1 = v1[..., 0::2], v1[..., 1::2]
    a2, b2 = v2[..., 0::2], v2[..., 1::2]
    per_block = b1 * a2 - a1 * b2  # [B, k]
    if eigen is not None:
        per_block = per_block * eigen
    return jnp.sum(per_block, axis=-1)


def gpm_loss(chosen_embedding, rejected_embedding, eigen=None, *, beta: float = 1.0):
    """General preference model: -log sigma(beta s(y_c, y_r)) with the skew-symmetric score.

    s(v1, v2) = sum_l lambda_l (v1[2l+1] v2[2l] - v1[2l] v2[2l+1]) (see `gpm_score`). Zhang
    et al. 2024, "General Preference Modeling with Preference Representations" (arXiv
    2410.02197). [B, 2k] x2, optional [B, k] -> [B].
    """
    chex.assert_equal_shape([chosen_embedding, rejected_embedding],
                            custom_message="chosen_embedding, rejected_embedding")
    s = gpm_score(jnp.asarray(chosen_embedding, jnp.float32),
                  jnp.asarray(rejected_embedding, jnp.float32), eigen)
    return -jax.nn.log_sigmoid(beta * s)


def prm_step_loss(step_logits, step_labels, step_mask):
    """Process reward model: binary cross-entropy per reasoning step, averaged over steps.

    Lightman et al. 2023, "Let's Verify Step by Step" (arXiv 2305.20050). [B, S] logits, [B, S]
    labels in {0, 1} (or soft), [B, S] mask of real steps -> [B].
    """
    chex.assert_equal_shape([step_logits, step_labels, step_mask],
                            custom_message="step_logits, step_labels, step_mask")
    x = jnp.asarray(step_logits, jnp.float32)
    y = jnp.asarray(step_labels, jnp.float32)
    m = jnp.asarray(step_mask, jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    return jnp.sum(bce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def contrastive_representation_loss(anchors, positives, *, temperature: float = 0.1):
    """InfoNCE over the batch: each anchor's positive against the other rows' positives.

    .. math::
        L_i = -\\log \\frac{e^{\\cos(a_i, p_i)/\\tau}}{\\sum_j e^{\\cos(a_i, p_j)/\\tau}}

    The contrastive term Secrets of RLHF II adds to reward-model training (SimCSE style; Wang et
    al. 2024, arXiv 2401.06080). [B, D] x2 -> [B].
    """
    chex.assert_equal_shape([anchors, positives], custom_message="anchors, positives")
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
    chex.assert_rank(member_margins, 2, custom_message="member_margins")
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


# --- Segment preference models: partial return vs regret (Knox et al.) -------------------------

def _segment_bt(chosen_scores, rejected_scores, chosen_mask, rejected_mask, temperature):
    chex.assert_rank(chosen_scores, 2, custom_message="chosen_scores")
    chex.assert_equal_shape([chosen_scores, chosen_mask],
                            custom_message="chosen_scores, chosen_mask")
    chex.assert_equal_shape([rejected_scores, rejected_mask],
                            custom_message="rejected_scores, rejected_mask")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    total = lambda x, m: jnp.sum(jnp.where(jnp.asarray(m) > 0,  # noqa: E731
                                           jnp.asarray(x, jnp.float32), 0.0), axis=-1)
    d = (total(chosen_scores, chosen_mask) - total(rejected_scores, rejected_mask)) / temperature
    return -jax.nn.log_sigmoid(d)


def partial_return_loss(chosen_rewards, rejected_rewards, chosen_mask, rejected_mask, *,
                        temperature: float = 1.0):
    """Partial-return segment preference model: BT on the summed rewards of two segments.

    .. math:: P(\\sigma_1 \\succ \\sigma_2) = \\sigma\\Big(\\tfrac{1}{T}\\big(\\textstyle\\sum_t
              r(s^1_t, a^1_t) - \\sum_t r(s^2_t, a^2_t)\\big)\\Big), \\quad L = -\\log P

    The model of Christiano et al. 2017 that Knox et al. 2022 ("Models of human preference for
    learning reward functions", arXiv 2206.02231) compare against. [B, L] per-step rewards of the
    preferred and other segment with [B, L] masks (lengths may differ) -> [B].
    """
    return _segment_bt(chosen_rewards, rejected_rewards, chosen_mask, rejected_mask, temperature)


def regret_preference_loss(chosen_advantages, rejected_advantages, chosen_mask, rejected_mask, *,
                           temperature: float = 1.0):
    """Regret preference model: BT on the summed optimal advantages of two segments.

    .. math::
        \\mathrm{regret}(\\sigma) = -\\textstyle\\sum_t A^*_r(s_t, a_t), \\quad
        P(\\sigma_1 \\succ \\sigma_2) = \\sigma\\Big(\\tfrac{1}{T}\\big(\\textstyle\\sum_t
        A^*_r(\\sigma_1) - \\sum_t A^*_r(\\sigma_2)\\big)\\Big)

    for deterministic transitions (Knox et al. 2022, arXiv 2206.02231, eq. 3). To learn r, compute
    A* = Q* - V* by a differentiable (soft) value iteration of r and pass its values at the
    segments' (s, a) (see `alignax.tasks.mdp`); the gradient flows through the solver. [B, L] x2
    advantages with [B, L] masks -> [B].
    """
    return _segment_bt(chosen_advantages, rejected_advantages, chosen_mask, rejected_mask,
                       temperature)


# --- Heterogeneous users: ideal points (PAL) and mixtures with routing (MiCRo) ------------------

def ideal_points(user_logits, prototypes):
    """PAL ideal points a_u = P softmax(w_u): users as convex mixtures of K prototypes.

    [U, K] user logits, [K, d] prototypes -> [U, d]. Chen et al. 2024, "PAL: Pluralistic
    Alignment Framework for Learning from Heterogeneous Preferences" (arXiv 2406.08469).
    """
    chex.assert_rank(user_logits, 2, custom_message="user_logits")
    chex.assert_rank(prototypes, 2, custom_message="prototypes")
    if user_logits.shape[-1] != prototypes.shape[0]:
        raise ValueError(f"user_logits{user_logits.shape} and prototypes{prototypes.shape} "
                         "disagree on the number of prototypes")
    return jax.nn.softmax(jnp.asarray(user_logits, jnp.float32), axis=-1) @ jnp.asarray(
        prototypes, jnp.float32)


def ideal_point_loss(chosen_features, rejected_features, ideal_point):
    """PAL-A: the preferred response lies closer to the user's ideal point.

    .. math::
        P(y_c \\succ y_r \\mid u) = \\sigma\\big(\\lVert f(y_r) - a_u \\rVert^2 -
                                              \\lVert f(y_c) - a_u \\rVert^2\\big), \\quad
        L = -\\log P

    Chen et al. 2024, "PAL" (arXiv 2406.08469), ideal-point model. [B, d] features of each
    response, [B, d] (or [d]) ideal points of each example's user -> [B]. A new user is fitted by
    optimising only its logits in `ideal_points` (few-shot).
    """
    chex.assert_equal_shape([chosen_features, rejected_features],
                            custom_message="chosen_features, rejected_features")
    a = jnp.asarray(ideal_point, jnp.float32)
    dist = lambda f: jnp.sum(jnp.square(jnp.asarray(f, jnp.float32) - a), axis=-1)  # noqa: E731
    return -jax.nn.log_sigmoid(dist(rejected_features) - dist(chosen_features))


def mixture_bradley_terry_loss(chosen_rewards, rejected_rewards, mixture_logits):
    """Mixture of K Bradley-Terry models with (context-dependent) weights.

    .. math::
        P(y_c \\succ y_r \\mid x) = \\sum_k w_k(x)\\, \\sigma(r_k(x, y_c) - r_k(x, y_r)), \\quad
        w(x) = \\mathrm{softmax}(g(x)), \\quad L = -\\log P

    computed as -logsumexp_k(log w_k + log sigma(d_k)), stable for any margins. Shen et al. 2025,
    "MiCRo: Mixture Modeling and Context-aware Routing for Personalized Preference Learning"
    (arXiv 2505.24846), stage 1. [B, K] rewards of each head, [B, K] or [K] router logits -> [B].
    With K = 1 it is the BT loss.
    """
    chex.assert_rank(chosen_rewards, 2, custom_message="chosen_rewards")
    chex.assert_equal_shape([chosen_rewards, rejected_rewards],
                            custom_message="chosen_rewards, rejected_rewards")
    d = jnp.asarray(chosen_rewards, jnp.float32) - jnp.asarray(rejected_rewards, jnp.float32)
    log_w = jax.nn.log_softmax(jnp.asarray(mixture_logits, jnp.float32), axis=-1)
    return -jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(d), axis=-1)


def hedge_routing_update(log_weights, chosen_rewards, rejected_rewards, *,
                         learning_rate: float = 1.0):
    """One multiplicative-weights (Hedge) step of the router on a few labelled pairs of a context.

    .. math:: w_k \\leftarrow \\frac{w_k e^{-\\eta \\ell_k}}{\\sum_j w_j e^{-\\eta \\ell_j}},
              \\quad \\ell_k = -\\textstyle\\sum_i \\log\\sigma(r_k(y_{c,i}) - r_k(y_{r,i}))

    MiCRo's stage 2 adapts the mixture weights of a context online from its own comparisons (Shen
    et al. 2025, arXiv 2505.24846); this is the Hedge form of that update (Freund and Schapire
    1997). [K] log-weights, [N, K] head rewards of N pairs -> [K] normalised log-weights.
    """
    chex.assert_rank(chosen_rewards, 2, custom_message="chosen_rewards")
    chex.assert_equal_shape([chosen_rewards, rejected_rewards],
                            custom_message="chosen_rewards, rejected_rewards")
    d = jnp.asarray(chosen_rewards, jnp.float32) - jnp.asarray(rejected_rewards, jnp.float32)
    head_loss = -jnp.sum(jax.nn.log_sigmoid(d), axis=0)
    return jax.nn.log_softmax(jnp.asarray(log_weights, jnp.float32)
                              - learning_rate * head_loss)


# --- Calibration (PPO-M / PPO-C) ---------------------------------------------------------------

def calibrated_reward_loss(chosen, rejected, chosen_high, chosen_low, rejected_high,
                           rejected_low, *, calibration_weight: float = 1.0):
    """PPO-M's calibrated reward-model loss: BT plus confidence-augmented pairs.

    .. math::
        L = \\ell(r_c, r_r) + \\lambda\\big[\\ell(r(y_c \\oplus hi), r(y_c \\oplus lo))
            + \\ell(r(y_r \\oplus lo), r(y_r \\oplus hi))\\big], \\quad
        \\ell(a, b) = -\\log\\sigma(a - b)

    A preferred answer should score higher when it states high confidence, a rejected one when it
    states low confidence. Leng et al. 2024, "Taming Overconfidence in LLMs: Reward Calibration in
    RLHF" (arXiv 2410.09724); the paper adds the augmented pairs to the data, which is lambda = 1.
    Six [B] reward arrays (original pair and each response with a high / low confidence suffix)
    -> [B].
    """
    chex.assert_equal_shape(
        [chosen, rejected, chosen_high, chosen_low, rejected_high, rejected_low],
        custom_message="chosen, rejected, chosen_high, chosen_low, rejected_high, rejected_low")
    return bradley_terry_loss(chosen, rejected) + calibration_weight * (
        bradley_terry_loss(chosen_high, chosen_low)
        + bradley_terry_loss(rejected_low, rejected_high))


def confidence_adjusted_rewards(rewards, confidence, reward_mean, *, weight: float = 0.5):
    """PPO-C reward shaping: move rewards away from the running mean in proportion to stated
    confidence.

    .. math::
        \\Delta = w\\,|r|\\,(s - \\tfrac12), \\quad
        r' = r + \\Delta \\text{ if } r \\ge \\bar r \\text{ else } r - \\Delta

    so confident good answers gain and confident bad answers lose. Leng et al. 2024 (arXiv
    2410.09724); s = c / 10 in [0, 1] is the verbalised confidence, r_bar an EMA of batch-mean
    rewards (`RunningMean` with alpha = 0.1 in the paper). [B], [B], scalar -> [B].
    """
    chex.assert_equal_shape([rewards, confidence], custom_message="rewards, confidence")
    r = jnp.asarray(rewards, jnp.float32)
    delta = weight * jnp.abs(r) * (jnp.asarray(confidence, jnp.float32) - 0.5)
    return jnp.where(r >= jnp.asarray(reward_mean, jnp.float32), r + delta, r - delta)


# --- Goal-conditioned representations -----------------------------------------------------------

def _cosine(a, b):
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    norm = lambda x: jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), 1e-12))  # noqa: E731
    return jnp.sum(a * b, axis=-1) / (norm(a) * norm(b))


def goal_contrastive_loss(source, positive_goal, negative_goal):
    """Goal-conditioned contrastive term of a reward model's token representations.

    .. math::
        Q(s, g) = \\cos(z_s, z_g), \\quad
        L = -\\log\\sigma(Q(s^w_t, s^w_g)) - \\log(1 - \\sigma(Q(s^w_t, s^l_g)))

    z are projections of the RM's hidden states: a source token t and a later goal token g of the
    preferred response are a positive pair, the goal taken from the dispreferred response is the
    negative. Added to the BT loss with a weight lambda. Nath et al. 2024, "Learning
    Goal-Conditioned Representations for Language Reward Models" (arXiv 2407.13887).
    [B, D] x3 -> [B].
    """
    chex.assert_equal_shape([source, positive_goal, negative_goal],
                            custom_message="source, positive_goal, negative_goal")
    return (-jax.nn.log_sigmoid(_cosine(source, positive_goal))
            - jax.nn.log_sigmoid(-_cosine(source, negative_goal)))


def prefix_goal_values(token_embeddings, goal_prototype):
    """cos(z_t, g_bar) for every prefix: the value of a partial response with respect to a goal
    prototype (the mean z of final states of preferred responses). [B, T, D], [D] -> [B, T].
    Used to prune or steer generations (Nath et al. 2024, arXiv 2407.13887)."""
    chex.assert_rank(token_embeddings, 3, custom_message="token_embeddings")
    return _cosine(token_embeddings, jnp.asarray(goal_prototype)[None, None, :])


# --- Autoregressive (token-level) reward model: GenARM -----------------------------------------

def autoregressive_rm_loss(chosen_token_logps, rejected_token_logps, chosen_mask, rejected_mask,
                           *, beta_r: float = 1.0):
    """GenARM's autoregressive reward model: the reward is a sum of a trainable LM's token
    log-probs, trained with BT.

    .. math::
        r(x, y) = \\textstyle\\sum_t \\log\\pi_r(y_t \\mid x, y_{<t}), \\quad
        L = -\\log\\sigma(\\beta_r (r(x, y_c) - r(x, y_r)))

    At decoding, pi(y_t | .) is proportional to pi_base(y_t | .) pi_r(y_t | .)^(1/beta)
    (`alignax.sampling.guided_logits`). Xu et al. 2025, "GenARM: Reward Guided Generation with
    Autoregressive Reward Model for Test-time Alignment" (arXiv 2410.08193). [B, T] token
    log-probs of pi_r with [B, T] masks -> [B].
    """
    if beta_r <= 0:
        raise ValueError(f"beta_r must be positive, got {beta_r}")
    return _segment_bt(chosen_token_logps, rejected_token_logps, chosen_mask, rejected_mask,
                       1.0 / beta_r)


# --- Collaborative reward modeling: peer review ------------------------------------------------

def peer_review_masks(margins_a, margins_b, *, drop_rate):
    """CRM peer review: each model keeps the (1 - tau) fraction of pairs it is most confident
    about, and those become the *other* model's training pairs.

    Returns (mask_for_a [B], mask_for_b [B]) in float32: mask_for_b marks the round((1 - tau) B)
    largest margins of model A, and vice versa (ties broken by position). Small margin (high
    loss) is the noise signal. "Two Minds Better Than One: Collaborative Reward Modeling for LLM
    Alignment" (2025, arXiv 2505.10597), after co-teaching (Han et al. 2018).
    `drop_rate` tau in [0, 1) may be a traced scalar (see `curriculum_drop_rate`).
    """
    chex.assert_rank(margins_a, 1, custom_message="margins_a")
    chex.assert_equal_shape([margins_a, margins_b], custom_message="margins_a, margins_b")
    b = margins_a.shape[0]
    keep = jnp.round((1.0 - jnp.asarray(drop_rate, jnp.float32)) * b)

    def top(m):
        rank = jnp.argsort(jnp.argsort(-jnp.asarray(m, jnp.float32), stable=True), stable=True)
        return (rank < keep).astype(jnp.float32)

    return top(margins_b), top(margins_a)


def curriculum_drop_rate(step, *, max_rate: float, warmup_steps: int):
    """tau_t = max_rate * min(1, t / warmup_steps): the drop rate ramps up as the models learn
    (the ramp form of CRM's curriculum is our choice, as in co-teaching)."""
    if warmup_steps <= 0:
        return jnp.float32(max_rate)
    return max_rate * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
