"""Resume through the CLI after SIGTERM: a checkpoint is saved, the restart gives identical metrics.

kill -9 at random points of whole experiments is tests/faults/test_kill_resume.py.
"""

import os
import signal
import subprocess
import time

import pytest

from tests import runs

# Checkpoint often so a kill lands between checkpoints at any step.
OVERRIDES = ("--config.sft.train.checkpoint_every=3", "--config.rm.train.checkpoint_every=3",
             "--config.dpo.train.checkpoint_every=3")
TOTAL_LINES_MIN = 60  # 3 stages x 20 train steps (plus eval lines)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    runs.run(workdir, *OVERRIDES)
    files = runs.metrics_files(workdir)
    assert len(files) == 3 and runs.count_metric_lines(workdir) >= TOTAL_LINES_MIN
    return workdir


def _start(workdir):
    return subprocess.Popen(runs.command(workdir, *OVERRIDES), cwd=runs.REPO, env=runs.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(proc, workdir, n, timeout=300):
    start = time.time()
    while runs.count_metric_lines(workdir) < n:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {n} metric lines:\n{proc.stderr.read()}")
        if time.time() - start > timeout:
            raise AssertionError("timed out waiting for progress")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_then_resumes(reference_run, tmp_path):
    proc = _start(tmp_path)
    _wait_for_lines(proc, tmp_path, 8)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "SIGTERM at step" in stderr and "checkpoint saved" in stderr
    step = int(stderr.split("SIGTERM at step ")[1].split(":")[0])
    suffix = os.path.join("checkpoints", str(step))
    ckpt_dirs = [d for d, _, _ in os.walk(tmp_path) if d.endswith(suffix)]
    assert ckpt_dirs, f"no checkpoint directory for step {step}"
    runs.run(tmp_path, *OVERRIDES)
    assert runs.metrics_files(tmp_path) == runs.metrics_files(reference_run)
