"""TTSnap: test-time search over diffusion seeds with pruning by a noise-aware reward model.

Paper: Yu, Song, Sun, Yu, Verma, Roy, Negi, Li, Campbell 2025, "TTSnap: Test-Time Scaling of
Diffusion Models via Noise-Aware Pruning" (arXiv 2511.22242).

Mechanism: best-of-N must denoise every seed before its reward model (RM) can score it. TTSnap
starts more seeds, scores them at an intermediate step and keeps only the top fraction, so at
the same number of denoiser calls (NFE) it explores more seeds. A clean-image RM ranks the
blurry Tweedie estimates x0_hat(x_t, t) badly, so TTSnap distils a noise-aware RM
r_phi(x0_hat, t) from the frozen clean RM r: L = mean (s(r_phi(x0_hat_t, t)) - s(r(x0)))^2, x0
the final image of the same trajectory, s the batch standardisation (their bn_before_loss),
trained by a curriculum from clean to noisy levels (`alignax.rewards.image_rm`). The search is
`alignax.sampling.diffusion_prune.prune_sample` (NFE formula in its docstring).

Setting (notes (d), on 8x8 digits instead of the notes' 2-D mixture, as issue 25 asks):
- data: scikit-learn's 8x8 digits in [-1, 1] (`alignax.tasks.diffusion_data.digit_splits(s)`:
  a label-stratified train / validation / test partition per seed).
- denoiser: an unconditional eps-predicting MLP on the flattened 64-d image (hidden 128, two
  residual blocks; the U-Net is too slow for the time budget on 2 CPU cores), linear schedule
  T = 100, deterministic DDIM (eta = 0) on K = 20 evenly spaced steps with x0_hat clipped to
  [-1, 1]: the final image is a function of the seed x_T, as with the paper's deterministic
  samplers (FLUX, SDXL), so the search is over seeds and the noise-aware RM can learn the final
  reward from (x0_hat, t). One denoiser per seed on the seed's training images
  (`alignax.algorithms.diffusion.pretrain`, the seeds vmapped, cached with `cached_run` in
  `cache_dir`).
- gold score: the probability of a target digit class (`gold.target_class`, 3) under a fixed
  nearest-class-mean Gaussian classifier: p(c | x) = softmax_c(-||x - mu_c||^2 / (2 s v)),
  mu_c the mean image of class c over all 1,797 digits, v their mean within-class pixel
  variance, s = `gold.scale`. It is nonlinear in x, so the gold of the posterior mean is not
  the posterior mean of the gold (a linear gold would make the clean RM on x0_hat exact).
  The unconditional model draws the target class in about 4% of samples, so the search has
  to find the rare seeds that become a 3.
- clean RM: a small CNN (`image_rm.make_image_rm`) trained by Bradley-Terry (`fit_small`, the
  seeds vmapped) on `rm.num_pairs` pairs of the seed's training images labelled by BT draws of
  the gold (temperature `rm.label_temperature`); its step is chosen by the pair accuracy of
  `rm.num_eval_pairs` gold-ordered validation pairs.
- noise-aware RM: the same CNN with a timestep embedding whose shift layers start at zero, so
  it starts as the clean RM (the paper fine-tunes the clean RM); distilled on
  `distill.num_trajectories` chains of the seed's denoiser (training stream) with the clean RM's
  score of each chain's final image as target, on the K sampler levels plus the clean level,
  curriculum "cumulative" (`image_rm.curriculum_batch_fn`: stage j unlocks level j, clean
  first; the batch's level is drawn among the unlocked ones). The step is chosen by the mean
  Spearman of the RM's scores and the targets over the levels of validation chains (no gold).

Methods, at equal NFE (budget = `search.bon_n` x K denoiser calls per search; every method's
final pick is the survivor with the highest clean-RM score of its final image):
- `bon`: best-of-N, N = bon_n seeds fully denoised;
- `prune_clean`: prune at step k with the clean RM applied to x0_hat (the baseline the paper
  improves on);
- `prune_narf`: TTSnap, prune at step k with the noise-aware RM on (x0_hat, t).
A pruned search with keep fraction rho starts the largest N_0 whose NFE N_0 (k + 1) +
ceil(rho N_0) (K - k - 1) fits the budget (`candidates_for_budget`); its RM calls (N_0 + the
survivors) are reported as `rm_calls_*` beside the NFE, not counted in the NFE (the RM is a
CNN about a tenth of the denoiser's size). Candidate i of a search has the same seed in every
method (common random numbers).

Splits and selection (`alignax.tasks.splits.split_seeds`): seed s uses `digit_splits(s)` for
the images (denoiser, RM pairs, RM test accuracy), the sampler stream of data seed 3s for the
distillation chains, 3s + 1 for validation (the distillation's early stopping chains and the
validation searches) and 3s + 2 for the test searches and the rank-correlation chains. The
pruning step k in `search.prune_steps` and the keep fraction in `search.keep_fractions` are
chosen per seed and per pruning method on the validation searches' mean gold (the same grid
and budget for both, `choose_on_validation`); best-of-N has no knob. Claims use test only.

Metrics (per seed): `test_gold_<method>` the mean gold of the picked image over
`search.test_queries` searches, `val_gold_<method>` the same on validation, `nfe_<method>`
and `rm_calls_<method>` per search, `chosen_step_<m>` / `chosen_fraction_<m>` /
`candidates_<m>` of the pruning methods, `test_spearman_{clean,narf}_k<k>`: Spearman's rho of
the intermediate score at step k (clean RM of x0_hat, noise-aware RM) with the gold of the
chain's final image over `search.rank_trajectories` test chains (`_mid`: the step whose
timestep is nearest T / 2, `spearman_step_mid`; step 9, t = 52, in the full setting),
`test_rm_accuracy` the clean RM's gold-pair accuracy on test digits,
`test_gold_single` the mean gold of an unsearched sample (over the rank-correlation chains).

Reading the full run (seeds 0-4, 2 CPU cores): the noise-aware RM ranks early candidates far
better than the clean RM on x0_hat (Spearman with the final gold 0.37 vs 0.11 at step 0, 0.65
vs 0.41 at t = 52; equal near the end), so validation picks earlier pruning for it (steps 6-8,
about 16 seeds per search) than for the clean RM (steps 6-10, about 13 seeds). Both pruned
searches beat best-of-8 at 160 NFE (gold 0.459 and 0.425 vs 0.364); the noise-aware RM's edge
over clean-RM pruning (+0.034) has an interval that still includes 0 (INCONCLUSIVE): at this
budget both prune where the clean RM already ranks reasonably well.

Claims (5 seeds, paired 95% t intervals; the notes' pass criteria on this testbed):
- comparative: at equal NFE, TTSnap's pruning reaches a higher test gold than best-of-N
  (test_gold_prune_narf - test_gold_bon >= 0 with the interval above 0: the notes' ">= 1 s.e."
  made a paired interval);
- comparative: it reaches a higher test gold than pruning with the clean RM on x0_hat;
- comparative: the noise-aware RM ranks intermediate candidates better: Spearman with the final
  gold at t = T / 2 is >= 0.15 higher than the clean RM's on x0_hat.
Sanity (not counted): every method's NFE is within the budget; the clean RM ranks test digit
pairs by the gold above chance.

    alignax run experiments/ttsnap.py            # full setting, 5 seeds
    alignax run experiments/ttsnap.py:smoke      # seconds, for the tests

`:real`: the same mechanism on a user's images without a language model. `data.path` is a .npy
of images [N, H, W, C] (float, in [-1, 1]); the last `data.eval_fraction` of them are test,
as many before them validation. The denoiser (MLP on the flattened image) is pretrained on the
training images in `model.path` (a run folder: trained there on the first run, restored by
later runs with the same config; "" = <workdir>/denoiser). The clean RM is trained on the user's
preference pairs `data.pairs_path` (a .npy [P, 2] of image indices, preferred first; pairs of
held-out images are its validation / test pairs) or, when that is "", on pairs simulated by BT
from a named gold score `reward.gold` ("brightness": mean pixel; "contrast": pixel std). Then
distillation, validation choice of the pruning step and fraction, and the three searches at
equal NFE as in the toy; it reports the clean RM's score (and, with a named gold, the gold) of
the picked images and the rank correlations with the final clean-RM score. No claim is evaluated.

    alignax run experiments/ttsnap.py:real --workdir runs/ttsnap_real \
        --config.data.path=/data/images.npy --config.data.pairs_path=/data/pairs.npy
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import real
from alignax.algorithms.cached import cached_run
from alignax.algorithms.diffusion import pretrain
from alignax.data.errors import DataError
from alignax.models.diffusion import (DenoiserConfig, make_denoiser, make_schedule, sample,
                                      timestep_sequence)
from alignax.ops.rank import spearman
from alignax.rewards import image_rm
from alignax.sampling import diffusion_prune as dp
from alignax.tasks.diffusion_data import digit_splits, load_digits_8x8
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, minibatch_fn, pair_accuracy_selection

METHODS = ("bon", "prune_clean", "prune_narf")
PRUNERS = ("prune_clean", "prune_narf")  # the scorer axis of the pruned searches, in order
GOLDS = ("brightness", "contrast")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke or mode == "real" else [0, 1, 2, 3, 4]
    c.variants = {"toy": {}}
    c.cache_dir = ""  # "" = <workdir>/../cache: the denoisers, shared by reruns
    c.schedule = dict(kind="linear", num_timesteps=50 if smoke else 100)
    c.sampler = dict(num_steps=4 if smoke else 20, eta=0.0, clip_x0=1.0)
    c.denoiser = dict(hidden=32 if smoke else 128, n_blocks=1 if smoke else 2,
                      time_dim=16 if smoke else 32, steps=20 if smoke else 3000,
                      batch_size=32 if smoke else 128, learning_rate=2e-3,
                      steps_per_log=20 if smoke else 300)
    c.gold = dict(target_class=3, scale=4.0)
    c.rm = dict(channels=(4, 8) if smoke else (8, 16), hidden=8 if smoke else 32,
                time_dim=8 if smoke else 16, num_pairs=64 if smoke else 4000,
                label_temperature=0.1, steps=10 if smoke else 600,
                batch_size=16 if smoke else 64, learning_rate=3e-3,
                num_eval_pairs=16 if smoke else 256, steps_per_log=10 if smoke else 50)
    # smoke: as many training as validation trajectories, so one program makes both sets
    c.distill = dict(num_trajectories=16 if smoke else 2048,
                     val_trajectories=16 if smoke else 256, steps=10 if smoke else 2000,
                     batch_size=16 if smoke else 128, learning_rate=1e-3,
                     curriculum="cumulative", standardized=True, pref_weight=0.0,
                     pref_temperature=0.1, steps_per_log=10 if smoke else 100)
    c.search = dict(bon_n=4 if smoke else 8, prune_steps=(1,) if smoke else (6, 8, 10),
                    keep_fractions=(0.5,) if smoke else (0.125, 0.25),
                    val_queries=4 if smoke else 64, test_queries=4 if smoke else 128,
                    rank_trajectories=16 if smoke else 512)
    if mode == "real":
        c.model = dict(path="")
        c.data = dict(path="", pairs_path="", eval_fraction=0.1, max_eval_rows=256)
        c.reward = dict(gold="brightness")
        c.denoiser.steps = 2000
        c.search.val_queries, c.search.test_queries = 32, 64
    return c


def is_real(config) -> bool:
    return "path" in config.get("data", {})


def validate(config) -> None:
    if config.sampler.num_steps > config.schedule.num_timesteps:
        raise ValueError(f"sampler.num_steps={config.sampler.num_steps} must be <= "
                         f"schedule.num_timesteps={config.schedule.num_timesteps}")
    if any(not 0 <= int(k) < int(config.sampler.num_steps) - 1 for k in config.search.prune_steps):
        raise ValueError(f"search.prune_steps={tuple(config.search.prune_steps)} must lie in "
                         f"[0, sampler.num_steps - 1)")
    if any(not 0 < float(f) < 1 for f in config.search.keep_fractions):
        raise ValueError(f"search.keep_fractions={tuple(config.search.keep_fractions)} must be "
                         "in (0, 1)")
    if config.distill.curriculum not in image_rm.CURRICULA:
        raise ValueError(f"distill.curriculum must be one of {image_rm.CURRICULA}, got "
                         f"{config.distill.curriculum!r}")
    if is_real(config):
        if not config.data.path:
            raise ValueError("data.path is required by the :real config (a .npy of images "
                             "[N, H, W, C] in [-1, 1]); pass --config.data.path=...")
        if not config.data.pairs_path and config.reward.gold not in GOLDS:
            raise ValueError(f"reward.gold must be one of {GOLDS} without data.pairs_path, "
                             f"got {config.reward.gold!r}")
        if not 0 < float(config.data.eval_fraction) < 0.5:
            raise ValueError(f"data.eval_fraction={config.data.eval_fraction} must be in "
                             "(0, 0.5)")


# ---------------------------------------------------------------------------------------------
# The world: gold, denoisers, reward models


def digit_gold(target_class: int, scale: float):
    """`x [B, 8, 8, 1] -> [B]` p(target | x) under the nearest-class-mean Gaussian classifier
    of all digits (module docstring), a fixed oracle."""
    d = load_digits_8x8()
    x = d.images.reshape(len(d.images), -1)
    mu = np.stack([x[d.labels == c].mean(0) for c in range(10)])
    var = float(np.mean([(x[d.labels == c] - mu[c]).var(0).mean() for c in range(10)]))
    mu_j = jnp.asarray(mu, jnp.float32)

    def gold(images):
        flat = images.reshape(images.shape[0], -1)
        sq = jnp.sum(jnp.square(flat[:, None, :] - mu_j[None]), -1)
        return jax.nn.softmax(-sq / (2.0 * var * scale), axis=-1)[:, int(target_class)]

    return gold


def named_gold(name: str):
    """A named gold of a user's images: "brightness" (mean pixel) or "contrast" (pixel std)."""
    if name == "brightness":
        return lambda x: x.reshape(x.shape[0], -1).mean(-1)
    if name == "contrast":
        return lambda x: x.reshape(x.shape[0], -1).std(-1)
    raise ValueError(f"reward.gold must be one of {GOLDS}, got {name!r}")


