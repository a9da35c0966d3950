"""A full disk mid-run: one line naming the file, exit 74, then the same command resumes.

The disk fills up as a file-size limit (RLIMIT_FSIZE) on the `alignax run` process: a write past
it fails with EFBIG (CPython ignores SIGXFSZ), as a write on a full disk fails with ENOSPC; the
CLI treats both alike. The limit is chosen so that one kind of file crosses it first, after
earlier checkpoints completed: a checkpoint (written by orbax in background threads, whose error
arrives wrapped by tensorstore), metrics.jsonl, or the TensorBoard event file. Every case must
end with exactly one stderr line naming the file, and the run started again without the limit
must resume from the last complete checkpoint and end byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import pytest

from tests.faults import _tiny

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="RLIMIT_FSIZE / EFBIG semantics of Linux")

ONE_LINE = re.compile(r"alignax: file too large writing (?P<path>\S+) \((?P<workdir>\S+)\); free "
                      r"space and run the same command again to resume from the last checkpoint")


def _full_disk_then_resume(tmp_path, overrides, fsize):
    """Runs the tiny experiment uninterrupted, then under the limit, then again without it.

    Returns (path named by the error line, the seed's run folder, resumed_from)."""
    spec = _tiny.write_experiment(tmp_path)
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    out = _tiny.run_cli(spec, reference, *overrides, cache_dir=cache)
    assert out.returncode == 0, out.stderr
    workdir = tmp_path / "full"
    out = _tiny.run_cli(spec, workdir, *overrides, cache_dir=cache, fsize=fsize)
    assert out.returncode == 74, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    m = ONE_LINE.fullmatch(lines[0])
    assert m, lines[0]
    assert m["workdir"] == str(workdir)
    path = m["path"]
    assert path.startswith(str(workdir)), path
    assert not os.path.exists(workdir / "summary.json")

    out = _tiny.run_cli(spec, workdir, *overrides, cache_dir=cache)
    assert out.returncode == 0, out.stderr
    assert _tiny.outputs(workdir) == _tiny.outputs(reference)
    return path, workdir / "default" / "seed_0", _tiny.resumed_from(out.stdout)


@pytest.mark.slow
def test_checkpoint_write_past_the_limit_is_one_line_then_resumes_from_the_last_one(tmp_path):
    # state of 64K float32 filled 1/8 per step; compressed checkpoints of about 60 KB at step 2,
    # 120 KB at step 4: the step-4 save fails in orbax's background thread
    path, run_dir, resumed = _full_disk_then_resume(
        tmp_path, ["--config.state_size=65536"], fsize=100_000)
    rel = os.path.relpath(path, run_dir)
    assert rel.startswith(os.path.join("checkpoints", "4.orbax-checkpoint-tmp") + os.sep), rel
    assert resumed == 2  # steps 1-2 were not run again


@pytest.mark.slow
def test_metrics_jsonl_write_past_the_limit_is_one_line_then_resumes(tmp_path):
    # 4 metrics: about 125 bytes a line, line 5 crosses 560 bytes; checkpoints and the event
    # file stay below it
    path, run_dir, resumed = _full_disk_then_resume(
        tmp_path, ["--config.state_size=64", "--config.num_metrics=4"], fsize=560)
    assert path == str(run_dir / "metrics.jsonl")
    assert resumed == 4  # the torn line 5 was dropped, steps 1-4 not run again


# The event file outgrows metrics.jsonl only for values JSON writes shorter than float32 events
# (integers), which the loop never logs (it writes floats): MetricsWriter is driven directly.
_WRITE_EVENTS = """
import json, sys
from alignax.train.writers import MetricsWriter

workdir, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    with MetricsWriter(workdir) as w:
        w.truncate_after(start)
        for step in range(start + 1, stop + 1):
            w.write(step, {f"m{j:02d}": step % 10 for j in range(20)})
except OSError as e:
    print(json.dumps({"errno": e.errno, "filename": e.filename}))
"""


def _write_events(workdir, start, stop, fsize=None):
    preexec = None
    if fsize is not None:
        import resource

        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-c", _WRITE_EVENTS, str(workdir), str(start),
                           str(stop)], cwd=_tiny.REPO, env=_tiny.env(workdir), capture_output=True,
                          text=True, timeout=60, preexec_fn=preexec)


@pytest.mark.slow
def test_tensorboard_event_file_past_the_limit_names_it_and_a_resume_hides_the_torn_end(
        tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    out = _write_events(tmp_path, 0, 100, fsize=3000)
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no thread traceback
    error = json.loads(out.stdout)
    assert error["errno"] == errno.EFBIG
    logdir = tmp_path / "tensorboard"
    (event_file,) = os.listdir(logdir)
    assert error["filename"] == str(logdir / event_file)
    assert os.path.getsize(logdir / event_file) == 3000
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    written = rows[-1]["step"]  # the event of this step is torn (or the one before it)
    assert 5 < written < 100

    out = _write_events(tmp_path, 5, 12)  # resumed from a checkpoint at step 5
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("m07")] == [(s, s % 10) for s in range(1, 13)]
    assert [r["step"] for r in map(json.loads, open(tmp_path / "metrics.jsonl"))] == list(
        range(1, 13))


def test_disk_errors_are_found_in_tensorstore_messages_and_exception_chains():
    from alignax.train.checkpoint import disk_error

    ts = ValueError('OUT_OF_RANGE: Error writing "w/0" in OCDBT database at local file "/w/c/'
                    '4.orbax-checkpoint-tmp/state/": Failed writing: "/w/c/4.orbax-checkpoint-tmp'
                    '/state/d/ab12": Failed to write 21368 bytes to file 6: No space left on '
                    "device [os_error_code='28']")
    e = disk_error(ts, "/w/c")
    assert (e.errno, e.filename) == (errno.ENOSPC, "/w/c/4.orbax-checkpoint-tmp/state/d/ab12")
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        e = disk_error(outer, "/w/c")
    assert (e.errno, e.filename) == (errno.EDQUOT, "/w/c")
    assert disk_error(ValueError("NOT_FOUND [os_error_code='2']"), "/w/c") is None
    assert disk_error(OSError(errno.EACCES, "Permission denied"), "/w/c") is None
