"""The training loop: feeds batches to one jitted step, logs, evaluates and checkpoints.

`fit` is what every algorithm calls. It owns nothing mathematical: the objective is `loss_fn`, the
update is `tx`, and the loop only moves data, writes `metrics.jsonl`/TensorBoard, saves
checkpoints, and resumes. A run restarted with the same arguments in the same workdir continues
from its newest readable checkpoint and produces the same metrics, line for line, as a run that
was never interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignax.train import sharding as shd
from alignax.train.checkpoint import Checkpointer, abstract_like
from alignax.train.state import TrainState
from alignax.train.step import LossFn, make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A training metric became NaN or infinite; the run stopped without saving that step."""


class Interrupted(RuntimeError):
    """SIGTERM was received; a checkpoint of the current step was saved before stopping."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class Frozen:
    """A non-trainable argument of the step (e.g. reference params) and its logical axes."""

    params: Any
    logical_axes: Any


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
      state: the final TrainState (sharded jax.Arrays).
      metrics: the last step's training metrics (Python floats).
      eval_metrics: the last evaluation's metrics, if any.
      resumed_from: the step a checkpoint was restored from, or None.
      compiles: number of compilations of the step (1 in a healthy run).
    """

    state: TrainState
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    resumed_from: int | None
    compiles: int


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop polls (only installable in the main thread)."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _to_float(x) -> float:
    return float(np.asarray(x))


def _last_train_metrics(path: str) -> dict[str, float]:
    from alignax.train.writers import read_metrics

    if not os.path.exists(path):
        return {}
    for row in reversed(read_metrics(path, parse_nonfinite=True)):
        train = {k[len("train/"):]: float(v) for k, v in row.items() if k.startswith("train/")}
        if train:
            return train
    return {}