def denoiser_of(config, data_shape):
    d = config.denoiser
    return make_denoiser(DenoiserConfig(kind="mlp", data_shape=tuple(data_shape),
                                        hidden=int(d.hidden), n_blocks=int(d.n_blocks),
                                        time_dim=int(d.time_dim)))


def _clip(config):
    """sampler.clip_x0: clip Tweedie's x0_hat to [-c, c] (0: no clipping)."""
    return float(config.sampler.clip_x0) or None


def schedule_of(config):
    return make_schedule(config.schedule.kind, int(config.schedule.num_timesteps))


def train_denoisers(config, train_images: np.ndarray, workdir: str | None, cache_dir: str):
    """Per-seed denoisers on [S, N, ...] training images, one vmapped `pretrain` (cached by
    config, or trained / restored in `workdir` when given)."""
    den = denoiser_of(config, train_images.shape[2:])
    sched = schedule_of(config)
    d = config.denoiser
    cfg = {"denoiser": config.denoiser.to_dict(), "schedule": config.schedule.to_dict(),
           "seeds": [int(s) for s in config.seeds], "data_shape": list(train_images.shape),
           "data_sum": float(np.asarray(train_images, np.float64).sum())}

    def train(cfg, run_dir):
        fit = pretrain(run_dir, den, sched, {"x0": jnp.asarray(train_images)},
                       num_steps=int(d.steps), batch_size=int(d.batch_size),
                       learning_rate=float(d.learning_rate), seeds=cfg["seeds"],
                       per_seed_data=True, steps_per_log=int(d.steps_per_log),
                       checkpoint_every=100, plots=False)
        return {"params": fit.params}

    if workdir:  # a user's run folder: refuse one that holds another config's denoiser
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "denoiser_config.json")
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f) != json.loads(json.dumps(cfg)):
                    raise DataError(f"{path}: model.path holds a denoiser of another config or "
                                    "data; pass an empty folder", path=path)
        else:
            with open(path, "w") as f:
                json.dump(cfg, f, indent=1, sort_keys=True)
        return den, sched, train(cfg, workdir)["params"]
    return den, sched, cached_run("ttsnap_denoiser", cfg, train, cache_dir=cache_dir)["params"]


