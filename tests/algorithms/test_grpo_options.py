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


# --- SAPO, VESPO, the off-policy mask, adaptive entropy, TR-DPO syncing, sampler options ---

def _tiny_batch(seed=0):
    from alignax.algorithms import online
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=24))
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 16, (4, 7)).astype(np.int32)
    rmask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    cur = jax.jit(lambda p: online.response_logps(model.apply, p, ids, np.ones_like(ids), 4))(
        params)
    old = np.asarray(cur) + rng.normal(0.0, 0.5, (4, 4)).astype(np.float32)
    batch = {"ids": ids, "mask": np.ones_like(ids), "response_mask": rmask,
             "old_logps": old, "advantages": np.array([1.0, -0.6, -1.2, 0.4], np.float32)}
    return model, params, batch


def _by_hand(model, params, batch, token_loss, keep_seq=None, aggregation="token_mean"):
    """aggregate(token_loss(logps) * keep) computed outside the recipe, with its gradient."""
    from alignax.algorithms import online
    from alignax.losses import aggregate

    def f(p):
        logps = online.response_logps(model.apply, p, batch["ids"], batch["mask"], 4)
        tok = token_loss(logps)
        if keep_seq is not None:
            tok = tok * keep_seq[:, None]
        return aggregate(tok, batch["response_mask"], aggregation)

    return jax.jit(jax.value_and_grad(f))(params)


@pytest.mark.parametrize("loss,kwargs,threshold", [
    ("sapo", dict(temperature_pos=1.0, temperature_neg=1.05), None),
    ("vespo", dict(k_pos=2.0, lambda_pos=3.0, k_neg=3.0, lambda_neg=2.0), 1.0),
])
def test_sapo_vespo_and_the_off_policy_mask_through_the_recipe_loss(loss, kwargs, threshold):
    from alignax.algorithms import online
    from alignax.losses.policy_gradient import off_policy_sequence_mask, sapo_loss, vespo_loss

    model, params, batch = _tiny_batch()
    # row 1 (A < 0) drifts: its behaviour log-probs far above the current ones
    batch["old_logps"] = batch["old_logps"].copy()
    batch["old_logps"][1] += 3.0
    fn = {"sapo": sapo_loss, "vespo": vespo_loss}[loss]
    loss_fn = pg.make_policy_loss(model.apply, loss=loss, loss_kwargs=kwargs,
                                  aggregation="seq_mean_token_mean",
                                  off_policy_mask_threshold=threshold)
    (value, metrics), grads = jax.jit(jax.value_and_grad(
        lambda p: loss_fn(p, batch, None), has_aux=True))(params)
    keep = None
    if threshold is not None:
        logps = jax.jit(lambda p: online.response_logps(model.apply, p, batch["ids"],
                                                        batch["mask"], 4))(params)
        keep = off_policy_sequence_mask(logps, batch["old_logps"], batch["advantages"],
                                        batch["response_mask"], threshold=threshold)
        np.testing.assert_array_equal(keep, [1, 0, 1, 1])  # A >= 0 rows are always kept
        np.testing.assert_allclose(metrics["off_policy_masked"], 0.25)
    want, want_grads = _by_hand(
        model, params, batch,
        lambda lp: fn(lp, batch["old_logps"], batch["advantages"], batch["response_mask"],
                      **kwargs)[0], keep_seq=keep, aggregation="seq_mean_token_mean")
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert ("sapo_gate" if loss == "sapo" else "vespo_phi") in metrics
    assert pg.policy_accum_weight(loss, "token_mean") == "tokens"


