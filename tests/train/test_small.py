"""fit_small: vmapped seeds equal sequential runs, chunked logging changes no update, resume is
exact, NaN halts, per-seed data and minibatches."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.models.mlp import MLPConfig, make_mlp
from alignax.train.loop import NonFiniteError
from alignax.losses.direct import RunningMean
from alignax.train.small import (fit_rounds, fit_small, minibatch_fn, pair_accuracy_selection,
                                 stack_seeds)
from alignax.train.writers import read_metrics

MLP = make_mlp(MLPConfig(in_dim=3, hidden=(8,), out_dim=1))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.tanh(x @ np.array([1.0, -2.0, 0.5])) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _loss(params, batch):
    pred = MLP.apply(params, batch["x"])  # out_dim 1 is squeezed: [N]
    return jnp.mean((pred - batch["y"]) ** 2)


_LOSS = jax.jit(_loss)  # the references' loss: one program, not one per op


def _fit(workdir, **kw):
    args = dict(loss_fn=_loss, init_params=MLP.init, tx=optax.adam(1e-2), num_steps=30,
                data=_data(), seeds=[0, 1, 2], steps_per_log=5)
    args.update(kw)
    return fit_small(str(workdir), **args)


def _adam(learning_rate):
    """optax.adam(learning_rate) and its update of _loss as one jitted step (params, opt, data)
    -> (params, opt, loss): the references' loops compile it once, not op by op."""
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt, data):
        loss, g = jax.value_and_grad(_loss)(params, data)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    return tx, step


_ADAM = _adam(1e-2)


def _plain_adam(seed, steps=30):
    """The reference: a Python loop of optax updates on one seed."""
    tx, step = _ADAM
    params = MLP.init(jax.random.key(seed))
    opt = tx.init(params)
    data = _data()
    losses = []
    for _ in range(steps):
        params, opt, loss = step(params, opt, data)
        losses.append(float(loss))
    return params, losses


def test_vmapped_seeds_equal_sequential_runs(tmp_path):
    fit = _fit(tmp_path / "all")
    assert fit.seeds == [0, 1, 2] and fit.final_loss.shape == (3,)
    for i, seed in enumerate(fit.seeds):
        alone = _fit(tmp_path / f"seed_{seed}", seeds=[seed])
        plain, losses = _plain_adam(seed)
        for a, b, c in zip(jax.tree.leaves(fit.seed_params(i)),
                           jax.tree.leaves(alone.seed_params(0)), jax.tree.leaves(plain)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-6)
        assert fit.final_loss[i] == pytest.approx(losses[-1], rel=1e-5)
    # seeds differ (they are not one run copied)
    assert not np.allclose(jax.tree.leaves(fit.seed_params(0))[0],
                           jax.tree.leaves(fit.seed_params(1))[0])


def test_logs_every_chunk_with_per_seed_columns_and_resumes_exactly(tmp_path):
    full = _fit(tmp_path / "a", num_steps=30)
    rows = read_metrics(os.path.join(tmp_path, "a", "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] == pytest.approx(np.mean([rows[-1][f"seed_{s}/loss"]
                                                      for s in (0, 1, 2)]))
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    # 3 chunks, then the same command for 6: the metrics file is the uninterrupted one
    _fit(tmp_path / "b", num_steps=15)
    resumed = _fit(tmp_path / "b", num_steps=30)
    assert resumed.resumed_from == 3
    with open(tmp_path / "a" / "metrics.jsonl") as f, open(tmp_path / "b" / "metrics.jsonl") as g:
        assert f.read() == g.read()
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    # a finished run restores its final state without training
    again = _fit(tmp_path / "a", num_steps=30)
    assert again.resumed_from == 6
    np.testing.assert_array_equal(again.final_loss, full.final_loss)