def rm_models(config, data_shape):
    r = config.rm
    kw = dict(data_shape=tuple(data_shape), channels=tuple(r.channels), hidden=int(r.hidden),
              time_dim=int(r.time_dim), max_period=float(config.schedule.num_timesteps) * 10)
    return (image_rm.make_image_rm(image_rm.ImageRMConfig(**kw)),
            image_rm.make_image_rm(image_rm.ImageRMConfig(time_conditioned=True, **kw)))


def train_clean_rm(config, clean, pairs: dict, val_pairs: dict, workdir: str):
    """BT on the pairs ({"chosen", "rejected"}: [S, P, ...]), step chosen on validation pairs."""
    r = config.rm
    fit = fit_small(workdir, loss_fn=image_rm.bt_pair_loss(clean.apply), init_params=clean.init,
                    tx=optax.adam(float(r.learning_rate)), num_steps=int(r.steps),
                    data={k: jnp.asarray(v) for k, v in pairs.items()},
                    seeds=[int(s) for s in config.seeds], per_seed_data=True,
                    batch_fn=minibatch_fn(int(r.batch_size)), checkpoint_every=1000,
                    plots=False, **pair_accuracy_selection(clean.apply, val_pairs,
                                                           steps_per_log=int(r.steps_per_log)))
    return fit.best_params


