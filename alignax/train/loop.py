"""The training loop: feeds batches to one jitted step, logs, evaluates and checkpoints.

`fit` is what every algorithm calls. It owns nothing mathematical: the objective is `loss_fn`, the
update is `tx`, and the loop only moves data, writes `metrics.jsonl`/TensorBoard, saves
checkpoints, and resumes. A run restarted with the same arguments in the same workdir continues
from its newest readable checkpoint and produces the same metrics, line for line, as a run that
was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignax._src import faults
from alignax.train import sharding as shd
from alignax.train.checkpoint import Checkpointer, abstract_like, is_checkpointable_iterator
from alignax.train.plots import plot_metrics, run_plots_enabled
from alignax.train.progress import ProgressBar
from alignax.train.writers import (MetricsWriter, atomic_write_text, read_metrics,
                                   with_filename)
from alignax.train.state import TrainState
from alignax.train.step import LossFn, make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A training metric became NaN or infinite; the run stopped without saving that step."""


class InexactResumeWarning(UserWarning):
    """A run resumed with a data iterator that has no checkpoint: its data restarts from the
    beginning instead of continuing where the checkpointed run stopped."""


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
      history: every logged row of the run (see `LoopResult`).
    """

    state: TrainState
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    resumed_from: int | None
    compiles: int
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


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


def _preemption_sync_manager():
    """jax's preemption sync manager of a multi-process run, or None (service disabled)."""
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - layout of a future jax
        return None
    return getattr(distributed.global_state, "preemption_sync_manager", None)


# steps run by every run_loop call of this process: the step ids of the preemption sync
# protocol, which must grow across stages (each stage restarts its own step count at 1)
_process_steps = 0


class _StopRequest:
    """When to stop for a SIGTERM, at the same step on every process.

    One process: the SIGTERM handler's flag. Several processes: a SIGTERM reaches one of them
    (or some), but the checkpoint that follows is collective, so every process must stop at the
    same step, or the ones that did not see the signal run ahead and the save hangs. With jax's
    preemption service (on by default in `jax.distributed.initialize`), SIGTERM is left to its
    notifier, which tells the coordination service; `reached_preemption_sync_point` then
    returns True on every process at the same step. Without it, the processes all-gather their
    flags every step.
    """

    def __init__(self):
        self.multi = jax.process_count() > 1
        self._sync = _preemption_sync_manager() if self.multi else None
        self._flag = _SigtermFlag()

    def __enter__(self):
        if self._sync is None:  # with the service, its notifier must keep SIGTERM
            self._flag.__enter__()
        return self

    def __exit__(self, *exc):
        return self._flag.__exit__(*exc)

    def should_stop(self) -> bool:
        global _process_steps
        _process_steps += 1
        if not self.multi:
            return self._flag.received
        from jax.experimental import multihost_utils

        if self._sync is not None:
            return bool(multihost_utils.reached_preemption_sync_point(_process_steps))
        flags = multihost_utils.process_allgather(np.asarray(self._flag.received, np.int32))
        return bool(np.asarray(flags).any())


def _to_float(x) -> float:
    return float(np.asarray(x))


@dataclasses.dataclass
class LoopResult:
    """What `run_loop` returns.

    Attributes:
      state: the final state (whatever pytree the step carries).
      metrics: the last step's metrics (Python floats; `time/*` entries excluded).
      eval_metrics: the last evaluation's metrics ("eval/<name>"), if any.
      history: every logged row of the whole run, also the part before a resume, as written
        to metrics.jsonl (each a dict with "step").
      resumed_from: the step a checkpoint was restored from, or None.
    """

    state: Any
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    history: list[dict[str, float]]
    resumed_from: int | None


TIMING_PREFIX = "time/"
TIMINGS_FILE = "timings.jsonl"


def _split_timings(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    values, timings = {}, {}
    for k, v in metrics.items():
        (timings if k.startswith(TIMING_PREFIX) else values)[k] = _to_float(v)
    return values, timings


def _write_timings(workdir: str, step: int, timings: Mapping[str, float]) -> None:
    """Wall-clock numbers go to their own file: they differ between a resumed and an
    uninterrupted run, so metrics.jsonl never holds them."""
    path = os.path.join(workdir, TIMINGS_FILE)
    try:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, **timings}) + "\n")
    except OSError as e:  # a full disk: name the file (the CLI's one line)
        raise with_filename(e, path)


