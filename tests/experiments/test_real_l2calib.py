"""experiments/l2calib.py:real on a synthetic pair of pose files written by the test: the pose
readers (TUM-style .csv with timestamps, .npy rows, .npy 4x4 matrices), the one-line config
errors, and the Bingham calibration end to end (the estimate and its held-out ATE)."""

import json
import math
import os

import numpy as np
import pytest

from alignax import cli, experiment
from alignax.ops import rotations as rot
from tests.experiments import REPO

SPEC = os.path.join(REPO, "experiments", "l2calib.py:real")
TRUE_QUAT = np.array([math.cos(1.0), *(math.sin(1.0) * np.array([1.0, 2.0, 3.0]) / 14**0.5)])
TRUE_TRANS = np.array([0.2, -0.1, 0.3])


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(os.path.join(REPO, "experiments", "l2calib.py"))


def _matrices(quat, pos):
    out = np.tile(np.eye(4), (len(pos), 1, 1))
    out[:, :3, :3] = np.asarray(rot.quat_to_matrix(np.asarray(quat, np.float32)))
    out[:, :3, 3] = pos
    return out


def _tum(stamps, mats):
    q = np.asarray(rot.matrix_to_quat(np.asarray(mats[:, :3, :3], np.float32)), np.float64)
    return np.column_stack([stamps, mats[:, :3, 3], q[:, 1:], q[:, :1]])  # t x y z qx qy qz qw


def write_pair(folder, frames=60, seed=0):
    """A's poses (.csv, TUM rows with timestamps and a header) and B = A X in another world
    frame (.npy rows with timestamps, and .npy 4x4 matrices); returns the three paths."""
    rng = np.random.default_rng(seed)
    time = np.linspace(0, 2 * np.pi, frames)
    pos = np.stack([1.5 * np.sin(time), np.sin(2 * time + 1.0), 0.8 * np.cos(3 * time)], -1)
    rotvec = np.stack([0.6 * np.sin(time), 0.5 * np.sin(2 * time + 0.3), 0.7 * np.cos(time)], -1)
    a = _matrices(np.asarray(rot.quat_from_rotvec(rotvec.astype(np.float32))), pos)
    x = _matrices(TRUE_QUAT[None], TRUE_TRANS[None])[0]
    g = _matrices(rng.normal(size=(1, 4)) / 2, rng.normal(size=(1, 3)))[0]  # B's own world
    b = g @ a @ x
    stamps = 100.0 + 0.1 * np.arange(frames)
    ref, sensor, sensor_mats = (os.path.join(folder, n) for n in
                                ("imu.csv", "lidar.npy", "lidar_4x4.npy"))
    with open(ref, "w") as f:
        f.write("# reference trajectory\ntimestamp,tx,ty,tz,qx,qy,qz,qw\n")
        for row in _tum(stamps, a):
            f.write(",".join(f"{v:.9f}" for v in row) + "\n")
    np.save(sensor, _tum(stamps, b))
    np.save(sensor_mats, b)
    return ref, sensor, sensor_mats


def test_pose_files_are_read_in_every_format(module, tmp_path):
    ref, sensor, sensor_mats = write_pair(str(tmp_path))
    stamps, mats, pos = module.load_poses(ref)
    assert stamps.shape == (60,) and mats.shape == (60, 3, 3) and pos.shape == (60, 3)
    np.testing.assert_allclose(stamps[:2], [100.0, 100.1])
    _, r1, p1 = module.load_poses(sensor)
    none, r2, p2 = module.load_poses(sensor_mats)
    assert none is None
    np.testing.assert_allclose(r1, r2, atol=1e-5)
    np.testing.assert_allclose(p1, p2, atol=1e-9)
    # anchored pair: the true extrinsic predicts B's positions exactly
    config = module.get_config("real")
    with config.unlocked():
        config.data.reference, config.data.sensor = ref, sensor_mats
    pair = module.load_pair(config)
    r_x = rot.quat_to_matrix(np.asarray(TRUE_QUAT, np.float32))
    assert float(module.ate(r_x, np.asarray(TRUE_TRANS, np.float32), pair)) < 1e-4
    assert float(module.ate(np.eye(3, dtype=np.float32), np.zeros(3, np.float32), pair)) > 0.5