def _chain_keys(seed_key: jax.Array, n: int):
    """n per-chain keys and initial latents' keys from one stream key."""
    keys = jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(jnp.arange(n))
    pair = jax.vmap(jax.random.split)(keys)
    return pair[:, 0], pair[:, 1]


def make_chains(den, sched, timesteps, eta, clip_x0=None):
    """`chains(params, stream_key, n, shape)`: n full chains of one seed's denoiser."""
    def chains(params, stream_key, n, shape):
        noise_keys, init_keys = _chain_keys(stream_key, n)
        x_T = jax.vmap(lambda k: jax.random.normal(k, shape))(init_keys)
        return sample(den.apply, params, sched, noise_keys, x_T, timesteps, eta=eta,
                      clip_x0=clip_x0)

    return chains


def distill_narf(config, clean, narf, den, sched, den_params, clean_params, streams,
                 shape, workdir: str):
    """The noise-aware RMs: distilled from each seed's clean RM on its denoiser's chains."""
    ds = config.distill
    timesteps = timestep_sequence(int(config.schedule.num_timesteps),
                                  int(config.sampler.num_steps))
    chains = make_chains(den, sched, timesteps, float(config.sampler.eta), _clip(config))

    @functools.partial(jax.jit, static_argnums=(3,))
    def level_data(dp_, cp, key, n):
        out = chains(dp_, key, n, shape)
        return image_rm.curriculum_data(out.final, out.x0_hats, out.timesteps,
                                        clean.apply(cp, out.final))

    per_seed = jax.vmap(level_data, in_axes=(0, 0, 0, None))
    train_keys = jnp.stack([jax.random.fold_in(jax.random.key(s.train), 11) for s in streams])
    val_keys = jnp.stack([jax.random.fold_in(jax.random.key(s.validation), 11)
                          for s in streams])
    data = per_seed(den_params, clean_params, train_keys, int(ds.num_trajectories))
    val = per_seed(den_params, clean_params, val_keys, int(ds.val_trajectories))
    lift_keys = jnp.stack([jax.random.key(1000 + int(s)) for s in config.seeds])
    init = jax.vmap(lambda p, k: image_rm.noise_aware_from_clean(p, k, narf.config))(
        clean_params, lift_keys)

    def val_metrics(params, v):
        return {"val_spearman": image_rm.level_spearman(narf.apply, params, v)[1:].mean()}

    fit = fit_small(workdir, loss_fn=image_rm.distill_loss(
                        narf.apply, standardized=bool(ds.standardized),
                        pref_weight=float(ds.pref_weight),
                        pref_temperature=float(ds.pref_temperature)),
                    has_aux=True, init_params=init, per_seed_init=True,
                    tx=optax.adam(float(ds.learning_rate)), num_steps=int(ds.steps), data=data,
                    seeds=[int(s) for s in config.seeds], per_seed_data=True,
                    batch_fn=image_rm.curriculum_batch_fn(int(ds.batch_size), int(ds.steps),
                                                          ds.curriculum),
                    with_step=True, eval_fn=val_metrics, eval_data=val,
                    select=("val_spearman", "max"), steps_per_log=int(ds.steps_per_log),
                    checkpoint_every=1000, plots=False)
    return fit.best_params, init