def test_dynamic_entropy_coefficient_is_a_step_argument():
    model, params, batch = _tiny_batch()
    traces = []
    dynamic = pg.make_policy_loss(model.apply, dynamic_entropy_coef=True,
                                  top_entropy_quantile=0.5)

    @jax.jit
    def run(p, coef):
        traces.append(1)
        return jax.value_and_grad(lambda q: dynamic(q, batch, None, 0.0, coef),
                                  has_aux=True)(p)

    run(params, jnp.float32(0.0))
    (value, metrics), grads = run(params, jnp.float32(0.3))
    assert len(traces) == 1  # a new coefficient does not recompile
    static = pg.make_policy_loss(model.apply, entropy_coef=0.3, top_entropy_quantile=0.5)
    (want, _), want_grads = jax.jit(jax.value_and_grad(
        lambda q: static(q, batch, None, 0.0), has_aux=True))(params)
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # entropy_active: the mean entropy of the tokens the policy term keeps
    from alignax import ops
    from alignax.algorithms import online

    ent = jax.jit(lambda p: ops.token_entropy(online.response_logits(
        model.apply, p, batch["ids"], batch["mask"], 4)))(params)
    keep = pg.high_entropy_mask(ent, batch["response_mask"], 0.5)
    np.testing.assert_allclose(metrics["entropy_active"], (ent * keep).sum() / keep.sum(),
                               rtol=1e-5)


def test_adaptive_entropy_control_follows_trl():
    from alignax.algorithms.kl_control import adaptive_entropy_control

    ctrl = adaptive_entropy_control(0.01, target=0.5, coef_min=0.0, coef_max=0.02, delta=0.004)
    state = ctrl.init()
    applied, coefs = [], []
    for h in (0.7, 0.4, 0.3, 0.2, 0.9, 0.45):
        applied.append(float(ctrl.applied(state)))
        state = ctrl.update(state, jnp.float32(h))
        coefs.append(float(state.coef))
    # by hand: H > target lowers c by delta (>= min), H <= target raises it (<= max); the next
    # update applies c only if the last H <= target (nothing before the first measurement)
    np.testing.assert_allclose(coefs, [0.006, 0.010, 0.014, 0.018, 0.014, 0.018], rtol=1e-6)
    np.testing.assert_allclose(applied, [0.0, 0.0, 0.010, 0.014, 0.018, 0.0], rtol=1e-6)
    state = ctrl.init()
    for _ in range(6):
        state = ctrl.update(state, jnp.float32(0.1))
    assert float(state.coef) == pytest.approx(0.02)  # capped at max
    with pytest.raises(ValueError, match="delta"):
        adaptive_entropy_control(0.0, target=0.5, delta=0.0)
    with pytest.raises(ValueError, match="min <= max"):
        adaptive_entropy_control(0.0, target=0.5, coef_min=0.5, coef_max=0.1)


def test_synced_reference_mixes_every_k_updates():
    ref = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([0.5], jnp.bfloat16)}
    params = {"w": jnp.array([3.0, -2.0]), "b": jnp.array([1.5], jnp.bfloat16)}
    sync = jax.jit(lambda r, p, s: pg.synced_reference(r, p, s, alpha=0.25, every=2))
    same = sync(ref, params, jnp.int32(3))
    np.testing.assert_array_equal(same["w"], ref["w"])
    mixed = sync(ref, params, jnp.int32(4))
    np.testing.assert_allclose(mixed["w"], [0.25 * 3 + 0.75 * 1, 0.25 * -2 + 0.75 * 2])
    assert mixed["b"].dtype == jnp.bfloat16 and float(mixed["b"][0]) == 0.75