def single_device_abstract(abstract: Any) -> Any:
    """The ShapeDtypeStruct tree `abstract` placed on the first device (for restoring)."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return abstract_like(abstract, jax.tree.map(lambda _: device, abstract))


def _timing_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _truncate_timings(path: str, step: int) -> None:
    """Keeps the timings of steps <= `step` (a resume repeats the later ones). Wall-clock
    timings are not results: a torn or corrupt line is dropped rather than stopping the run."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    kept = "".join(line for line in text.splitlines(keepends=True) if line.endswith("\n")
                   and (s := _timing_step(line)) is not None and s <= step)
    if kept != text:
        atomic_write_text(path, kept)


def run_loop(
    workdir: str,
    *,
    init_state: Callable[[], Any],
    step_fn: Callable[[Any, Any], tuple[Any, Mapping[str, Any]]],
    num_steps: int,
    abstract_state: Any = None,
    data_iter: Iterator[Any] | None = None,
    eval_fn: Callable[[Any], Mapping[str, Any]] | None = None,
    eval_every: int = 0,
    log_every: int = 1,
    checkpoint_every: int = 100,
    max_to_keep: int = 2,
    metric_prefix: str = "",
    progress: bool = True,
    desc: str = "train",
    plot_filter: Callable[[str], bool] | None = None,
) -> LoopResult:
    """The one training loop: every recipe (offline, online, small models) runs through it.

    Each of the `num_steps` steps calls `state, metrics = step_fn(state, inputs)`, where
    `inputs` is the next element of `data_iter`, or, without a data iterator, the 0-based index
    of the step (online recipes draw prompts and sampling keys from it, so a resumed run repeats
    an uninterrupted one). The loop owns nothing mathematical; it

    - restores the newest readable checkpoint of `workdir` (state and data iterator) and
      continues from it, dropping the metrics lines logged after it;
    - writes `metrics.jsonl` and TensorBoard scalars (`metric_prefix` + name, plus
      "eval/<name>" from `eval_fn(state)` every `eval_every` steps and at the end), and the
      metrics named `time/...` (wall-clock) to `timings.jsonl` instead;
    - stops with NonFiniteError at the first NaN/inf metric, without saving that step;
    - checkpoints every `checkpoint_every` steps, at the end, and on SIGTERM (then raises
      Interrupted);
    - shows a progress bar with rate and ETA (process 0).

    The state may be any pytree of arrays (a TrainState, a TrainState with evolving
    controllers, a stack of per-seed states); it is checkpointed whole by orbax.

    Args:
      workdir: the run folder.
      init_state: `() -> state`, called only when there is no checkpoint to restore.
      step_fn: `(state, inputs) -> (state, metrics)`; metrics are scalars (arrays or floats).
      num_steps: total number of steps of the run.
      abstract_state: ShapeDtypeStruct tree (with shardings) of the state, for restoring;
        None derives it from `jax.eval_shape(init_state)`, on the first device.
      data_iter: the inputs; None passes the step index. A grain iterator (DatasetIterator,
        DataLoaderIterator) is checkpointed for exact resume; any other iterator is accepted but
        not checkpointed: a resumed run reads it from where it starts (usually the beginning)
        and says so once with an InexactResumeWarning.
      eval_fn: `state -> metrics`.
      eval_every: 0 evaluates only after the last step.
      log_every: log every this many steps (every step is checked for NaN/inf).
      checkpoint_every: save every this many steps (and always after the last).
      max_to_keep: checkpoints kept on disk.
      metric_prefix: prefix of the step's metric names in metrics.jsonl (e.g. "train/").
      progress: show the progress bar.
      desc: its label.
      plot_filter: `metric name -> bool`: the metrics drawn in `workdir/plots/` at the end
        (None: all of them; metrics.jsonl and TensorBoard always get every metric). No plots
        are drawn when `ALIGNAX_RUN_PLOTS=0` (`alignax.train.plots.run_plots_enabled`).

    Raises:
      NonFiniteError: a metric is NaN/inf (the last good checkpoint is kept).
      Interrupted: SIGTERM arrived; the current step was checkpointed.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    draw_plots = run_plots_enabled()  # read first: a bad value fails before training
    if abstract_state is None:
        abstract_state = single_device_abstract(jax.eval_shape(init_state))
    checkpointable_iter = data_iter if is_checkpointable_iterator(data_iter) else None
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), every=checkpoint_every,
                                max_to_keep=max_to_keep)
    writer = MetricsWriter(workdir, enabled=is_main)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    timings_path = os.path.join(workdir, TIMINGS_FILE)
    faults.point("stage", workdir)
    restored = checkpointer.restore(abstract_state, checkpointable_iter)
    if restored is None:
        state, start, resumed_from = init_state(), 0, None
    else:
        state, start = restored
        resumed_from = start
        if data_iter is not None and checkpointable_iter is None and start < num_steps:
            warnings.warn(
                f"resuming {workdir} at step {start} with a {type(data_iter).__name__} data "
                "iterator, which has no checkpoint: its data restarts from the beginning (for a "
                f"fresh iterator) instead of after step {start}, so the run differs from an "
                "uninterrupted one (use a grain iterator, e.g. "
                "alignax.data.pipeline.make_batch_iterator, for an exact resume)",
                InexactResumeWarning, stacklevel=2)
    writer.truncate_after(start)
    if is_main:
        _truncate_timings(timings_path, start)

    metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    bar = ProgressBar(num_steps, initial=start, enabled=progress and is_main, desc=desc)
    try:
        with _StopRequest() as stop:
            for step in range(start + 1, num_steps + 1):
                inputs = next(data_iter) if data_iter is not None else step - 1
                t0 = time.perf_counter()
                state, step_metrics = step_fn(state, inputs)
                metrics, timings = _split_timings(jax.device_get(dict(step_metrics)))
                timings[TIMING_PREFIX + "step_s"] = time.perf_counter() - t0
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
                if bad:
                    checkpointer.wait()
                    raise NonFiniteError(
                        f"non-finite {', '.join(f'{k}={v}' for k, v in sorted(bad.items()))} at "
                        f"step {step} in {workdir}; last good checkpoint: step "
                        f"{checkpointer.latest_step()}"
                    )
                row = {f"{metric_prefix}{k}": v for k, v in metrics.items()}
                evaluated = eval_fn is not None and (
                    step == num_steps or bool(eval_every and step % eval_every == 0))
                if evaluated:
                    eval_metrics = {f"eval/{k}": _to_float(v)
                                    for k, v in eval_fn(state).items()}
                    row.update(eval_metrics)
                if step % log_every == 0 or step == num_steps or evaluated:
                    writer.write(step, row)
                    if is_main:
                        _write_timings(workdir, step, timings)
                faults.point("step", workdir, step)  # logged, not yet checkpointed
                checkpointer.save(step, state, checkpointable_iter, force=step == num_steps)
                bar.update(1, **({"loss": metrics["loss"]} if "loss" in metrics else {}))
                if stop.should_stop():
                    checkpointer.save(step, state, checkpointable_iter, force=True)
                    checkpointer.wait()
                    what = "SIGTERM" if not stop.multi else "SIGTERM (preemption notice)"
                    raise Interrupted(
                        f"{what} at step {step}: checkpoint saved in {checkpointer.directory}; "
                        "run the same command again to resume",
                        step,
                    )
    finally:
        bar.close()
        try:
            checkpointer.close()  # raises a failed asynchronous save's error (full disk: OSError)
        finally:
            writer.close()

    history = read_metrics(metrics_path, parse_nonfinite=True) if os.path.exists(
        metrics_path) else []
    if start >= num_steps and history:  # already complete: report what was recorded
        last = history[-1]
        metrics = {k[len(metric_prefix):]: v for k, v in last.items()
                   if k != "step" and not k.startswith("eval/") and k.startswith(metric_prefix)}
        eval_metrics = {k: v for k, v in last.items() if k.startswith("eval/")}
    plots_dir = os.path.join(workdir, "plots")
    if (is_main and history and draw_plots
            and (start < num_steps or not os.path.isdir(plots_dir))):
        try:
            keys = None  # every metric
            if plot_filter is not None:
                names = dict.fromkeys(k for row in history for k in row if k != "step")
                keys = [k for k in names if plot_filter(k)]
            # not again when a finished run is reopened
            plot_metrics(history, plots_dir, keys=keys)
        except OSError as e:
            raise with_filename(e, plots_dir)
    return LoopResult(state=state, metrics=metrics, eval_metrics=eval_metrics, history=history,
                      resumed_from=resumed_from)


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
    extra_init: Any = (),
    extra_update: Callable[[Any, Mapping[str, jax.Array]], Any] | None = None,
    grad_accum_steps: int = 1,
    grad_accum_weight: str | None = None,
    extra_post_update: Callable[[Any, Any, jax.Array], Any] | None = None,
    extra_logical_axes: Any = None,
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
        resume; any other iterator works, but is not checkpointed: a resumed run restarts its
        data and warns with InexactResumeWarning).
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
      extra_init: the initial evolving state outside the gradient (`TrainState.extra`, a
        pytree of arrays; replicated), e.g. `RunningMean` of BCO's reward shift.
      extra_update: `(extra, metrics) -> extra` after each update; the loss then receives
        `extra=` (see `make_train_step`).
      extra_post_update: `(extra, new_params, new_step) -> extra` after each optimizer update
        (see `make_train_step`; e.g. a reference that follows the policy).
      extra_logical_axes: logical axes of `extra_init` (None: `extra` is replicated); a copy
        of the model in `extra` (a synced reference) then shards like the params.
      grad_accum_steps: k micro-batches per update (`make_train_step`'s accum_steps): each
        global batch of B rows is split into k micro-batches of B / k rows (still split over
        data x fsdp), their gradients are summed in float32 inside the one jitted step, and one
        update applies the mean. Activation memory is that of B / k rows; the update equals
        the whole batch's for losses that are means over equally sized micro-batches (see
        `make_train_step` for the exact condition). B / k must be divisible by the mesh's
        data x fsdp shards.
      grad_accum_weight: for a loss normalised by a data-dependent count (tokens, a sum of
        weights) that it reports as this metric: the micro-batches are weighted by it, which
        makes the update equal the whole batch's (`make_train_step`'s accum_weight).

    Raises:
      NonFiniteError: a metric is NaN/inf at some step (the last good checkpoint is kept).
      Interrupted: SIGTERM arrived; the current step was checkpointed.
    """
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
        extra=(jax.tree.map(lambda _: repl, jax.eval_shape(lambda: extra_init))
               if extra_logical_axes is None else
               shd.param_shardings(jax.eval_shape(lambda: extra_init), extra_logical_axes,
                                   mesh)),
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
        # a copy: the state is donated, and an `extra` leaf may be the caller's array (a reference)
        return TrainState.create(params_, tx, rng_,
                                 extra=jax.tree.map(lambda x: jnp.array(x, copy=True),
                                                    extra_init))

    start_params = None if callable(init_params) else init_params
    make_state = jax.jit(create, out_shardings=state_sharding)
    state_abstract = abstract_like(jax.eval_shape(create, rng, start_params), state_sharding)
    step_fn = make_train_step(
        loss_fn,
        tx,
        mesh=mesh,
        state_sharding=state_sharding,
        batch_sharding=batch_sharding,
        frozen_shardings=frozen_shardings,
        extra_update=extra_update,
        accum_steps=grad_accum_steps,
        accum_weight=grad_accum_weight,
        extra_post_update=extra_post_update,
    )

    def train_step(state, local_batch):
        return step_fn(state, shd.global_batch(local_batch, batch_sharding), *frozen_params)

    result = run_loop(
        workdir,
        init_state=lambda: make_state(rng, start_params),
        abstract_state=state_abstract,
        step_fn=train_step,
        num_steps=num_steps,
        data_iter=data_iter,
        eval_fn=None if eval_fn is None else (lambda state: eval_fn(state.params)),
        eval_every=eval_every,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        max_to_keep=max_to_keep,
        metric_prefix="train/",
        progress=progress,
        desc=desc,
    )
    return FitResult(
        state=result.state,
        metrics=result.metrics,
        eval_metrics=result.eval_metrics,
        resumed_from=result.resumed_from,
        compiles=step_fn._cache_size(),
        history=result.history,
    )
