"""Direct alignment losses for `alignax.models.sequence_table` policies: online (pairs drawn from
the current policy at every update, labelled by a fixed scorer) and offline (a fixed dataset), and
the non-contrastive best-of-K SFT (RAFT's inner step).

They are `loss_fn(params, batch) -> (loss, metrics)` for `alignax.train.small.fit_small(
has_aux=True, batch_fn=alignax.algorithms.small_pg.rl_batch)`: `batch["rng"]` is the update's key
and `batch["data"]` the seed's data, a dict with

- "z": [P, D] the training prompts' features (the policy is log-linear in them);
- "ref_logp": [P, N] log pi_ref(y | x) of every response of every training prompt;
- "score": [P, N] the labeller's score of every response (a proxy reward model's table): the
  online losses label a pair by it (the higher score is chosen; ties: the first draw);
- "beta": a scalar, the loss's beta (data, so one program trains a whole beta grid vmapped);
- for the offline loss, the dataset: "prompt", "chosen", "rejected" [K] int32 (prompt rows and
  sequence indices).

Online (Tang et al. 2024; Guo et al. 2024): each update draws `num_pairs` prompts uniformly and
two responses y, y' ~ pi_theta(.|x) with the current params under stop-gradient, labels them with
the score and takes the pair loss (e.g. `alignax.losses.direct.ipo_loss`) on the exact sequence
log-probs. Offline: the same pair loss on `num_pairs` pairs drawn uniformly from the dataset.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from alignax.models import sequence_table as st

PairLoss = Callable[..., tuple[jax.Array, dict]]


def _pick(table, index):
    return jnp.take_along_axis(table, index[:, None], axis=-1)[:, 0]


def _pair_step(pair_loss, beta, lp, ref, chosen, rejected):
    losses, metrics = pair_loss(_pick(lp, chosen), _pick(lp, rejected), _pick(ref, chosen),
                                _pick(ref, rejected), beta=beta)
    return losses.mean(), {"pair_loss": losses.mean(),
                           "margin": jnp.mean(metrics["reward_margins"]),
                           "same_response": jnp.mean((chosen == rejected).astype(jnp.float32))}


def online_pair_loss(space: st.SequenceSpace, pair_loss: PairLoss, *, num_pairs: int
                     ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """The online loss: fresh on-policy pairs at every update, labelled by `data["score"]`.

    Args:
      space: the response space.
      pair_loss: `(pc, pr, rc, rr, beta=) -> ([B] losses, metrics with "reward_margins")`.
      num_pairs: pairs per update.

    Returns:
      `loss_fn(params, batch)`; metrics: pair_loss, margin (mean beta h), same_response (the
      fraction of pairs whose two draws coincide), score_gap (mean score of chosen minus
      rejected), policy_score (mean score of the draws).
    """

    def loss_fn(params, batch):
        d, key = batch["data"], batch["rng"]
        kp, ks = jax.random.split(key)
        rows = jax.random.randint(kp, (num_pairs,), 0, d["z"].shape[0])
        lp = st.sequence_log_probs(space, params, d["z"][rows])  # [B, N]
        draws = jax.random.categorical(ks, jax.lax.stop_gradient(lp), axis=-1,
                                       shape=(2, num_pairs))
        score = d["score"][rows]
        sa, sb = _pick(score, draws[0]), _pick(score, draws[1])
        a_first = sa >= sb
        chosen = jnp.where(a_first, draws[0], draws[1])
        rejected = jnp.where(a_first, draws[1], draws[0])
        loss, metrics = _pair_step(pair_loss, d["beta"], lp, d["ref_logp"][rows], chosen,
                                   rejected)
        metrics.update(score_gap=jnp.mean(jnp.abs(sa - sb)),
                       policy_score=jnp.mean(0.5 * (sa + sb)))
        return loss, metrics

    return loss_fn


def offline_pair_loss(space: st.SequenceSpace, pair_loss: PairLoss, *, num_pairs: int
                      ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """The offline loss: `num_pairs` pairs drawn uniformly (with replacement) from the fixed
    dataset `data["prompt"], data["chosen"], data["rejected"]` at every update."""

    def loss_fn(params, batch):
        d, key = batch["data"], batch["rng"]
        i = jax.random.randint(key, (num_pairs,), 0, d["prompt"].shape[0])
        rows = d["prompt"][i]
        lp = st.sequence_log_probs(space, params, d["z"][rows])
        return _pair_step(pair_loss, d["beta"], lp, d["ref_logp"][rows], d["chosen"][i],
                          d["rejected"][i])

    return loss_fn


def best_of_k_sft_loss(space: st.SequenceSpace, *, num_prompts: int, k: int
                       ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """Non-contrastive online step (RAFT with one update per round, or "SFT on the best"):
    draw k responses per prompt from the current policy (stop-gradient), keep the best by
    `data["score"]` (ties: the first) and minimise its negative log-likelihood.

    Metrics: nll, best_score (mean score of the kept responses), policy_score (mean score of
    all draws).
    """

    def loss_fn(params, batch):
        d, key = batch["data"], batch["rng"]
        kp, ks = jax.random.split(key)
        rows = jax.random.randint(kp, (num_prompts,), 0, d["z"].shape[0])
        lp = st.sequence_log_probs(space, params, d["z"][rows])  # [B, N]
        draws = jax.random.categorical(ks, jax.lax.stop_gradient(lp), axis=-1,
                                       shape=(k, num_prompts)).T  # [B, k]
        s = jnp.take_along_axis(d["score"][rows], draws, axis=-1)
        best = jnp.take_along_axis(draws, jnp.argmax(s, -1)[:, None], axis=-1)[:, 0]
        nll = -jnp.mean(_pick(lp, best))
        return nll, {"nll": nll, "best_score": jnp.max(s, -1).mean(), "policy_score": s.mean()}

    return loss_fn


def sft_loss(space: st.SequenceSpace, *, num_examples: int
             ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """Supervised fine-tuning on a fixed set of (prompt, response) examples: the mean negative
    log-likelihood of `num_examples` examples drawn uniformly (with replacement) from
    `data["prompt"]` [K] (rows of `data["z"]`) and `data["response"]` [K] (sequence indices) at
    every update (RAFT's SFT step on the kept best-of-K samples)."""

    def loss_fn(params, batch):
        d, key = batch["data"], batch["rng"]
        i = jax.random.randint(key, (num_examples,), 0, d["prompt"].shape[0])
        lp = st.sequence_log_probs(space, params, d["z"][d["prompt"][i]])
        nll = -jnp.mean(_pick(lp, d["response"][i]))
        return nll, {"nll": nll}

    return loss_fn


def rloo_loss(space: st.SequenceSpace, *, num_prompts: int, k: int, kl_coef: float | None = None
              ) -> Callable[[dict, dict], tuple[jax.Array, dict]]:
    """REINFORCE with a per-prompt leave-one-out baseline (RLOO, Ahmadian et al. 2024) and the
    KL to the reference in the reward, for a prompt-conditioned sequence-table policy.

    Each update draws `num_prompts` prompts uniformly and k responses per prompt from the
    current policy (stop-gradient); the shaped reward of a response is
    score(x, y) - kl_coef (log pi(y|x) - log pi_ref(y|x)) (the single-sample KL estimate, as in
    RLHF), its advantage the shaped reward minus the mean of the other k - 1 responses of the same
    prompt, and the loss -mean(advantage * log pi(y|x)). kl_coef None reads `data["kl_coef"]`
    (so one program trains a grid of coefficients vmapped). This is the estimator of
    `alignax.algorithms.small_pg.reinforce_loss` with prompts.

    Metrics: reward (mean score of the draws), kl (mean log-ratio of the draws), objective.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 (leave-one-out baseline), got {k}")

    def loss_fn(params, batch):
        d, key = batch["data"], batch["rng"]
        coef = d["kl_coef"] if kl_coef is None else kl_coef
        kp, ks = jax.random.split(key)
        rows = jax.random.randint(kp, (num_prompts,), 0, d["z"].shape[0])
        lp = st.sequence_log_probs(space, params, d["z"][rows])  # [B, N]
        draws = jax.random.categorical(ks, jax.lax.stop_gradient(lp), axis=-1,
                                       shape=(k, num_prompts)).T  # [B, k]
        logp = jnp.take_along_axis(lp, draws, axis=-1)
        reward = jnp.take_along_axis(d["score"][rows], draws, axis=-1)
        kl = jax.lax.stop_gradient(logp) - jnp.take_along_axis(d["ref_logp"][rows], draws,
                                                               axis=-1)
        shaped = reward - coef * kl
        baseline = (shaped.sum(-1, keepdims=True) - shaped) / (k - 1)
        adv = jax.lax.stop_gradient(shaped - baseline)
        loss = -jnp.mean(adv * logp)
        return loss, {"reward": reward.mean(), "kl": kl.mean(), "objective": shaped.mean()}

    return loss_fn


def best_of_n_probs(values, log_probs, n: int) -> jax.Array:
    """[..., N] the exact distribution of best-of-n sampling: draw n responses i.i.d. from
    pi = exp(log_probs), keep the one with the highest value (ties: shared in proportion to
    pi). With F the CDF of the value under pi, P(keep y) = pi(y) / pi(T) (F(T)^n - F(T^-)^n)
    for the tie class T of y. For n = 1 it is pi itself."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def row(v, lp):
        p = jnp.exp(lp)
        order = jnp.argsort(v)
        vs, ps = v[order], p[order]
        cdf = jnp.concatenate([jnp.zeros((1,), ps.dtype), jnp.cumsum(ps)])
        lo = jnp.searchsorted(vs, v, side="left")
        hi = jnp.searchsorted(vs, v, side="right")
        below, upto = cdf[lo], jnp.minimum(cdf[hi], 1.0)
        mass = upto - below
        return jnp.where(mass > 0, p / jnp.where(mass > 0, mass, 1.0), 0.0) * (
            upto ** n - below ** n)

    values = jnp.asarray(values, jnp.float32)
    log_probs = jnp.asarray(log_probs, jnp.float32)
    fn = row
    for _ in range(values.ndim - 1):
        fn = jax.vmap(fn)
    return fn(values, log_probs)
