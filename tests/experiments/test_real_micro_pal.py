"""The `:real` configs of the user-conditioned reward models (experiments/pal.py and
experiments/micro.py): PAL-A and MiCRo on the frozen embeddings of a tiny random checkpoint, for
a conversational paired dataset with a `user_id` column written here (4 users x 8 pairs), each
run for a few updates through `alignax run`; a dataset without the column fails in one line."""

import numpy as np
import pytest

from alignax import cli
from tests.experiments import run_real, write_real_world

datasets = pytest.importorskip("datasets")

USERS = 4
PAIRS_PER_USER = 8


def _words(rng, n):
    return " ".join(f"w{i}" for i in rng.integers(0, 26, n))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_users")
    out = write_real_world(root)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(USERS * PAIRS_PER_USER):  # users interleaved: u0, u1, u2, u3, u0, ...
        a, b = _words(rng, 2), _words(rng, 2)
        user = i % USERS
        # users 0 and 2 prefer the response with the smaller first word, 1 and 3 the larger
        small_first = int(a.split()[0][1:]) <= int(b.split()[0][1:])
        chosen, rejected = (a, b) if small_first == (user % 2 == 0) else (b, a)
        rows.append({"prompt": [{"role": "user", "content": _words(rng, 3)}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "user_id": f"user{user}"})
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "user_pairs"))
    out["user_pairs"] = str(root / "user_pairs")
    return out


def _metrics(summary):
    return {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}


TRAIN = ("--config.train.steps=4", "--config.train.steps_per_log=2",
         "--config.train.learning_rates=[0.01]", "--config.data.max_length=16")


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_pal_real(world, tmp_path):
    summary = run_real("pal", world, tmp_path, "user_pairs", *TRAIN,
                       "--config.pal.num_prototypes=[2, 3]", "--config.pal.out_dim=4",
                       "--config.pal.unseen_users=1", "--config.pal.few_shot=2",
                       "--config.few_shot.steps=2")
    m = _metrics(summary)
    assert summary["claims"] == []
    # 3 seen users x 8 pairs, each split 6 / 1 / 1; the unseen user's 2 shots and 6 tests
    assert (m["num_seen_users"], m["num_unseen_users"]) == (3, 1)
    assert (m["num_train_pairs"], m["num_val_pairs"], m["num_test_pairs"],
            m["num_new_test_pairs"]) == (18, 3, 3, 6)
    assert m["chosen_num_prototypes"] in (2, 3) and m["chosen_learning_rate"] == 0.01
    for key in ("test_seen_accuracy", "test_unseen_accuracy_0", "test_unseen_accuracy_2",
                "bt_test_seen_accuracy", "bt_test_unseen_accuracy", "val_accuracy",
                "val_accuracy_K2", "val_accuracy_K3", "bt_val_accuracy"):
        assert 0 <= m[key] <= 1, key
    assert m["val_accuracy"] == max(m["val_accuracy_K2"], m["val_accuracy_K3"])
    assert np.isfinite(m["final_loss"]) and np.isfinite(m["bt_final_loss"])


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_micro_real(world, tmp_path):
    summary = run_real("micro", world, tmp_path, "user_pairs", *TRAIN,
                       "--config.micro.num_heads=2", "--config.micro.test_users=1",
                       "--config.micro.eval_labels=[1, 2]")
    m = _metrics(summary)
    assert summary["claims"] == []
    # 24 pairs of the 3 training users split 18 / 3 / 3; the test user's 2 labels and 6 tests
    assert (m["num_train_users"], m["num_test_users"]) == (3, 1)
    assert (m["num_train_pairs"], m["num_val_pairs"], m["num_test_seen_pairs"],
            m["num_test_pairs"]) == (18, 3, 3, 6)
    for key in ("test_routed_accuracy_0", "test_routed_accuracy_1", "test_routed_accuracy_2",
                "bt_test_accuracy", "test_seen_accuracy", "bt_test_seen_accuracy",
                "val_accuracy", "bt_val_accuracy"):
        assert 0 <= m[key] <= 1, key
    # 6 test pairs (ties of the mixture count 1/2): every accuracy is a multiple of 1/12
    for n in (0, 1, 2):  # float32 means
        twelfths = 12 * m[f"test_routed_accuracy_{n}"]
        assert abs(twelfths - round(twelfths)) < 1e-5
    assert np.isfinite(m["final_loss"]) and np.isfinite(m["bt_final_loss"])


def _run_failing(name, world, tmp_path, data, *overrides):
    argv = ["run", f"experiments/{name}.py:real", "--workdir", str(tmp_path / name),
            f"--config.model.path={world['lm']}", f"--config.data.path={world[data]}",
            "--config.data.eval_fraction=0.125", *overrides]
    return cli.main(argv)


@pytest.mark.parametrize("name", ["pal", "micro"])
def test_a_dataset_without_user_ids_fails_in_one_line(name, world, tmp_path, capsys,
                                                      monkeypatch):
    from tests.experiments import REPO

    monkeypatch.chdir(REPO)
    assert _run_failing(name, world, tmp_path, "pairs", "--config.data.max_length=16") == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "pairs:0: field 'user_id': missing" in err
    assert not (tmp_path / name / "summary.json").exists()

