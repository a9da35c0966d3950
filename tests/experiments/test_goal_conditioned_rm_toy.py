"""Goal-conditioned RM toy: the contrastive triplet positions drawn with each minibatch."""

import importlib.util
import os

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    path = os.path.join(REPO, "experiments", "goal_conditioned_rm.py")
    spec = importlib.util.spec_from_file_location("goal_conditioned_rm_toy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_batch_positions_lie_inside_the_solutions():
    mod = _module()
    config = mod.get_config("smoke")
    task = mod.arithmetic.ArithmeticTask(**config.task)
    max_len = task.max_prompt_len() + task.max_solution_len()
    chosen, rejected = mod.make_pairs(task, 64, 0, max_len, "copy")
    data = {f"{side}_{name}": arr for side, enc in (("c", chosen), ("r", rejected))
            for name, arr in zip(("ids", "mask", "start", "end"), enc)}
    batch_fn = jax.jit(mod.make_batch_fn(256))
    for step in range(3):
        b = jax.tree.map(np.asarray, batch_fn(data, jax.random.key(step)))
        assert b["c_ids"].shape == (256, max_len)
        # source before the chosen solution's last token, a strictly later goal up to its EOS
        assert np.all(b["c_start"] <= b["src"]) and np.all(b["src"] < b["pos"])
        assert np.all(b["pos"] <= b["c_end"])
        # the negative goal anywhere in the rejected solution, EOS included
        assert np.all(b["r_start"] <= b["neg"]) and np.all(b["neg"] <= b["r_end"])
        # the rows are whole pairs of the data (chosen and rejected of the same problem)
        for c, r in zip(b["c_ids"], b["r_ids"]):
            assert np.any((data["c_ids"] == c).all(1) & (data["r_ids"] == r).all(1))


def test_pruning_quantile_is_chosen_on_validation_by_savings_within_the_loss_budget():
    mod = _module()
    score = mod._quantile_score(0.01)
    runs = {0.6: {"tokens_saved": 0.27, "acc_loss": 0.0},
            0.7: {"tokens_saved": 0.32, "acc_loss": 0.01},
            0.8: {"tokens_saved": 0.37, "acc_loss": 0.03}}
    best, record = mod.choose_on_validation(runs, score)
    assert best == 0.7 and record["chosen"] == "0.7"  # the most savings with loss <= 1 point
    # none within the budget: the smallest loss
    worse = {k: {**v, "acc_loss": v["acc_loss"] + 0.05} for k, v in runs.items()}
    assert mod.choose_on_validation(worse, score)[0] == 0.6


def test_the_three_splits_draw_different_problems():
    mod = _module()
    config = mod.get_config("smoke")
    task = mod.arithmetic.ArithmeticTask(**config.task)
    max_len = task.max_prompt_len() + task.max_solution_len()
    sp = mod.split_seeds(1)
    ids = [mod.make_pairs(task, 64, s, max_len, "copy")[0][0] for s in sp]
    rows = [{r.tobytes() for r in x} for x in ids]
    # the same finite problem space: a few repeats are possible, most problems differ
    assert len(rows[0] & rows[2]) < 16 and len(rows[1] & rows[2]) < 16
