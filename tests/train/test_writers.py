"""Tests for the metric writers: TensorBoard event files (TensorBoard's own writer), metrics.jsonl,
progress bar."""

import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from alignax.train.progress import ProgressBar
from alignax.train.writers import MetricsWriter, atomic_write_text, read_metrics


def _event_accumulator(logdir):
    # tensorboard (a dev dependency, no TensorFlow needed) reads the event files back.
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    acc = ea_mod.EventAccumulator(str(logdir), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    return acc


def _event_files(logdir):
    return sorted(name for name in os.listdir(logdir) if "tfevents" in name)


# ------------------------------------------------------------------------------- TensorBoard


def test_writers_import_neither_tensorflow_nor_torch_and_tensorboard_lazily(tmp_path):
    code = (
        "import sys\n"
        "from alignax.train.writers import MetricsWriter\n"
        "assert 'tensorboard' not in sys.modules\n"
        "with MetricsWriter(sys.argv[1]) as w:\n"
        "    w.write(1, {'a': 1.0})\n"
        "names = ('tensorflow', 'tensorboard', 'tensorboardX', 'torch')\n"
        "print(sorted(m for m in names if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "['tensorboard']"
    assert len(_event_files(tmp_path / "tensorboard")) == 1


def test_tensorboard_scalars_have_the_written_tags_steps_and_values(tmp_path):
    values = {s: {"train/loss": 1.0 / (s + 1), "eval/acc": 0.1 * s, "lr": 3e-4}
              for s in (0, 1, 5, 10, 1000, 2**40)}
    with MetricsWriter(tmp_path) as w:
        for step, scalars in values.items():
            w.write(step, {**scalars, "note": "text is json-only"})
    logdir = tmp_path / "tensorboard"
    assert len(_event_files(logdir)) == 1
    acc = _event_accumulator(logdir)
    assert sorted(acc.Tags()["scalars"]) == ["eval/acc", "lr", "train/loss"]
    for tag in ("train/loss", "eval/acc", "lr"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(values)
        np.testing.assert_array_equal(
            np.array([e.value for e in events], np.float32),
            np.array([values[s][tag] for s in values], np.float32),
        )


def test_tensorboard_non_finite_bool_and_float32_overflow(tmp_path):
    with MetricsWriter(tmp_path) as w:
        w.write(3, {"x": float("nan"), "y": -math.inf, "z": True, "big": 1.7976931348623157e308,
                    "count": np.int64(7)})
    acc = _event_accumulator(tmp_path / "tensorboard")
    assert math.isnan(acc.Scalars("x")[0].value)
    assert acc.Scalars("y")[0].value == -math.inf
    assert acc.Scalars("z")[0].value == 1.0
    assert acc.Scalars("big")[0].value == math.inf  # beyond float32
    assert acc.Scalars("count")[0].value == 7.0
    assert sorted(acc.Tags()["scalars"]) == ["big", "count", "x", "y", "z"]
    assert [acc.Scalars(tag)[0].step for tag in acc.Tags()["scalars"]] == [3] * 5


def test_writers_opened_in_the_same_second_get_distinct_event_files(tmp_path, monkeypatch):
    # event files are named by the second they were opened in, plus the pid and a counter
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    with MetricsWriter(tmp_path) as a:
        a.write(1, {"v": 1.0})
    with MetricsWriter(tmp_path) as b:
        b.write(2, {"v": 2.0})
    names = _event_files(tmp_path / "tensorboard")
    assert len(names) == 2
    assert all(".1700000000." in name for name in names)
    acc = _event_accumulator(tmp_path / "tensorboard")  # reads the files in name order
    assert [(e.step, e.value) for e in acc.Scalars("v")] == [(1, 1.0), (2, 2.0)]


def test_resume_hides_the_tensorboard_events_after_the_restored_step(tmp_path):
    def run(start, stop, scale):
        with MetricsWriter(tmp_path) as w:
            w.truncate_after(start)
            for step in range(start + 1, stop + 1):
                w.write(step, {"train/loss": scale * step})
                if step % 4 == 0:
                    w.write(step, {"eval/acc": scale / step})

    run(0, 10, 1.0)  # killed after step 10; its last checkpoint is step 6
    run(6, 7, 2.0)  # resumed from step 6, stopped after step 7
    assert len(_event_files(tmp_path / "tensorboard")) == 2
    acc = _event_accumulator(tmp_path / "tensorboard")
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_array_equal([e.value for e in loss], np.float32([1, 2, 3, 4, 5, 6, 14]))
    # Steps 8-10 of the first run are gone although the resumed run never reached them.
    assert [(e.step, e.value) for e in acc.Scalars("eval/acc")] == [(4, 0.25)]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 4, 5, 6, 7]
    assert rows[-1] == {"step": 7, "train/loss": 14.0}


# ----------------------------------------------------------------------------- metrics.jsonl


def test_metrics_jsonl_exact_float_round_trip_and_scalar_types(tmp_path):
    w = MetricsWriter(tmp_path)
    x = 0.1 + 0.2
    w.write(1, {"train/loss": x, "tiny": 5e-324, "big": 1.7976931348623157e308,
                "np64": np.float64(1 / 3), "np32": np.float32(0.1), "count": np.int64(7),
                "arr": np.array([[2.5]]), "flag": np.bool_(True), "name": "dpo"})
    w.write(np.int32(2), {"train/loss": -0.0})
    w.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    r = rows[0]
    assert r["train/loss"] == x and r["train/loss"] != 0.3
    assert struct.pack("<d", r["train/loss"]) == struct.pack("<d", x)
    assert r["tiny"] == 5e-324 and r["big"] == 1.7976931348623157e308
    assert r["np64"] == 1 / 3
    assert r["np32"] == float(np.float32(0.1))
    assert r["count"] == 7 and isinstance(r["count"], int)
    assert r["arr"] == 2.5 and r["flag"] is True and r["name"] == "dpo"
    assert math.copysign(1.0, rows[1]["train/loss"]) == -1.0
    assert list(r)[0] == "step"
    acc = _event_accumulator(tmp_path / "tensorboard")
    assert acc.Scalars("big")[0].value == math.inf  # beyond float32: stored as inf
    assert acc.Scalars("np32")[0].value == np.float32(0.1)
    assert "name" not in acc.Tags()["scalars"]
    # Written and flushed line by line: a second writer appends.
    w2 = MetricsWriter(tmp_path, tensorboard=False)
    w2.write(3, {"a": 1})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    w2.close()


def test_metrics_are_flushed_after_each_write(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    w.write(1, {"a": 1.5})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "a": 1.5}]
    w.close()


def test_nan_and_inf_are_written_as_strings_and_file_is_strict_json(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(1, {"a": float("nan"), "b": np.float32("inf"), "c": -math.inf, "d": 1.0})
    w.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert strict == {"step": 1, "a": "nan", "b": "inf", "c": "-inf", "d": 1.0}
    rows = read_metrics(tmp_path / "metrics.jsonl", parse_nonfinite=True)
    assert math.isnan(rows[0]["a"]) and rows[0]["b"] == math.inf and rows[0]["c"] == -math.inf
    acc = _event_accumulator(tmp_path / "tensorboard")
    assert math.isnan(acc.Scalars("a")[0].value)
    assert acc.Scalars("b")[0].value == math.inf


def test_metrics_writer_writes_tensorboard_scalars(tmp_path):
    with MetricsWriter(tmp_path) as w:
        for step in range(1, 6):
            w.write(step, {"train/loss": 1.0 / step, "note": "text is json-only"})
    acc = _event_accumulator(tmp_path / "tensorboard")
    assert acc.Tags()["scalars"] == ["train/loss"]
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal([e.value for e in events],
                                  np.float32([1.0 / s for s in range(1, 6)]))


def test_truncate_after_keeps_exactly_steps_up_to_k_and_drops_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(tmp_path, tensorboard=False)
    for step in range(1, 11):
        w.write(step, {"train/loss": step * 0.1})
        if step % 4 == 0:
            w.write(step, {"eval/acc": step / 3})
    w.close()
    before = path.read_text().splitlines(keepends=True)
    with open(path, "a") as f:
        f.write('{"step": 11, "train/lo')  # killed mid-write
    w = MetricsWriter(tmp_path, tensorboard=False)
    w.truncate_after(6)
    text = path.read_text()
    kept = [line for line in before if json.loads(line)["step"] <= 6]
    assert text == "".join(kept)  # byte for byte
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 4, 5, 6]
    w.write(7, {"train/loss": 0.7})
    w.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 4, 5, 6, 7]
    MetricsWriter(tmp_path, tensorboard=False).truncate_after(0)
    assert path.read_text() == ""
    assert not os.path.exists(str(path) + ".tmp")


