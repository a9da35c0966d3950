"""B^2-DiffuRL: backward progressive training over timestep intervals with branch-based sampling.

Paper: Hu et al., "Towards Better Alignment: Training Diffusion Models with Reinforcement
Learning Against Sparse Rewards" (CVPR 2025, arXiv 2503.11240; reference code
github.com/hu-zijing/B2-DiffuRL). A reward that only scores the final sample x_0 says little
about which of the K denoising steps earned it. B^2-DiffuRL trains one interval of steps at a
time and judges that interval's actions by comparing samples that share everything before it:

- Backward progressive training: the trained interval is the last L(u) steps of the chain
  (the low-noise end), and L grows with the update index u towards the whole chain.
  `interval_length` is the reference code's stage schedule (run_process.sh: with stages
  i = 0 .. I-1, split_step = first + floor(i (last - first + 1) / I), from 14 to 20 of 20
  steps), with the update index in place of the stage index:

      L(u) = min(first + floor(u (last - first + 1) / U), last),   u = 0 .. U-1,

  and `interval_mask` selects the steps k >= K - L(u) of the timestep sequence.
- Branch-based sampling (`branch_sample`): N trunks run the chain from x_T up to the start
  of the interval, step j = K - L, then each trunk is continued by M branches with their own
  noise through steps j .. K-1. The M final samples of one trunk differ only by the actions
  taken inside the interval, so their reward differences are credited to that interval:
  the advantage is the reward normalised within the trunk's group (`group_advantages` with
  group size M), A_{n,m} = (r_{n,m} - mean_m r_{n,.}) / (std_m r_{n,.} + eps).
- The update (`branch_loss`) is DDPO's clipped loss (`alignax.losses.diffusion.
  ddpo_clip_loss`) on the interval's steps only: everything `alignax.algorithms.diffusion.
  ddpo_loss` does, with branch sampling, group advantages and the interval's step mask.

What differs from the reference code, and why: it stores each stage's samples and trains
2 epochs on them (off-policy after the first step, hence the clip), keeping only the best and
the worst branch of a trunk when their history-normalised scores pass thresholds (+-0.5);
here each update samples afresh (on-policy, DDPO's one-step case; the clip then does not
bind) and every branch carries its group-normalised advantage, the form of the method the
paper's text describes.

Rows are laid out trunk-major: row n M + m is branch m of trunk n, so the groups are
consecutive (the layout `group_advantages(r, M)` expects).

Noise and NFE: trunk n's step k noise is `step_noise(trunk_keys[n], k)`, branch (n, m)'s is
`step_noise(branch_keys[n M + m], k)` (`alignax.models.diffusion`'s per-row keys, keyed by the
absolute step index). With a static branch step the trunk runs once per trunk
(`sample(..., stop=j)`) and the branches continue it (`sample(..., start=j)`); with a traced
one (a schedule over updates inside one compiled training program) all N M rows run the whole
chain with the trunk's noise before step j, so each group's rows are equal up to x_j and the
numbers are the split run's (tested). Either way NFE is counted as the split run spends it:
N j + N M (K - j) denoiser calls per update, j / M + K - j per final sample, against K per
sample for DDPO (recomputing log-probs for the update is not counted in either).

Shapes: N trunks, M branches per trunk, B = N M final samples, K steps of the timestep
sequence, data [B, ...].
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms.diffusion import group_advantages
from alignax.losses.diffusion import ddpo_clip_loss
from alignax.models.diffusion import (Denoiser, EpsFn, Schedule, chain_logprobs, gaussian_logp,
                                      sample, step_moments, step_noise)


def interval_length(update: jax.Array | int, *, num_updates: int, first: int,
                    last: int) -> jax.Array:
    """The number of trained steps L(u) at update u of the backward progressive schedule.

        L(u) = min(first + floor(u (last - first + 1) / U), last)

    (the reference code's stage schedule, module docstring): L starts at `first` and grows
    by one step every U / (last - first + 1) updates, reaching `last` for the final
    1 / (last - first + 1) of the run.

    Args:
      update: u, the 0-based update index (int or traced int32 scalar).
      num_updates: U >= 1, the run's number of updates.
      first: the first interval's length, 1 <= first <= last.
      last: the last interval's length (K for the whole chain).

    Returns:
      [] int32 L(u).
    """
    if num_updates < 1:
        raise ValueError(f"num_updates must be >= 1, got {num_updates}")
    if not 1 <= first <= last:
        raise ValueError(f"interval lengths need 1 <= first <= last, got first={first}, "
                         f"last={last}")
    u = jnp.asarray(update, jnp.int32)
    grow = (u * (last - first + 1)) // num_updates
    return jnp.minimum(first + grow, last).astype(jnp.int32)


def interval_mask(length: jax.Array | int, num_steps: int) -> jax.Array:
    """The step mask of an interval of the last `length` steps: [K] bool, k >= K - length.

    Step k of the timestep sequence maps x_{tau_k} to x_{tau_{k+1}}, so the last steps are the
    low-noise end of the chain (the first that backward progressive training trains).
    """
    return jnp.arange(num_steps) >= num_steps - jnp.asarray(length, jnp.int32)


def branch_keys(key: jax.Array, num_trunks: int, num_branches: int
                ) -> tuple[jax.Array, jax.Array]:
    """Independent per-row keys of a branch run: (trunk keys [N], branch keys [N M])."""
    k_trunk, k_branch = jax.random.split(key)
    return (jax.random.split(k_trunk, num_trunks),
            jax.random.split(k_branch, num_trunks * num_branches))


class BranchSample(NamedTuple):
    """A branch run: N trunks of steps [0, j), each continued by M branches over [j, K).

    Attributes:
      final: [N M, ...] the branches' final samples (row n M + m: trunk n, branch m).
      latents: [K+1, N M, ...] every row's states (rows of one trunk are equal up to index j).
      timesteps: [K] int32 the input timestep of every step.
      prev_timesteps: [K] int32 the level every step lands on (-1: the output level).
      logps: [K, N M] float32 the behaviour log-probs of the drawn states.
      branch_step: [] int32 j, the index of the first branched step.
      nfe: [] float32 denoiser calls of the run as a split run spends them,
        N j + N M (K - j).
    """

    final: jax.Array
    latents: jax.Array
    timesteps: jax.Array
    prev_timesteps: jax.Array
    logps: jax.Array
    branch_step: jax.Array
    nfe: jax.Array


def branch_sample(apply: EpsFn, params: Any, schedule: Schedule, key: jax.Array,
                  x_T: jax.Array, timesteps: Sequence[int], *, num_branches: int,
                  branch_step: int | jax.Array, cond: Any = None, method: str = "ddim",
                  eta: float = 1.0, clip_x0: float | None = None) -> BranchSample:
    """Branch-based sampling: one trunk per x_T up to step j, then M branches to the end.

    Trunk n runs steps 0 .. j-1 from x_T[n] with noise `step_noise(trunk_keys[n], k)`; branch
    (n, m) continues from the trunk's x_j over steps j .. K-1 with noise
    `step_noise(branch_keys[n M + m], k)` (`branch_keys(key, N, M)`). j = 0 gives M
    independent chains per x_T. A Python-int j runs the split run (`sample(..., stop=j)` on
    the N trunks, then `sample(..., start=j)` on the N M branches); a traced j (a schedule
    inside a compiled loop) runs all N M rows over all K steps with the trunk's noise before
    j: the same numbers (module docstring), at M times the trunk's compute.

    Args:
      apply, params, schedule: the denoiser and its noise schedule (as `sample`).
      key: one typed PRNG key.
      x_T: [N, ...] the trunks' initial latents.
      timesteps: the concrete descending sequence of K timesteps (`timestep_sequence`).
      num_branches: M >= 1.
      branch_step: j in [0, K) (int, or a traced int32 scalar).
      cond: the denoiser's condition for the N M rows ([N M, ...]) or None.
      method, eta, clip_x0: as `sample`.

    Returns:
      `BranchSample` (rows trunk-major, latents and logps over all K steps).
    """
    seq = np.asarray(timesteps)
    k_all = len(seq)
    m = int(num_branches)
    if m < 1:
        raise ValueError(f"num_branches must be >= 1, got {num_branches}")
    n = x_T.shape[0]
    trunk_keys, row_keys = branch_keys(key, n, m)
    x_T = jnp.asarray(x_T, jnp.float32)
    if isinstance(branch_step, (int, np.integer)):
        j = int(branch_step)
        if not 0 <= j < k_all:
            raise ValueError(f"branch_step must be in [0, {k_all}), got {j}")
        if j == 0:
            x_j, head = jnp.repeat(x_T, m, axis=0), None
        else:
            head = sample(apply, params, schedule, trunk_keys, x_T, seq, cond=_trunk_rows(
                cond, m), method=method, eta=eta, stop=j, clip_x0=clip_x0)
            x_j = jnp.repeat(head.final, m, axis=0)
        tail = sample(apply, params, schedule, row_keys, x_j, seq, cond=cond, method=method,
                      eta=eta, start=j, clip_x0=clip_x0)
        if head is None:
            latents, logps = tail.latents, tail.logps
        else:
            latents = jnp.concatenate([jnp.repeat(head.latents, m, axis=1), tail.latents[1:]])
            logps = jnp.concatenate([jnp.repeat(head.logps, m, axis=1), tail.logps])
        prev = np.concatenate([seq[1:], [-1]]).astype(np.int32)
        return BranchSample(final=tail.final, latents=latents,
                            timesteps=jnp.asarray(seq, jnp.int32),
                            prev_timesteps=jnp.asarray(prev), logps=logps,
                            branch_step=jnp.asarray(j, jnp.int32),
                            nfe=jnp.asarray(n * j + n * m * (k_all - j), jnp.float32))
    return _branch_sample_traced(apply, params, schedule, trunk_keys, row_keys, x_T, seq, m,
                                 jnp.asarray(branch_step, jnp.int32), cond, method, eta,
                                 clip_x0)


def _trunk_rows(cond, m):
    """The trunks' condition: every M-th row of the branches' [N M, ...] condition."""
    return None if cond is None else jax.tree.map(lambda c: c[::m], cond)


def _branch_sample_traced(apply, params, schedule, trunk_keys, row_keys, x_T, seq, m, j, cond,
                          method, eta, clip_x0) -> BranchSample:
    """`branch_sample` with a traced branch step: one `lax.scan` over all K steps on N M rows;
    the body is `sample`'s (`step_moments`, `gaussian_logp`), only the noise source differs."""
    k_all, n = len(seq), x_T.shape[0]
    prev = np.concatenate([seq[1:], [-1]]).astype(np.int32)
    rows = n * m
    trunk_of_row = jnp.repeat(trunk_keys, m)
    x = jnp.repeat(x_T, m, axis=0)

    def body(x, inputs):
        k, t, s = inputs
        eps = apply(params, x, jnp.full((rows,), t, jnp.int32), cond)
        mean, std, _ = step_moments(schedule, eps, x, t, s, method=method, eta=eta,
                                    clip_x0=clip_x0)
        noise = jnp.where(k < j, step_noise(trunk_of_row, k, x.shape),
                          step_noise(row_keys, k, x.shape))
        x_next = mean + std.reshape(std.shape + (1,) * (x.ndim - 1)) * noise
        return x_next, (x_next, gaussian_logp(x_next, mean, std))

    final, (xs, logps) = jax.lax.scan(
        body, x, (jnp.arange(k_all, dtype=jnp.int32), jnp.asarray(seq, jnp.int32),
                  jnp.asarray(prev)))
    nfe = (n * j + rows * (k_all - j)).astype(jnp.float32)
    return BranchSample(final=final, latents=jnp.concatenate([x[None], xs]),
                        timesteps=jnp.asarray(seq, jnp.int32), prev_timesteps=jnp.asarray(prev),
                        logps=logps, branch_step=j, nfe=nfe)


def branch_loss(denoiser: Denoiser, schedule: Schedule, timesteps: Sequence[int],
                reward_fn: Callable[[jax.Array, Any], jax.Array], *, num_trunks: int,
                num_branches: int, data_shape: Sequence[int], num_updates: int, first: int,
                last: int | None = None, method: str = "ddim", eta: float = 1.0,
                clip: float = 1e-4, advantage_clip: float | None = 5.0,
                clip_x0: float | None = None) -> Callable[..., Any]:
    """`loss_fn(params, batch) -> (loss, metrics)` of one on-policy B^2-DiffuRL update.

    At update u (batch["step"], e.g. from `fit_small(with_step=True)`): L = `interval_length`
    (u; U = num_updates, first, last), branch step j = K - L; N trunks of x_T ~ N(0, I) are
    branched M ways (`branch_sample` with the parameters held fixed as the behaviour policy);
    rewards r = reward_fn(x_0, cond) [N M] (stop-gradient); A = `group_advantages(r, M)`; every
    step's log-prob is recomputed with gradients (`chain_logprobs`) and the loss is
    `ddpo_clip_loss` over the interval's steps (`interval_mask(L, K)`), averaged over the
    N M samples. At the update the ratio is 1, so the gradient is
    -(1 / (N M L)) sum_{n,m} A_{n,m} sum_{k >= j} grad log p(x_{k+1} | x_k).

    Args:
      denoiser, schedule, timesteps: the model, its schedule and the K-step sequence.
      reward_fn: (x0 [B, ...], cond) -> [B] rewards.
      num_trunks: N. num_branches: M >= 2 (a group of one has no baseline).
      data_shape: one sample's shape.
      num_updates, first, last: the schedule (`interval_length`; last defaults to K).
      method, eta, clip, advantage_clip, clip_x0: as `alignax.algorithms.diffusion.ddpo_loss`.

    batch: {"key": PRNG key, "step": [] int update index, optional "cond" [N M, ...]}.

    Metrics: reward (batch mean), interval (L), nfe (`BranchSample.nfe` of the update),
    tied_groups (the fraction of trunks whose M rewards are all equal: they carry no signal),
    approx_kl, clip_frac, ratio_mean (`ddpo_clip_loss`; ~0, ~0, 1 at the update).
    """
    seq = tuple(int(t) for t in timesteps)
    k_all = len(seq)
    last = k_all if last is None else int(last)
    if not 1 <= int(first) <= last <= k_all:
        raise ValueError(f"need 1 <= first <= last <= K={k_all}, got first={first}, "
                         f"last={last}")
    if int(num_branches) < 2:
        raise ValueError(f"num_branches must be >= 2, got {num_branches}")
    if int(num_trunks) < 1:
        raise ValueError(f"num_trunks must be >= 1, got {num_trunks}")
    n, m = int(num_trunks), int(num_branches)

    def loss_fn(params, batch):
        cond = batch.get("cond")
        length = interval_length(batch["step"], num_updates=int(num_updates), first=int(first),
                                 last=last)
        key_noise, key_x = jax.random.split(batch["key"])
        x_T = jax.random.normal(key_x, (n, *data_shape), jnp.float32)
        behaviour = jax.lax.stop_gradient(params)
        out = branch_sample(denoiser.apply, behaviour, schedule, key_noise, x_T, seq,
                            num_branches=m, branch_step=k_all - length, cond=cond,
                            method=method, eta=eta, clip_x0=clip_x0)
        rewards = jax.lax.stop_gradient(reward_fn(out.final, cond))
        adv = group_advantages(rewards, m)
        latents = jax.lax.stop_gradient(out.latents)
        logps = chain_logprobs(denoiser.apply, params, schedule, latents, out.timesteps,
                               out.prev_timesteps, cond, method=method, eta=eta,
                               clip_x0=clip_x0)
        per, metrics = ddpo_clip_loss(logps, out.logps, adv, interval_mask(length, k_all),
                                      clip=clip, advantage_clip=advantage_clip)
        groups = rewards.reshape(n, m)
        tied = jnp.all(groups == groups[:, :1], axis=1).mean()
        metrics = {**metrics, "reward": rewards.mean(), "interval": length.astype(jnp.float32),
                   "nfe": out.nfe, "tied_groups": tied}
        return per.mean(), metrics

    return loss_fn
