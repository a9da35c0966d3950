"""An online recipe (GRPO) on 2 processes x 2 devices equals the same run in one process with 4.

Both runs use the mesh data=2 x tensor=2 over 4 CPU devices (tests/online_distributed_script.py).
On 2 processes each one draws and places only its rows of the iteration's prompts, samples them
on its devices, scores its rollouts with the host (numpy) reward function, and the advantages,
update and metrics are computed on the global arrays; checkpoints are collective. The one-process
run of the same mesh is the reference (the one-device equality of the mesh run is
tests/algorithms/test_online_mesh.py). PPO, RAFT and online DPO take the same paths
(`online.rewards_where_sampled`, `Placement.to_host`); the script runs them, two objectives and
a jitted reward on the global rollout (`online.global_reward`) with `--recipe` (checked by hand:
equal to one process too).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import runs

SCRIPT = os.path.join(runs.REPO, "tests", "online_distributed_script.py")


def test_one_process_paths_are_the_plain_ones():
    """In one process the multi-process helpers are identities (no behaviour change)."""
    from alignax.algorithms import online
    from alignax.train import sharding as shd

    place = shd.Placement(shd.make_mesh(data=-1))
    assert not place.multiprocess and place.row_range(8) == (0, 8)

    def reward(rollout):
        return rollout

    assert online.rewards_where_sampled(reward, place) is reward
    marked = online.global_reward(reward)
    assert marked.global_rollout and marked(3) == 3
    assert online.rewards_where_sampled(marked, place) is marked
    x = np.arange(8.0, dtype=np.float32)
    g = place.from_local_rows(x, 8)
    assert g.sharding == shd.batch_sharding(place.mesh)
    np.testing.assert_array_equal(place.local_rows(g), x)
    np.testing.assert_array_equal(place.to_host(g), x)
    assert jax.process_count() == 1


@pytest.mark.slow
def test_grpo_on_2_processes_equals_one_process(tmp_path):
    ref = subprocess.Popen(  # the one-process reference runs alongside the pair
        [sys.executable, SCRIPT, "--out", str(tmp_path / "one.json"),
         "--workdir", str(tmp_path / "one")],
        cwd=runs.REPO, env=runs.env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        runs.run_processes([sys.executable, SCRIPT, "--out", str(tmp_path / "two.json"),
                            "--workdir", str(tmp_path / "two")], num_processes=2, devices=2)
        _, err = ref.communicate(timeout=600)
    finally:
        if ref.poll() is None:
            ref.kill()
    assert ref.returncode == 0, err[-4000:]

    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    two_1 = json.loads((tmp_path / "two.json.1").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    # each process scored the 8 rows (2 prompts x 4 samples) it sampled, of 16 per iteration
    assert one["reward_rows"] == [16] * 3
    assert two["reward_rows"] == two_1["reward_rows"] == [8] * 3
    assert len(one["history"]) == len(two["history"]) == 3
    for it, (a, b) in enumerate(zip(one["history"], two["history"])):
        assert set(a) == set(b)
        # the same samples: the host rewards of the same tokens are equal exactly
        assert a["reward"] == b["reward"] and a["reward_std"] == b["reward_std"], it
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (
                f"iteration {it} {key}: one process {a[key]} vs two {b[key]}")
    assert any(row["reward"] > 0 for row in one["history"])  # the reward is not trivially 0
    # process 0 alone wrote the metrics; both saved the collective checkpoints
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["2", "3"]
