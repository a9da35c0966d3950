"""SIGKILL at a random iteration, then the same command again: the online recipes' metrics files
are byte-identical to an uninterrupted run's (PPO with adaptive KL, online DPO with reference
refresh; GRPO and a small-model experiment are in tests/faults/test_kill_resume.py)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests import runs

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "online_resume_script.py")
ITERATIONS = 8


def _start(cmd):
    return subprocess.Popen(cmd, cwd=runs.REPO, env=runs.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(cmd):
    out = subprocess.run(cmd, cwd=runs.REPO, env=runs.env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


def _kill_after(cmd, workdir, lines, timeout=300):
    proc = _start(cmd)
    start = time.time()
    while runs.count_metric_lines(workdir) < lines:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {lines} metric lines:\n{proc.stderr.read()}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for progress")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return runs.count_metric_lines(workdir)


# GRPO (through grpo_arithmetic) and a small-model experiment are killed at random points of
# whole runs in tests/faults/test_kill_resume.py
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ppo", "dpo"])
def test_sigkill_at_a_random_iteration_then_resume_is_byte_identical(recipe, tmp_path):
    seed = random.SystemRandom().randrange(10**6)
    kill_after = random.Random(seed).randrange(1, ITERATIONS)
    ref, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    _finish([sys.executable, SCRIPT, recipe, str(ref)])
    cmd = [sys.executable, SCRIPT, recipe, str(killed)]
    at = _kill_after(cmd, killed, kill_after)
    _finish(cmd)
    msg = f"(random seed {seed}: killed after {at} of {ITERATIONS} iterations)"
    assert runs.metrics_files(killed) == runs.metrics_files(ref), msg
    assert len(runs.metrics_files(ref)["metrics.jsonl"].splitlines()) == ITERATIONS
