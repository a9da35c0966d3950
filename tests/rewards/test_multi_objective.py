"""The multi-objective regression reward model: scaling, loss, prediction, held-out report."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.models.heads import make_multi_objective_reward_model
from alignax.models.transformer import TransformerConfig
from alignax.rewards import multi_objective as mo


def test_rating_scale_standardises_each_objective_and_guards_constants():
    r = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 5.0]])
    center, scale = mo.rating_scale(r)
    np.testing.assert_allclose(center, [2.0, 5.0, 3.0])
    np.testing.assert_allclose(scale, [np.sqrt(8 / 3), 1.0, np.sqrt(8 / 3)], rtol=1e-6)
    # masked: only rated entries count
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1]])
    center, _ = mo.rating_scale(r, mask)
    np.testing.assert_allclose(center, [1.0, 5.0, 3.0])
    with pytest.raises(ValueError, match="no rated example"):
        mo.rating_scale(r, np.zeros_like(r))


def _linear_apply(params, ids, mask):
    """A toy 'model': per-token embeddings summed over the valid tokens -> [B, K]."""
    return {"objectives": jnp.einsum("bt,btk->bk", mask.astype(jnp.float32),
                                     params["emb"][ids])}


def test_loss_is_zero_at_the_scaled_truth_and_predict_inverts_the_scaling():
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 6, (8, 5)))
    mask = jnp.asarray(rng.random((8, 5)) < 0.8)
    params = {"emb": jnp.asarray(rng.standard_normal((6, 2)), jnp.float32)}
    heads = np.asarray(_linear_apply(params, ids, mask)["objectives"])
    center, scale = np.array([1.0, -2.0], np.float32), np.array([3.0, 0.5], np.float32)
    ratings = center + scale * heads
    loss_fn = jax.jit(mo.make_regression_loss(_linear_apply, center, scale))  # not op by op
    loss, metrics = loss_fn(params, {"input_ids": ids, "mask": mask, "ratings": ratings})
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    assert float(metrics["rmse_0"]) == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(mo.predict(_linear_apply, params, ids, mask, center, scale,
                                          batch_size=3), ratings, rtol=1e-5, atol=1e-5)
    # an error of 1 rating unit on objective 1 is 1 / scale standardised units; RMSE in ratings
    off = ratings + np.array([0.0, 1.0], np.float32)
    loss, metrics = loss_fn(params, {"input_ids": ids, "mask": mask, "ratings": off})
    assert float(loss) == pytest.approx(0.5 * (1.0 / 0.5) ** 2, rel=1e-5)
    assert float(metrics["rmse_1"]) == pytest.approx(1.0, rel=1e-5)
    # an unrated objective does not count
    rated = np.ones_like(ratings)
    rated[:, 1] = 0
    loss, _ = loss_fn(params, {"input_ids": ids, "mask": mask, "ratings": off,
                               "rating_mask": rated})
    assert float(loss) == pytest.approx(0.0, abs=1e-10)


def test_regression_report_on_known_predictions():
    t = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    p = t.copy()
    p[:, 1] = 2.5  # a constant prediction: R^2 = 0, Pearson 0
    rep = mo.regression_report(p, t, ["help", "len"])
    assert rep["rmse_help"] == 0.0 and rep["r2_help"] == 1.0
    assert rep["pearson_help"] == pytest.approx(1.0)
    assert rep["r2_len"] == pytest.approx(0.0) and rep["pearson_len"] == 0.0
    with pytest.raises(ValueError):
        mo.regression_report(p, t, ["help"])


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_a_transformer_with_two_heads_learns_count_and_length_ratings():
    """The ArmoRM-style model's objective heads, trained with the loss, beat the constant
    predictor on held-out rows for both a length and a token-count rating."""
    cfg = TransformerConfig(vocab_size=8, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                            max_len=8)
    model = make_multi_objective_reward_model(cfg, num_objectives=2, gate_hidden=8)
    rng = np.random.default_rng(1)

    def data(n):
        ids = rng.integers(2, 8, (n, 8))
        lengths = rng.integers(1, 9, n)
        mask = np.arange(8)[None] < lengths[:, None]
        ratings = np.stack([((ids == 2) & mask).sum(1), lengths], 1).astype(np.float32)
        return jnp.asarray(ids), jnp.asarray(mask), ratings

    ids, mask, ratings = data(512)
    center, scale = mo.rating_scale(ratings)
    loss_fn = mo.make_regression_loss(model.apply, center, scale)
    params = model.init(jax.random.key(0))
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    batch = {"input_ids": ids, "mask": mask, "ratings": ratings}

    @jax.jit
    def step(params, opt):
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    for _ in range(300):
        params, opt, _ = step(params, opt)
    hi, hm, hr = data(256)
    rep = mo.regression_report(mo.predict(model.apply, params, hi, hm, center, scale), hr,
                               ["count", "length"])
    assert rep["r2_count"] > 0.5 and rep["r2_length"] > 0.5, rep
