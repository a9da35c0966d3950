"""A tiny experiment for the fault tests, and helpers to run it through `alignax run`.

The experiment trains nothing: `run_loop` carries a state `w` of `state_size` float32 values
that starts at zero and is filled, one block of `state_size / num_steps` values per step, with
seeded normal noise. orbax compresses its checkpoints (zstd), so each checkpoint is larger than
the previous one: with a file-size limit between two of them, the limit is hit while a *later*
checkpoint is written, after earlier ones completed. Each step logs `num_metrics` metrics, so
metrics.jsonl grows by about 30 bytes per metric and step; with `int_metrics` (one-digit
integers) by 11 bytes, less than the TensorBoard event file (about 13), so the event file hits a
limit first. The run prints
`resumed_from=<step or None>` (to stdout, not into the results, which must not differ between
an interrupted and an uninterrupted run).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXPERIMENT = '''"""Tiny fault-injection experiment (tests/faults/_tiny.py)."""

import jax
import jax.numpy as jnp
import ml_collections

from alignax.train.loop import run_loop


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.state_size = 256
    c.num_metrics = 2
    c.int_metrics = False
    c.num_steps = 8
    c.checkpoint_every = 2
    return c


def run(config, workdir):
    n, steps, k = config.state_size, config.num_steps, config.num_metrics
    block = n // steps
    noise = jax.random.normal(jax.random.key(config.seed), (n,), jnp.float32)
    index = jnp.arange(n)

    def init_state():
        return {"w": jnp.zeros((n,), jnp.float32)}

    @jax.jit
    def step_fn(state, i):
        w = jnp.where(index < (i + 1) * block, noise, state["w"])
        if config.int_metrics:  # one digit each: shorter in JSON than in an event file
            metrics = {f"m{j:03d}": (jnp.abs(w[j % n]) * 3).astype(jnp.int32) % 10
                       for j in range(k)}
        else:
            metrics = {f"m{j:03d}": w[j % n] * (i + 1) for j in range(k)}
        return {"w": w}, metrics

    result = run_loop(workdir, init_state=init_state, step_fn=step_fn, num_steps=steps,
                      checkpoint_every=config.checkpoint_every, progress=False)
    print(f"resumed_from={result.resumed_from}", flush=True)
    return {"sum": float(result.state["w"].sum()), "m000": result.metrics["m000"]}
'''


def write_experiment(folder) -> str:
    """Writes the experiment module into `folder`; returns its path."""
    path = os.path.join(folder, "tiny.py")
    with open(path, "w") as f:
        f.write(EXPERIMENT)
    return path


def env(cache_dir) -> dict:
    e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHONPATH=REPO,
             ALIGNAX_CACHE=str(cache_dir), PYTHONDONTWRITEBYTECODE="1")
    for name in ("ALIGNAX_FAULT_TRACE", "ALIGNAX_FAULT_KILL", "XLA_FLAGS"):
        e.pop(name, None)
    return e


def run_cli(spec, workdir, *overrides, cache_dir, fsize: int | None = None, timeout=300):
    """`python -m alignax.cli run spec --workdir workdir ...`; with `fsize`, every file the
    process writes is limited to `fsize` bytes (RLIMIT_FSIZE: a write past it fails with
    EFBIG, as on a full disk, since Python ignores SIGXFSZ)."""
    preexec, e = None, env(cache_dir)
    if fsize is not None:
        import resource  # Unix only

        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        # the limit is for the run's files: no persistent compilation cache entries either
        e["ALIGNAX_COMPILATION_CACHE"] = "0"
        for name in [k for k in e if k.startswith(("JAX_COMPILATION_CACHE",
                                                   "JAX_PERSISTENT_CACHE"))]:
            del e[name]
    return subprocess.run(
        [sys.executable, "-m", "alignax.cli", "run", str(spec), "--workdir", str(workdir),
         *overrides], cwd=REPO, env=e, capture_output=True, text=True,
        timeout=timeout, preexec_fn=preexec)


def resumed_from(stdout: str):
    """The `resumed_from=` value the experiment printed (None or an int)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("resumed_from=")]
    assert len(lines) == 1, stdout
    value = lines[0].split("=", 1)[1]
    return None if value == "None" else int(value)


def outputs(workdir) -> dict[str, bytes]:
    """metrics.jsonl files and summary.json, by path relative to `workdir`, as bytes."""
    files = glob.glob(os.path.join(str(workdir), "**", "metrics.jsonl"), recursive=True)
    files.append(os.path.join(str(workdir), "summary.json"))
    out = {}
    for path in sorted(files):
        with open(path, "rb") as f:
            out[os.path.relpath(path, workdir)] = f.read()
    return out


def file_sizes(folder) -> dict[str, int]:
    """Sizes of all files under `folder`, by relative path."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = os.path.getsize(p)
    return out
