"""MJ-Bench toy: seeded runs are bit-reproducible and the harness sees the planted properties."""

import importlib.util
import os

import numpy as np

from alignax.tasks.splits import check_disjoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "mj_bench.py")
    spec = importlib.util.spec_from_file_location("mj_bench_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(mod, judge, seed, workdir):
    config = mod.get_config("smoke")
    config.judge = judge
    config.seeds = [seed]
    return mod.run_seeds(config, str(workdir))[seed]


def test_seeded_runs_are_bit_reproducible_and_seeds_differ(tmp_path):
    mod = _module()
    for judge in ("bt_rm", "likert"):
        # two runs in fresh folders: the bt_rm judge is trained again, not restored
        a, b = _run(mod, judge, 3, tmp_path / judge / "a"), _run(mod, judge, 3,
                                                                  tmp_path / judge / "b")
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), (judge, k, a[k], b[k])
        assert a["bit_reproducible"] == 1.0
    assert os.path.exists(tmp_path / "bt_rm" / "a" / "pass_2" / "bt_rm" / "metrics.jsonl")
    c = _run(mod, "likert", 4, tmp_path / "likert4")
    assert any(c[k] != a[k] for k in a if k != "bit_reproducible")


def test_planted_bias_and_ties_are_recovered(tmp_path):
    mod = _module()
    fair, biased = _run(mod, "numeric", 0, tmp_path / "n"), _run(mod, "biased", 0, tmp_path / "b")
    assert fair["test_ges"] - biased["test_ges"] > 0.1
    assert fair["test_nds"] - biased["test_nds"] > 0.2
    assert biased["test_favoured_group_share"] > 0.8  # the planted bias favours group 0
    assert _run(mod, "likert", 0, tmp_path / "l")["test_tie_rate"] > fair["test_tie_rate"] > _run(
        mod, "cosine", 0, tmp_path / "c")["test_tie_rate"]


def test_splits_are_disjoint_and_the_bt_judge_is_early_stopped_on_validation(tmp_path):
    mod = _module()
    config = mod.get_config("smoke")
    config.judge = "bt_rm"
    world, ev, train, val = mod.make_seed_data(config, 2)
    rows = lambda d: {r.tobytes() for r in d["chosen"]}  # noqa: E731
    test = {r.tobytes() for c in mod.CATEGORIES for r in ev["pairs"][c]["chosen"]}
    check_disjoint(train=rows(train), validation=rows(val), test=test)
    out = _run(mod, "bt_rm", 2, tmp_path / "bt")
    steps = config.train.steps
    assert 0 < out["chosen_steps"] <= steps
    assert out["chosen_steps"] % 20 == 0 or out["chosen_steps"] == steps
    assert 0.5 < out["val_accuracy"] <= 1.0
