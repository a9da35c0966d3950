"""experiments/spare.py:real on the tiny world of the `:real` tests: rule-based SPARE labels of
text steps against reference steps, a PRM head on a tiny random checkpoint trained 2 steps on
them (`alignax.algorithms.prm.train`), the labels' agreement with the rows' gold labels; the
annotator by hand; the one-line config errors."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "spare.py:real")


def _module():
    return experiment.load_module(SPEC.rsplit(":", 1)[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    out = write_real_world(root)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(16):
        k = int(rng.integers(1, 4))
        ref = [int(x) for x in rng.integers(0, 50, k)]
        # each candidate step states the reference result or a wrong one
        said = [r if rng.random() < 0.7 else r + 100 for r in ref]
        rows.append({"prompt": [{"role": "user", "content": "w1 w2 w3"}],
                     "completions": [f"w{10 + j} = {x}" for j, x in enumerate(said)],
                     "reference": [f"w{20 + j} = {x}" for j, x in enumerate(ref)],
                     "labels": [bool(x) for x in rng.random(k) < 0.6],
                     "answer": f"w{int(rng.integers(10, 26))}"})
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "spare"))
    out["spare"], out["rows"] = str(root / "spare"), rows
    return out


def test_annotator_by_hand():
    m = _module()
    assert m.step_result("so w12 has 1,234.5 apples") == 1234.5
    assert m.step_result("w12 x2") is None and m.step_result("= -3.") == -3.0
    reference = ["a = 4", "b = 4 + 3 = 7", "c = 7 * 2 = 14"]
    # step 2 states no number (kept correct), step 3 is wrong (8), step 4 right again
    steps = ["so 4", "now we add", "then 8", "finally 14"]
    labels, align = m.annotate_steps(steps, reference)
    assert labels == [1, 1, 0, 0] and align == [[0], [], [], [2]]
    assert m.annotate_steps(steps, reference, "local")[0] == [1, 1, 0, 1]
    # one step aligned to several reference steps (same result)
    assert m.annotate_steps(["7"], ["3 + 4 = 7", "7", "x"])[1] == [[0, 1]]
    with pytest.raises(ValueError, match="rule must be one of"):
        m.annotate_steps(steps, reference, "first_error")


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_labels_steps_and_trains_a_prm(world, tmp_path):
    summary = run_real("spare", world, tmp_path, "spare", "--config.data.max_length=24",
                       "--config.data.max_steps=3", "--config.data.step_separator= w0",
                       "--config.prm.train.steps=2", "--config.prm.train.batch_size=4",
                       "--config.prm.train.eval_every=1", "--config.prm.train.progress=False",
                       "--config.vote.num_samples=2", "--config.vote.max_new_tokens=4",
                       "--config.vote.max_prompt_length=12", "--config.vote.answer_marker=w9")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    # the agreement by hand: the annotator's prefix labels against the rows' gold labels
    module, same, total = _module(), 0, 0
    for row in world["rows"]:
        mine, _ = module.annotate_steps(row["completions"], row["reference"])
        same += sum(int(g) == x for g, x in zip(row["labels"], mine))
        total += len(mine)
    assert m["label_agreement"] == pytest.approx(same / total) and m["label_rows"] == 16
    for split in ("val", "test"):
        assert np.isfinite(m[f"{split}_loss"]) and m[f"{split}_loss"] > 0
        for key in ("step_accuracy", "majority_accuracy", "prm_vote_accuracy",
                    "prm_best_of_n_accuracy", "coverage_accuracy"):
            assert 0.0 <= m[f"{split}_{key}"] <= 1.0, (split, key)
    assert m["prm_chosen_step"] in (1.0, 2.0)
    with open(tmp_path / "spare" / "default" / "seed_0" / "selection.json") as f:
        assert set(json.load(f)["scores"]) == {"step=1", "step=2"}


@pytest.mark.parametrize("override, message", [
    ("--config.annotate.rule=first_error", "annotate.rule='first_error' must be one of"),
    ("--config.data.max_steps=0", "data.max_steps=0 must be >= 1"),
])
def test_real_config_errors_are_one_line(world, tmp_path, capsys, override, message):
    argv = ["run", SPEC, "--workdir", str(tmp_path / "x"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['spare']}", override]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
