"""Precomputed reference log-probs: equal to the reference's forward, stored, loaded, resumed."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import reference
from alignax.algorithms.direct import make_direct_loss, pair_logps
from alignax.algorithms.reference import (RefLogpsSource, precompute_ref_logps, stack_ref_logps,
                                          with_ref_logps)
from alignax.data.pipeline import make_batch_iterator
from alignax.models.transformer import TransformerConfig, make_lm
from tests.test_utils import ListSource, pair_source

# one layer: the tests compare the stored values with the same model's forward (the depth plays
# no part), and every precompute_ref_logps call compiles its forward anew
MODEL = make_lm(TransformerConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                  max_len=16))
_INIT = jax.jit(MODEL.init)  # one program, not one per op
REF, POLICY = _INIT(jax.random.key(1)), _INIT(jax.random.key(2))
N, T = 22, 8  # 22 = 5 batches of 4 + a partial batch of 2


def _source(seed=0, n=N):
    return pair_source(seed, n, T)


def _counting_apply(calls):
    def apply(params, ids, mask):
        calls.append(ids.shape)
        return MODEL.apply(params, ids, mask)

    return apply


def test_values_are_the_references_pair_logps_of_each_record():
    from alignax.train import sharding as shd

    src = _source()
    out = precompute_ref_logps(MODEL.apply, REF, src, batch_size=4, mesh=shd.make_mesh())
    assert len(out) == N and out.computed == N and out.directory is None
    one = jax.jit(lambda p, b: jnp.stack(pair_logps(MODEL.apply, p, b), -1))
    for i in range(N):
        rec = out[i]
        expected = one(REF, {k: np.asarray(src[i][k])[None] for k in reference.PAIR_FIELDS})[0]
        got = [rec["ref_chosen_logps"], rec["ref_rejected_logps"]]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert rec["ref_chosen_logps"].dtype == np.float32 and rec["ref_chosen_logps"].shape == ()
        assert rec["gold"] == src[i]["gold"]
    assert (out.logps < 0).all()
    # a model that returns token log-probs itself (chunked log-probs) gives the same values
    from alignax.ops import token_logprobs

    def token_apply(params, ids, mask, targets):
        return token_logprobs(MODEL.apply(params, ids, mask), targets)

    chunked = precompute_ref_logps(token_apply, REF, src, batch_size=8, token_logps=True)
    np.testing.assert_allclose(chunked.logps, out.logps, rtol=1e-5, atol=1e-5)


def test_a_second_call_loads_without_running_the_model(tmp_path):
    calls = []
    first = precompute_ref_logps(_counting_apply(calls), REF, _source(), batch_size=4,
                                 workdir=str(tmp_path), chunk_batches=2)
    assert calls and first.computed == N
    assert sorted(os.listdir(first.directory)) == ["meta.json", "ref_logps.npy"]  # no chunks
    calls.clear()
    again = precompute_ref_logps(_counting_apply(calls), REF, _source(), batch_size=4,
                                 workdir=str(tmp_path))
    assert calls == [] and again.computed == 0 and again.directory == first.directory
    np.testing.assert_array_equal(again.logps, first.logps)
    # another reference (a key instead of the params hash) or other records: computed anew
    other = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4,
                                 workdir=str(tmp_path), key="ref-v1")
    assert other.computed == N and other.directory != first.directory
    moved = precompute_ref_logps(MODEL.apply, REF, _source(seed=1), batch_size=4,
                                 workdir=str(tmp_path), key="ref-v1")
    assert moved.computed == N and moved.directory != other.directory


def test_an_interrupted_pass_continues_after_its_last_chunk(tmp_path, monkeypatch):
    whole = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4)
    saves = []
    real_save = reference._atomic_save

    def save_then_die(path, array):
        if len(saves) == 1:
            raise KeyboardInterrupt("killed while computing the second chunk")
        saves.append(path)
        real_save(path, array)

    monkeypatch.setattr(reference, "_atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4, workdir=str(tmp_path),
                             chunk_batches=2)
    assert [os.path.basename(p) for p in saves] == ["rows-000000000-000000008.npy"]
    monkeypatch.setattr(reference, "_atomic_save", real_save)
    resumed = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4,
                                   workdir=str(tmp_path), chunk_batches=2)
    assert resumed.computed == N - 8  # the first chunk was read back, not recomputed
    np.testing.assert_allclose(resumed.logps, whole.logps, rtol=1e-6, atol=1e-6)


def test_a_batch_of_the_wrapped_source_trains_like_the_frozen_reference():
    wrapped = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4)
    batch = next(make_batch_iterator(wrapped, global_batch_size=8, seed=0))
    assert batch["ref_chosen_logps"].shape == (8,)
    np.testing.assert_array_equal(stack_ref_logps(batch)["ref_logps"], np.concatenate(
        [batch["ref_chosen_logps"], batch["ref_rejected_logps"]]))
    loss_fn = make_direct_loss(MODEL.apply, "dpo", {"beta": 0.1})
    plain = {k: v for k, v in batch.items() if k not in reference.REF_FIELDS}
    expected, _ = jax.jit(loss_fn)(POLICY, plain, None, REF)
    got, metrics = jax.jit(with_ref_logps(loss_fn))(POLICY, batch, None)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isfinite(float(metrics["reward_margins"]))


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_fit_on_the_wrapped_source_resumes_exactly(tmp_path):
    from alignax.train import sharding as shd
    from alignax.train.loop import fit

    wrapped = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4,
                                   workdir=str(tmp_path / "data"))
    loss_fn = with_ref_logps(make_direct_loss(MODEL.apply, "dpo", {"beta": 0.1}))

    def run(workdir, steps):
        source = precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=4,
                                      workdir=str(tmp_path / "data"))
        assert source.computed == 0  # the resumed run loads the stored values
        return fit(workdir=str(workdir), loss_fn=loss_fn, tx=optax.adam(1e-2),
                   init_params=POLICY, logical_axes=MODEL.logical_axes(POLICY),
                   rng=jax.random.key(0),
                   data_iter=make_batch_iterator(source, global_batch_size=4, seed=3),
                   num_steps=steps, mesh=shd.make_mesh(), checkpoint_every=2, progress=False,
                   grad_accum_steps=2)

    assert wrapped.computed == N
    full = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    resumed = run(tmp_path / "b", 6)
    assert resumed.resumed_from == 3 and full.compiles == 1
    text = [open(tmp_path / d / "metrics.jsonl").read() for d in ("a", "b")]
    assert text[0] == text[1]


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        precompute_ref_logps(MODEL.apply, REF, _source(), batch_size=0)
    with pytest.raises(ValueError, match="source is empty"):
        precompute_ref_logps(MODEL.apply, REF, ListSource([]), batch_size=4)
    bad = ListSource([{"chosen_ids": np.zeros(T, np.int32)}])
    with pytest.raises(ValueError, match="record 0 has no"):
        precompute_ref_logps(MODEL.apply, REF, bad, batch_size=4)
    with pytest.raises(ValueError, match="do not match"):
        RefLogpsSource(_source(), np.zeros((3, 2), np.float32))
