"""Direct alignment objectives on sequence log-probs of policy and reference.

Each loss takes `(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)`
([B] each: whatever log-probs the caller chooses, usually summed over response tokens) and returns
`(losses [B], metrics)` with per-example metric arrays:
`chosen_rewards` = beta (pi_c - ref_c), `rejected_rewards`, `reward_margins`, `reward_accuracies`.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

_NAMES = ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"]


def _log_ratios(pc, pr, rc, rr):
    chex.assert_rank(pc, 1, custom_message=_NAMES[0])
    chex.assert_equal_shape([pc, pr, rc, rr], custom_message=", ".join(_NAMES))
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    chosen = f(pc) - f(rc)
    rejected = f(pr) - f(rr)
    return chosen, rejected


def _metrics(beta, chosen, rejected):
    margins = beta * (chosen - rejected)
    return {
        "chosen_rewards": beta * chosen,
        "rejected_rewards": beta * rejected,
        "reward_margins": margins,
        "reward_accuracies": (margins > 0).astype(jnp.float32),
    }


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct Preference Optimization (sigmoid loss), with cDPO label smoothing.

    .. math::
        h = (\\log\\pi(y_c) - \\log\\pi_{ref}(y_c))
          - (\\log\\pi(y_r) - \\log\\pi_{ref}(y_r)), \\quad
        L = -(1 - \\epsilon) \\log \\sigma(\\beta h) - \\epsilon \\log \\sigma(-\\beta h)

    Rafailov et al. 2023, arXiv 2305.18290 (epsilon = 0); cDPO: labels flipped with probability
    epsilon (Mitchell 2023, "A note on DPO with noisy preferences").

    Args:
      policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B].
      beta: KL-regularisation strength.
      label_smoothing: epsilon in [0, 0.5).

    Returns:
      ([B] float32 losses, metrics of [B] arrays).
    """
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (chosen - rejected)
    loss = -jax.nn.log_sigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * jax.nn.log_sigmoid(-z)
    return loss, _metrics(beta, chosen, rejected)


def ipo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float = 0.1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Identity Preference Optimization: squared regression of the log-ratio gap onto 1/(2 tau).

    .. math::
        L = \\left(h - \\frac{1}{2\\tau}\\right)^2, \\quad \\tau = \\beta

    with h as in `dpo_loss`. Azar et al. 2023, arXiv 2310.12036, eq. (17). TRL feeds IPO
    per-token *average* log-probs; pass whichever log-probs you intend.

    Returns:
      ([B] float32 losses, metrics of [B] arrays).
    """
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h = chosen - rejected
    return (h - 1.0 / (2.0 * beta)) ** 2, _metrics(beta, chosen, rejected)


# ----------------------------------------------------------------------------------------------
# The DPO loss types of TRL's DPOTrainer, each under its TRL name in `DPO_LOSS_TYPES`.
# Notation: c = pi_c - ref_c, r = pi_r - ref_r (log-ratios), h = c - r, x = beta h.
# ----------------------------------------------------------------------------------------------


def hinge_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
               *, beta: float = 0.1):
    """SLiC hinge: max(0, 1 - beta h). Zhao et al. 2023, SLiC-HF (arXiv 2305.10425)."""
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    return jax.nn.relu(1.0 - beta * (c - r)), _metrics(beta, c, r)


def exo_pair_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1, label_smoothing: float = 1e-3):
    """EXO (pairwise): KL(p_theta || p_label) over {chosen, rejected}.

    .. math::
        L = \\sigma(x) (\\log\\sigma(x) - \\log(1-\\epsilon))
          + \\sigma(-x) (\\log\\sigma(-x) - \\log\\epsilon)

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment"
    (arXiv 2402.00856), eq. 16. Needs 0 < epsilon < 1 (TRL uses 1e-3 when it is 0).
    """
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair needs 0 < label_smoothing < 1, got {label_smoothing}")
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    x = beta * (c - r)
    loss = (jax.nn.sigmoid(x) * (jax.nn.log_sigmoid(x) - jnp.log1p(-label_smoothing))
            + jax.nn.sigmoid(-x) * (jax.nn.log_sigmoid(-x) - jnp.log(label_smoothing)))
    return loss, _metrics(beta, c, r)


def nca_pair_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1):
    """NCA (pairwise): -log s(beta c) - 0.5 log s(-beta c) - 0.5 log s(-beta r).

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models" (arXiv 2402.05369).
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    loss = (-jax.nn.log_sigmoid(beta * c) - 0.5 * jax.nn.log_sigmoid(-beta * c)
            - 0.5 * jax.nn.log_sigmoid(-beta * r))
    return loss, _metrics(beta, c, r)