# ---------------------------------------------------------------------------------------------
# Searches at equal NFE


def _query_inputs(query_keys, n: int, shape):
    """[Q, n] candidate keys and [Q, n, ...] initial latents of Q query keys; candidate i of a
    query is the same seed whatever n (common random numbers across methods)."""
    noise_keys, init_keys = jax.vmap(lambda q: _chain_keys(q, n))(query_keys)
    x_T = jax.vmap(jax.vmap(lambda k: jax.random.normal(k, shape)))(init_keys)
    return noise_keys, x_T


def query_keys(streams, num_val: int, num_test: int) -> jax.Array:
    """[S, num_val + num_test] query keys: validation (data seed 3s + 1) then test (3s + 2)."""
    def block(seed, n):
        base = jax.random.fold_in(jax.random.key(seed), 23)
        return [jax.random.fold_in(base, q) for q in range(n)]

    return jnp.stack([jnp.stack(block(s.validation, num_val) + block(s.test, num_test))
                      for s in streams])


def make_search(config, den, sched, narf, gold_fn, shape, prune_steps, keep, n0):
    """A jitted search over all seeds ([S]), scorers ([R] stacked noise-aware-form RM params)
    and queries ([S, Q] keys): returns (gold of the pick [S, R, Q], its final clean-RM score
    [S, R, Q], nfe [], rm_calls [])."""
    timesteps = timestep_sequence(int(config.schedule.num_timesteps),
                                  int(config.sampler.num_steps))
    eta = float(config.sampler.eta)

    def one(den_p, rm_p, clean_p, keys, x_T):
        res = dp.prune_sample(
            den.apply, den_p, sched, keys, x_T, timesteps, prune_steps=prune_steps, keep=keep,
            score_fn=lambda x0h, xt, t: narf.apply(rm_p, x0h, t),
            final_score_fn=lambda x: narf.apply(clean_p, x, -1), eta=eta,
            clip_x0=_clip(config))
        return gold_fn(res.best[None])[0], res.final_scores.max(), res.nfe, res.rm_calls

    @jax.jit
    def search(den_p, rm_ps, clean_p, qkeys):
        keys, x_T = jax.vmap(lambda q: _query_inputs(q, n0, shape))(qkeys)
        over_q = jax.vmap(one, in_axes=(None, None, None, 0, 0))
        over_r = jax.vmap(over_q, in_axes=(None, 0, None, None, None))
        over_s = jax.vmap(over_r, in_axes=(0, 0, 0, 0, 0))
        g, s, nfe, rm = over_s(den_p, rm_ps, clean_p, keys, x_T)
        return g, s, nfe[0, 0, 0], rm[0, 0, 0]

    return search


def mid_step(config) -> int:
    """The sampler step whose input timestep is nearest T / 2 (the first on a tie)."""
    timesteps = timestep_sequence(int(config.schedule.num_timesteps),
                                  int(config.sampler.num_steps))
    return int(np.argmin(np.abs(timesteps - int(config.schedule.num_timesteps) / 2)))


def rank_correlations(config, den, sched, narf, gold_fn, den_params, rm_ps, stream_keys,
                      shape, n):
    """[S, R, K] Spearman of each scorer's intermediate score at every step with the final
    gold, [S, R, K] with the final clean-RM score, over n chains per seed, and [S] the mean
    gold of those (unsearched) chains."""
    timesteps = timestep_sequence(int(config.schedule.num_timesteps),
                                  int(config.sampler.num_steps))
    chains = make_chains(den, sched, timesteps, float(config.sampler.eta), _clip(config))

    @jax.jit
    def run(den_p, rm_p, key):
        out = chains(den_p, key, n, shape)
        gold = gold_fn(out.final)
        final_rm = narf.apply(jax.tree.map(lambda a: a[0], rm_p), out.final, -1)  # lifted clean

        def scorer(p):
            def step(a):
                x0h, t = a
                return narf.apply(p, x0h, jnp.full((n,), t))
            scores = jax.lax.map(step, (out.x0_hats, out.timesteps))  # [K, n]
            return (spearman(scores, jnp.broadcast_to(gold, scores.shape)),
                    spearman(scores, jnp.broadcast_to(final_rm, scores.shape)))

        return (*jax.vmap(scorer)(rm_p), gold.mean())

    return jax.vmap(run)(den_params, rm_ps, stream_keys)


