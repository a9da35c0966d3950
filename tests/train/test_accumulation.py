"""Gradient accumulation inside the jitted step: k micro-batches == one batch (fp32, 1e-5)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms.direct import make_direct_loss
from alignax.algorithms.sft import make_sft_loss
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train import TrainState, make_train_step
from alignax.train.step import split_microbatches

MODEL = make_lm(TransformerConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                  max_len=16))
PARAMS = MODEL.init(jax.random.key(0))
REF = MODEL.init(jax.random.key(1))
B, T = 16, 8
# SGD: the params after one update are a linear function of the gradient, so they compare the
# gradients themselves (Adam's first update g / (|g| + eps) would amplify rounding of g ~ 0).
TX = optax.sgd(0.5)


def _pairs(seed=0):
    rng = np.random.default_rng(seed)
    resp = (np.arange(T) >= 3).astype(np.int32)[None].repeat(B, 0)
    resp[::3, -1] = 0  # responses of different lengths
    return {"chosen_ids": rng.integers(1, 32, (B, T)).astype(np.int32),
            "rejected_ids": rng.integers(1, 32, (B, T)).astype(np.int32),
            "chosen_mask": np.ones((B, T), np.int32), "rejected_mask": np.ones((B, T), np.int32),
            "chosen_response_mask": resp, "rejected_response_mask": resp[::-1].copy()}


def _sequences(seed=0):
    return {"input_ids": np.random.default_rng(seed).integers(1, 32, (B, T)).astype(np.int32)}


def _one_step(loss_fn, batch, k, *frozen, tx=TX, **kwargs):
    step = make_train_step(loss_fn, tx, donate=False, accum_steps=k, **kwargs)
    state = TrainState.create(PARAMS, tx, jax.random.key(0))
    new, metrics = step(state, batch, *frozen)
    return step, new, metrics


def _assert_same_update(a, b, skip=()):
    (_, new_a, m_a), (_, new_b, m_b) = a, b
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5),
                 new_a.params, new_b.params)
    assert set(m_a) == set(m_b)
    for name in set(m_a) - set(skip):
        np.testing.assert_allclose(m_a[name], m_b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_token_weighted_accumulation_equals_the_whole_batch_with_unequal_lengths():
    """SFT's loss is a mean over all target tokens of the batch: with rows of different
    lengths the micro-batches must be weighted by their token counts (accum_weight)."""
    batch = _sequences()
    lengths = np.random.default_rng(1).integers(2, T + 1, B)
    batch["mask"] = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    loss_fn = make_sft_loss(MODEL.apply)
    whole = _one_step(loss_fn, batch, 1)
    weighted = _one_step(loss_fn, batch, 4, accum_weight="tokens")
    _assert_same_update(whole, weighted)  # tokens too: summed over micro-batches
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), whole[1].params, PARAMS)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the update is not trivially zero
    # unweighted, the micro-batches' token means would count alike: not the batch's token mean
    micro = split_microbatches(batch, 4)
    counts = (micro["mask"][:, :, 1:]).sum((1, 2))
    assert len(set(counts.tolist())) > 1
    with pytest.raises(ValueError, match="reports no such metric"):
        _one_step(loss_fn, batch, 4, accum_weight="pairs")


def test_dpo_loss_accumulated_equals_the_whole_batch_and_compiles_once():
    """Also with the reference as precomputed `ref_logps` [2B] (chosen rows, then rejected
    rows): the strided split keeps that stacked leaf aligned with the [B] leaves."""
    from alignax.algorithms.direct import pair_logps

    loss_fn = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.1})
    whole = _one_step(loss_fn, _pairs(), 1, REF)
    batch = _pairs()
    batch["ref_logps"] = np.concatenate(jax.jit(pair_logps, static_argnums=0)(
        MODEL.apply, REF, batch))
    accum = _one_step(loss_fn, batch, 4)
    _assert_same_update(whole, accum)
    step, new, _ = accum
    batch = _pairs(1)
    batch["ref_logps"] = np.zeros(2 * B, np.float32)
    step(new, batch)
    assert step._cache_size() == 1


def test_bf16_params_accumulate_in_float32_and_keep_their_dtype():
    def loss_fn(params, batch, rng):
        del rng
        err = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"] - batch["y"]
        return jnp.mean(err.astype(jnp.float32) ** 2), {}

    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(4, 8)), jnp.bfloat16),
              "w2": jnp.asarray(rng.normal(size=(8, 2)), jnp.bfloat16)}
    batch = {"x": rng.normal(size=(B, 4)).astype(jnp.bfloat16),
             "y": rng.normal(size=(B, 2)).astype(jnp.bfloat16)}
    tx = optax.adam(1e-3)
    for accum_dtype in ("float32", None):
        step = make_train_step(loss_fn, tx, donate=False, accum_steps=4, accum_dtype=accum_dtype)
        state = TrainState.create(params, tx, jax.random.key(0))
        new, metrics = step(state, batch)
        new, metrics = step(new, batch)
        assert step._cache_size() == 1
        assert {p.dtype for p in jax.tree.leaves(new.params)} == {jnp.dtype(jnp.bfloat16)}
        assert np.isfinite(float(metrics["loss"]))


def test_rng_and_extra_per_micro_batch():
    """Micro-batch i draws from fold_in(rng, i); every micro-batch sees the same `extra`, and
    extra_update gets the mean of the micro-batches' metrics."""

    def loss_fn(params, batch, rng, extra):
        noise = jax.random.uniform(rng, ())
        loss = jnp.mean((batch["x"] * params["w"]) ** 2)
        return loss, {"noise": noise, "x_mean": batch["x"].mean(), "seen": extra}

    x = np.arange(8, dtype=np.float32)
    step = make_train_step(loss_fn, optax.sgd(0.0), donate=False, accum_steps=2,
                           extra_update=lambda extra, m: extra + m["x_mean"])
    state = TrainState.create({"w": jnp.ones(())}, optax.sgd(0.0), jax.random.key(3),
                              extra=jnp.float32(10.0))
    new, metrics = step(state, {"x": x})
    rng = jax.random.fold_in(state.rng, 0)
    expected_noise = np.mean([jax.random.uniform(jax.random.fold_in(rng, i), ()) for i in (0, 1)])
    np.testing.assert_allclose(metrics["noise"], expected_noise, rtol=1e-6)
    np.testing.assert_allclose(metrics["seen"], 10.0)
    np.testing.assert_allclose(new.extra, 10.0 + x.mean(), rtol=1e-6)
    # micro-batch i holds rows i, i + k, ...: here the even and the odd entries
    micro = split_microbatches({"x": x}, 2)["x"]
    np.testing.assert_array_equal(micro, [x[0::2], x[1::2]])


