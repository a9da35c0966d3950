"""Secrets of RLHF II toy: planted noise and the out-of-bag ensemble strength."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignax.losses.metarm import metarm_loss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "secrets_rlhf2.py")
    spec = importlib.util.spec_from_file_location("secrets_rlhf2_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_planted_flips_and_ties():
    mod = _module()
    config = mod.get_config("smoke")
    config.data.num_pairs = 2000
    data = mod.make_data(config, 0)
    assert abs(data["flipped"].mean() - 0.25) < 0.03
    assert data["is_tie"].mean() == 0.2
    assert np.all(np.abs(data["gold_margin"][data["is_tie"]]) < config.task.tie_width)
    ordinary = ~data["is_tie"]
    # outside the near-ties, a label is wrong exactly where it was flipped
    np.testing.assert_array_equal(data["gold_margin"][ordinary] < 0, data["flipped"][ordinary])


def test_strength_is_out_of_bag_mean_and_tracks_gold(tmp_path):
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 1)
    *strengths, _ = mod.ensemble_strength(
        config, str(tmp_path), data["chosen"][None], data["rejected"][None], [1],
        jax.random.key(0)[None], members=4, steps=200)
    mu, sigma, mu_all = (a[0] for a in strengths)
    assert mu.shape == sigma.shape == mu_all.shape == (len(data["chosen"]),)
    assert np.all(sigma >= 0)
    # mu differs from the all-member mean (some members are in bag) but agrees in sign mostly
    assert not np.allclose(mu, mu_all)
    assert np.mean(np.sign(mu) == np.sign(mu_all)) > 0.8
    # flipped labels get lower strength than clean ones on ordinary pairs
    ordinary = ~data["is_tie"]
    assert mu[ordinary & data["flipped"]].mean() < mu[ordinary & ~data["flipped"]].mean()
    # the ensemble trained through the loop: metrics and checkpoints in the workdir
    assert os.path.exists(tmp_path / "metrics.jsonl")
    assert os.path.isdir(tmp_path / "checkpoints")


def test_stacked_members_train_as_separate_fits(tmp_path):
    """The ensemble's summed member losses give each member the updates of its own fit."""
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 0)
    chosen, rejected = data["chosen"][:100], data["rejected"][:100]
    key = jax.random.key(3)
    *strengths, _ = mod.ensemble_strength(
        config, str(tmp_path / "ens"), chosen[None], rejected[None], [0], key[None],
        members=2, steps=20)
    mu, sigma, mu_all = (a[0] for a in strengths)
    k_boot, k_init = jax.random.split(key)
    counts = np.asarray(jax.jit(mod.bootstrap_counts, static_argnums=(1, 2))(k_boot, 100, 2))
    rm = mod.make_rm(config)
    zeros = np.zeros(100, np.float32)
    tx = mod._optimizer(config)
    loss = mod.make_rm_loss(rm)

    @jax.jit  # one compiled program each (for both members), not one per op
    def start(k):
        init = rm.init(k)
        return init, tx.init(init)

    @jax.jit
    def step(params, opt, batch):
        updates, opt = tx.update(jax.grad(loss)(params, batch), opt, params)
        return optax.apply_updates(params, updates), opt

    margin = jax.jit(lambda p: rm.apply(p, chosen) - rm.apply(p, rejected))
    margins = []
    for m, k in enumerate(jax.random.split(k_init, 2)):  # a plain optax loop per member
        params, opt = start(k)
        batch = {"chosen": chosen, "rejected": rejected, "weights": counts[m],
                 "margin": zeros, "smoothing": zeros}
        for _ in range(20):
            params, opt = step(params, opt, batch)
        margins.append(np.asarray(margin(params)))
    margins = np.stack(margins)
    np.testing.assert_allclose(mu_all, margins.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sigma, margins.std(0), rtol=1e-4, atol=1e-5)
    oob = counts == 0
    expected = np.where(oob.sum(0) > 0, (oob * margins).sum(0) / np.maximum(oob.sum(0), 1),
                        margins.mean(0))
    np.testing.assert_allclose(mu, expected, rtol=1e-4, atol=1e-5)


def test_splits_and_shifted_distribution():
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 2)
    # validation pairs: the same noisy process, other samples
    assert data["val_chosen"].shape == (config.data.num_val_pairs, config.task.dim)
    assert not np.allclose(data["val_chosen"][:50], data["chosen"][:50])
    # the shifted groups and test pairs sit around one high-gold centre
    groups = data["shifted_groups"]
    assert groups.shape == (config.shift.num_groups, config.shift.group_size, config.task.dim)
    centre = groups.reshape(-1, config.task.dim).mean(0)
    np.testing.assert_allclose(centre, data["shifted_a"].mean(0), atol=0.15)
    assert data["shifted_candidate_gold"].mean() > data["candidate_gold"].mean() + 0.5


def test_method_losses(tmp_path):
    mod = _module()
    config = mod.get_config("smoke")
    data = mod.make_data(config, 0)
    rm = mod.make_rm(config)
    params = jax.jit(rm.init)(jax.random.key(0))
    n = 64
    batch = {"chosen": jnp.asarray(data["chosen"][:n]),
             "rejected": jnp.asarray(data["rejected"][:n]),
             "weights": jnp.ones(n), "margin": jnp.zeros(n), "smoothing": jnp.zeros(n),
             "shifted_groups": jnp.asarray(data["shifted_groups"])}
    bt = mod.make_rm_loss(rm)

    @jax.jit  # one program for every value the assertions read, not one per op
    def values(params, batch):
        metarm = mod.make_method_loss(config, rm, "metarm")(params, batch)
        expected = metarm_loss(lambda p: bt(p, batch), lambda p: jnp.mean(
            mod.difference_loss(rm.apply(p, batch["shifted_groups"]))), params,
            inner_lr=config.metarm.inner_lr)
        ones = jnp.ones((2, 2, n, config.model.hidden))
        contrastive = mod.make_method_loss(config, rm, "contrastive")(
            params, {**batch, "masks": ones, "contrastive_idx": jnp.arange(n)})
        return metarm, expected, contrastive, bt(params, batch)

    (loss, aux), expected, contrastive, bt_loss = values(params, batch)
    # metarm: the BT loss after the ascent step on the shifted groups' difference loss
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert 0.5 <= float(aux["difference_objective"]) < 1.0
    # contrastive: BT plus the weighted pair-contrastive term (no dropout: masks of ones)
    loss, aux = contrastive
    np.testing.assert_allclose(aux["bt_loss"], bt_loss, rtol=1e-6)
    np.testing.assert_allclose(loss, aux["bt_loss"] + config.contrastive.weight
                               * aux["contrastive_loss"], rtol=1e-6)
    # both train through fit_rm with early stopping on validation
    stacked = {k: v[None] for k, v in batch.items()}
    stacked.update(val_chosen=data["val_chosen"][None], val_rejected=data["val_rejected"][None])
    config.train.update(steps=20, eval_every=10)
    for method in ("metarm", "contrastive"):
        _, fit = mod.fit_rm(config, str(tmp_path / method), stacked, [0],
                            jax.random.key(1)[None], method)
        assert int(fit.best_step[0]) in (10, 20) and np.isfinite(fit.final_loss).all()
