"""experiments/crm.py:real on the tiny world of the `:real` tests: CRM's two reward models and
the single-RM baseline from a tiny random checkpoint, 2 steps on noisy training labels, each
read at its step chosen on validation; the label flips; the one-line config errors."""

import json
import os

import numpy as np
import pytest

from alignax import cli
from alignax.tasks.simulators import flip_labels
from alignax.tasks.splits import split_seeds
from tests.experiments import REPO, run_real, write_real_world
from tests.test_utils import pair_source

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "crm.py:real")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_crm_real_reports_both_models_their_mean_and_the_baseline(world, tmp_path):
    summary = run_real("crm", world, tmp_path, "pairs", "--config.data.max_length=16",
                       "--config.rm.train.steps=2", "--config.rm.train.batch_size=4",
                       "--config.rm.train.eval_every=1", "--config.rm.train.progress=False",
                       "--config.crm.label_noise=0.4", "--config.crm.max_drop_rate=0.5")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for key in ("test_crm_accuracy", "test_a_accuracy", "test_b_accuracy", "test_bt_accuracy",
                "val_crm_accuracy", "val_bt_accuracy", "test_crm_accuracy_last_step",
                "test_bt_accuracy_last_step", "test_ab_agreement"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["crm_chosen_step"] in (1.0, 2.0) and m["bt_chosen_step"] in (1.0, 2.0)
    # 16 rows, eval_fraction 0.125: 2 test, 2 validation, 12 training pairs, flipped with the
    # run seed's training stream
    _, flipped = flip_labels(np.ones(12, np.int32), rate=0.4,
                             rng=np.random.default_rng([split_seeds(0).train, 1001]))
    assert 0 < flipped.sum() < 12 and m["train_flip_rate"] == flipped.mean()
    run = tmp_path / "crm" / "default" / "seed_0"
    with open(run / "selection.json") as f:
        selection = json.load(f)
    assert selection["crm"]["metric"] == "eval/val_mean_accuracy"
    assert set(selection["crm"]["scores"]) == {"step=1", "step=2"}
    with open(run / "crm" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    # the curriculum: T_warm = 0.25 * 2 steps = 0 updates, so tau_max from the start
    assert [r["train/drop_rate"] for r in rows if "train/drop_rate" in r] == [0.5, 0.5]
    assert all(r["train/kept_fraction"] == 0.5 for r in rows if "train/kept_fraction" in r)


def test_flipped_pairs_swap_both_sides_of_the_flipped_rows_only():
    from alignax import experiment

    crm = experiment.load_module(os.path.join(REPO, "experiments", "crm.py"))
    source = pair_source(n=3)
    flipped = crm.FlippedPairs(source, [False, True, False])
    assert len(flipped) == 3
    for i in (0, 2):
        assert flipped[i] is source[i]
    out, rec = flipped[1], source[1]
    for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
        for part in ("ids", "mask", "response_mask"):
            np.testing.assert_array_equal(out[f"{side}_{part}"], rec[f"{other}_{part}"])
    assert out["gold"] == rec["gold"]  # other fields pass through
    with pytest.raises(ValueError, match="2 flip flags for 3 pairs"):
        crm.FlippedPairs(source, [True, False])


@pytest.mark.parametrize("override, message", [
    ("--config.crm.label_noise=0.5", "crm.label_noise=0.5 must be in [0, 0.5)"),
    ("--config.crm.warmup_fraction=1.5", "crm.warmup_fraction=1.5 must be in [0, 1]"),
    ("--config.crm.max_drop_rate=1.0", "peer_review.max_drop_rate=1.0 must be in [0, 1)"),
    ("--config.rm.loss=bt", "unknown loss 'bt'"),
])
def test_crm_real_config_errors_are_one_line(world, tmp_path, capsys, override, message):
    argv = ["run", SPEC, "--workdir", str(tmp_path / "x"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['pairs']}", override]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "y")]) != 0
    assert "model.path is required by the :real config" in capsys.readouterr().err