def test_bad_accumulation_settings_are_one_line_errors():
    loss_fn = make_sft_loss(MODEL.apply)
    with pytest.raises(ValueError, match="accum_steps must be a positive int"):
        make_train_step(loss_fn, TX, accum_steps=0)
    with pytest.raises(ValueError, match="accum_dtype"):
        make_train_step(loss_fn, TX, accum_steps=2, accum_dtype="float16")
    with pytest.raises(ValueError, match="not divisible by accum_steps=3"):
        _one_step(loss_fn, _sequences(), 3)
    with pytest.raises(ValueError, match="not all multiples"):
        split_microbatches({"a": np.zeros((4, 2)), "b": np.zeros((6,))}, 2)


def test_fit_with_accumulation_resumes_exactly(tmp_path):
    from alignax.data.pipeline import make_batch_iterator
    from alignax.train import sharding as shd
    from alignax.train.loop import fit
    from tests.train.test_loop import _source, linreg_loss

    def run(workdir, steps):
        return fit(workdir=str(workdir), loss_fn=linreg_loss, tx=optax.adam(0.05),
                   init_params=lambda rng: {"w": jnp.zeros(3), "b": jnp.zeros(())},
                   logical_axes={"w": (None,), "b": ()}, rng=jax.random.key(0),
                   data_iter=make_batch_iterator(_source(), global_batch_size=8, seed=1),
                   num_steps=steps, mesh=shd.make_mesh(), checkpoint_every=3, progress=False,
                   grad_accum_steps=2)

    full = run(tmp_path / "a", 9)
    assert full.compiles == 1
    run(tmp_path / "b", 5)  # stopped after 5 (checkpoint at 3 and 5), then resumed to 9
    resumed = run(tmp_path / "b", 9)
    assert resumed.resumed_from == 5
    text = [open(tmp_path / d / "metrics.jsonl").read() for d in ("a", "b")]
    assert text[0] == text[1]