def fit(
    *,
    workdir: str,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    init_params: Callable[[jax.Array], Any] | Any,
    logical_axes: Any,
    rng: jax.Array,
    data_iter: Iterator[Mapping[str, np.ndarray]],
    num_steps: int,
    mesh: jax.sharding.Mesh,
    frozen: Sequence[Frozen] = (),
    checkpoint_every: int = 100,
    max_to_keep: int = 2,
    eval_fn: Callable[[Any], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    log_every: int = 1,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Trains `loss_fn` with `tx` for `num_steps` steps, resuming from `workdir` if possible.

    Args:
      workdir: run folder: metrics.jsonl, tensorboard/, checkpoints/, plots/ are written here.
      loss_fn: `(params, batch, rng, *frozen_params) -> (loss, metrics)`.
      tx: optax transformation.
      init_params: `rng -> params`, or a params tree to start from (e.g. a reference policy).
      logical_axes: tree of logical axis names of the params (see alignax.train.sharding).
      rng: typed PRNG key of the run (init and per-step randomness).
      data_iter: iterator of this process's local batches (a grain DatasetIterator for exact
        resume; any iterator works without data-iterator checkpointing).
      num_steps: total number of updates of the run.
      mesh: device mesh with axes (data, fsdp, tensor).
      frozen: non-trainable step arguments, passed to loss_fn after rng in this order.
      checkpoint_every: save every this many steps (and always at the end).
      max_to_keep: checkpoints kept on disk.
      eval_fn: `params -> metrics` evaluated every `eval_every` steps and at the end; logged as
        "eval/<name>" at that step.
      eval_every: 0 evaluates only at the end.
      log_every: write training metrics every this many steps (all steps are checked for NaN).
      progress: show a progress bar (process 0 only).
      desc: progress bar label.

    Raises:
      NonFiniteError: a metric is NaN/inf at some step (the last good checkpoint is kept).
      Interrupted: SIGTERM arrived; the current step was checkpointed.
    """
    from alignax.train.progress import ProgressBar
    from alignax.train.writers import MetricsWriter

    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0

    # Shardings of params, optimizer state and batches, all from shapes and logical names.
    fallbacks: list = []
    if callable(init_params):
        init_rng = jax.random.fold_in(rng, 0)
        params_abstract = jax.eval_shape(init_params, init_rng)
    else:
        params_abstract = jax.eval_shape(lambda: init_params)
    params_sharding = shd.param_shardings(params_abstract, logical_axes, mesh, fallbacks=fallbacks)
    if fallbacks and is_main:
        log.info("replicated %d parameter dims not divisible by their mesh axes: %s",
                 len(fallbacks), fallbacks[:5])
    opt_abstract = jax.eval_shape(tx.init, params_abstract)
    repl = shd.replicated(mesh)
    state_sharding = TrainState(
        params=params_sharding,
        opt_state=shd.tree_shardings_like(opt_abstract, params_abstract, params_sharding, mesh),
        step=repl,
        rng=repl,
    )
    batch_sharding = shd.batch_sharding(mesh)
    frozen_shardings = [
        shd.param_shardings(jax.eval_shape(lambda p=f.params: p), f.logical_axes, mesh)
        for f in frozen
    ]
    frozen_params = [jax.device_put(f.params, s) for f, s in zip(frozen, frozen_shardings)]

    def create(rng_, params_):
        if callable(init_params):
            params_ = init_params(jax.random.fold_in(rng_, 0))
        else:  # a real copy: the state is donated, the caller's arrays (e.g. a reference) are not
            params_ = jax.tree.map(jnp.copy, params_)
        return TrainState.create(params_, tx, rng_)

    start_params = None if callable(init_params) else init_params
    make_state = jax.jit(create, out_shardings=state_sharding)

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), every=checkpoint_every, max_to_keep=max_to_keep
    )
    writer = MetricsWriter(workdir, enabled=is_main)
    state_abstract = jax.eval_shape(create, rng, start_params)
    restored = checkpointer.restore(abstract_like(state_abstract, state_sharding), data_iter)
    if restored is None:
        state = make_state(rng, start_params)
        resumed_from = None
        writer.truncate_after(0)
    else:
        state, resumed_from = restored
        writer.truncate_after(resumed_from)
    start = int(jax.device_get(state.step))

    step_fn = make_train_step(
        loss_fn,
        tx,
        mesh=mesh,
        state_sharding=state_sharding,
        batch_sharding=batch_sharding,
        frozen_shardings=frozen_shardings,
    )

    def evaluate(params) -> dict[str, float]:
        return {f"eval/{k}": _to_float(v) for k, v in eval_fn(params).items()}

    metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    bar = ProgressBar(num_steps, initial=start, enabled=progress and is_main, desc=desc)
    try:
        with _SigtermFlag() as sigterm:
            for step in range(start + 1, num_steps + 1):
                batch = shd.global_batch(next(data_iter), batch_sharding)
                state, device_metrics = step_fn(state, batch, *frozen_params)
                metrics = {k: _to_float(v) for k, v in jax.device_get(device_metrics).items()}
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
                if bad:
                    checkpointer.wait()
                    raise NonFiniteError(
                        f"non-finite {', '.join(f'{k}={v}' for k, v in sorted(bad.items()))} at "
                        f"step {step} in {workdir}; last good checkpoint: step "
                        f"{checkpointer.latest_step()}"
                    )
                if step % log_every == 0 or step == num_steps:
                    writer.write(step, {f"train/{k}": v for k, v in metrics.items()})
                if eval_fn is not None and (
                    step == num_steps or (eval_every and step % eval_every == 0)
                ):
                    eval_metrics = evaluate(state.params)
                    writer.write(step, eval_metrics)
                checkpointer.save(step, state, data_iter, force=step == num_steps)
                bar.update(1, loss=metrics["loss"])
                if sigterm.received:
                    checkpointer.save(step, state, data_iter, force=True)
                    checkpointer.wait()
                    raise Interrupted(
                        f"SIGTERM at step {step}: checkpoint saved in {checkpointer.directory}; "
                        "run the same command again to resume",
                        step,
                    )
            if start >= num_steps:  # already complete: report the recorded last metrics
                metrics = _last_train_metrics(os.path.join(workdir, "metrics.jsonl"))
                if eval_fn is not None:
                    eval_metrics = evaluate(state.params)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()

    if is_main:
        from alignax.train.plots import plot_metrics

        metrics_path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(metrics_path):
            plot_metrics(metrics_path, os.path.join(workdir, "plots"))
    return FitResult(
        state=state,
        metrics=metrics,
        eval_metrics=eval_metrics,
        resumed_from=resumed_from,
        compiles=step_fn._cache_size(),
    )
