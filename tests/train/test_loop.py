"""fit(): resume, corrupt-checkpoint fallback, non-finite stop, compile-once (in process)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.data.pipeline import make_batch_iterator
from alignax.train import sharding as shd
from alignax.train.checkpoint import CheckpointFallbackWarning, Checkpointer
from alignax.train.loop import NonFiniteError, fit
from alignax.train.writers import read_metrics
from tests.test_utils import ListSource


def _source(n=64):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(n, 3)).astype(np.float32)
    return ListSource([{"x": x, "y": (x @ np.array([1.0, -2.0, 0.5])).astype(np.float32)}
                       for x in xs])


def linreg_loss(params, batch, rng):
    noise = 1e-3 * jax.random.normal(rng, ())  # exercises the per-step rng
    pred = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean((pred - batch["y"]) ** 2) + noise
    return loss, {"mae": jnp.mean(jnp.abs(pred - batch["y"]))}


def _fit(workdir, num_steps, *, loss_fn=linreg_loss, tx=None, init=None, every=2, eval_fn=None):
    init = init or {"w": jnp.zeros(3), "b": jnp.zeros(())}
    return fit(
        workdir=str(workdir),
        loss_fn=loss_fn,
        tx=tx or optax.adam(0.05),
        init_params=lambda rng: init,
        logical_axes=jax.tree.map(lambda x: (None,) * jnp.ndim(x), init),
        rng=jax.random.key(0),
        data_iter=make_batch_iterator(_source(), global_batch_size=8, seed=1),
        num_steps=num_steps,
        mesh=shd.make_mesh(),
        checkpoint_every=every,
        max_to_keep=3,
        eval_fn=eval_fn,
        eval_every=4,
        progress=False,
    )


def _metrics_text(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read()


def test_fit_trains_compiles_once_and_writes_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "1")  # the suite turns them off (tests/conftest.py)
    eval_fn = jax.jit(lambda p: {"w_err": jnp.sum(jnp.abs(p["w"] - jnp.array([1.0, -2.0, 0.5])))})
    res = _fit(tmp_path, 40, eval_fn=eval_fn)
    assert res.compiles == 1
    assert res.resumed_from is None
    rows = read_metrics(os.path.join(tmp_path, "metrics.jsonl"))
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == list(range(1, 41))
    assert [r["step"] for r in rows if "eval/w_err" in r] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    first, last = rows[0]["train/loss"], res.metrics["loss"]
    assert last < 0.1 * first
    assert os.path.isdir(os.path.join(tmp_path, "tensorboard"))
    assert any(f.endswith(".png") for f in os.listdir(os.path.join(tmp_path, "plots")))
    assert Checkpointer(os.path.join(tmp_path, "checkpoints"), every=2).latest_step() == 40


def test_run_plots_switch(tmp_path, monkeypatch):
    """ALIGNAX_RUN_PLOTS=0 skips the per-run PNGs and nothing else; a bad value is an error."""
    monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "0")
    res = _fit(tmp_path / "off", 4)
    assert res.history and not os.path.exists(tmp_path / "off" / "plots")
    assert os.path.isfile(tmp_path / "off" / "metrics.jsonl")
    monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "maybe")
    with pytest.raises(ValueError, match="ALIGNAX_RUN_PLOTS"):
        _fit(tmp_path / "bad", 4)


def test_resume_continues_exactly(tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    first = _fit(full, 20)
    _fit(part, 11)  # a shorter run: checkpoints at 2..10 and 11
    res = _fit(part, 20)  # same workdir: resumes from 11
    assert res.resumed_from == 11
    assert _metrics_text(full) == _metrics_text(part)
    assert res.metrics == first.metrics
    again = _fit(full, 20)  # already complete: nothing to train, the recorded metrics come back
    assert again.resumed_from == 20 and again.metrics == first.metrics


def test_resume_truncates_metrics_written_after_the_checkpoint(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _fit(full, 12)
    _fit(part, 12)
    # Simulate a kill after step 12's metrics but before its checkpoint: drop checkpoint 12 and
    # leave a partial line at the end of metrics.jsonl.
    import shutil

    shutil.rmtree(part / "checkpoints" / "12")
    with open(part / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "train/lo')
    res = _fit(part, 12)
    assert res.resumed_from == 10
    assert _metrics_text(full) == _metrics_text(part)


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _fit(full, 14)
    _fit(part, 10)
    state_dir = part / "checkpoints" / "10" / "state"
    corrupted = 0
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
            corrupted += 1
    assert corrupted > 0
    with pytest.warns(CheckpointFallbackWarning, match="step 10"):
        res = _fit(part, 14)
    assert res.resumed_from == 8
    assert _metrics_text(full) == _metrics_text(part)


def test_non_finite_loss_stops_naming_step_and_metric_and_keeps_last_good_checkpoint(tmp_path):
    # loss = log(w) under SGD(0.3): w = 1, 0.7, 0.2714, -0.834 -> NaN at step 4.
    def log_loss(params, batch, rng):
        del rng
        return jnp.log(params["w"]) + 0.0 * batch["x"].sum(), {}

    with pytest.raises(NonFiniteError, match=r"loss=nan at step 4"):
        _fit(tmp_path, 10, loss_fn=log_loss, tx=optax.sgd(0.3), init={"w": jnp.ones(())},
             every=1)
    assert Checkpointer(os.path.join(tmp_path, "checkpoints"), every=1).latest_step() == 3
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3]


def test_evolving_state_outside_the_gradient_is_carried_and_resumed(tmp_path):
    from alignax.losses import RunningMean

    def loss_with_shift(params, batch, rng, extra):
        loss, metrics = linreg_loss(params, batch, rng)
        # the loss sees the running mean of the earlier steps' errors (as BCO sees its shift)
        return loss, {**metrics, "seen_mean": extra.mean}

    def run(workdir, steps):
        return fit(workdir=str(workdir), loss_fn=loss_with_shift, tx=optax.adam(0.05),
                   init_params=lambda rng: {"w": jnp.zeros(3), "b": jnp.zeros(())},
                   logical_axes={"w": (None,), "b": ()}, rng=jax.random.key(0),
                   data_iter=make_batch_iterator(_source(), global_batch_size=8, seed=1),
                   num_steps=steps, mesh=shd.make_mesh(), checkpoint_every=3, progress=False,
                   extra_init=RunningMean.create(),
                   extra_update=lambda extra, m: extra.update(m["mae"]))

    full = run(tmp_path / "a", 12)
    rows = read_metrics(os.path.join(tmp_path, "a", "metrics.jsonl"))
    maes = [r["train/mae"] for r in rows]
    for k, row in enumerate(rows):
        expected = np.mean(maes[:k]) if k else 0.0
        assert row["train/seen_mean"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert float(full.state.extra.count) == 12
    assert float(full.state.extra.mean) == pytest.approx(np.mean(maes), rel=1e-5)
    run(tmp_path / "b", 7)  # stopped after 7 (checkpoint at 6), then the same command for 12
    resumed = run(tmp_path / "b", 12)
    assert resumed.resumed_from == 7
    assert _metrics_text(tmp_path / "b") == _metrics_text(tmp_path / "a")
    assert float(resumed.state.extra.mean) == float(full.state.extra.mean)


def test_corrupt_or_torn_timings_lines_are_dropped_on_resume(tmp_path):
    from alignax.train.loop import TIMINGS_FILE, _truncate_timings

    path = tmp_path / TIMINGS_FILE
    path.write_text('{"step": 1, "time/step_s": 0.1}\n{"step": 2, "time/st\n'
                    '{"step": 3, "time/step_s": 0.3}\n{"step": 4, "ti')
    _truncate_timings(str(path), 3)
    assert path.read_text() == '{"step": 1, "time/step_s": 0.1}\n{"step": 3, "time/step_s": 0.3}\n'
    _truncate_timings(str(path), 1)
    assert path.read_text() == '{"step": 1, "time/step_s": 0.1}\n'
