"""What the training loop costs: W1's step run bare and through `alignax.train.loop.run_loop`.

The loop checks every step's metrics for NaN/inf (which reads them back to the host), writes a
metrics.jsonl line, TensorBoard scalars and a timings line, updates the progress bar and asks the
checkpointer whether to save. This measures that cost against the same jitted step called in a
bare Python loop that blocks on each step's loss, in the same process and on the same inputs:

- `bare`: `state, m = step(state, batch); m["loss"].block_until_ready()`, N times;
- `loop`: `run_loop(..., num_steps=N, log_every=1, checkpoint_every=N)`: every step logged, one
  checkpoint (the last). A step's loop time is the interval between two consecutive calls of
  the step function (so it holds the step and everything the loop does after it); the N - 1
  intervals are averaged. The rest of the run's wall time (checkpoint probe, state init, the
  last step with the final save, plots, reading the history back) is reported as fixed cost.

Both use the same compiled step (it is compiled once, before either is timed); rounds alternate
the two. No peer: the ratio loop / bare is the number (1.0 means the loop adds nothing).

    python -m benchmarks.loop --size tiny --steps 50 --rounds 3
    python -m benchmarks.loop --size base --steps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp

from benchmarks import ours, spec


def _w1(size: str, dtype: str = "float32"):
    """W1 exactly as benchmarks.ours builds it: (make_state, step, batches)."""
    import optax

    from alignax.algorithms.reward_model import make_reward_loss
    from alignax.models.transformer import make_reward_model
    from alignax.train.state import TrainState
    from alignax.train.step import make_train_step

    w = spec.workload("w1", size)
    model = make_reward_model(ours._config(size, w.seq_len, dtype))
    tx = optax.adamw(1e-5)
    params = model.init(jax.random.key(0))

    def make_state():  # a fresh copy each time: the step donates its state
        return TrainState.create(jax.tree.map(jnp.copy, params), tx, jax.random.key(0))

    step = make_train_step(make_reward_loss(model.apply), tx)
    batches = [jax.device_put(b) for b in ours._pair_batches("w1", size, 4)]
    return make_state, step, batches


def time_bare(make_state, step, batches, n: int) -> float:
    state = make_state()
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(n):
        state, metrics = step(state, batches[i % len(batches)])
        metrics["loss"].block_until_ready()
    return time.perf_counter() - t0


def time_loop(make_state, step, batches, n: int) -> tuple[float, float]:
    """(mean per-step time over the first n - 1 steps, the run's remaining wall time)."""
    from alignax.train.loop import run_loop

    entered = []

    def timed_step(state, batch):
        entered.append(time.perf_counter())
        return step(state, batch)

    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        run_loop(workdir, init_state=make_state, step_fn=timed_step, num_steps=n,
                 data_iter=itertools.cycle(batches), log_every=1, checkpoint_every=n,
                 progress=False)
        total = time.perf_counter() - t0
    per_step = (entered[-1] - entered[0]) / (n - 1)
    return per_step, total - per_step * (n - 1)


def measure(size: str, steps: int, rounds: int) -> dict:
    if steps < 2:
        raise ValueError(f"--steps must be >= 2, got {steps}")
    make_state, step, batches = _w1(size)
    time_bare(make_state, step, batches, 2)  # compile once, for both
    time_loop(make_state, step, batches, 2)  # first-use costs of orbax / TensorBoard / plots
    bare, loop, fixed = [], [], []
    for _ in range(rounds):
        bare.append(time_bare(make_state, step, batches, steps) / steps)
        per_step, rest = time_loop(make_state, step, batches, steps)
        loop.append(per_step)
        fixed.append(rest)
    b, lp = statistics.median(bare), statistics.median(loop)
    return {"workload": "w1", "size": size, "steps": steps, "rounds": rounds,
            "bare_step_s": bare, "loop_step_s": loop, "loop_fixed_s": fixed,
            "bare_median_s": b, "loop_median_s": lp, "overhead_per_step_s": lp - b,
            "ratio": lp / b}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=sorted(spec.SIZES))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    spec.add_host_memory_argument(parser)
    args = parser.parse_args(argv)
    if args.host_memory == "reuse":
        spec.reuse_host_memory()
    print(json.dumps(measure(args.size, args.steps, args.rounds), indent=1))


if __name__ == "__main__":
    main()
