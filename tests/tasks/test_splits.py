"""Split seeds: disjoint train / validation / test streams; recorded selection on validation."""

import json
import math

import numpy as np
import pytest

from alignax.tasks.splits import SplitSeeds, check_disjoint, choose_on_validation, split_seeds


def test_split_seeds_are_disjoint_within_and_across_seeds_0_to_999():
    splits = [split_seeds(s) for s in range(1000)]
    train = [x.train for x in splits]
    validation = [x.validation for x in splits]
    test = [x.test for x in splits]
    everything = train + validation + test
    assert len(set(everything)) == 3000  # no data seed used twice, anywhere
    check_disjoint(train=train, validation=validation, test=test)
    assert split_seeds(0) == SplitSeeds(0, 1, 2) and split_seeds(7) == (21, 22, 23)
    train_seed, validation_seed, test_seed = split_seeds(np.int64(5))  # unpacks; numpy ints
    assert (train_seed, validation_seed, test_seed) == (15, 16, 17)
    assert all(isinstance(v, int) for v in split_seeds(np.int32(3)))


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.0, TypeError), (True, TypeError),
                                        ("3", TypeError)])
def test_split_seeds_refuses_what_is_not_a_seed(bad, error):
    with pytest.raises(error, match="experiment seed"):
        split_seeds(bad)


def test_check_disjoint_names_the_overlap():
    check_disjoint([1, 2], [3], train=[4], test=[5, 6])  # disjoint: no error
    with pytest.raises(ValueError) as info:
        check_disjoint(train=[0, 3, 6, 9], validation=[1, 4], test=[9, 2, 6])
    assert str(info.value) == "train and test share 2 elements: [6, 9]"
    with pytest.raises(ValueError, match=r"^collection 0 and collection 2 share 1 element: "
                                         r"\['a'\]$"):
        check_disjoint(["a", "b"], ["c"], ["a"])
    with pytest.raises(ValueError, match=r"share 20 elements: \[0, 1, 2, 3, 4, 5, 6, 7, 8, "
                                         r"9\] \(first 10 of 20\)"):
        check_disjoint(range(20), range(30))


def test_choose_on_validation_scores_every_candidate_and_records_them():
    calls = []

    def score(lr):
        calls.append(lr)
        return -(math.log10(lr) + 3) ** 2  # best at 1e-3

    candidates = {"lr=1e-2": 1e-2, "lr=1e-3": 1e-3, "lr=1e-4": 1e-4}
    best, record = choose_on_validation(candidates, score)
    assert best == "lr=1e-3"
    assert calls == [1e-2, 1e-3, 1e-4]  # the whole search, in order
    assert record["chosen"] == "lr=1e-3" and record["maximize"] is True
    assert list(record["scores"]) == ["lr=1e-2", "lr=1e-3", "lr=1e-4"]
    assert record["scores"]["lr=1e-3"] == 0.0
    assert record["scores"]["lr=1e-2"] == pytest.approx(-1.0)
    assert "argmax" in record["procedure"]
    assert json.loads(json.dumps(record, allow_nan=False)) == record  # strict JSON


def test_choose_on_validation_minimizes_breaks_ties_early_and_skips_nan():
    losses = {100: float("nan"), 200: 0.5, 300: 0.25, 400: 0.25, 500: float("inf")}
    best, record = choose_on_validation({k: k for k in losses}, losses.__getitem__,
                                        maximize=False)
    assert best == 300  # the original key comes back; the tie with 400 goes to the earlier
    assert record["chosen"] == "300" and "argmin" in record["procedure"]
    assert record["scores"] == {"100": "nan", "200": 0.5, "300": 0.25, "400": 0.25,
                                "500": "inf"}
    json.dumps(record, allow_nan=False)
    best, _ = choose_on_validation({"a": -1.0, "b": float("inf"), "c": 2.0}, float)
    assert best == "c"  # inf is not a score that wins
    with pytest.raises(ValueError, match="no candidates"):
        choose_on_validation({}, float)
    with pytest.raises(ValueError, match="no finite validation score"):
        choose_on_validation({"a": float("nan")}, float)