MESH_SCRIPT = r"""
import json, jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from alignax.train import TrainState, make_train_step
from alignax.train import sharding as shd

seen = []
def loss_fn(params, batch, rng):
    del rng
    jax.debug.inspect_array_sharding(batch["x"], callback=lambda s: seen.append(str(s)))
    h = jnp.tanh(batch["x"] @ params["w1"])
    err = h @ params["w2"] - batch["y"]
    return jnp.mean(err ** 2), {"err": jnp.mean(jnp.abs(err))}

rng = np.random.default_rng(0)
params = {"w1": jnp.asarray(rng.normal(size=(8, 16)), jnp.float32),
          "w2": jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)}
batch = {"x": rng.normal(size=(16, 8)).astype(np.float32),
         "y": rng.normal(size=(16, 2)).astype(np.float32)}
tx = optax.sgd(0.1)
out = {}
mesh = shd.make_mesh(data=2, fsdp=2)
axes = {"w1": ("embed", "mlp"), "w2": ("mlp", None)}
p_sh = shd.param_shardings(jax.eval_shape(lambda: params), axes, mesh)
state = TrainState.create(params, tx, jax.random.key(0))
repl = shd.replicated(mesh)
state_sh = TrainState(p_sh, shd.tree_shardings_like(jax.eval_shape(tx.init, params), params,
                      p_sh, mesh), repl, repl, ())
for k in (1, 4):
    seen.clear()
    step = make_train_step(loss_fn, tx, mesh=mesh, state_sharding=state_sh,
                           batch_sharding=shd.batch_sharding(mesh), donate=False, accum_steps=k)
    st = jax.device_put(state, state_sh)
    new, metrics = step(st, jax.device_put(batch, shd.batch_sharding(mesh)))
    out[k] = {"params": {n: np.asarray(v).tolist() for n, v in new.params.items()},
              "metrics": {n: float(v) for n, v in metrics.items()},
              "seen": sorted(set(seen)), "w1": str(new.params["w1"].sharding.spec)}
step = make_train_step(loss_fn, tx, donate=False, accum_steps=4)
new, metrics = step(state, batch)  # one device, no mesh
out["plain"] = {"params": {n: np.asarray(v).tolist() for n, v in new.params.items()}}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_accumulation_on_a_4_device_mesh_keeps_micro_batches_sharded():
    """Micro-batch i = rows i, i + k, ...: each device's block of rows holds its share of every
    micro-batch. (A contiguous split, rows [i B / k, (i + 1) B / k), would put micro-batch i on
    a quarter of the devices: XLA then replicates it over `data`, measured here.)"""
    from tests import runs

    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT], env=runs.env(4), cwd=runs.REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    one, four, plain = out["1"], out["4"], out["plain"]
    for name in one["params"]:
        np.testing.assert_allclose(four["params"][name], one["params"][name], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(four["params"][name], plain["params"][name], rtol=1e-5,
                                   atol=1e-6)
    for name in one["metrics"]:
        np.testing.assert_allclose(four["metrics"][name], one["metrics"][name], rtol=1e-5)
    # each micro-batch of 4 rows is still split over data x fsdp (one row per device)
    assert len(four["seen"]) == 1 and "('data', 'fsdp')" in four["seen"][0], four["seen"]
    assert four["w1"] == one["w1"]