def robust_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """Robust DPO: unbiased under labels flipped with probability epsilon.

    .. math::
        L = \\frac{-(1-\\epsilon)\\log\\sigma(x) + \\epsilon \\log\\sigma(-x)}{1 - 2\\epsilon}

    Chowdhury et al. 2024, "Provably Robust DPO" (arXiv 2403.00409). Unlike cDPO the flipped
    term enters with a minus sign, so the loss is an unbiased estimate of the clean-label loss.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    x = beta * (c - r)
    loss = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(x)
            + label_smoothing * jax.nn.log_sigmoid(-x)) / (1.0 - 2.0 * label_smoothing)
    return loss, _metrics(beta, c, r)


def bco_pair_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1):
    """BCO (pairwise, TRL's form without the reward shift): -log s(beta c) - log s(-beta r).

    Jung et al. 2024, "Binary Classifier Optimization for LLM Alignment" (arXiv 2404.04656).
    """
    return bco_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, delta=0.0, beta=beta)


def sppo_hard_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                   ref_rejected_logps, *, beta: float = 0.1):
    """SPPO with hard win probabilities: (c - 1/(2 beta))^2 + (r + 1/(2 beta))^2.

    Wu et al. 2024, "Self-Play Preference Optimization" (arXiv 2405.00675), eq. 4.7 with P = 1
    for the winner and 0 for the loser.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    return (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2, _metrics(beta, c, r)


def _smoothed_sigmoid(x, label_smoothing):
    return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(x)
            - label_smoothing * jax.nn.log_sigmoid(-x))


def aot_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             *, beta: float = 0.1, label_smoothing: float = 0.0):
    """AOT (paired): distributional alignment via optimal transport over the batch.

    The policy log-ratios (pi_c - pi_r) and the reference ones (ref_c - ref_r) are each sorted over
    the batch; delta_i = sorted_i - ref_sorted_i enters the smoothed sigmoid loss. Melnyk et al.
    2024, "Distributional Preference Alignment of LLMs via Optimal Transport" (arXiv 2406.05882).
    Element i of the result belongs to the i-th sorted pair, not to input row i.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    delta = (jnp.sort(f(policy_chosen_logps) - f(policy_rejected_logps))
             - jnp.sort(f(ref_chosen_logps) - f(ref_rejected_logps)))
    return _smoothed_sigmoid(beta * delta, label_smoothing), _metrics(beta, c, r)


def aot_pair_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """AOT (unpaired; TRL's `aot_pair`, later `aot_unpaired`): sort c and r separately.

    delta_i = sort(c)_i - sort(r)_i in the smoothed sigmoid loss (Melnyk et al. 2024). Element i
    belongs to the i-th sorted position.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    delta = jnp.sort(c) - jnp.sort(r)
    return _smoothed_sigmoid(beta * delta, label_smoothing), _metrics(beta, c, r)


def apo_zero_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1):
    """APO-zero: (1 - s(beta c)) + s(beta r): raise chosen, lower rejected likelihood.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization" (arXiv 2408.06266), eq. 7.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    return (1.0 - jax.nn.sigmoid(beta * c)) + jax.nn.sigmoid(beta * r), _metrics(beta, c, r)


def apo_down_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1):
    """APO-down: s(beta c) + (1 - s(beta h)): lower both, the rejected more (arXiv 2408.06266,
    eq. 8)."""
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    return jax.nn.sigmoid(beta * c) + (1.0 - jax.nn.sigmoid(beta * (c - r))), _metrics(beta, c, r)


def discopop_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, beta: float = 0.1, tau: float = 0.05):
    """DiscoPOP (log-ratio modulated loss): a sigma(x / tau)-weighted blend of logistic and
    exponential losses.

    .. math::
        m = \\sigma(x/\\tau), \\quad L = (1 - m)(-\\log\\sigma(x)) + m\\, e^{-x}

    Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for LLMs"
    (arXiv 2406.08414), eq. 5. `m e^{-x}` is computed as exp(log sigma(x/tau) - x), finite for
    any x when tau < 1.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    x = beta * (c - r)
    m = jax.nn.sigmoid(x / tau)
    loss = (1.0 - m) * -jax.nn.log_sigmoid(x) + jnp.exp(jax.nn.log_sigmoid(x / tau) - x)
    return loss, _metrics(beta, c, r)