def test_real_config_errors_name_the_key(module, tmp_path, capsys):
    ref, sensor, _ = write_pair(str(tmp_path))
    config = module.get_config("real")
    with pytest.raises(ValueError, match="data.reference"):
        module.validate(config)
    with config.unlocked():
        config.data.reference, config.data.sensor = ref, sensor
        config.data.eval_fraction = 1.5
    with pytest.raises(ValueError, match="data.eval_fraction"):
        module.validate(config)
    with config.unlocked():
        config.data.eval_fraction = 0.2
        config.data.time_tolerance = 1e-3
    short = os.path.join(str(tmp_path), "short.npy")
    np.save(short, np.load(sensor)[:10])
    with config.unlocked():
        config.data.sensor = short
    with pytest.raises(ValueError, match="aligned in time"):
        module.load_pair(config)
    shifted = os.path.join(str(tmp_path), "shifted.npy")
    rows = np.load(sensor)
    rows[:, 0] += 0.05
    np.save(shifted, rows)
    with config.unlocked():
        config.data.sensor = shifted
    with pytest.raises(ValueError, match="data.time_tolerance"):
        module.load_pair(config)
    bad = os.path.join(str(tmp_path), "bad.csv")
    with open(bad, "w") as f:
        f.write("1 2 3 0 0 0 1\n1 2 3 0 0 zero 1\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        module.load_poses(bad)
    argv = ["run", SPEC, "--workdir", str(tmp_path / "w"), f"--config.data.reference={ref}",
            f"--config.data.sensor={sensor}", "--config.train.step=2"]
    assert cli.main(argv) != 0
    assert "did you mean train.steps" in capsys.readouterr().err


def _run(tmp_path, ref, sensor, *overrides):
    argv = ["run", SPEC, "--workdir", str(tmp_path / "calib"), f"--config.data.reference={ref}",
            f"--config.data.sensor={sensor}", *overrides]
    assert cli.main(argv) == 0
    with open(tmp_path / "calib" / "summary.json") as f:
        return json.load(f)


def test_real_run_writes_the_estimate(tmp_path):
    ref, sensor, _ = write_pair(str(tmp_path))
    summary = _run(tmp_path, ref, sensor, "--config.train.steps=2", "--config.train.samples=4",
                   "--config.train.steps_per_log=1")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert m["frames_train"] == 48 and m["frames_heldout"] == 12
    assert abs(np.linalg.norm([m[f"quat_{c}"] for c in "wxyz"]) - 1) < 1e-5
    assert m["heldout_ate_m"] > 0 and m["identity_heldout_ate_m"] > 0
    with open(tmp_path / "calib" / "default" / "extrinsic.json") as f:
        saved = json.load(f)
    np.testing.assert_allclose(saved["quaternion_wxyz"], [m[f"quat_{c}"] for c in "wxyz"])


@pytest.mark.slow  # an end-to-end calibration (hundreds of updates)
def test_real_run_recovers_the_extrinsic(tmp_path):
    ref, _, sensor_mats = write_pair(str(tmp_path))
    summary = _run(tmp_path, ref, sensor_mats, "--config.train.steps=600")
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    quat = np.array([m[f"quat_{c}"] for c in "wxyz"], np.float32)
    err = math.degrees(float(rot.quat_angle(quat, np.asarray(TRUE_QUAT, np.float32))))
    assert err < 3.0, err
    trans = np.array([m[f"trans_{c}_m"] for c in "xyz"])
    assert np.linalg.norm(trans - TRUE_TRANS) < 0.1
    assert m["heldout_ate_m"] < 0.2 * m["identity_heldout_ate_m"]
