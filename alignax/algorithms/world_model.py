"""A small Gaussian latent state-space world model and its two objectives (reconstruction, RePo).

The model (a stochastic-only state-space model: the RSSM of PlaNet / Dreamer without the
deterministic GRU path, which a low-dimensional toy does not need):

    posterior  q(z_t | z_{t-1}, a_{t-1}, o_t) = N(mu_q, diag sigma_q^2)   (the encoder / filter)
    prior      p(z_t | z_{t-1}, a_{t-1})      = N(mu_p, diag sigma_p^2)   (the latent dynamics)
    reward     p(r_t | z_t)                   = N(f_r(z_t), sigma_r^2)
    decoder    p(o_t | z_t)                   = N(f_o(z_t), sigma_o^2 I)  (reconstruction only)

with z_{-1} = 0, a_{-1} = 0; each head one hidden layer (ELU), sigma = softplus(.) + min_std.
Parameters are a plain dict of dense layers (`init_params`), every function pure and vmappable.

Objectives over a batch of sequences (means over batch and time, sums over dimensions):

- `reconstruction_loss` (Dreamer-style negative ELBO, the baseline):
      L = E[-log p(o_t | z_t) - log p(r_t | z_t) + KL(q_t || p_t)];
- `repo_loss` (Zhu et al., "RePo: Resilient Model-Based Reinforcement Learning by Regularizing
  Posterior Predictability", NeurIPS 2023, arXiv 2309.00082): no reconstruction,
      max E[sum_t log p(r_t | z_t)]   s.t.   E[sum_t KL(q_t || p_t)] <= epsilon,
  on its Lagrangian  L = E[-log p(r_t | z_t)] + beta (E[KL] - epsilon),  beta >= 0 the dual
  variable, which takes a projected dual-ascent step beta <- max(0, beta + eta (KL - epsilon))
  after every update (`alignax.algorithms.lagrangian.dual_ascent`; `repo_dual_loss` is the
  stateful loss of `fit_small(loss_state=lagrangian.init_dual_state(beta_0))`). The paper's
  code steps log beta with Adam on -log(beta) (KL - epsilon) instead: the same fixed points
  (beta grows while KL > epsilon), a multiplicative rather than additive step.

Both objectives take `kl_balance` alpha (KL balancing, Dreamer v2; the RePo code's
`prior_train_steps` = 5 is alpha = 5/6): the value is KL(q || p), the gradient
alpha grad KL(sg(q) || p) + (1 - alpha) grad KL(q || sg(p)); alpha > 1/2 pulls the prior toward
the posterior faster than the posterior toward the prior, alpha = 1/2 is the plain KL.

Planning reads the model through `imagined_returns` (the prior's mean rollout scored by the
reward head, `alignax.algorithms.planning.cem`) and acts through `filter_step` (the posterior
mean given the last belief, action and observation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Sizes and likelihood scales of the world model.

    Attributes:
      obs_dim: O, the observation's size.
      action_dim: A.
      latent_dim: Z, the stochastic latent's size.
      hidden: H, the width of every head's hidden layer.
      decoder: whether the model has the observation decoder (the reconstruction objective).
      min_std: the floor of every latent std.
      reward_std: sigma_r of the reward likelihood.
      obs_std: sigma_o of the observation likelihood.
    """

    obs_dim: int
    action_dim: int
    latent_dim: int = 4
    hidden: int = 64
    decoder: bool = True
    min_std: float = 0.1
    reward_std: float = 1.0
    obs_std: float = 1.0

    def __post_init__(self):
        for name in ("obs_dim", "action_dim", "latent_dim", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("min_std", "reward_std", "obs_std"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")


def _dense(key, n_in: int, n_out: int) -> dict:
    return {"w": jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in),
            "b": jnp.zeros((n_out,))}


def _mlp_init(key, n_in: int, hidden: int, n_out: int) -> dict:
    k1, k2 = jax.random.split(key)
    out = _dense(k2, hidden, n_out)
    out["w"] = out["w"] * 0.1  # small heads: the initial std and means are near the floor
    return {"l1": _dense(k1, n_in, hidden), "l2": out}


def _mlp(p: dict, x: jax.Array) -> jax.Array:
    h = jax.nn.elu(x @ p["l1"]["w"] + p["l1"]["b"])
    return h @ p["l2"]["w"] + p["l2"]["b"]


def init_params(key: jax.Array, cfg: WorldModelConfig) -> dict:
    """The params {"prior", "posterior", "reward" (, "decoder")}, each a one-hidden-layer MLP:
    prior [Z + A] -> [2 Z], posterior [Z + A + O] -> [2 Z], reward [Z] -> [1], decoder
    [Z] -> [O]."""
    z, a, o, h = cfg.latent_dim, cfg.action_dim, cfg.obs_dim, cfg.hidden
    keys = jax.random.split(key, 4)
    params = {"prior": _mlp_init(keys[0], z + a, h, 2 * z),
              "posterior": _mlp_init(keys[1], z + a + o, h, 2 * z),
              "reward": _mlp_init(keys[2], z, h, 1)}
    if cfg.decoder:
        params["decoder"] = _mlp_init(keys[3], z, h, o)
    return params


def _gaussian(out: jax.Array, min_std: float) -> tuple[jax.Array, jax.Array]:
    mean, raw = jnp.split(out, 2, axis=-1)
    return mean, jax.nn.softplus(raw) + min_std


def prior(params: dict, cfg: WorldModelConfig, z: jax.Array, action: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
    """p(z_t | z_{t-1}, a_{t-1}): ([..., Z], [..., A]) -> (mean [..., Z], std [..., Z])."""
    return _gaussian(_mlp(params["prior"], jnp.concatenate([z, action], -1)), cfg.min_std)


def posterior(params: dict, cfg: WorldModelConfig, z: jax.Array, action: jax.Array,
              obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z_t | z_{t-1}, a_{t-1}, o_t): ([..., Z], [..., A], [..., O]) -> (mean, std) [..., Z]."""
    x = jnp.concatenate([z, action, obs], -1)
    return _gaussian(_mlp(params["posterior"], x), cfg.min_std)


def reward_mean(params: dict, z: jax.Array) -> jax.Array:
    """f_r(z): [..., Z] -> [...], the mean of p(r | z)."""
    return _mlp(params["reward"], z)[..., 0]


def decode(params: dict, z: jax.Array) -> jax.Array:
    """f_o(z): [..., Z] -> [..., O], the mean of p(o | z)."""
    return _mlp(params["decoder"], z)


def gaussian_kl(mean_q: jax.Array, std_q: jax.Array, mean_p: jax.Array, std_p: jax.Array
                ) -> jax.Array:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) of diagonal Gaussians, summed over the last
    axis ([..., Z] -> [...]):

        sum_i log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2.
    """
    var_ratio = (std_q / std_p) ** 2
    diff = ((mean_q - mean_p) / std_p) ** 2
    return 0.5 * jnp.sum(var_ratio + diff - 1.0 - jnp.log(var_ratio), axis=-1)


def balanced_kl(mean_q, std_q, mean_p, std_p, *, alpha: float) -> jax.Array:
    """KL balancing: the value of `gaussian_kl(q, p)` with gradient
    alpha grad KL(sg(q) || p) + (1 - alpha) grad KL(q || sg(p)) ([..., Z] -> [...])."""
    sg = jax.lax.stop_gradient
    prior_side = gaussian_kl(sg(mean_q), sg(std_q), mean_p, std_p)
    post_side = gaussian_kl(mean_q, std_q, sg(mean_p), sg(std_p))
    return alpha * prior_side + (1.0 - alpha) * post_side


def gaussian_nll(x: jax.Array, mean: jax.Array, std: float) -> jax.Array:
    """-log N(x; mean, std^2), elementwise: (x - mean)^2 / (2 std^2) + log std + log(2 pi) / 2."""
    return 0.5 * ((x - mean) / std) ** 2 + math.log(std) + 0.5 * LOG_2PI


def observe(params: dict, cfg: WorldModelConfig, obs: jax.Array, prev_actions: jax.Array,
            key: jax.Array | None) -> dict:
    """Filters one sequence through the posterior, with the prior of each step alongside.

    Args:
      params: the model's params.
      cfg: its config.
      obs: [T, O] o_0..o_{T-1}.
      prev_actions: [T, A] the action before each observation (a_{-1} = 0 first).
      key: the reparameterisation key (z_t = mu_q + sigma_q eps); None: z_t = mu_q.

    Returns:
      {"z": [T, Z] the latents, "post_mean", "post_std", "prior_mean", "prior_std": [T, Z]}.
    """
    if obs.ndim != 2 or prev_actions.shape != (obs.shape[0], cfg.action_dim):
        raise ValueError(f"observe needs obs [T, O] and prev_actions [T, {cfg.action_dim}], got "
                         f"{obs.shape} and {prev_actions.shape}")
    noise = (jnp.zeros((obs.shape[0], cfg.latent_dim)) if key is None
             else jax.random.normal(key, (obs.shape[0], cfg.latent_dim)))

    def body(z, inputs):
        o, a, eps = inputs
        pm, ps = prior(params, cfg, z, a)
        qm, qs = posterior(params, cfg, z, a, o)
        z = qm + qs * eps
        return z, {"z": z, "post_mean": qm, "post_std": qs, "prior_mean": pm, "prior_std": ps}

    _, out = jax.lax.scan(body, jnp.zeros((cfg.latent_dim,)), (obs, prev_actions, noise))
    return out


def _terms(params, cfg, batch, kl_balance):
    """Per-batch means of (reward NLL, observation NLL or None, KL) over sequences and time."""
    keys = jax.random.split(batch["key"], batch["obs"].shape[0])
    out = jax.vmap(lambda o, a, k: observe(params, cfg, o, a, k))(
        batch["obs"], batch["prev_actions"], keys)
    reward_nll = gaussian_nll(batch["rewards"], reward_mean(params, out["z"]),
                              cfg.reward_std).mean()
    kl = balanced_kl(out["post_mean"], out["post_std"], out["prior_mean"], out["prior_std"],
                     alpha=kl_balance).mean()
    obs_nll = None
    if "decoder" in params:
        obs_nll = gaussian_nll(batch["obs"], decode(params, out["z"]),
                               cfg.obs_std).sum(-1).mean()
    return reward_nll, obs_nll, kl


def reconstruction_loss(params: dict, batch: dict, *, cfg: WorldModelConfig,
                        kl_balance: float = 0.8, kl_scale: float = 1.0
                        ) -> tuple[jax.Array, dict]:
    """The negative ELBO of the reconstruction world model (Dreamer / PlaNet):

        L = E_{t, batch}[-log p(o_t | z_t) - log p(r_t | z_t) + kl_scale KL(q_t || p_t)].

    Args:
      params: the params (with "decoder").
      batch: {"obs": [B, T, O], "prev_actions": [B, T, A], "rewards": [B, T], "key": a PRNG
        key for the reparameterised latents}.
      cfg: the model config.
      kl_balance: alpha of `balanced_kl`.
      kl_scale: the KL's weight (1: the ELBO).

    Returns:
      (loss, {"reward_nll", "obs_nll", "kl"}).
    """
    if "decoder" not in params:
        raise ValueError("reconstruction_loss needs a model with a decoder (cfg.decoder=True)")
    reward_nll, obs_nll, kl = _terms(params, cfg, batch, kl_balance)
    loss = obs_nll + reward_nll + kl_scale * kl
    return loss, {"reward_nll": reward_nll, "obs_nll": obs_nll, "kl": kl}


def repo_loss(params: dict, batch: dict, multiplier: jax.Array, *, cfg: WorldModelConfig,
              kl_balance: float = 0.8) -> tuple[jax.Array, dict]:
    """RePo's Lagrangian for a fixed dual variable beta (the constant -beta epsilon dropped):

        L = E_{t, batch}[-log p(r_t | z_t)] + beta E_{t, batch}[KL(q_t || p_t)].

    Args:
      params: the params (a decoder, if any, is not used: no reconstruction).
      batch: as `reconstruction_loss`'s.
      multiplier: beta >= 0 (no gradient flows into it).
      cfg: the model config.
      kl_balance: alpha of `balanced_kl`.

    Returns:
      (loss, {"reward_nll", "kl"}); "kl" is the constraint's E[KL], the cost of the dual step.
    """
    params = {k: v for k, v in params.items() if k != "decoder"}
    reward_nll, _, kl = _terms(params, cfg, batch, kl_balance)
    beta = jax.lax.stop_gradient(jnp.asarray(multiplier, jnp.float32))
    return reward_nll + beta * kl, {"reward_nll": reward_nll, "kl": kl}


def repo_dual_loss(*, cfg: WorldModelConfig, epsilon: float, dual_lr: float,
                   kl_balance: float = 0.8, max_multiplier: float | None = None):
    """`fit_small`'s stateful RePo loss: `repo_loss` at the current beta, then one projected
    dual-ascent step beta <- max(0, beta + dual_lr (KL - epsilon)) (`lagrangian.lagrangian_loss`).

    Use with `fit_small(loss_state=lagrangian.init_dual_state(beta_0))`; metrics add
    "lagrange_multiplier" (the beta of the update).
    """
    from alignax.algorithms import lagrangian

    if epsilon < 0 or dual_lr < 0:
        raise ValueError(f"epsilon={epsilon} and dual_lr={dual_lr} must be >= 0")

    def loss(params, batch, multiplier):
        return repo_loss(params, batch, multiplier, cfg=cfg, kl_balance=kl_balance)

    return lagrangian.lagrangian_loss(loss, threshold=epsilon, learning_rate=dual_lr,
                                      cost_metric="kl", max_multiplier=max_multiplier)


def filter_step(params: dict, cfg: WorldModelConfig, belief: jax.Array, prev_action: jax.Array,
                obs: jax.Array) -> jax.Array:
    """The belief after observing o_t: the posterior mean of q(z_t | z_{t-1} = belief, a_{t-1},
    o_t) ([Z], [A], [O] -> [Z])."""
    return posterior(params, cfg, belief, prev_action, obs)[0]


def imagined_returns(params: dict, cfg: WorldModelConfig, z0: jax.Array, actions: jax.Array
                     ) -> jax.Array:
    """The model's return of action sequences from latent z0: the prior's mean rollout
    z_{k+1} = mu_p(z_k, a_k), scored by sum_{k=1..H} f_r(z_k).

    Args:
      z0: [Z] the current belief.
      actions: [P, H, A] candidate sequences.

    Returns:
      [P] imagined returns.
    """
    def one(seq):
        def body(z, a):
            z = prior(params, cfg, z, a)[0]
            return z, reward_mean(params, z)

        return jax.lax.scan(body, z0, seq)[1].sum()

    return jax.vmap(one)(actions)


def latents(params: dict, cfg: WorldModelConfig, obs: jax.Array, prev_actions: jax.Array,
            key: jax.Array | None = None) -> jax.Array:
    """The filtered latents of sequences ([N, T, O], [N, T, A] -> [N, T, Z]): with `key`,
    samples z_t ~ q (the stochastic representation the reward head and prior read in
    training), else the posterior means."""
    if key is None:
        return jax.vmap(lambda o, a: observe(params, cfg, o, a, None)["z"])(obs, prev_actions)
    keys = jax.random.split(key, obs.shape[0])
    return jax.vmap(lambda o, a, k: observe(params, cfg, o, a, k)["z"])(obs, prev_actions, keys)


def linear_probe_r2(train_x: Any, train_y: Any, test_x: Any, test_y: Any, *,
                    ridge: float = 1e-3) -> jax.Array:
    """R^2 on test of a linear probe y ~ W x + b fit by ridge least squares on train:

        R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean_train(y))^2     (pooled over the D outputs)

    Args:
      train_x: [N, Z]; train_y: [N, D]; test_x: [M, Z]; test_y: [M, D].
      ridge: the ridge penalty on W (inputs standardised on train).

    Returns:
      scalar R^2 (1: the latents determine y linearly; <= 0: no better than the train mean).
    """
    train_x, test_x = jnp.asarray(train_x, jnp.float32), jnp.asarray(test_x, jnp.float32)
    train_y, test_y = jnp.asarray(train_y, jnp.float32), jnp.asarray(test_y, jnp.float32)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xs = (train_x - mu) / sd
    y_mean = train_y.mean(0)
    gram = xs.T @ xs + ridge * train_x.shape[0] * jnp.eye(xs.shape[1])
    w = jnp.linalg.solve(gram, xs.T @ (train_y - y_mean))
    pred = ((test_x - mu) / sd) @ w + y_mean
    return 1.0 - jnp.sum((test_y - pred) ** 2) / jnp.sum((test_y - y_mean) ** 2)