def evaluate_searches(config, den, sched, narf, gold_fn, den_params, clean_lifted, narf_params,
                      streams, shape) -> tuple[dict[int, dict], list[dict]]:
    """Best-of-N and both pruned searches on validation and test queries (one program per
    search shape); the pruning knobs chosen per seed and method on validation. Returns the
    per-seed metrics and the selection records."""
    s = config.search
    k_steps = int(config.sampler.num_steps)
    budget = int(s.bon_n) * k_steps
    seeds = [int(x) for x in config.seeds]
    n_val, n_test = int(s.val_queries), int(s.test_queries)
    qkeys = query_keys(streams, n_val, n_test)

    def run(search, rm_ps):
        g, sc, nfe, rm = search(den_params, rm_ps, clean_lifted, qkeys)
        g, sc = np.asarray(g), np.asarray(sc)
        return g[..., :n_val], g[..., n_val:], sc[..., n_val:], int(nfe), int(rm)

    both = jax.tree.map(lambda a, b: jnp.stack([a, b], 1), clean_lifted, narf_params)
    bon = make_search(config, den, sched, narf, gold_fn, shape, (), (), int(s.bon_n))
    gv, gt, st, nfe, rm = run(bon, jax.tree.map(lambda a: a[:, None], clean_lifted))
    out = {seed: {"val_gold_bon": float(gv[i, 0].mean()), "test_gold_bon": float(gt[i, 0].mean()),
                  "test_rm_bon": float(st[i, 0].mean()), "nfe_bon": nfe, "rm_calls_bon": rm,
                  "candidates_bon": int(s.bon_n), "budget": budget}
           for i, seed in enumerate(seeds)}
    grid = {}
    for k in s.prune_steps:
        for f in s.keep_fractions:
            n0 = dp.candidates_for_budget(budget, k_steps, (int(k),), float(f))
            keep = dp.keep_counts(n0, float(f))
            search = make_search(config, den, sched, narf, gold_fn, shape, (int(k),), keep, n0)
            grid[f"k{int(k)}_f{float(f)}"] = (int(k), float(f), n0, run(search, both))
    records = []
    for i, seed in enumerate(seeds):
        for r, method in enumerate(PRUNERS):
            name, record = protocol.choose_on_validation(
                {key: key for key in grid},
                lambda key, i=i, r=r: float(grid[key][3][0][i, r].mean()))
            k, f, n0, (gv, gt, st, nfe, rm) = grid[name]
            out[seed].update({f"val_gold_{method}": float(gv[i, r].mean()),
                              f"test_gold_{method}": float(gt[i, r].mean()),
                              f"test_rm_{method}": float(st[i, r].mean()),
                              f"nfe_{method}": nfe, f"rm_calls_{method}": rm,
                              f"chosen_step_{method}": k, f"chosen_fraction_{method}": f,
                              f"candidates_{method}": n0})
            records.append({"seed": seed, "method": method, **record})
    return out, records


# ---------------------------------------------------------------------------------------------
# Runs


def _pairs(images, gold, rng, n, temperature):
    """n BT-labelled pairs of images (chosen first) from the gold: {"chosen", "rejected"}."""
    a, b = rng.integers(0, len(images), n), rng.integers(0, len(images), n)
    label = bradley_terry(gold[a], gold[b], rng=rng, temperature=temperature).astype(bool)
    chosen, rejected = np.where(label, a, b), np.where(label, b, a)
    return {"chosen": images[chosen], "rejected": images[rejected]}


def _gold_pairs(images, gold, rng, n):
    """n pairs ordered by the gold (ties dropped): the validation / test pairs of the RM."""
    a, b = rng.integers(0, len(images), 4 * n), rng.integers(0, len(images), 4 * n)
    keep = np.flatnonzero(np.abs(gold[a] - gold[b]) > 1e-3)[:n]
    a, b = a[keep], b[keep]
    hi = gold[a] > gold[b]
    return {"chosen": images[np.where(hi, a, b)], "rejected": images[np.where(hi, b, a)]}


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    validate(config)
    if is_real(config):
        return _run_real(config, workdir)
    seeds = [int(s) for s in config.seeds]
    streams = [split_seeds(s) for s in seeds]
    splits = [digit_splits(s) for s in seeds]
    gold_fn = digit_gold(int(config.gold.target_class), float(config.gold.scale))
    gold_np = jax.jit(gold_fn)
    n_train = min(len(sp.train.images) for sp in splits)
    train_images = np.stack([sp.train.images[:n_train] for sp in splits])
    cache = config.cache_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)), "cache")
    den, sched, den_params = train_denoisers(config, train_images, None, cache)
    r = config.rm
    pairs, val_pairs, test_pairs = [], [], []
    parts = ("train", "validation", "test")
    for seed, st, sp in zip(seeds, streams, splits):
        sizes = np.cumsum([len(getattr(sp, k).images) for k in parts])[:-1]
        every = np.asarray(gold_np(jnp.asarray(np.concatenate(
            [getattr(sp, k).images for k in parts]))))
        g = dict(zip(parts, np.split(every, sizes)))
        pairs.append(_pairs(sp.train.images, g["train"], np.random.default_rng([st.train, 5]),
                            int(r.num_pairs), float(r.label_temperature)))
        n_eval = int(r.num_eval_pairs)
        val_pairs.append(_gold_pairs(sp.validation.images, g["validation"],
                                     np.random.default_rng([st.validation, 5]), n_eval))
        test_pairs.append(_gold_pairs(sp.test.images, g["test"],
                                      np.random.default_rng([st.test, 5]), n_eval))
    return _pipeline(config, workdir, den, sched, den_params, gold_fn, streams,
                     _stack(pairs), _stack(val_pairs), _stack(test_pairs), gold_name="gold")


