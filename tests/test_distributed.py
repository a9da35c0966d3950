"""The same experiment on 1 CPU device and on 2 processes x 4 devices (a 2x2x2 mesh).

The 2-process run shards the model and the batches over the same 8-device mesh that one process
with 8 simulated devices would, and adds the multi-process paths (global batches, collective
checkpoints); a separate 8-device single-process run (160 s of the suite with this one) was
dropped as a subset of it. The online recipes on a mesh in one process: test_online_mesh.py.
"""

import json
import os
import subprocess

import pytest

from tests import runs

MESH_8 = ("--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")


def _losses(workdir) -> dict[str, list[float]]:
    out = {}
    for rel, text in runs.metrics_files(workdir).items():
        rows = [json.loads(line) for line in text.splitlines()]
        out[rel] = [r["train/loss"] for r in rows if "train/loss" in r]
    return out


@pytest.mark.slow
def test_losses_agree_on_1_device_and_2_processes(tmp_path):
    one = tmp_path / "one"
    runs.run(one)

    two = tmp_path / "two"
    port = runs.free_port()
    procs = [
        subprocess.Popen(
            runs.command(two, *MESH_8) + ["--coordinator", f"127.0.0.1:{port}",
                                          "--num-processes", "2", "--process-id", str(i)],
            cwd=runs.REPO, env=runs.env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"{out}\n{err}"

    ref = _losses(one)
    assert set(ref) == {os.path.join("default", "seed_0", s, "metrics.jsonl")
                        for s in ("sft", "rm", "dpo")}
    for name, other in (("2 processes", _losses(two)),):
        assert set(other) == set(ref)
        for rel in ref:
            assert len(other[rel]) == len(ref[rel]) == 20
            diffs = [abs(a - b) for a, b in zip(ref[rel], other[rel])]
            assert max(diffs) <= 1e-5, f"{name} {rel}: max |dloss| = {max(diffs):.3g}"


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """The checkpoint after a SIGTERM is collective: a process that did not receive the signal
    must stop at the same step, not run ahead while the other waits in the save."""
    import re
    import signal
    import time

    port = runs.free_port()
    long_sft = ("--config.mesh.data=2", "--config.sft.train.steps=100000",
                "--config.sft.train.checkpoint_every=100000")
    procs = [
        subprocess.Popen(
            runs.command(tmp_path, *long_sft) + [
                "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                "--process-id", str(i)],
            cwd=runs.REPO, env=runs.env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for i in range(2)
    ]
    try:
        start = time.time()
        while runs.count_metric_lines(tmp_path) < 5:  # SFT is training on both processes
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.time() - start < 300, "no progress"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=120) for p in procs]  # before the fix: a hang
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    steps = []
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 143, err[-3000:]
        found = re.findall(r"SIGTERM \(preemption notice\) at step (\d+)", err)
        assert len(found) == 1, err[-3000:]
        steps.append(int(found[0]))
    assert steps[0] == steps[1]
    ckpt = tmp_path / "default" / "seed_0" / "sft" / "checkpoints" / str(steps[0])
    assert ckpt.is_dir(), sorted(os.listdir(ckpt.parent))
