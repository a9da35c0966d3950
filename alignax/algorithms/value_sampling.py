"""Value Augmented Sampling (VAS): a token-value model of a frozen base, trained by TD(lambda) on
the base's own samples, added to the base's logits at decoding time.

Han et al. 2024, "Value Augmented Sampling for Language Model Alignment and Personalization"
(arXiv 2405.06639). The KL-regularised optimum of a reward r against the frozen base is, token
by token,

    pi*(v | s) ∝ pi_base(v | s) exp(beta Q(s, v)),   Q(s, v) = E_{pi_base}[r | s . v],

and since Q is the value of the *base's* continuation, it can be learned from samples of the
frozen base alone (no policy / value co-training, no access to the base's weights at training
time). Decoding draws from pi* restricted to the base's top-k tokens; several rewards compose
at deployment as pi ∝ pi_base exp(sum_i beta_i Q_i) (personalisation: swap or reweight the
value models, the base is never updated).

Parametrisation (the "Q-head"): the value model is a causal LM whose [V] output at a context s
is read as Q(s, v) = V(s . v) for every next token v, so one forward per decoding step values
every candidate (the sampler's "value" guide, `alignax.sampling.sampler.sample_guided` with
`guide_kinds=("value",)`). On a sampled sequence x . y_0 .. y_{T-1} (prompt x of length P,
response tokens y_j, 0-based) the value of response token j is

    Q_j = Q(x . y_<j, y_j) = logits[P - 1 + j, y_j]      (`response_q_values`)

i.e. the output at the position *before* y_j, at index y_j: the value of the state x . y_<=j.

Objective (`value_loss`): Q_j regressed to the TD(lambda) return (SARSA(lambda) of the base's
on-policy Q; the bootstrap Q_{j+1} is a sample of V(x . y_<=j) since y_{j+1} ~ pi_base)

    G_j = r_j + gamma [(1 - lambda) sg(Q_{j+1}) + lambda G_{j+1}]   (j + 1 a valid token)
    G_j = r_j                                                          (j the last valid token)

with r_j the per-token reward, here the sequence reward at the last valid token and 0 elsewhere
(`terminal_rewards`; the reference implementation of the paper does the same), sg the stop
gradient (semi-gradient TD); L = 1/2 mean_j (Q_j - G_j)^2 over valid tokens. lambda = 1 (and
gamma = 1) is Monte-Carlo regression of every Q_j on the sequence reward; lambda = 0 is one-step
TD. `lambda_returns` computes G by a reverse `lax.scan`.

Initialisation (`value_model_from`): the base's architecture and decoder weights with an untied
LM head set to zero, so Q = 0 everywhere at the start and VAS with an untrained value samples
exactly the base (the decoder's features are the base's, the head learns the values).

Shapes: B sequences, T response tokens, V vocabulary, K value models.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from alignax.models.transformer import Model, make_lm
from alignax.sampling.sampler import GuidedSampleOutput, sample_guided

__all__ = ["lambda_returns", "response_q_values", "terminal_rewards", "vas_sample",
           "value_loss", "value_model_from"]


def terminal_rewards(rewards: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-token rewards [B, T]: the sequence reward at each row's last valid token, 0 elsewhere.

    Args:
      rewards: [B] sequence rewards r(x, y).
      mask: [B, T] valid response tokens (a prefix of each row; a row with none gets none).

    Returns:
      [B, T] float32.
    """
    mask = jnp.asarray(mask, bool)
    if rewards.ndim != 1 or mask.ndim != 2 or rewards.shape[0] != mask.shape[0]:
        raise ValueError(f"expected rewards [B] and mask [B, T], got {rewards.shape} and "
                         f"{mask.shape}")
    nxt = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    last = mask & ~nxt
    return jnp.where(last, rewards[:, None].astype(jnp.float32), 0.0)