def sigmoid_norm_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                      ref_rejected_logps, *, chosen_lengths, rejected_lengths,
                      beta: float = 0.1):
    """Length-normalised DPO: -log s(beta (c / |y_c| - r / |y_r|)) (TRL's `sigmoid_norm`).

    The "LN-DPO" baseline of Meng et al. 2024, SimPO (arXiv 2405.14734): DPO's implicit reward
    averaged per token.

    Args:
      chosen_lengths, rejected_lengths: [B] response token counts (clamped to >= 1).
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    lc = jnp.maximum(jnp.asarray(chosen_lengths, jnp.float32), 1.0)
    lr = jnp.maximum(jnp.asarray(rejected_lengths, jnp.float32), 1.0)
    return -jax.nn.log_sigmoid(beta * (c / lc - r / lr)), _metrics(beta, c, r)


def ipo_norm_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                  ref_rejected_logps, *, chosen_lengths, rejected_lengths, beta: float = 0.1):
    """IPO on per-token average log-ratios: (c / |y_c| - r / |y_r| - 1/(2 beta))^2.

    TRL's DPOTrainer computes its `ipo` loss type this way (the IPO authors' normalisation of
    Azar et al. 2023, arXiv 2310.12036, eq. 17, so that beta does not scale with length);
    `ipo_loss` is the unnormalised form of the paper's equation.

    Args:
      chosen_lengths, rejected_lengths: [B] response token counts (clamped to >= 1).
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    lc = jnp.maximum(jnp.asarray(chosen_lengths, jnp.float32), 1.0)
    lr = jnp.maximum(jnp.asarray(rejected_lengths, jnp.float32), 1.0)
    return (c / lc - r / lr - 1.0 / (2.0 * beta)) ** 2, _metrics(beta, c, r)


# f-divergence DPO (Wang et al. 2023, "Beyond Reverse KL", arXiv 2309.16240): the log-ratio
# u = log pi/pi_ref is replaced by f'(pi/pi_ref) of the divergence that regularises the policy.
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# the losses that read the log-ratios only through c - r (TRL's list), where f' may replace them
F_DIVERGENCE_LOSSES = ("dpo", "sigmoid_norm", "hinge", "ipo", "ipo_norm", "exo_pair", "robust",
                       "discopop", "sft")