def test_truncate_after_without_a_file_is_a_no_op(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    w.truncate_after(5)
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_write_after_a_partial_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a"')
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.write(2, {"a": 2})
    assert read_metrics(path) == [{"step": 1, "a": 1}, {"step": 2, "a": 2}]


def test_reader_ignores_trailing_partial_line_and_raises_on_corrupt_middle_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 0.5}\n{"step": 2, "a": 0.25}\n{"step": 3, "a": 0.1')
    assert read_metrics(path) == [{"step": 1, "a": 0.5}, {"step": 2, "a": 0.25}]
    path.write_text('{"step": 1, "a": 0.5}\n{"step": 2, "a": 0.2\n{"step": 3, "a": 0.1}\n')
    with pytest.raises(ValueError, match=r"line 2\b"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 2\b.*step"):
        read_metrics(path)
    with pytest.raises(ValueError, match=r"line 2\b"):
        MetricsWriter(tmp_path, tensorboard=False).truncate_after(5)


def test_write_rejects_reserved_name_and_non_scalars(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="reserved"):
        w.write(1, {"step": 3})
    with pytest.raises(TypeError, match="'v'.*scalar"):
        w.write(1, {"v": np.zeros(3)})
    with pytest.raises(TypeError, match="'d'"):
        w.write(1, {"d": {"nested": 1}})
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(2, {"a": 1.0})


def test_disabled_writer_writes_no_files(tmp_path):
    workdir = tmp_path / "run"
    w = MetricsWriter(workdir, enabled=False)
    w.truncate_after(0)
    w.write(1, {"train/loss": 1.0})
    w.close()
    w.write(2, {"train/loss": 1.0})  # still a no-op after close
    assert not os.path.exists(workdir)


def test_metrics_writer_without_tensorboard(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.write(1, {"a": 1.0})
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


# ------------------------------------------------------------------------------ progress bar


def test_progress_bar_counts_and_writes_to_stderr(capsys):
    with ProgressBar(10, initial=3, desc="rm") as bar:
        bar.update(1, loss=np.float32(0.123456), acc=0.5)
        bar.update(2)
        assert bar.n == 6
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "rm" in captured.err and "6/10" in captured.err and "loss=0.1235" in captured.err


def test_disabled_progress_bar_is_silent(capsys):
    bar = ProgressBar(10, enabled=False)
    bar.update(5, loss=1.0)
    bar.close()
    bar.close()
    assert bar.n == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_atomic_write_text_replaces_whole_files_and_a_failed_write_leaves_the_old_one(
        tmp_path, monkeypatch):
    import errno

    path = tmp_path / "summary.json"
    atomic_write_text(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    path.chmod(0o600)
    atomic_write_text(str(path), "é" * 10_000)  # replaces, keeps the file's mode
    assert path.read_text(encoding="utf-8") == "é" * 10_000
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, '{"new": "text that never fully reaches the disk"}')
    assert path.read_text(encoding="utf-8") == "é" * 10_000  # the old file, whole
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind
