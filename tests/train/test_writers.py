"""Writers: CRC32C and TFRecord framing, TensorBoard event files, metrics.jsonl, progress bar."""

import ast
import json
import math
import os
import pathlib
import struct

import numpy as np
import pytest

from alignax.train import writers
from alignax.train.progress import ProgressBar
from alignax.train.writers import MetricsWriter, TensorBoardWriter, crc32c, read_metrics


def _event_accumulator(logdir):
    # tensorboard is a dev dependency: it reads the event files back (a missing one fails).
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    acc = ea_mod.EventAccumulator(str(logdir), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    return acc


# ------------------------------------------------------------------------------------ CRC32C


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4
    assert crc32c(b"") == 0


def test_masked_crc_matches_tensorboards_reference_implementation():
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as stub
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 100):
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        assert writers.masked_crc32c(data) == stub.masked_crc32c(data)
        crc = crc32c(data)
        expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
        assert writers.masked_crc32c(data) == expected


def test_varint_encoding():
    assert writers._varint(0) == b"\x00"
    assert writers._varint(1) == b"\x01"
    assert writers._varint(300) == b"\xac\x02"
    assert writers._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 two's complement, 10 bytes


def test_writers_module_does_not_import_tensorboard_or_tensorflow():
    tree = ast.parse(pathlib.Path(writers.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"tensorboard", "tensorflow", "tensorboardX", "torch"}


# ------------------------------------------------------------------------------- TensorBoard


def _records(path):
    """Parses TFRecord framing by hand, checking both CRCs."""
    data = pathlib.Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        (len_crc,) = struct.unpack_from("<I", data, pos + 8)
        assert len_crc == writers.masked_crc32c(data[pos:pos + 8])
        payload = data[pos + 12:pos + 12 + length]
        (crc,) = struct.unpack_from("<I", data, pos + 12 + length)
        assert crc == writers.masked_crc32c(payload)
        out.append(payload)
        pos += 16 + length
    assert pos == len(data)
    return out


def test_tensorboard_event_file_round_trip(tmp_path):
    logdir = tmp_path / "tb"
    values = {s: {"train/loss": 1.0 / (s + 1), "eval/acc": 0.1 * s, "lr": 3e-4}
              for s in (0, 1, 5, 10, 1000)}
    with TensorBoardWriter(logdir) as tb:
        for step, scalars in values.items():
            tb.scalars(step, scalars)
        tb.flush()
    names = os.listdir(logdir)
    assert len(names) == 1
    parts = names[0].split(".")
    assert names[0].startswith("events.out.tfevents.") and names[0].endswith(".alignax")
    assert parts[3].isdigit()
    records = _records(logdir / names[0])
    assert len(records) == 1 + len(values)
    assert b"brain.Event:2" in records[0]

    acc = _event_accumulator(logdir)
    assert sorted(acc.Tags()["scalars"]) == ["eval/acc", "lr", "train/loss"]
    for tag in ("train/loss", "eval/acc", "lr"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(values)
        np.testing.assert_array_equal(
            np.array([e.value for e in events], np.float32),
            np.array([values[s][tag] for s in values], np.float32),
        )


def test_tensorboard_special_values_and_large_steps(tmp_path):
    with TensorBoardWriter(tmp_path) as tb:
        tb.scalars(2**40, {"x": float("nan"), "y": float("-inf"), "z": True})
    acc = _event_accumulator(tmp_path)
    assert acc.Scalars("x")[0].step == 2**40
    assert math.isnan(acc.Scalars("x")[0].value)
    assert acc.Scalars("y")[0].value == -math.inf
    assert acc.Scalars("z")[0].value == 1.0


def test_tensorboard_writers_in_the_same_second_get_distinct_files(tmp_path):
    with TensorBoardWriter(tmp_path) as a, TensorBoardWriter(tmp_path) as b:
        a.scalars(1, {"v": 1.0})
        b.scalars(2, {"v": 2.0})
    assert a.path != b.path
    assert len(os.listdir(tmp_path)) == 2


def test_corrupted_event_payload_is_detected_by_crc(tmp_path):
    with TensorBoardWriter(tmp_path) as tb:
        tb.scalars(1, {"v": 1.0})
    data = bytearray(pathlib.Path(tb.path).read_bytes())
    data[-6] ^= 0xFF  # inside the last payload
    pathlib.Path(tb.path).write_bytes(bytes(data))
    with pytest.raises(AssertionError):
        _records(tb.path)


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