def f_divergence_scores(log_ratios: jax.Array, divergence: str = "reverse_kl", *,
                        alpha: float = 1.0) -> jax.Array:
    """f'(t) at t = pi/pi_ref, from the log-ratios u = log t [...] (elementwise).

    .. math::
        \\text{reverse KL: } u, \\quad \\text{forward KL: } 1 - e^{-u}, \\quad
        \\text{JS: } \\log 2 + \\log\\sigma(u), \\quad
        \\alpha\\text{: } (e^{(\\alpha - 1) u} - 1) / (\\alpha - 1)

    (alpha = 1 is the reverse-KL limit; (alpha - 1) u is clipped at 80 so the exponential
    stays finite in float32, as TRL does). Wang et al. 2023, arXiv 2309.16240, Table 1.
    """
    u = jnp.asarray(log_ratios, jnp.float32)
    if divergence == "reverse_kl":
        return u
    if divergence == "forward_kl":
        return 1.0 - jnp.exp(-u)
    if divergence == "js_divergence":
        return jnp.log(2.0) + jax.nn.log_sigmoid(u)
    if divergence == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return u
        return jnp.expm1(jnp.minimum((alpha - 1.0) * u, 80.0)) / (alpha - 1.0)
    raise ValueError(f"unknown f-divergence {divergence!r}; valid: {list(F_DIVERGENCES)}")


def length_desensitized_logps(token_logps: jax.Array, mask: jax.Array, ld_alpha: float
                              ) -> jax.Array:
    """LD-DPO sequence log-probs of stacked pair rows (chosen first) [2B, T], [2B, T] -> [2B].

    The first min(|y_c|, |y_r|) response tokens of each row (the length both responses share)
    count fully, the longer response's excess tokens with weight alpha:
    log p = sum_{t <= l_s} log p_t + alpha sum_{t > l_s} log p_t. alpha = 1 is the plain sum;
    alpha < 1 damps DPO's preference for length. Liu et al. 2024, "Length Desensitization in
    Direct Preference Optimization" (arXiv 2409.06411), eq. 9; TRL's `ld_alpha`.
    """
    m = jnp.asarray(mask).astype(jnp.float32)
    b = m.shape[0] // 2
    pos = jnp.cumsum(m, axis=-1)
    lengths = m.sum(-1)
    shared = jnp.minimum(lengths[:b], lengths[b:])
    shared = jnp.concatenate([shared, shared])[:, None]
    lp = jnp.where(m > 0, token_logps, 0.0)
    head = jnp.where(pos <= shared, lp, 0.0).sum(-1)
    tail = jnp.where(pos > shared, lp, 0.0).sum(-1)
    return head + ld_alpha * tail


def wpo_weights(token_logps: jax.Array, log_sum_sq_probs: jax.Array, mask: jax.Array
                ) -> jax.Array:
    """WPO pair weights from stacked pair rows (chosen first): [2B, T] x 3 -> [B].

    Each response's weight is its geometric-mean token probability under the policy,
    normalised per position by the policy's own sharpness: w(y) = exp(mean_t (log p(y_t) -
    log sum_v p(v)^2)); a pair weighs w(y_c) w(y_r), without gradient. Zhou et al. 2024,
    "WPO: Enhancing RLHF with Weighted Preference Optimization" (arXiv 2406.11827), eq. 2 with
    the sampling-aligned normalisation; TRL's `use_weighting`.
    """
    m = jnp.asarray(mask).astype(jnp.float32)
    aligned = jnp.where(m > 0, token_logps - log_sum_sq_probs, 0.0)
    w = jnp.exp(aligned.sum(-1) / jnp.maximum(m.sum(-1), 1.0))
    b = w.shape[0] // 2
    return jax.lax.stop_gradient(w[:b] * w[b:])


DPO_LOSS_TYPES = {
    "sigmoid": dpo_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss,
    "robust": robust_dpo_loss,
    "bco_pair": bco_pair_loss,
    "sppo_hard": sppo_hard_loss,
    "aot": aot_loss,
    "aot_pair": aot_pair_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "discopop": discopop_loss,
    "sigmoid_norm": sigmoid_norm_loss,
}


# ----------------------------------------------------------------------------------------------
# Length-aware, reference-free and unpaired objectives.
# ----------------------------------------------------------------------------------------------