def test_an_uneven_last_chunk_and_one_chunk_give_the_same_updates(tmp_path):
    chunked = _fit(tmp_path / "a", num_steps=23, steps_per_log=5)
    whole = _fit(tmp_path / "b", num_steps=23, steps_per_log=23)
    assert len(chunked.history) == 5 and len(whole.history) == 1
    for a, b in zip(jax.tree.leaves(chunked.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_non_finite_loss_halts(tmp_path):
    def bad_loss(params, batch):
        return _loss(params, batch) * jnp.where(batch["y"].sum() > -1e9, jnp.nan, 1.0)

    with pytest.raises(NonFiniteError, match="non-finite"):
        _fit(tmp_path, loss_fn=bad_loss)


def test_per_seed_data_minibatches_and_aux_metrics(tmp_path):
    data = jax.tree.map(lambda *xs: jnp.stack(xs), _data(seed=0), _data(seed=1))

    def batch_fn(d, rng):
        rows = jax.random.choice(rng, d["x"].shape[0], (16,), replace=False)
        return jax.tree.map(lambda v: v[rows], d)

    def loss_aux(params, batch):
        loss = _loss(params, batch)
        return loss, {"rmse": jnp.sqrt(loss)}

    fit = _fit(tmp_path / "a", data=data, seeds=[3, 4], per_seed_data=True, batch_fn=batch_fn,
               loss_fn=loss_aux, has_aux=True)
    assert fit.metrics["seed_3/rmse"] == pytest.approx(np.sqrt(fit.metrics["seed_3/loss"]),
                                                       rel=1e-5)
    # the minibatch draws are a function of (seed, step): a second run is identical
    again = _fit(tmp_path / "b", data=data, seeds=[3, 4], per_seed_data=True,
                 batch_fn=batch_fn, loss_fn=loss_aux, has_aux=True)
    np.testing.assert_array_equal(fit.final_loss, again.final_loss)
    with pytest.raises(ValueError, match="leading axis of 3"):
        _fit(tmp_path / "c", data=data, per_seed_data=True)


def test_batch_fn_with_step_follows_the_update_index_across_a_resume(tmp_path):
    def batch_fn(d, rng, step):
        return {**d, "step": step}

    def loss_aux(params, batch):  # a curriculum: the loss weight ramps with the step
        loss = _loss(params, batch) * jnp.minimum(1.0, (batch["step"] + 1) / 10.0)
        return loss, {"step_seen": batch["step"].astype(jnp.float32)}

    kw = dict(loss_fn=loss_aux, has_aux=True, batch_fn=batch_fn, with_step=True)
    full = _fit(tmp_path / "a", **kw)
    rows = read_metrics(os.path.join(tmp_path, "a", "metrics.jsonl"))
    # 6 chunks of 5 updates: the last update of chunk c has index 5c + 4, for every seed
    assert [r["seed_1/step_seen"] for r in rows] == [4.0, 9.0, 14.0, 19.0, 24.0, 29.0]
    _fit(tmp_path / "b", num_steps=15, **kw)
    resumed = _fit(tmp_path / "b", **kw)
    assert resumed.resumed_from == 3
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="with_step needs a batch_fn"):
        _fit(tmp_path / "c", with_step=True)


def test_eval_fn_gets_each_seeds_eval_data(tmp_path):
    data = jax.tree.map(lambda *xs: jnp.stack(xs), _data(seed=0), _data(seed=1))
    held_out = jax.tree.map(lambda *xs: jnp.stack(xs), _data(n=32, seed=10), _data(n=32, seed=11))

    def eval_fn(params, d):
        return {"mse": _loss(params, d)}

    fit = _fit(tmp_path / "a", data=data, seeds=[3, 4], per_seed_data=True, eval_fn=eval_fn,
               eval_data=held_out)
    for i, seed in enumerate(fit.seeds):
        d = jax.tree.map(lambda v: v[i], held_out)
        assert fit.metrics[f"seed_{seed}/eval/mse"] == pytest.approx(
            float(_LOSS(fit.seed_params(i), d)), rel=1e-5)
    with pytest.raises(ValueError, match="leading axis of 2"):
        _fit(tmp_path / "b", data=data, seeds=[3, 4], per_seed_data=True, eval_fn=eval_fn,
             eval_data=_data(n=32))
    with pytest.raises(ValueError, match="eval_data needs an eval_fn"):
        _fit(tmp_path / "c", eval_data=held_out)


def test_per_seed_init_starts_each_seed_from_its_own_params(tmp_path):
    first = _fit(tmp_path / "a", num_steps=15)
    second = _fit(tmp_path / "b", init_params=first.params, per_seed_init=True, num_steps=15,
                  tx=optax.adam(3e-3))
    tx, step = _adam(3e-3)
    data = _data()
    for i in range(len(first.seeds)):
        # the reference: seed i's first-stage params, then a fresh optimizer
        params = first.seed_params(i)
        opt = tx.init(params)
        for _ in range(15):
            params, opt, loss = step(params, opt, data)
        for a, b in zip(jax.tree.leaves(second.seed_params(i)), jax.tree.leaves(params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert second.final_loss[i] == pytest.approx(float(loss), rel=1e-5)
    # the first stage's params are not donated to the second stage
    assert np.all(np.isfinite(jax.tree.leaves(first.params)[0]))
    with pytest.raises(ValueError, match="leading axis of 3"):
        _fit(tmp_path / "c", init_params=first.seed_params(0), per_seed_init=True)
    with pytest.raises(ValueError, match="not an init function"):
        _fit(tmp_path / "d", init_params=MLP.init, per_seed_init=True)


def test_stack_seeds_stacks_fields_in_seed_order():
    rows = [{"x": np.full((2,), s, np.float32), "y": np.int32(s)} for s in (3, 4)]
    out = stack_seeds(rows)
    np.testing.assert_array_equal(out["x"], [[3, 3], [4, 4]])
    assert list(stack_seeds(rows, ("y",))) == ["y"] and out["y"].tolist() == [3, 4]


def _val_loss(params, val):
    return {"val_mse": jnp.mean((MLP.apply(params, val["x"]) - val["y"]) ** 2)}


def _shrunk_val():
    """Validation targets at 0.3x the training ones: the validation loss falls, then rises as
    the model fits the training scale, so its best step is inside the run."""
    val = _data(n=32, seed=7)
    return {"x": val["x"], "y": 0.3 * val["y"]}


def test_select_keeps_each_seeds_best_validation_step(tmp_path):
    """select=(metric, 'min') keeps the params of the logged step with the lowest validation
    metric: they equal a run stopped at that step, and the score is the logged one."""
    val = _shrunk_val()
    kw = dict(eval_fn=_val_loss, eval_data=val, num_steps=40)
    fit = _fit(tmp_path / "sel", select=("val_mse", "min"), **kw)
    rows = read_metrics(os.path.join(tmp_path, "sel", "metrics.jsonl"))
    for i, seed in enumerate(fit.seeds):
        logged = {int(r["step"]) * 5: r[f"seed_{seed}/eval/val_mse"] for r in rows}
        best_step = min(logged, key=logged.get)
        assert int(fit.best_step[i]) == best_step
        np.testing.assert_allclose(fit.best_score[i], logged[best_step], rtol=1e-6)
        stopped = _fit(tmp_path / f"stop_{seed}", seeds=[seed], **{**kw, "num_steps": best_step})
        for a, b in zip(jax.tree.leaves(stopped.params),
                        jax.tree.leaves(jax.tree.map(lambda x: x[i], fit.best_params))):
            np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-6)
    # the final params are still the last step's
    assert all(0 < fit.best_step) and all(fit.best_step < 40)
    assert not np.allclose(jax.tree.leaves(fit.params)[0], jax.tree.leaves(fit.best_params)[0])


def test_select_survives_a_resume_and_checks_its_arguments(tmp_path):
    val = _shrunk_val()
    kw = dict(eval_fn=_val_loss, eval_data=val, num_steps=40,
              select=("val_mse", "min"), checkpoint_every=1)
    whole = _fit(tmp_path / "whole", **kw)
    _fit(tmp_path / "part", **{**kw, "num_steps": 20})  # 4 of the 8 chunks, checkpointed
    resumed = _fit(tmp_path / "part", **kw)
    assert resumed.resumed_from is not None
    np.testing.assert_array_equal(resumed.best_step, whole.best_step)
    np.testing.assert_allclose(resumed.best_score, whole.best_score, rtol=1e-6)
    with pytest.raises(ValueError, match="select needs an eval_fn"):
        _fit(tmp_path / "x", select=("val_mse", "min"))
    with pytest.raises(ValueError, match="'max' | 'min'"):
        _fit(tmp_path / "y", eval_fn=_val_loss, eval_data=val, select=("val_mse", "lowest"))
    with pytest.raises(KeyError, match="not among eval_fn's metrics"):
        _fit(tmp_path / "z", eval_fn=_val_loss, eval_data=val, select=("val_acc", "max"))


def test_plots_show_the_means_over_seeds_not_one_figure_per_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "1")  # the suite turns them off (tests/conftest.py)
    _fit(tmp_path / "p", num_steps=10)
    pngs = sorted(os.listdir(tmp_path / "p" / "plots"))
    assert pngs == ["metrics.png"], pngs  # loss, loss_mean; seed_<s>/... only in metrics.jsonl
    rows = read_metrics(os.path.join(tmp_path, "p", "metrics.jsonl"))
    assert "seed_2/loss" in rows[-1]


def _stateful_loss(params, batch, running):
    # the loss state is a running mean of the predictions' mean (BCO's reward shift pattern)
    pred = MLP.apply(params, batch["x"])
    loss = jnp.mean((pred - batch["y"] - running.mean) ** 2)
    return loss, {"shift": running.mean}, running.update(pred)


def test_loss_state_is_carried_checkpointed_and_resumed_exactly(tmp_path):
    kw = dict(loss_fn=_stateful_loss, loss_state=RunningMean.create(), checkpoint_every=1)
    whole = _fit(tmp_path / "whole", **kw)
    # the reference: a Python loop carrying the state by hand (seed 1)
    tx = optax.adam(1e-2)
    params, running, data = MLP.init(jax.random.key(1)), RunningMean.create(), _data()
    opt = tx.init(params)

    @jax.jit  # one compiled step, not op by op
    def step(params, opt, running):
        (_, (_, new)), g = jax.value_and_grad(
            lambda p: (lambda o: (o[0], (o[1], o[2])))(_stateful_loss(p, data, running)),
            has_aux=True)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, new

    for _ in range(30):
        params, opt, running = step(params, opt, running)
    np.testing.assert_allclose(whole.loss_state.mean[1], running.mean, rtol=1e-5)
    assert whole.loss_state.count[1] == 30 * 64
    for a, b in zip(jax.tree.leaves(whole.seed_params(1)), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert whole.history[-1]["shift"] != 0.0
    # stopped after 3 of 6 chunks and resumed: the state continues exactly
    _fit(tmp_path / "part", **{**kw, "num_steps": 15})
    resumed = _fit(tmp_path / "part", **kw)
    assert resumed.resumed_from == 3
    for a, b in zip(jax.tree.leaves((whole.params, whole.loss_state)),
                    jax.tree.leaves((resumed.params, resumed.loss_state))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="new_loss_state"):
        _fit(tmp_path / "bad", loss_fn=lambda p, b, s: _loss(p, b),
             loss_state=RunningMean.create())


@jax.jit  # one program, not one per op
def _chained(params, data):
    prev = jax.vmap(MLP.apply, in_axes=(0, None))(params, data["x"])  # [S, N]
    return {"x": jnp.broadcast_to(data["x"], (3, *data["x"].shape)), "y": data["y"] + 0.5 * prev}


def _round_data(r, fits):
    """Round r's targets: the data's y plus the previous round's predictions (a chain that
    depends on the earlier rounds' params, as a policy's fresh samples do)."""
    data = _data(seed=r)
    if not fits:
        return {"data": data}
    return {"data": _chained(fits[-1].params, data), "per_seed_data": True}


def test_fit_rounds_equals_chained_fit_small_and_restores_finished_rounds(tmp_path):
    args = dict(loss_fn=_loss, tx=optax.adam(1e-2), num_steps=10, seeds=[0, 1, 2],
                steps_per_log=5)
    rounds = fit_rounds(str(tmp_path / "rounds"), num_rounds=3, make_round=_round_data,
                        init_params=MLP.init, **args)
    assert len(rounds.fits) == 3
    assert os.path.isfile(tmp_path / "rounds" / "round_2" / "metrics.jsonl")
    # by hand: three fit_small runs, each from the previous params with a fresh optimizer
    fits = []
    for r in range(3):
        extra = _round_data(r, fits)
        init = MLP.init if r == 0 else fits[-1].params
        fits.append(fit_small(str(tmp_path / f"hand_{r}"), init_params=init,
                              per_seed_init=r > 0, **extra, **args))
    for a, b in zip(jax.tree.leaves(rounds.final.params), jax.tree.leaves(fits[-1].params)):
        np.testing.assert_array_equal(a, b)
    # the params moved between rounds
    assert not np.allclose(jax.tree.leaves(rounds.fits[0].params)[0],
                           jax.tree.leaves(rounds.fits[2].params)[0])
    # the same command again restores every round from its checkpoint, with the same result
    again = fit_rounds(str(tmp_path / "rounds"), num_rounds=3, make_round=_round_data,
                       init_params=MLP.init, **args)
    assert [f.resumed_from for f in again.fits] == [2, 2, 2]
    for a, b in zip(jax.tree.leaves(again.final.params), jax.tree.leaves(rounds.final.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="num_rounds"):
        fit_rounds(str(tmp_path / "x"), num_rounds=0, make_round=_round_data,
                   init_params=MLP.init, **args)
    with pytest.raises(TypeError, match="dict of fit_small arguments with 'data'"):
        fit_rounds(str(tmp_path / "y"), num_rounds=1, make_round=lambda r, f: _data(),
                   init_params=MLP.init, **args)
    with pytest.raises(TypeError, match="does not take: \\['batch'\\]"):
        fit_rounds(str(tmp_path / "z"), num_rounds=1,
                   make_round=lambda r, f: {"data": _data(), "batch": 1},
                   init_params=MLP.init, **args)


def test_plots_false_writes_no_pngs_and_keeps_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNAX_RUN_PLOTS", "1")
    fit = _fit(tmp_path / "quiet", num_steps=10, plots=False)
    assert fit.history and os.path.isfile(tmp_path / "quiet" / "metrics.jsonl")
    pngs = glob.glob(str(tmp_path / "quiet" / "plots" / "*.png"))
    assert pngs == []
    _fit(tmp_path / "loud", num_steps=10)
    assert glob.glob(str(tmp_path / "loud" / "plots" / "*.png"))


def test_minibatch_fn_draws_the_same_rows_of_every_leaf():
    data = {"a": jnp.arange(10.0), "b": jnp.arange(10.0) * 10}

    @jax.jit  # one program, not one per op
    def draws(data, key):
        idx = jax.random.randint(key, (4,), 0, 10)
        return minibatch_fn(4)(data, key), idx, minibatch_fn(4)(data["a"], key)

    batch, idx, alone = draws(data, jax.random.key(0))
    np.testing.assert_array_equal(batch["a"], np.asarray(idx).astype(np.float32))
    np.testing.assert_array_equal(batch["b"], np.asarray(batch["a"]) * 10)
    np.testing.assert_array_equal(alone, batch["a"])
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_fn(0)


def test_pair_accuracy_selection_counts_pairs_ranked_right_and_selects_on_it(tmp_path):
    val = {"chosen": jnp.array([[1.0], [2.0], [0.0]]), "rejected": jnp.array([[0.0], [3.0],
                                                                             [0.0]])}
    kw = pair_accuracy_selection(lambda w, x: x[:, 0] * w, val, steps_per_log=5)
    assert kw["select"] == ("val_accuracy", "max") and kw["steps_per_log"] == 5
    eval_fn = jax.jit(kw["eval_fn"])  # one program for the three weights
    # w = 1: pair 0 right, pair 1 wrong, pair 2 a tie (wrong); w = -1: pair 1 right only
    assert float(eval_fn(1.0, kw["eval_data"])["val_accuracy"]) == pytest.approx(1 / 3)
    assert float(eval_fn(-1.0, kw["eval_data"])["val_accuracy"]) == pytest.approx(1 / 3)
    assert float(eval_fn(0.0, kw["eval_data"])["val_accuracy"]) == 0.0
    with pytest.raises(KeyError, match="'rejected'"):
        pair_accuracy_selection(lambda w, x: x, {"chosen": val["chosen"]}, steps_per_log=1)


def test_a_weakly_typed_initial_state_compiles_each_chunk_program_once(tmp_path):
    """Params from `jnp.full(shape, python_float)` are weakly typed; the state a step returns
    is not. The created state is made strongly typed, so the second chunk reuses the first
    chunk's program (before: traced and compiled twice)."""
    traces = []

    def loss(params, batch):
        traces.append(1)
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    def init(key):
        del key
        return {"w": jnp.full((3,), 0.5)}

    fit = fit_small(str(tmp_path), loss_fn=loss, init_params=init, tx=optax.sgd(0.1),
                    num_steps=6, data=_data(), seeds=[0], steps_per_log=3)
    assert len(traces) == 1
    assert fit.params["w"].dtype == jnp.float32 and not fit.params["w"].weak_type
