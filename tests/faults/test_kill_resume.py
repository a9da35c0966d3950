"""kill -9 at random points of whole experiments; every resumed run ends byte-identical.

For one offline experiment (three stages: data preparation, SFT, reward model, DPO), one online
experiment (GRPO) and one small-model experiment (all seeds vmapped, with a cached policy run),
an uninterrupted reference run records the fault points it passes (`alignax._src.faults`: stage
starts, logged steps, checkpoints being written, dataset splits half written, seeds done,
summary.json about to be written). A second workdir is then run again and again, each time
SIGKILLed at the next of 5 points drawn at random from that trace (every kind of point
the trace has is drawn at least once: 5 or 6 kills), and finally run to the end. Its
metrics.jsonl files, summary.json and config.json must equal the reference's byte for byte.
"""

from __future__ import annotations

import collections
import glob
import os
import random
import signal
import subprocess
import sys

import pytest

from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# every kind of point (at most 6: stage, step, checkpoint_write, dataset_write, seed_done,
# summary) is killed once, the rest at random; each kill costs a whole run of the experiment
# (its tracing and lowering: only XLA's compile is cached), so about one kill per kind
KILLS = 5

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL semantics of Linux")


def _run(spec: str, workdir: str, *, trace: str | None = None, kill: str | None = None):
    # the reference run gets the smoke test's checks (per-run plots included); the killed and
    # resumed runs compare metrics, summary and config only
    env = dict(os.environ, JAX_PLATFORMS="cpu", ALIGNAX_FAULT_ROOT=workdir,
               ALIGNAX_CACHE=os.path.join(workdir, "cache"), PYTHONPATH=REPO,
               ALIGNAX_RUN_PLOTS="1" if trace else "0")
    env.pop("ALIGNAX_FAULT_TRACE", None)
    env.pop("ALIGNAX_FAULT_KILL", None)
    if trace:
        env["ALIGNAX_FAULT_TRACE"] = trace
    if kill:
        env["ALIGNAX_FAULT_KILL"] = kill
    return subprocess.run([sys.executable, "-m", "alignax.cli", "run", spec, "--workdir", workdir],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _kind(point: str) -> str:
    return point.split(":", 1)[0]


def draw_kill_points(trace: list[str], n: int, rng: random.Random) -> list[str]:
    """n points of the trace in trace order: one of each kind first (at a random occurrence),
    the rest uniformly among the remaining positions. Only the first occurrence of an id is
    a candidate (a resumed run passes the start of a finished stage again)."""
    first = {}
    for i, p in enumerate(trace):
        first.setdefault(p, i)
    positions = sorted(first.values())
    by_kind = collections.defaultdict(list)
    for i in positions:
        by_kind[_kind(trace[i])].append(i)
    chosen = {rng.choice(idx) for idx in by_kind.values()}
    rest = [i for i in positions if i not in chosen]
    chosen |= set(rng.sample(rest, min(len(rest), max(0, n - len(chosen)))))
    return [trace[i] for i in sorted(chosen)][:max(n, len(by_kind))]


def _outputs(workdir: str) -> dict[str, bytes]:
    """The files a resumed run must reproduce exactly, by path relative to the workdir."""
    files = glob.glob(os.path.join(workdir, "**", "metrics.jsonl"), recursive=True)
    files += [os.path.join(workdir, "summary.json"), os.path.join(workdir, "config.json")]
    out = {}
    for path in sorted(files):
        with open(path, "rb") as f:
            out[os.path.relpath(path, workdir)] = f.read()
    return out


def test_draw_covers_every_kind_in_trace_order():
    trace = ["stage:a"] + [f"step:a:{i}" for i in range(1, 30)] + ["checkpoint_write:a:10",
                                                                   "stage:a", "summary:."]
    points = draw_kill_points(trace, 5, random.Random(0))
    assert len(points) == 5 and len(set(points)) == 5
    assert {_kind(p) for p in points} == {"stage", "step", "checkpoint_write", "summary"}
    assert points == sorted(points, key=trace.index)


EXPERIMENTS = [
    ("experiments/bt_dpo_synthetic.py:smoke", 0),   # offline: data prep + SFT + RM + DPO
    ("experiments/grpo_arithmetic.py:smoke", 1),    # online: SFT + GRPO iterations
    ("experiments/remodetect.py:smoke", 2),         # small models, vmapped seeds, cached run
]


@pytest.mark.slow
@pytest.mark.parametrize("spec,seed", EXPERIMENTS)
def test_kill_anywhere_and_resume_byte_identical(tmp_path, spec, seed):
    ref_dir, trace_file = str(tmp_path / "reference"), str(tmp_path / "trace.txt")
    done = _run(spec, ref_dir, trace=trace_file)
    assert done.returncode == 0, done.stderr[-3000:]
    runs.check_smoke_workdir(ref_dir)  # as test_smoke.py checks a smoke run
    with open(trace_file) as f:
        trace = f.read().split()
    kinds = {_kind(p) for p in trace}
    assert {"stage", "step", "checkpoint_write", "summary"} <= kinds, kinds
    points = draw_kill_points(trace, KILLS, random.Random(seed))
    assert len(points) >= KILLS

    workdir = str(tmp_path / "killed")
    for point in points:
        killed = _run(spec, workdir, kill=point)
        assert killed.returncode == -signal.SIGKILL, (
            f"expected a kill at {point}, got exit {killed.returncode}: {killed.stderr[-2000:]}")
    final = _run(spec, workdir)
    assert final.returncode == 0, final.stderr[-3000:]

    ref, got = _outputs(ref_dir), _outputs(workdir)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert got[name] == ref[name], f"{name} differs after {len(points)} kills at {points}"
