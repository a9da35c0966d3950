"""TRL's GRPO/RLOO options in the policy-gradient recipe: two-sided clipping (delta), the
high-entropy token mask, truncated completions and reward clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import policy_gradient as pg
from alignax.losses import ppo_clip_loss


def test_delta_caps_the_unclipped_ratio():
    logps = jnp.log(jnp.array([[3.0, 0.5, 1.1]]))
    old = jnp.zeros((1, 3))
    adv = jnp.array([-1.0])
    mask = jnp.ones((1, 3))
    plain, _ = ppo_clip_loss(logps, old, adv, mask, clip_low=0.2)
    capped, _ = ppo_clip_loss(logps, old, adv, mask, clip_low=0.2, delta=2.0)
    # ratio 3 with A < 0: max(3, clip 1.2) = 3 plain, min(3, delta) = 2 capped
    np.testing.assert_allclose(plain[0], [3.0, 0.8, 1.1], rtol=1e-6)
    np.testing.assert_allclose(capped[0], [2.0, 0.8, 1.1], rtol=1e-6)


def test_high_entropy_mask_keeps_the_top_quantile_of_valid_tokens():
    ent = jnp.array([[0.1, 0.9, 0.5, 7.0], [0.3, 0.8, 0.2, 0.0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    got = np.asarray(pg.high_entropy_mask(ent, mask, 0.5))
    valid = np.asarray(ent)[np.asarray(mask) > 0]
    threshold = np.quantile(valid, 0.5)  # numpy's linear interpolation, as TRL's torch.quantile
    want = ((np.asarray(ent) >= threshold) & (np.asarray(mask) > 0)).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert got[0, 3] == 0  # a masked token never enters, however high its entropy
    np.testing.assert_array_equal(pg.high_entropy_mask(ent, mask, 1.0), np.asarray(mask))


def test_policy_loss_with_entropy_quantile_trains_only_high_entropy_tokens():
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=24))
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 16, (4, 7)).astype(np.int32)
    batch = {"ids": ids, "mask": np.ones_like(ids), "response_mask": np.ones((4, 4), bool),
             "old_logps": np.full((4, 4), -2.7, np.float32),
             "advantages": np.array([1.0, 0.3, 0.5, 0.7], np.float32)}  # one sign: no cancellation
    full = pg.make_policy_loss(model.apply, aggregation="token_mean")
    half = pg.make_policy_loss(model.apply, aggregation="token_mean", top_entropy_quantile=0.5)
    (lf, _), (lh, _) = full(params, batch, None), half(params, batch, None)
    # by hand: the token losses of the kept tokens over every valid token
    from alignax import ops
    from alignax.algorithms import online

    logits = online.response_logits(model.apply, params, ids, batch["mask"], 4)
    logps = ops.token_logprobs(logits, ids[:, -4:])
    tok, _ = ppo_clip_loss(logps, batch["old_logps"], batch["advantages"],
                           batch["response_mask"])
    keep = pg.high_entropy_mask(ops.token_entropy(logits), batch["response_mask"], 0.5)
    np.testing.assert_allclose(lh, (tok * keep).sum() / 16.0, rtol=1e-5)
    np.testing.assert_allclose(lf, tok.sum() / 16.0, rtol=1e-5)
    assert 0 < float(keep.sum()) < 16


def test_truncated_rows_are_those_without_a_stop_token():
    responses = jnp.array([[5, 2, 0, 0], [5, 6, 7, 8], [2, 9, 9, 9], [5, 6, 7, 2]])
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]], bool)
    # row 3 has its stop token only outside its valid tokens
    np.testing.assert_array_equal(pg.truncated_rows(responses, mask, [2]),
                                  [False, True, False, True])


def test_recipe_config_checks_the_options():
    cfg = pg.validate({"delta": 1.5, "top_entropy_quantile": 0.2, "stop_tokens": [2],
                       "mask_truncated_completions": True, "reward_clip": [-1.0, 1.0]})
    assert cfg["delta"] == 1.5
    with pytest.raises(ValueError, match="stop_tokens"):
        pg.validate({"mask_truncated_completions": True})
    with pytest.raises(ValueError, match="reward_clip"):
        pg.validate({"reward_clip": [1.0, -1.0]})
    with pytest.raises(ValueError, match="delta"):
        pg.validate({"delta": 1.1})
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        pg.validate({"top_entropy_quantile": 0.0})
    with pytest.raises(ValueError, match="ppo_clip"):
        pg.validate({"top_entropy_quantile": 0.5, "loss": "gspo"})


def test_recipe_runs_with_every_option(tmp_path):
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=24, max_len=12))
    params = model.init(jax.random.key(0))
    prompts = np.tile(np.array([[4, 5, 6]], np.int32), (4, 1))
    config = pg.default_config(
        iterations=2, prompts_per_iteration=2, num_samples=4, max_new_tokens=4, kl_coef=0.01,
        stop_tokens=[3], mask_truncated_completions=True, reward_clip=[0.0, 0.5], delta=2.0,
        top_entropy_quantile=0.5, progress=False)
    out = pg.train(config, str(tmp_path), model=model, init_params=params, ref_params=params,
                   prompt_ids=prompts, prompt_mask=np.ones_like(prompts, bool),
                   reward_fn=lambda r: (r.responses == 7).astype(jnp.float32).sum(-1))
    for m in out["history"]:
        assert 0.0 <= m["truncated_fraction"] <= 1.0
        assert 0.0 <= m["reward"] <= 0.5  # clipped before anything else sees it


def test_trl_style_advantages_and_kl_bias_correction():
    from alignax import ops
    from alignax.algorithms.online import compute_advantages

    r = np.random.default_rng(1).normal(size=12)
    g = r.reshape(3, 4)
    centred = g - g.mean(1, keepdims=True)
    np.testing.assert_allclose(compute_advantages("grpo_unbiased", r, 4),
                               (centred / (g.std(1, ddof=1, keepdims=True) + 1e-4)).reshape(-1),
                               rtol=1e-5)
    np.testing.assert_allclose(compute_advantages("grpo_batch_std", r, 4),
                               (centred / (r.std(ddof=1) + 1e-4)).reshape(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="std_scope"):
        ops.group_normalized_advantages(jnp.asarray(r), 4, std_scope="prompt")
    # the KL term weighted by pi / pi_old: equal values at ratio 1, different gradients
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=24))
    params = model.init(jax.random.key(0))
    ids = np.random.default_rng(0).integers(1, 16, (2, 6)).astype(np.int32)
    from alignax.algorithms import online

    old = online.response_logps(model.apply, params, ids, np.ones_like(ids), 3)
    batch = {"ids": ids, "mask": np.ones_like(ids), "response_mask": np.ones((2, 3), bool),
             "old_logps": old, "ref_logps": old - 0.3,
             "advantages": np.zeros(2, np.float32)}
    plain = pg.make_policy_loss(model.apply)
    corrected = pg.make_policy_loss(model.apply, kl_bias_correction=True)
    (lp, _), gp = jax.value_and_grad(lambda p: plain(p, batch, None, kl_coef=1.0),
                                     has_aux=True)(params)
    (lc, _), gc = jax.value_and_grad(lambda p: corrected(p, batch, None, kl_coef=1.0),
                                     has_aux=True)(params)
    np.testing.assert_allclose(lc, lp, rtol=1e-6)
    k3 = np.exp(-0.3) - 1 + 0.3  # the k3 estimate at log(ref/pi) = -0.3
    # d/dtheta [k3(theta) * ratio] = dk3 + k3 * dlogpi at ratio 1
    glp = jax.grad(lambda p: online.response_logps(model.apply, p, ids, np.ones_like(ids),
                                                   3).sum() / 6)(params)
    for a, b, c in zip(jax.tree.leaves(gc), jax.tree.leaves(gp), jax.tree.leaves(glp)):
        np.testing.assert_allclose(a, b + k3 * c, rtol=1e-4, atol=1e-6)
