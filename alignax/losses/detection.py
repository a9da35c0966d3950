"""Reward-model objectives for detecting aligned-LM text (ReMoDetect).

Lee et al. 2024, "ReMoDetect: Reward Models Recognize Aligned LLM's Generations" (arXiv
2405.17382). The detector score is a reward model's output r_phi(x, y); it is fine-tuned so that
aligned-LM responses score above partially rewritten ("mixed") responses, which score above
human responses, while a replay term keeps its scores on other data close to those of the
initial reward model r_phi0.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from alignax._src import checks


def ordered_triplet_loss(lm_rewards, mix_rewards, human_rewards) -> jax.Array:
    """Bradley-Terry loss of the order y_LM > y_MIX > y_HU, summed over the three pairs.

    .. math::
        L = -\\log\\sigma(r_{LM} - r_{MIX}) - \\log\\sigma(r_{MIX} - r_{HU})
            - \\log\\sigma(r_{LM} - r_{HU})

    Lee et al. 2024 (ReMoDetect): y_LM is an aligned LM's response, y_HU a human response to the
    same prompt, y_MIX the human response partly rewritten by an aligned LM.

    Args:
      lm_rewards: [B] rewards of the aligned-LM responses.
      mix_rewards: [B] rewards of the mixed responses.
      human_rewards: [B] rewards of the human responses.

    Returns:
      [B] float32 losses.
    """
    chex.assert_rank(lm_rewards, 1, custom_message="lm_rewards")
    chex.assert_equal_shape([lm_rewards, mix_rewards, human_rewards],
                            custom_message="lm_rewards, mix_rewards, human_rewards")
    lm = checks.as_float(lm_rewards, "lm_rewards")
    mix = checks.as_float(mix_rewards, "mix_rewards")
    hu = checks.as_float(human_rewards, "human_rewards")
    return (-jax.nn.log_sigmoid(lm - mix) - jax.nn.log_sigmoid(mix - hu)
            - jax.nn.log_sigmoid(lm - hu))


def replay_regularizer(rewards, init_rewards) -> jax.Array:
    """Squared drift of the reward model from its initial scores on replayed examples.

    .. math::
        R = (r_\\phi(x, y) - r_{\\phi_0}(x, y))^2

    The replay term of ReMoDetect's continual preference fine-tuning (Lee et al. 2024), in the
    squared-difference form; this form is not verified against the paper or its code.
    `init_rewards` are treated as constants (no gradient flows into them).

    Args:
      rewards: [M] current rewards on replay-buffer examples.
      init_rewards: [M] rewards of the initial reward model on the same examples.

    Returns:
      [M] float32 penalties.
    """
    chex.assert_rank(rewards, 1, custom_message="rewards")
    chex.assert_equal_shape([rewards, init_rewards], custom_message="rewards, init_rewards")
    r = checks.as_float(rewards, "rewards")
    r0 = jax.lax.stop_gradient(checks.as_float(init_rewards, "init_rewards"))
    return jnp.square(r - r0)


def remodetect_loss(lm_rewards, mix_rewards, human_rewards, replay_rewards, replay_init_rewards,
                    *, replay_coef: float = 1.0) -> jax.Array:
    """ReMoDetect's continual preference fine-tuning objective (a scalar).

    .. math::
        L = \\mathbb{E}_B\\big[\\ell(r_{LM}, r_{MIX}) + \\ell(r_{MIX}, r_{HU})
            + \\ell(r_{LM}, r_{HU})\\big]
            + \\lambda\\, \\mathbb{E}_{M}\\big[(r_\\phi - r_{\\phi_0})^2\\big],
        \\quad \\ell(a, b) = -\\log\\sigma(a - b)

    Lee et al. 2024, "ReMoDetect: Reward Models Recognize Aligned LLM's Generations". The
    replay term's squared form is unverified (see `replay_regularizer`).

    Args:
      lm_rewards, mix_rewards, human_rewards: [B] rewards of one triplet per row.
      replay_rewards: [M] current rewards on a replay batch.
      replay_init_rewards: [M] initial reward model's rewards on the same batch.
      replay_coef: lambda >= 0.

    Returns:
      Scalar float32 loss.
    """
    checks.check_in_range(replay_coef, "replay_coef", 0.0, float("inf"))
    triplet = ordered_triplet_loss(lm_rewards, mix_rewards, human_rewards)
    replay = replay_regularizer(replay_rewards, replay_init_rewards)
    return jnp.mean(triplet) + replay_coef * jnp.mean(replay)