def _lengths(x):
    return jnp.maximum(jnp.asarray(x, jnp.float32), 1.0)


def rdpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
              *, chosen_lengths, rejected_lengths, beta: float = 0.1, alpha: float = 0.01):
    """R-DPO: DPO with a length penalty inside the sigmoid.

    .. math::
        L = -\\log\\sigma(\\beta h - \\alpha (|y_c| - |y_r|))

    Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization"
    (arXiv 2403.19159), eq. 9.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    length_gap = jnp.asarray(chosen_lengths, jnp.float32) - jnp.asarray(rejected_lengths,
                                                                         jnp.float32)
    return -jax.nn.log_sigmoid(beta * (c - r) - alpha * length_gap), _metrics(beta, c, r)


def _policy_pair(pc, pr):
    chex.assert_rank(pc, 1, custom_message=_NAMES[0])
    chex.assert_equal_shape([pc, pr], custom_message=", ".join(_NAMES[:2]))
    return jnp.asarray(pc, jnp.float32), jnp.asarray(pr, jnp.float32)


def simpo_loss(policy_chosen_logps, policy_rejected_logps, *, chosen_lengths, rejected_lengths,
               beta: float = 2.0, gamma: float = 1.0):
    """SimPO: reference-free, length-normalised, with a target margin gamma.

    .. math::
        L = -\\log\\sigma\\left(\\frac{\\beta}{|y_c|}\\log\\pi(y_c)
            - \\frac{\\beta}{|y_r|}\\log\\pi(y_r) - \\gamma\\right)

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"
    (arXiv 2405.14734), eq. 6. (TRL's `gamma_beta_ratio` is gamma / beta.)

    Args:
      policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs.
      chosen_lengths, rejected_lengths: [B] response token counts.
    """
    pc, pr = _policy_pair(policy_chosen_logps, policy_rejected_logps)
    c, r = pc / _lengths(chosen_lengths), pr / _lengths(rejected_lengths)
    return -jax.nn.log_sigmoid(beta * (c - r) - gamma), _metrics(beta, c, r)


def cpo_loss(policy_chosen_logps, policy_rejected_logps, *, chosen_lengths, beta: float = 0.1,
             alpha: float = 1.0):
    """CPO: reference-free sigmoid preference loss plus a behaviour-cloning NLL on the chosen.

    .. math::
        L = -\\log\\sigma(\\beta(\\log\\pi(y_c) - \\log\\pi(y_r)))
            - \\alpha \\frac{\\log\\pi(y_c)}{|y_c|}

    Xu et al. 2024, "Contrastive Preference Optimization" (arXiv 2401.08417), eq. 3 (the NLL per
    token, as TRL's CPOTrainer).
    """
    pc, pr = _policy_pair(policy_chosen_logps, policy_rejected_logps)
    nll = -pc / _lengths(chosen_lengths)
    return -jax.nn.log_sigmoid(beta * (pc - pr)) + alpha * nll, _metrics(beta, pc, pr)


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012)."""
    return jnp.where(x > -0.6931472, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def orpo_loss(policy_chosen_logps, policy_rejected_logps, *, chosen_lengths, rejected_lengths,
              lambda_: float = 0.1):
    """ORPO: NLL of the chosen plus an odds-ratio preference term (no reference model).

    With per-token average log-probs a_c, a_r and log odds(y) = a - log(1 - e^a):

    .. math::
        L = -a_c - \\lambda \\log\\sigma(\\log odds(y_c) - \\log odds(y_r))

    Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
    (arXiv 2403.07691), eqs. 6-7; lambda is TRL's `beta`.
    """
    pc, pr = _policy_pair(policy_chosen_logps, policy_rejected_logps)
    a_c = jnp.minimum(pc / _lengths(chosen_lengths), -1e-6)
    a_r = jnp.minimum(pr / _lengths(rejected_lengths), -1e-6)
    log_odds = (a_c - a_r) - (_log1mexp(a_c) - _log1mexp(a_r))
    loss = -a_c - lambda_ * jax.nn.log_sigmoid(log_odds)
    metrics = _metrics(lambda_, a_c, a_r)
    metrics["log_odds_ratio"] = log_odds
    return loss, metrics


def kto_loss(policy_logps, ref_logps, desirable, *, kl, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO: a prospect-theoretic loss on unpaired desirable/undesirable examples.

    With r = log pi(y) - log pi_ref(y) and the reference point z0 = max(kl, 0) (not
    differentiated):

    .. math::
        L = \\lambda_D (1 - \\sigma(\\beta (r - z_0))) \\text{ if desirable, else }
            \\lambda_U (1 - \\sigma(\\beta (z_0 - r)))

    Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"
    (arXiv 2402.01306), eq. 8. TRL estimates `kl` as the batch mean of log-ratios on mismatched
    (prompt, completion) pairs.

    Args:
      policy_logps, ref_logps: [B] summed response log-probs.
      desirable: [B] bool, True for desirable examples.
      kl: scalar reference point estimate.
    """
    chex.assert_rank(policy_logps, 1, custom_message="policy_logps")
    chex.assert_equal_shape([policy_logps, ref_logps, desirable],
                            custom_message="policy_logps, ref_logps, desirable")
    r = jnp.asarray(policy_logps, jnp.float32) - jnp.asarray(ref_logps, jnp.float32)
    z0 = jax.lax.stop_gradient(jnp.maximum(jnp.asarray(kl, jnp.float32), 0.0))
    desirable = jnp.asarray(desirable, bool)
    loss = jnp.where(desirable, desirable_weight * (1.0 - jax.nn.sigmoid(beta * (r - z0))),
                     undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - r))))
    return loss, {"rewards": beta * r, "kl": jnp.broadcast_to(z0, r.shape)}


REFERENCE_FREE_LOSSES = {"simpo": simpo_loss, "cpo": cpo_loss, "orpo": orpo_loss}


# ----------------------------------------------------------------------------------------------
# Token-level KL, running reward shift, soft labels, optimism and consistency.
# ----------------------------------------------------------------------------------------------


def tdpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
              *, chosen_seq_kl, rejected_seq_kl, beta: float = 0.1, alpha: float = 0.5,
              variant: int = 2):
    """TDPO: DPO with the sequential token-level KL of each response in the margin.

    With u = beta h and D(y) = sum_t KL(ref(.|y_<t) || pi(.|y_<t)) (`ops.sequential_kl`):

    .. math::
        \\text{TDPO}_1: L = -\\log\\sigma(u - \\beta (D(y_r) - D(y_c))) \\\\
        \\text{TDPO}_2: L = -\\log\\sigma(u - \\alpha \\beta (D(y_r) - \\mathrm{sg}(D(y_c))))

    Zeng et al. 2024, "Token-level Direct Preference Optimization" (arXiv 2404.11999), eqs. 18
    and 20.

    Args:
      chosen_seq_kl, rejected_seq_kl: [B] sequential KLs of the two responses.
      variant: 1 or 2.
    """
    if variant not in (1, 2):
        raise ValueError(f"TDPO variant must be 1 or 2, got {variant}")
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    kl_c = jnp.asarray(chosen_seq_kl, jnp.float32)
    kl_r = jnp.asarray(rejected_seq_kl, jnp.float32)
    if variant == 1:
        delta = beta * (kl_r - kl_c)
    else:
        delta = alpha * beta * (kl_r - jax.lax.stop_gradient(kl_c))
    metrics = _metrics(beta, c, r)
    metrics["seq_kl_chosen"], metrics["seq_kl_rejected"] = kl_c, kl_r
    return -jax.nn.log_sigmoid(beta * (c - r) - delta), metrics


class RunningMean(NamedTuple):
    """Exact running mean of everything seen so far (state of BCO's reward shift)."""

    mean: jax.Array
    count: jax.Array

    @classmethod
    def create(cls) -> "RunningMean":
        return cls(mean=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.float32))

    def update(self, values: jax.Array) -> "RunningMean":
        values = jnp.asarray(values, jnp.float32).reshape(-1)
        n = self.count + values.size
        mean = self.mean + (values.sum() - values.size * self.mean) / n
        return RunningMean(mean=mean, count=n)


def bco_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             *, delta, beta: float = 0.1, rejected_weights=None):
    """BCO: binary classification of chosen (label 1) vs rejected (label 0) implicit rewards,
    shifted by the running mean delta of all rewards.

    .. math::
        L = -\\log\\sigma(\\beta c - \\delta) - w \\log\\sigma(-(\\beta r - \\delta))

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment"
    (arXiv 2404.04656); w are the optional underlying-distribution-matching weights of the
    rejected prompts. Keep delta in a `RunningMean` updated (outside the gradient) with
    `concatenate([beta c, beta r])` after each step.
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    d = jax.lax.stop_gradient(jnp.asarray(delta, jnp.float32))
    w = 1.0 if rejected_weights is None else jnp.asarray(rejected_weights, jnp.float32)
    loss = -jax.nn.log_sigmoid(beta * c - d) - w * jax.nn.log_sigmoid(-(beta * r - d))
    return loss, _metrics(beta, c, r)


def irepo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
               *, preference_rate, beta: float = 0.1, eps: float = 1e-3):
    """iREPO: regress the implicit reward difference onto the logit of the empirical preference.

    .. math::
        L = (\\beta h - \\mathrm{logit}(\\hat p))^2, \\quad \\hat p \\in [\\epsilon, 1-\\epsilon]

    where p̂ is the fraction of annotators preferring the first response. "iREPO: implicit Reward
    Pairwise difference based Empirical Preference Optimization" (arXiv 2405.15230).
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    p = jnp.clip(jnp.asarray(preference_rate, jnp.float32), eps, 1.0 - eps)
    target = jnp.log(p) - jnp.log1p(-p)
    return jnp.square(beta * (c - r) - target), _metrics(beta, c, r)


def selm_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
              *, policy_sample_logps, ref_sample_logps, beta: float = 0.1, alpha: float = 0.001):
    """SELM: DPO plus an optimism term that lowers the likelihood of a reference sample y_s.

    .. math:: L = -\\log\\sigma(\\beta h) + \\alpha \\beta (\\log\\pi(y_s) - \\log\\pi_{ref}(y_s))

    Zhang et al. 2024, "Self-Exploring Language Models" (arXiv 2405.19332).

    Args:
      policy_sample_logps, ref_sample_logps: [B] log-probs of a fresh sample from the reference.
    """
    loss, metrics = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps, beta=beta)
    h_s = jnp.asarray(policy_sample_logps, jnp.float32) - jnp.asarray(ref_sample_logps,
                                                                       jnp.float32)
    return loss + alpha * beta * h_s, metrics


def cream_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
               *, consistency, beta: float = 0.1):
    """CREAM: DPO with the rank consistency C of two self-reward iterates as a soft label.

    .. math:: L = C \\cdot L_{DPO}(y_c, y_r) + (1 - C) \\cdot L_{DPO}(y_r, y_c)

    with C = (tau_Kendall(J_t, J_{t-1}) + 1) / 2 (`ops.kendall_tau`). Wang et al. 2024, "CREAM:
    Consistency Regularized Self-Rewarding Language Models" (arXiv 2410.12735).
    """
    c, r = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                       ref_rejected_logps)
    x = beta * (c - r)
    w = jnp.asarray(consistency, jnp.float32)
    return -w * jax.nn.log_sigmoid(x) - (1.0 - w) * jax.nn.log_sigmoid(-x), _metrics(beta, c, r)