def lambda_returns(token_rewards: jax.Array, values: jax.Array, mask: jax.Array, *,
                   gamma: float = 1.0, lam: float = 0.95) -> jax.Array:
    r"""TD(lambda) returns of per-token values, by a reverse `lax.scan` over T.

    .. math::
        G_j = r_j + \gamma m_{j+1} [(1 - \lambda) Q_{j+1} + \lambda G_{j+1}], \quad
        m_T = 0

    (Sutton & Barto, the lambda-return; the forward view of TD(lambda)). A position whose next
    token is not valid (`mask[j + 1]` False, or j = T - 1) is terminal: G_j = r_j. Invalid
    positions get 0.

    Args:
      token_rewards: [B, T] reward received with token j (e.g. `terminal_rewards`).
      values: [B, T] the current estimates Q_j used as bootstraps (not differentiated here:
        pass them through `jax.lax.stop_gradient` when they come from the trained model).
      mask: [B, T] valid tokens.
      gamma: discount in [0, 1].
      lam: lambda in [0, 1].

    Returns:
      [B, T] float32 returns G_j.
    """
    if token_rewards.shape != values.shape or token_rewards.shape != jnp.shape(mask):
        raise ValueError(f"token_rewards, values and mask must share [B, T], got "
                         f"{token_rewards.shape}, {values.shape}, {jnp.shape(mask)}")
    mask = jnp.asarray(mask, bool)
    r = jnp.where(mask, token_rewards.astype(jnp.float32), 0.0).T  # [T, B]
    q = jnp.where(mask, values.astype(jnp.float32), 0.0).T
    m = mask.T.astype(jnp.float32)

    def step(carry, x):
        g_next, q_next, m_next = carry
        r_j, q_j, m_j = x
        g = m_j * (r_j + gamma * m_next * ((1.0 - lam) * q_next + lam * g_next))
        return (g, q_j, m_j), g

    zero = jnp.zeros(r.shape[1:], jnp.float32)
    _, g = jax.lax.scan(step, (zero, zero, zero), (r, q, m), reverse=True)
    return g.T


def value_loss(q_values: jax.Array, rewards: jax.Array, mask: jax.Array, *,
               gamma: float = 1.0, lam: float = 0.95) -> tuple[jax.Array, dict]:
    r"""VAS's TD(lambda) objective on the Q-head values of sampled responses, per example.

    .. math::
        L_b = \tfrac{1}{2} \frac{\sum_j m_{bj} (Q_{bj} - G_{bj})^2}{\sum_j m_{bj}}, \quad
        G = \mathrm{lambda\_returns}(\mathrm{terminal\_rewards}(r, m), \mathrm{sg}(Q), m)

    Han et al. 2024 (arXiv 2405.06639), the value estimator trained by TD(lambda) on samples of
    the frozen base with the reward at the end of the response.

    Args:
      q_values: [B, T] Q_j = Q(x . y_<j, y_j) of every response token (`response_q_values`).
      rewards: [B] sequence rewards r(x, y).
      mask: [B, T] valid response tokens (a prefix of each row).
      gamma, lam: see `lambda_returns`.

    Returns:
      (loss [B], metrics): metrics "returns" [B, T] (the targets G), "mc_error" [B] the masked
      mean of (Q_j - r)^2 (the Monte-Carlo error, a target that does not move with the model).
    """
    mask = jnp.asarray(mask, bool)
    q = q_values.astype(jnp.float32)
    g = lambda_returns(terminal_rewards(rewards, mask), jax.lax.stop_gradient(q), mask,
                       gamma=gamma, lam=lam)
    count = jnp.maximum(mask.sum(-1), 1).astype(jnp.float32)
    loss = 0.5 * jnp.where(mask, (q - g) ** 2, 0.0).sum(-1) / count
    mc = jnp.where(mask, (q - rewards[:, None].astype(jnp.float32)) ** 2, 0.0).sum(-1) / count
    return loss, {"returns": g, "mc_error": mc}