def _stack(rows):
    n = min(len(r["chosen"]) for r in rows)
    return {k: np.stack([r[k][:n] for r in rows]) for k in ("chosen", "rejected")}


def _pipeline(config, workdir, den, sched, den_params, gold_fn, streams, pairs, val_pairs,
              test_pairs, gold_name):
    """Clean RM, distillation, rank correlations and the searches; per-seed metrics.

    `gold_fn` None (a user's pairs, one seed): the clean RM's score of an image is the "gold"
    (metrics named `*_clean_rm_*`)."""
    seeds = [int(s) for s in config.seeds]
    shape = tuple(pairs["chosen"].shape[2:])
    clean, narf = rm_models(config, shape)
    clean_params = train_clean_rm(config, clean, pairs, val_pairs,
                                  os.path.join(workdir, "clean_rm"))
    acc = jax.jit(jax.vmap(lambda p, c, r: jnp.mean(clean.apply(p, c) > clean.apply(p, r))))(
        clean_params, jnp.asarray(test_pairs["chosen"]), jnp.asarray(test_pairs["rejected"]))
    if gold_fn is None:  # user pairs without a gold (one seed): the clean RM's own score
        only = jax.tree.map(lambda a: a[0], clean_params)
        gold_fn = functools.partial(clean.apply, only)
    narf_params, clean_lifted = distill_narf(config, clean, narf, den, sched, den_params,
                                             clean_params, streams, shape,
                                             os.path.join(workdir, "narf"))
    both = jax.tree.map(lambda a, b: jnp.stack([a, b], 1), clean_lifted, narf_params)
    test_keys = jnp.stack([jax.random.fold_in(jax.random.key(s.test), 31) for s in streams])
    rho_gold, rho_rm, single = (np.asarray(a) for a in rank_correlations(
        config, den, sched, narf, gold_fn, den_params, both, test_keys, shape,
        int(config.search.rank_trajectories)))
    out, records = evaluate_searches(config, den, sched, narf, gold_fn, den_params,
                                     clean_lifted, narf_params, streams, shape)
    k_steps = int(config.sampler.num_steps)
    mid = mid_step(config)
    for i, seed in enumerate(seeds):
        res = out[seed]
        res["test_rm_accuracy"] = float(acc[i])
        res[f"test_{gold_name}_single"] = float(single[i])
        for r, name in enumerate(("clean", "narf")):
            for k in range(k_steps):
                res[f"test_spearman_{name}_k{k}"] = float(rho_gold[i, r, k])
                res[f"test_spearman_rm_{name}_k{k}"] = float(rho_rm[i, r, k])
            res[f"test_spearman_{name}_mid"] = float(rho_gold[i, r, mid])
            res[f"test_spearman_rm_{name}_mid"] = float(rho_rm[i, r, mid])
        res["spearman_step_mid"] = mid
    if gold_name != "gold":  # a named gold on user data: rename the gold metrics
        for res in out.values():
            for key in [k for k in res if "_gold_" in k]:
                res[key.replace("_gold_", f"_{gold_name}_")] = res.pop(key)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "selection.json"), "w") as f:
        json.dump(records, f, indent=1)
    return out


# ---------------------------------------------------------------------------------------------
# :real


def load_images(path: str) -> np.ndarray:
    """A .npy of images [N, H, W, C] (float) -> float32; one-line errors naming the file."""
    if not os.path.isfile(path) or not path.endswith(".npy"):
        raise DataError(f"{path}: data.path must be a .npy file of images [N, H, W, C]",
                        path=path)
    x = np.load(path, allow_pickle=False)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or len(x) < 8:
        raise DataError(f"{path}: expected float images [N >= 8, H, W, C], got {x.dtype} "
                        f"{x.shape}", path=path)
    if not np.all(np.isfinite(x)) or np.abs(x).max() > 1.0 + 1e-6:
        raise DataError(f"{path}: images must be finite and in [-1, 1]", path=path)
    return x.astype(np.float32)


