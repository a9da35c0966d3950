"""A corrupt or truncated file of each kind a run writes: a warning and a fallback, or one line.

Every case starts from a copy of one complete run of the tiny experiment (8 steps, checkpoints
every 2, the newest two kept: steps 6 and 8), damages one file the way a kill, a disk error or a
copy cut short leaves it, and runs the same command again:

- a checkpoint's array data truncated or overwritten: CheckpointFallbackWarning, resume from the
  older step (the bad one moved to checkpoints/corrupt-<step>), results identical; every
  checkpoint unreadable: one line naming the checkpoints folder to move or delete;
- metrics.jsonl (and timings.jsonl, the event file) cut mid-line by a kill before the next
  checkpoint: the resumed run drops the torn tails and ends byte-identical; a corrupt complete
  line: one line naming the file and line;
- config.json truncated: one line naming the file to delete; deleting it resumes;
- summary.json overwritten: rewritten;
- a cached run's (alignax.algorithms.cached) config.json truncated or not UTF-8: rewritten with a
  CachedConfigWarning; its newest checkpoint unreadable: the older one is used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings

import pytest

from tests.faults import _tiny

RUN = os.path.join("default", "seed_0")  # the seed's run folder inside a workdir


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    """(spec, workdir, outputs) of one uninterrupted run."""
    root = tmp_path_factory.mktemp("complete")
    spec = _tiny.write_experiment(root)
    workdir = root / "w"
    out = _tiny.run_cli(spec, workdir, cache_dir=root / "cache")
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(workdir / RUN / "checkpoints")) == ["6", "8"]
    return spec, workdir, _tiny.outputs(workdir)


def _copy(complete, tmp_path):
    spec, workdir, _ = complete
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    return copy


def _rerun(complete, workdir, tmp_path):
    return _tiny.run_cli(complete[0], workdir, cache_dir=tmp_path / "cache")


def _one_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("alignax: "), lines[0]
    return lines[0][len("alignax: "):]


def _data_files(step_dir):
    """The array data of a checkpoint step (orbax's merged OCDBT data files)."""
    folder = os.path.join(step_dir, "state", "d")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _garbage(path):
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write((bytes(range(256)) * (size // 256 + 1))[:size])


# ------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncated", "garbage"])
def test_unreadable_newest_checkpoint_falls_back_to_the_older_one(complete, tmp_path, damage):
    workdir = _copy(complete, tmp_path)
    checkpoints = workdir / RUN / "checkpoints"
    for path in _data_files(checkpoints / "8"):
        damage(path)
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "CheckpointFallbackWarning: checkpoint at step 8" in out.stderr
    assert (f"resumed from step 6 and moved step 8 aside to {checkpoints / 'corrupt-8'}"
            in out.stderr)
    assert _tiny.resumed_from(out.stdout) == 6
    assert sorted(os.listdir(checkpoints)) == ["6", "8", "corrupt-8"]  # step 8 saved again
    assert _tiny.outputs(workdir) == complete[2]


def test_no_readable_checkpoint_is_one_line_naming_the_folder(complete, tmp_path):
    workdir = _copy(complete, tmp_path)
    checkpoints = workdir / RUN / "checkpoints"
    for step in ("6", "8"):
        for path in _data_files(checkpoints / step):
            _truncate(path)
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 2
    line = _one_line(out)
    assert line.startswith(f"none of the 2 checkpoints in {checkpoints} (steps 8, 6) can be "
                           f"restored; move or delete {checkpoints} to start this run afresh "
                           "(newest: step 8: ValueError: "), line
    assert sorted(os.listdir(checkpoints)) == ["6", "8"]  # nothing moved


# ----------------------------------------------------------------------------- metrics.jsonl


def test_torn_tails_of_a_kill_before_the_next_checkpoint_are_repaired(complete, tmp_path):
    # killed while writing step 8's line, before checkpoint 8: every appended file ends torn
    workdir = _copy(complete, tmp_path)
    run = workdir / RUN
    shutil.rmtree(run / "checkpoints" / "8")
    metrics = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    assert len(metrics) == 8
    (run / "metrics.jsonl").write_bytes(b"".join(metrics[:7]) + metrics[7][:25])
    timings = (run / "timings.jsonl").read_bytes().splitlines(keepends=True)
    (run / "timings.jsonl").write_bytes(b"".join(timings[:7]) + timings[7][:10])
    (event_file,) = (run / "tensorboard").iterdir()
    os.truncate(event_file, os.path.getsize(event_file) - 7)
    (workdir / "summary.json").write_text('{"results": ')  # a garbage one is rewritten too
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 0, out.stderr
    assert _tiny.resumed_from(out.stdout) == 6
    assert _tiny.outputs(workdir) == complete[2]
    assert [json.loads(line)["step"] for line in open(run / "timings.jsonl")] == list(
        range(1, 9))
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run / "tensorboard"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    expected = [json.loads(line)["m001"] for line in metrics]
    assert [e.step for e in acc.Scalars("m001")] == list(range(1, 9))
    assert [e.value for e in acc.Scalars("m001")] == pytest.approx(expected, rel=1e-6)


def test_a_line_cut_inside_a_utf8_character_is_dropped_byte_for_byte(tmp_path):
    from alignax.train.writers import MetricsWriter, read_metrics

    with MetricsWriter(tmp_path, tensorboard=False) as w:
        for step in (1, 2, 3):
            w.write(step, {"note": "température", "x": step / 3})
    path = tmp_path / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    torn = lines[2][:lines[2].index("é".encode()) + 1]  # the first byte of "é"
    path.write_bytes(lines[0] + lines[1] + torn)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.truncate_after(2)
    assert path.read_bytes() == lines[0] + lines[1]


def test_a_corrupt_complete_metrics_line_is_one_line_naming_it(complete, tmp_path):
    workdir = _copy(complete, tmp_path)
    path = workdir / RUN / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b"\x00" * (len(lines[2]) - 1) + b"\n"  # a disk error zeroed a block
    path.write_bytes(b"".join(lines))
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 2
    line = _one_line(out)
    assert line.startswith(f"{path}, line 3: corrupt metrics line (Expecting value): "), line
    assert line.endswith("; delete that line (its metrics are lost) and run again to resume")


# ------------------------------------------------------------------------------- config.json


def test_truncated_config_json_is_one_line_naming_it_and_deleting_it_resumes(complete,
                                                                             tmp_path):
    workdir = _copy(complete, tmp_path)
    config = workdir / "config.json"
    original = config.read_bytes()
    _truncate(config)
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 2
    line = _one_line(out)
    assert re.fullmatch(
        re.escape(f"{config} is unreadable (") + r"Expecting [^;]+ at line \d+" + re.escape(
            f"; a run killed while writing it?): if {workdir} was run with this same config, "
            f"delete {config} and run again to resume; otherwise choose another --workdir"),
        line), line
    config.unlink()  # as the line says
    out = _rerun(complete, workdir, tmp_path)
    assert out.returncode == 0, out.stderr
    assert _tiny.resumed_from(out.stdout) == 8  # nothing trained again
    assert config.read_bytes() == original
    assert _tiny.outputs(workdir) == complete[2]


# ----------------------------------------------------------------------------- cached runs


def _tiny_train(config, workdir):
    import jax
    import jax.numpy as jnp

    from alignax.train.loop import run_loop

    noise = jax.random.normal(jax.random.key(config["seed"]), (16,))

    @jax.jit
    def step_fn(state, i):
        w = 0.5 * state["w"] + noise * i
        return {"w": w}, {"norm": jnp.linalg.norm(w)}

    return run_loop(workdir, init_state=lambda: {"w": jnp.zeros(16)}, step_fn=step_fn,
                    num_steps=config["steps"], checkpoint_every=2, progress=False)


CACHED = {"seed": 0, "steps": 8}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """(cache dir, run folder, first result, its files) of one cached run."""
    from alignax.algorithms.cached import cached_run, config_hash

    cache = tmp_path_factory.mktemp("cache")
    first = cached_run("tiny", CACHED, _tiny_train, cache_dir=str(cache))
    assert first.resumed_from is None
    folder = cache / f"tiny-{config_hash(CACHED)}"
    files = {name: (folder / name).read_bytes() for name in ("config.json", "metrics.jsonl")}
    return cache, folder, first, files


def _copy_cache(cached, tmp_path):
    cache, folder, _, _ = cached
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache", tmp_path / "cache" / folder.name


@pytest.mark.parametrize("content", [b'{\n "seed": 0,\n "st', b"\xff\xfe garbage"],
                         ids=["truncated", "not-utf8"])
def test_unreadable_cached_config_json_is_rewritten_with_a_warning(cached, tmp_path, content):
    from alignax.algorithms.cached import CachedConfigWarning, cached_run

    cache, folder = _copy_cache(cached, tmp_path)
    (folder / "config.json").write_bytes(content)
    with pytest.warns(CachedConfigWarning, match=r"config\.json was unreadable .*rewrote it"):
        again = cached_run("tiny", CACHED, _tiny_train, cache_dir=str(cache))
    assert again.resumed_from == 8  # restored, not trained again
    assert (folder / "config.json").read_bytes() == cached[3]["config.json"]
    assert again.history == cached[2].history
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # now readable: no warning
        cached_run("tiny", CACHED, _tiny_train, cache_dir=str(cache))


def test_cached_config_json_of_another_config_names_the_folder_to_delete(cached, tmp_path):
    from alignax.algorithms.cached import cached_run

    cache, folder = _copy_cache(cached, tmp_path)
    (folder / "config.json").write_text(json.dumps({"seed": 1, "steps": 8}))
    with pytest.raises(ValueError, match=f"another config .*; delete the folder {folder}$"):
        cached_run("tiny", CACHED, _tiny_train, cache_dir=str(cache))


def test_unreadable_newest_checkpoint_of_a_cached_run_falls_back(cached, tmp_path):
    from alignax.algorithms.cached import cached_run
    from alignax.train.checkpoint import CheckpointFallbackWarning

    cache, folder = _copy_cache(cached, tmp_path)
    _truncate(folder / "checkpoints" / "8" / "state" / "_METADATA")
    with pytest.warns(CheckpointFallbackWarning, match="resumed from step 6"):
        again = cached_run("tiny", CACHED, _tiny_train, cache_dir=str(cache))
    assert again.resumed_from == 6
    assert (folder / "metrics.jsonl").read_bytes() == cached[3]["metrics.jsonl"]
    assert again.history == cached[2].history
    assert (again.state["w"] == cached[2].state["w"]).all()