def response_q_values(apply_fn, params, ids: jax.Array, mask: jax.Array, prompt_len: int
                      ) -> jax.Array:
    """Q_j of every response token from one forward of the value model (the Q-head reading).

    Args:
      apply_fn: the value model's `apply(params, ids, mask, logits_range=...)` (a causal LM).
      params: its parameters.
      ids: [B, P + T] prompt (left-padded, ending at P - 1) followed by the response.
      mask: [B, P + T] valid tokens.
      prompt_len: P (static).

    Returns:
      [B, T] float32: Q_j = logits[P - 1 + j, y_j], the value of the state x . y_<=j.
    """
    p = int(prompt_len)
    t = ids.shape[1] - p
    if p < 1 or t < 1:
        raise ValueError(f"prompt_len must be in [1, {ids.shape[1] - 1}], got {prompt_len}")
    logits = apply_fn(params, ids, mask, logits_range=(p - 1, p - 1 + t))  # [B, T, V]
    return jnp.take_along_axis(logits.astype(jnp.float32), ids[:, p:, None], -1)[..., 0]


def value_model_from(base: Model, base_params: Any, *, head: str = "zero") -> tuple[Model, Any]:
    """A Q-head value model initialised from the base: its decoder, an untied LM head.

    Args:
      base: the base causal LM.
      base_params: its parameters (the decoder is shared by value, not by reference: the value
        model's own training never changes the base).
      head: "zero" (Q = 0 at the start: VAS samples the base until trained) or "copy" (the
        base's LM head, or its tied embedding transposed: Q starts as the base's logits).

    Returns:
      (value model, params): `make_lm` of the base config with `tie_embeddings=False`.
    """
    if head not in ("zero", "copy"):
        raise ValueError(f"head must be 'zero' or 'copy', got {head!r}")
    cfg = base.config
    model = make_lm(dataclasses.replace(cfg, tie_embeddings=False))
    params = {k: v for k, v in base_params.items() if k != "lm_head"}
    if head == "zero":
        kernel = jnp.zeros((cfg.d_model, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
    elif cfg.tie_embeddings:
        kernel = jnp.asarray(base_params["decoder"]["embed"]["embedding"]).T
    else:
        kernel = jnp.asarray(base_params["lm_head"]["kernel"])
    params["lm_head"] = {"kernel": kernel}
    return model, params


def vas_sample(base: Model, base_params: Any, value_models: Sequence[Model],
               value_params: Sequence[Any], betas: jax.Array, prompt_ids: jax.Array,
               prompt_mask: jax.Array, rng: jax.Array, *, max_new_tokens: int,
               top_k: int = 8, **kwargs) -> GuidedSampleOutput:
    r"""VAS decoding with K value models: every token from the base's top-k under

    .. math::
        \pi(v \mid s) \propto \pi_{base}(v \mid s) \exp\big(\sum_i \beta_i Q_i(s, v)\big)

    Han et al. 2024 (arXiv 2405.06639), eq. of the decoding rule and of reward composition.
    `sample_guided` with K "value" guides, weights `betas` and beta 1 (betas traced: a sweep
    compiles once). Returns its output: `logps` pi's own, `base_logps` the base's,
    `guide_logps[i]` = Q_i(s, y_t) of the drawn tokens.

    Args:
      base, base_params: the frozen base causal LM.
      value_models, value_params: K Q-head value models (`value_model_from`) and their params.
      betas: [K] strengths (0 switches a value off; all 0 sample the base's top-k).
      prompt_ids, prompt_mask: [B, P].
      rng: PRNG key.
      max_new_tokens: N.
      top_k: candidates per step (0: the whole vocabulary).
      kwargs: `sample_guided`'s other keywords (num_samples, stop_tokens, pad_id, ...).
    """
    value_models = tuple(value_models)
    return sample_guided(base, base_params, value_models, tuple(value_params), betas, 1.0,
                         prompt_ids, prompt_mask, rng, max_new_tokens=max_new_tokens,
                         guide_kinds=("value",) * len(value_models), value_top_k=int(top_k),
                         **kwargs)