def _run_real(config, workdir: str) -> dict[int, dict[str, float]]:
    images = load_images(config.data.path)
    n = len(images)
    tr, va, te = real.held_out_split(n, float(config.data.eval_fraction),
                                     int(config.data.max_eval_rows))
    seed = int(config.seeds[0])
    stream = split_seeds(seed)
    r = config.rm
    if config.data.pairs_path:
        idx = np.load(config.data.pairs_path, allow_pickle=False)
        if idx.ndim != 2 or idx.shape[1] != 2 or not np.issubdtype(idx.dtype, np.integer) or (
                idx.min() < 0 or idx.max() >= n):
            raise DataError(f"{config.data.pairs_path}: data.pairs_path must be int pairs "
                            f"[P, 2] of image indices in [0, {n})", path=config.data.pairs_path)
        split_of = np.zeros(n, np.int32)
        split_of[va], split_of[te] = 1, 2

        def sel(k):
            rows = idx[(split_of[idx[:, 0]] == k) & (split_of[idx[:, 1]] == k)]
            if not len(rows):
                raise DataError(f"{config.data.pairs_path}: no pair within the "
                                f"{('train', 'validation', 'test')[k]} images",
                                path=config.data.pairs_path)
            return {"chosen": images[rows[:, 0]], "rejected": images[rows[:, 1]]}

        pairs, val_pairs, test_pairs = sel(0), sel(1), sel(2)
        gold_fn, gold_name = None, "clean_rm"  # no gold: the clean RM's score stands in
    else:
        gold_fn = named_gold(config.reward.gold)
        g = np.asarray(gold_fn(images))
        pairs = _pairs(images[tr], g[tr], np.random.default_rng([stream.train, 5]),
                       int(r.num_pairs), float(r.label_temperature))
        val_pairs = _gold_pairs(images[va], g[va], np.random.default_rng([stream.validation, 5]),
                                max(8, len(va)))
        test_pairs = _gold_pairs(images[te], g[te], np.random.default_rng([stream.test, 5]),
                                 max(8, len(te)))
        gold_name = config.reward.gold
    model_dir = config.model.path or os.path.join(workdir, "denoiser")
    den, sched, den_params = train_denoisers(config, images[tr][None], model_dir, "")
    add = lambda d: {k: v[None] for k, v in d.items()}  # noqa: E731  (one seed axis)
    return _pipeline(config, workdir, den, sched, den_params, gold_fn, [stream], add(pairs),
                     add(val_pairs), add(test_pairs), gold_name)


# ---------------------------------------------------------------------------------------------
# Claims and plots


def claims(results) -> list[protocol.Claim]:
    v = "toy"
    if any("test_gold_prune_narf" not in m for m in results[v]["per_seed"].values()):
        return []  # :real: no gold on a user's images (metrics only)
    mean = {m: protocol.seed_mean(results, v, f"test_gold_{m}") for m in METHODS}
    rho = {n: protocol.seed_mean(results, v, f"test_spearman_{n}_mid") for n in ("clean", "narf")}
    detail = ("test gold of the pick at equal NFE: " + ", ".join(
        f"{m} {mean[m]:.3f}" for m in METHODS) + f"; Spearman with the final gold at t = T/2: "
        f"clean RM on x0_hat {rho['clean']:.3f}, noise-aware RM {rho['narf']:.3f}")
    per = results[v]["per_seed"]
    within = all(per[s][f"nfe_{m}"] <= per[s]["budget"] for s in per for m in METHODS)
    nfe = {m: protocol.seed_mean(results, v, f"nfe_{m}") for m in METHODS}
    return [
        protocol.compare(
            "at equal NFE, pruning with the noise-aware RM (TTSnap) picks images of higher test "
            "gold than best-of-N with the clean RM", results, (v, "test_gold_prune_narf"),
            (v, "test_gold_bon"), at_least=0.0, detail=detail),
        protocol.compare(
            "at equal NFE, pruning with the noise-aware RM picks images of higher test gold "
            "than pruning with the clean RM on x0_hat", results, (v, "test_gold_prune_narf"),
            (v, "test_gold_prune_clean"), at_least=0.0, detail=detail),
        protocol.compare(
            "the noise-aware RM ranks intermediate candidates better: Spearman with the final "
            "gold at t = T/2 is >= 0.15 above the clean RM's on x0_hat", results,
            (v, "test_spearman_narf_mid"), (v, "test_spearman_clean_mid"), at_least=0.15,
            detail=detail),
        protocol.sanity(
            "every method's denoiser calls per search are within the equal budget", within,
            {**{f"nfe_{m}": nfe[m] for m in METHODS},
             "budget": protocol.seed_mean(results, v, "budget")}, "by construction"),
        protocol.sanity(
            "the clean RM orders test digit pairs by the gold above chance",
            protocol.seed_mean(results, v, "test_rm_accuracy") > 0.5,
            {"test_rm_accuracy": protocol.seed_mean(results, v, "test_rm_accuracy")},
            "trained to"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Spearman with the final gold of each scorer's intermediate score along the chain."""
    per = results.get("toy", {}).get("per_seed", {})
    if not per:
        return []
    first = next(iter(per.values()))
    steps = sorted(int(k.rsplit("_k", 1)[1]) for k in first if k.startswith(
        "test_spearman_narf_k"))
    curves = {}
    for name, label in (("clean", "clean RM on x0_hat"), ("narf", "noise-aware RM")):
        ys = np.array([[per[s][f"test_spearman_{name}_k{k}"] for k in steps] for s in per])
        curves[label] = (steps, ys.mean(0), ys.std(0))
    return [plot_curves(curves, os.path.join(workdir, "plots", "spearman.png"),
                        title="rank correlation with the final gold (mean over seeds)",
                        xlabel="sampler step k (0 = pure noise)", ylabel="Spearman")]