def test_recipe_config_checks_the_new_options():
    cfg = pg.validate({"loss": "vespo", "off_policy_mask_threshold": 0.5, "min_p": 0.1,
                       "repetition_penalty": 1.3, "sync_ref": {"alpha": 0.6, "steps": 4},
                       "adaptive_entropy": {"target": 2.0, "min": 0.0, "max": 0.1,
                                            "delta": 0.01}})
    assert pg.loss_kwargs(cfg) == {"k_pos": 2.0, "lambda_pos": 3.0, "k_neg": 3.0,
                                   "lambda_neg": 2.0}
    for bad, match in [({"loss": "sapo", "sapo_temperature_neg": 0.0}, "temperatures"),
                       ({"loss": "sapo", "delta": 2.0}, "delta"),
                       ({"off_policy_mask_threshold": -0.1}, "off_policy_mask_threshold"),
                       ({"min_p": 1.5}, "min_p"), ({"repetition_penalty": 0.0},
                                                    "repetition_penalty"),
                       ({"sync_ref": {"alpha": 0.0, "steps": 1}}, "sync_ref"),
                       ({"sync_ref": {"alpha": 0.5}}, "sync_ref"),
                       ({"sync_ref": {"alpha": 0.5, "steps": 2}, "kl_coef": 0.0}, "kl_coef=0"),
                       ({"adaptive_entropy": {"target": 1.0}}, "adaptive_entropy"),
                       ({"adaptive_entropy": {"target": 1.0, "min": 0.0, "max": 0.1,
                                              "delta": 0.01}, "entropy_coef": 0.5},
                        "entropy_coef")]:
        with pytest.raises(ValueError, match=match):
            pg.validate(bad)


def test_recipe_with_sapo_adaptive_entropy_synced_reference_and_sampler_options(tmp_path):
    """One run with every new option: the entropy coefficient evolves as the controller says
    on the measured entropies, the reference is alpha * policy + (1 - alpha) * ref after the
    2nd update, and a restarted run continues both exactly."""
    from alignax.models.transformer import TransformerConfig, make_lm

    model = make_lm(TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                                      d_ff=24, max_len=12))
    params = model.init(jax.random.key(0))
    prompts = np.tile(np.array([[4, 5, 6]], np.int32), (4, 1))
    ae = {"target": 5.0, "min": 0.0, "max": 0.05, "delta": 0.01}
    config = pg.default_config(
        iterations=2, prompts_per_iteration=2, num_samples=4, max_new_tokens=4, kl_coef=0.01,
        loss="sapo", off_policy_mask_threshold=0.5, entropy_coef=0.02, adaptive_entropy=ae,
        sync_ref={"alpha": 0.6, "steps": 2}, min_p=0.05, repetition_penalty=1.5,
        progress=False)
    def run(workdir, iterations):
        return pg.train(config.to_dict() | {"iterations": iterations}, str(workdir),
                        model=model, init_params=params, ref_params=params,
                        prompt_ids=prompts, prompt_mask=np.ones_like(prompts, bool),
                        reward_fn=lambda r: (r.responses == 7).astype(jnp.float32).sum(-1))

    out = run(tmp_path / "a", 2)
    hist = out["history"]
    coef = 0.02
    for m in hist:  # one update per iteration: the controller sees that update's entropy
        h = m["entropy_active"]
        coef = min(coef + 0.01, 0.05) if h <= 5.0 else max(coef - 0.01, 0.0)
        assert m["entropy_coef"] == pytest.approx(coef, abs=1e-7)
        assert 0.0 <= m["off_policy_masked"] <= 1.0
    state = out["state"]
    want = jax.tree.map(lambda p, r: 0.6 * p + 0.4 * r, out["params"], params)
    for a, b in zip(jax.tree.leaves(state.ref), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(state.controls["entropy"].coef) == pytest.approx(coef, abs=1e-7)
    # resume: the entropy controller and the synced reference are checkpointed state, so 2
    # iterations then a restart to 3 equal 3 uninterrupted ones
    resumed, whole = run(tmp_path / "a", 3), run(tmp_path / "b", 3)
    assert resumed["resumed_from"] == 2
    for key in ("entropy_coef", "entropy_active", "loss", "reward", "kl_ref_seq"):
        assert [m[key] for m in resumed["history"]] == [m[key] for m in whole["history"]], key
    for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(whole["state"])):
        np.testing.assert_array_equal(jax.random.key_data(a) if jnp.issubdtype(
            a.dtype, jax.dtypes.prng_key) else a, jax.random.key_data(b) if jnp.issubdtype(
            b.dtype, jax.dtypes.prng_key) else b)
