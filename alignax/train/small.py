"""Small models (MLPs, feature vectors, MDPs) trained through the one loop, all seeds at once.

A small model's whole optimisation fits in one compiled program: each step of the training
loop (`alignax.train.loop.run_loop`) runs `steps_per_log` optimizer updates as a `lax.scan`
and, with several seeds, `jax.vmap`s that scan over the seeds (PureJaxRL style), so five
seeds cost about one. The loop gives these runs what every other run gets: metrics.jsonl and
TensorBoard scalars (the mean over seeds and every seed's own value, `seed_<s>/<name>`), a
progress bar, NaN/inf halt, checkpoints of the stacked state, SIGTERM checkpoint and exact
resume.

    def loss_fn(params, batch):                  # full batch: batch is `data`
        r = mlp.apply(params, batch["x"])
        return bradley_terry_loss(r[batch["chosen"]], r[batch["rejected"]]).mean()

    fit = fit_small(workdir, loss_fn=loss_fn, init_params=mlp.init, tx=optax.adam(1e-2),
                    num_steps=500, data=data, seeds=[0, 1, 2, 3, 4])
    fit.params          # every leaf [S, ...]; fit.seed_params(2) is seed 2's tree
    fit.final_loss      # [S] loss before the last update

Two extensions keep the loops of preference-alignment toys inside this trainer:
`fit_small(loss_state=...)` carries state the loss updates at every step (BCO's running reward
shift) in the checkpointed state, and `fit_rounds` iterates "draw fresh data from the current
models, then train" (iterative / online DPO, self-rewarding, RAFT), one resumable `fit_small`
run per round.

Equality: the vmapped seeds give the sequential runs' numbers (to float rounding of batched
matmuls; tests/train/test_small.py), and splitting the scan into logged chunks does not change
the updates.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignax.train.loop import run_loop
from alignax.train.state import TrainState


@dataclasses.dataclass
class SmallFit:
    """What `fit_small` returns.

    Attributes:
      params: the trained params, every leaf stacked over seeds [S, ...].
      seeds: the seeds, in the order of the leading axis.
      final_loss: [S] the loss before the last update of each seed.
      metrics: the last logged step's metrics (means over seeds and `seed_<s>/...`).
      history: every logged row of the run (see `run_loop`).
      resumed_from: the loop step a checkpoint was restored from, or None.
      best_params: with `select`, each seed's params at the logged step whose validation
        metric was best (early stopping chosen on validation), leaves [S, ...]; else None.
      best_step: with `select`, [S] the update count of those params (a multiple of
        `steps_per_log`, or `num_steps`); else None.
      best_score: with `select`, [S] their validation metric; else None.
      loss_state: with `fit_small(loss_state=...)`, the final loss state, leaves [S, ...].
    """

    params: Any
    seeds: list[int]
    final_loss: np.ndarray
    metrics: dict[str, float]
    history: list[dict[str, float]]
    resumed_from: int | None
    best_params: Any = None
    best_step: np.ndarray | None = None
    best_score: np.ndarray | None = None
    loss_state: Any = None

    def seed_params(self, i: int) -> Any:
        """The params of the i-th seed (position in `seeds`)."""
        return jax.tree.map(lambda x: x[i], self.params)


def stack_seeds(per_seed: Sequence[Any], keys: Sequence[str] | None = None) -> dict:
    """One dict of [S, ...] device arrays from S per-seed dicts of equal-shaped arrays (the
    `data` of `fit_small(..., per_seed_data=True)`); `keys` selects fields (default: all)."""
    keys = list(per_seed[0]) if keys is None else list(keys)
    # device_put, not jnp.asarray: the same canonical dtypes and values, without compiling a
    # staging program per field shape
    return {k: jax.device_put(np.stack([np.asarray(row[k]) for row in per_seed])) for k in keys}


def _strong(tree):
    """The tree with weakly typed numeric leaves made strongly typed (same dtype and values):
    the train state a step returns is strongly typed, so a weak initial state (params from
    `jnp.full(shape, 0.5)` or `zeros_like` of a Python scalar) would compile every chunk
    program a second time for the second call."""
    def leaf(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jax.lax.convert_element_type(x, x.dtype)
    return jax.tree.map(leaf, tree)


@jax.jit
def _copy_tree(tree):
    """A fresh copy of every leaf, in one program (the loop donates the state it starts from)."""
    return jax.tree.map(jnp.copy, tree)


def _chunks(num_steps: int, steps_per_log: int) -> list[int]:
    full, rest = divmod(num_steps, steps_per_log)
    return [steps_per_log] * full + ([rest] if rest else [])


def fit_small(
    workdir: str,
    *,
    loss_fn: Callable[..., Any],
    init_params: Callable[[jax.Array], Any] | Any,
    tx: optax.GradientTransformation,
    num_steps: int,
    data: Any = None,
    seeds: Sequence[int] = (0,),
    seed_keys: Any = None,
    per_seed_data: bool = False,
    per_seed_init: bool = False,
    batch_fn: Callable[..., Any] | None = None,
    with_step: bool = False,
    has_aux: bool = False,
    steps_per_log: int | None = None,
    checkpoint_every: int = 10,
    eval_fn: Callable[..., dict] | None = None,
    eval_data: Any = None,
    progress: bool = False,
    desc: str = "small",
    select: tuple[str, str] | None = None,
    loss_state: Any = None,
    plots: bool = True,
) -> SmallFit:
    """Trains a small model for `num_steps` updates of `tx`, every seed at once.

    Args:
      workdir: the run folder (metrics.jsonl, tensorboard/, checkpoints/).
      loss_fn: `(params, batch) -> loss` (or `(loss, metrics)` with `has_aux`).
      init_params: `rng -> params` (called with `jax.random.key(seed)` for each seed), or one
        params tree that every seed starts from; with `per_seed_init`, a params tree whose
        leaves have a leading [S] axis: seed i starts from row i (e.g. the `SmallFit.params` of
        an earlier stage, fine-tuned with a fresh optimizer state).
      tx: the optax transformation.
      num_steps: number of updates.
      data: the training data, a pytree of arrays (the full batch, or what `batch_fn` draws
        from). With `per_seed_data` every leaf has a leading [S] axis: seed i uses row i.
      seeds: the seeds; their runs are vmapped into one program.
      seed_keys: [S] typed PRNG keys of the seeds (init and batch draws); default
        `jax.random.key(seed)` for each seed (e.g. pass split keys to give two models of one
        seed different inits).
      per_seed_data: see `data`.
      per_seed_init: see `init_params`.
      batch_fn: `(data, rng) -> batch` draws each update's batch (minibatch SGD); the key is
        `fold_in(seed key, step)`, so it is the same after a resume. None: the full batch.
      with_step: call `batch_fn(data, rng, step)`, step the update's 0-based index (int32
        scalar), for what follows a schedule over the updates (e.g. a curriculum that the loss
        reads off the batch).
      has_aux: `loss_fn` returns (loss, metrics of scalars).
      steps_per_log: updates per loop step (one logged row, one NaN check); default
        max(1, num_steps // 50).
      checkpoint_every: loop steps between checkpoints.
      eval_fn: `params -> metrics` of one seed, vmapped over the seeds, every loop step; with
        `eval_data`, `(params, eval_data) -> metrics`.
      eval_data: a pytree of arrays `eval_fn` gets as its second argument (e.g. held-out data);
        with `per_seed_data` its leaves have the leading [S] axis too, and seed i gets row i.
      progress: show the progress bar.
      desc: its label.
      select: (metric, "max" | "min"): early stopping on validation. After every loop step
        each seed's `eval_fn` metric is compared with its best so far, and the params are kept
        when it improves (ties keep the earlier step), in the checkpointed state, so a resumed
        run selects the same step. `SmallFit.best_params` / `best_step` / `best_score` hold
        the choice; `params` stays the final params. Give `eval_fn` the validation data (never
        the test data), and every variant the same `select` and `steps_per_log`.
      loss_state: the initial value of state that the loss carries from update to update (a
        pytree of arrays, the same for every seed; e.g. BCO's running reward shift,
        `alignax.losses.direct.RunningMean`). With it, `loss_fn(params, batch, loss_state)`
        returns `(loss, metrics, new_loss_state)` (metrics a dict of scalars, may be empty);
        the new state is not differentiated, lives in the checkpointed loop state (a resume
        continues it exactly) and is returned in `SmallFit.loss_state` ([S, ...] leaves).
      plots: draw the means over seeds in `workdir/plots/` at the end (False: none; e.g. the
        many short rounds of `fit_rounds`, where each PNG costs about a quarter second).

    Returns:
      SmallFit.
    """
    num_steps = int(num_steps)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("fit_small needs at least one seed")
    steps_per_log = max(1, num_steps // 50) if steps_per_log is None else int(steps_per_log)
    chunks = _chunks(num_steps, steps_per_log)
    keys = (jnp.stack([jax.random.key(s) for s in seeds]) if seed_keys is None
            else jnp.asarray(seed_keys))
    if keys.shape != (len(seeds),):
        raise ValueError(f"seed_keys must be {len(seeds)} keys, got shape {keys.shape}")
    if with_step and batch_fn is None:
        raise ValueError("with_step needs a batch_fn (it receives the step)")
    if eval_data is not None and eval_fn is None:
        raise ValueError("eval_data needs an eval_fn")
    if select is not None:
        if eval_fn is None:
            raise ValueError("select needs an eval_fn (the validation metric it selects on)")
        if (not isinstance(select, (tuple, list)) or len(select) != 2
                or select[1] not in ("max", "min")):
            raise ValueError(f"select is (metric name, 'max' | 'min'), got {select!r}")
        select_metric, select_mode = str(select[0]), select[1]
    if per_seed_init:
        if callable(init_params):
            raise ValueError("per_seed_init needs a params tree, not an init function")
        for leaf in jax.tree.leaves(init_params):
            if jnp.shape(leaf)[:1] != (len(seeds),):
                raise ValueError(f"per_seed_init leaves need a leading axis of {len(seeds)} "
                                 f"seeds, got shape {jnp.shape(leaf)}")
    data_axis = 0 if per_seed_data else None
    if per_seed_data:
        for leaf in jax.tree.leaves((data, eval_data)):
            if leaf.shape[:1] != (len(seeds),):
                raise ValueError(f"per_seed_data leaves need a leading axis of {len(seeds)} "
                                 f"seeds, got shape {leaf.shape}")

    stateful = loss_state is not None
    wrapped = stateful or select is not None  # the loop state is a dict around the TrainState

    def objective(params, batch, carried):
        if stateful:
            out = loss_fn(params, batch, carried)
            if not (isinstance(out, tuple) and len(out) == 3):
                raise TypeError("with loss_state, loss_fn must return (loss, metrics, "
                                "new_loss_state)")
            loss, aux, carried = out
            return loss, (dict(aux), jax.lax.stop_gradient(carried))
        out = loss_fn(params, batch)
        return (out if has_aux else (out, {})), carried

    def create(key, seed_params):
        if per_seed_init:
            params = seed_params
        else:
            params = init_params(key) if callable(init_params) else jax.tree.map(
                jnp.asarray, init_params)
        return TrainState.create(params, tx, key)

    def draw(seed_data, rng, step):
        if batch_fn is None:
            return seed_data
        return batch_fn(seed_data, rng, step) if with_step else batch_fn(seed_data, rng)

    def grads_of(params, batch, carried):
        if stateful:
            (loss, (aux, carried)), grads = jax.value_and_grad(objective, has_aux=True)(
                params, batch, carried)
        else:
            (loss, aux), grads = jax.value_and_grad(
                lambda p: objective(p, batch, None)[0], has_aux=True)(params)
        return loss, aux, carried, grads

    def run_chunk(full, seed_data, seed_eval, length: int):
        # with `select` and/or `loss_state` the loop state is {"train": TrainState,
        # "best": {params, score, step}, "loss_state": ...}
        state = full["train"] if wrapped else full
        carried = full["loss_state"] if stateful else None

        def update(carry, _):
            st, carried = carry
            rng = jax.random.fold_in(st.rng, st.step)
            batch = draw(seed_data, rng, st.step)
            loss, aux, carried, grads = grads_of(st.params, batch, carried)
            updates, opt_state = tx.update(grads, st.opt_state, st.params)
            params = optax.apply_updates(st.params, updates)
            return (TrainState(params, opt_state, st.step + 1, st.rng), carried), (loss, aux)

        (state, carried), (losses, aux) = jax.lax.scan(update, (state, carried), None,
                                                       length=length)
        metrics = {"loss": losses[-1], "loss_mean": losses.mean(),
                   **{k: v[-1] for k, v in aux.items()}}
        if eval_fn is not None:
            evaluated = (eval_fn(state.params) if eval_data is None
                         else eval_fn(state.params, seed_eval))
            metrics.update({f"eval/{k}": v for k, v in evaluated.items()})
        out = {"train": state}
        if stateful:
            out["loss_state"] = carried
        if select is None:
            return (out if wrapped else state), metrics
        if select_metric not in evaluated:
            raise KeyError(f"select metric {select_metric!r} is not among eval_fn's "
                           f"metrics {sorted(evaluated)}")
        best = full["best"]
        score = jnp.asarray(evaluated[select_metric], jnp.float32)
        better = (score > best["score"]) if select_mode == "max" else (score < best["score"])
        better = better & jnp.isfinite(score)
        best = {"params": jax.tree.map(lambda n, o: jnp.where(better, n, o),
                                       state.params, best["params"]),
                "score": jnp.where(better, score, best["score"]),
                "step": jnp.where(better, state.step, best["step"])}
        metrics["select/best_score"] = best["score"]
        metrics["select/best_step"] = best["step"].astype(jnp.float32)
        return {**out, "best": best}, metrics

    compiled = {}

    def chunk_fn(length: int):
        if length not in compiled:
            compiled[length] = jax.jit(
                jax.vmap(lambda st, d, e: run_chunk(st, d, e, length),
                         in_axes=(0, data_axis, data_axis)),
                donate_argnums=(0,))
        return compiled[length]

    def step_fn(state, index: int):
        state, per_seed = chunk_fn(chunks[index])(state, data, eval_data)
        per_seed = jax.device_get(per_seed)
        metrics = {}
        for name, values in per_seed.items():
            values = np.asarray(values, np.float64)
            metrics[name] = float(values.mean())
            for s, v in zip(seeds, values):
                metrics[f"seed_{s}/{name}"] = float(v)
        return state, metrics

    def create_wrapped(key, seed_params):
        train = create(key, seed_params)
        full = {"train": train}
        if stateful:
            full["loss_state"] = jax.tree.map(jnp.asarray, loss_state)
        if select is not None:
            worst = jnp.inf if select_mode == "min" else -jnp.inf
            full["best"] = {"params": jax.tree.map(jnp.copy, train.params),
                            "score": jnp.asarray(worst, jnp.float32),
                            "step": jnp.zeros((), train.step.dtype)}
        return full

    # a copy: the loop donates the state, and the caller's params stay usable
    start = _copy_tree(init_params) if per_seed_init else None
    @jax.jit
    def create_all(seed_keys, seed_params):
        return _strong(jax.vmap(create_wrapped if wrapped else create,
                                in_axes=(0, 0 if per_seed_init else None))(seed_keys, seed_params))

    result = run_loop(workdir, init_state=lambda: create_all(keys, start),
                      step_fn=step_fn,
                      num_steps=len(chunks), checkpoint_every=checkpoint_every,
                      progress=progress, desc=desc,
                      # the plots show the means over seeds; every seed's own value is in
                      # metrics.jsonl and TensorBoard (one PNG per seed cost a second each)
                      plot_filter=(lambda name: not name.startswith("seed_")) if plots
                      else (lambda name: False))
    last = result.history[-1] if result.history else result.metrics
    final_loss = np.array([last[f"seed_{s}/loss"] for s in seeds], np.float32)
    train = result.state["train"] if wrapped else result.state
    fit = SmallFit(params=train.params, seeds=seeds, final_loss=final_loss,
                   metrics=result.metrics, history=result.history,
                   resumed_from=result.resumed_from,
                   loss_state=result.state["loss_state"] if stateful else None)
    if select is not None:
        best = result.state["best"]
        fit.best_params = best["params"]
        fit.best_step = np.asarray(best["step"])
        fit.best_score = np.asarray(best["score"], np.float64)
    return fit


_FIT_SMALL_ARGS = frozenset(inspect.signature(fit_small).parameters) - {"workdir"}


@dataclasses.dataclass
class RoundsFit:
    """What `fit_rounds` returns.

    Attributes:
      fits: each round's `SmallFit`, in order.
      inputs: each round's `make_round` output (its data and other fit_small arguments).
    """

    fits: list[SmallFit]
    inputs: list[dict]

    @property
    def final(self) -> SmallFit:
        """The last round's fit."""
        return self.fits[-1]


def fit_rounds(
    workdir: str,
    *,
    num_rounds: int,
    make_round: Callable[[int, list[SmallFit]], dict],
    init_params: Callable[[jax.Array], Any] | Any,
    carry: Callable[[SmallFit], Any] | None = None,
    **fit_kwargs: Any,
) -> RoundsFit:
    """Iterated training: each round draws fresh data from the previous rounds' models, then
    trains with `fit_small`, every seed at once (iterative / online DPO, self-rewarding, RAFT,
    iREPO: sample from the current policy, label, train, repeat).

    Round r calls `make_round(r, fits)` with the list of the earlier rounds' `SmallFit`s (empty
    for round 0) and gets a dict of `fit_small` arguments for this round (at least `data`; e.g.
    `eval_data`, `loss_fn`, `num_steps`); they override `fit_kwargs`. Round 0 starts from
    `init_params` (with `fit_kwargs`' `per_seed_init` meaning as in `fit_small`); round r > 0
    starts from `carry(fits[-1])` (default: its final `params`; e.g. `lambda f: f.best_params`
    to continue from the step chosen on validation) with a fresh optimizer state. Each round is
    one `fit_small` run in `workdir/round_<r>`, with its own metrics, checkpoints and resume: a
    stopped run restarted with the same arguments restores the finished rounds from their
    checkpoints, so `make_round` must be a deterministic function of (r, fits), e.g. sampling
    with keys derived from the seeds and r; it then rebuilds the same data and the run
    continues exactly.

    Returns:
      RoundsFit with every round's fit and inputs.
    """
    num_rounds = int(num_rounds)
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    if "data" in fit_kwargs:
        raise ValueError("fit_rounds: each round's data comes from make_round, not fit_kwargs")
    carry = carry or (lambda fit: fit.params)
    fits: list[SmallFit] = []
    inputs: list[dict] = []
    for r in range(num_rounds):
        round_args = make_round(r, list(fits))
        if not isinstance(round_args, dict) or "data" not in round_args:
            raise TypeError(f"make_round must return a dict of fit_small arguments with "
                            f"'data', got {type(round_args).__name__}"
                            + (f" with keys {sorted(round_args)}"
                               if isinstance(round_args, dict) else ""))
        unknown = sorted(set(round_args) - _FIT_SMALL_ARGS)
        if unknown:
            raise TypeError(f"make_round returned arguments fit_small does not take: {unknown}")
        kwargs = {**fit_kwargs, **round_args}
        if r == 0:
            kwargs.setdefault("init_params", init_params)
        else:
            kwargs["init_params"] = carry(fits[-1])
            kwargs["per_seed_init"] = True
        kwargs.setdefault("desc", f"round {r}")
        fits.append(fit_small(os.path.join(workdir, f"round_{r}"), **kwargs))
        inputs.append(round_args)
    return RoundsFit(fits=fits, inputs=inputs)


def minibatch_fn(batch_size: int) -> Callable[[Any, jax.Array], Any]:
    """A `fit_small` batch_fn: `batch_size` rows drawn uniformly with replacement from the
    leading axis of the data, the same rows of every leaf (e.g. chosen and rejected)."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def draw(data, rng):
        n = jax.tree.leaves(data)[0].shape[0]
        idx = jax.random.randint(rng, (batch_size,), 0, n)
        return jax.tree.map(lambda x: x[idx], data)

    return draw


def pair_accuracy_selection(score_fn: Callable[[Any, jax.Array], jax.Array], val: Any, *,
                            steps_per_log: int) -> dict:
    """`fit_small` keyword arguments for early stopping on validation pair accuracy.

    `score_fn(params, x) -> [N]` scores a batch of responses; `val` holds the validation
    pairs {"chosen": [N, ...], "rejected": [N, ...]} (with `per_seed_data`, a leading [S]
    axis). The eval metric `val_accuracy` is the fraction of pairs with
    score(chosen) > score(rejected) (ties count as wrong), maximised; every variant that is
    compared should get the same `steps_per_log`.
    """
    for key in ("chosen", "rejected"):
        if key not in val:
            raise KeyError(f"validation pairs need {key!r}, got {sorted(val)}")

    def val_metrics(params, v):
        margin = score_fn(params, v["chosen"]) - score_fn(params, v["rejected"])
        return {"val_accuracy": jnp.mean((margin > 0).astype(jnp.float32))}

    return dict(eval_fn=val_metrics,
                eval_data={k: jnp.asarray(val[k]) for k in ("chosen", "rejected")},
                select=("val_accuracy", "max"), steps_per_log=int(steps_per_log))
