"""The modular arithmetic testbed: format, exact answers, step labels, corruptions, padding."""

import re

import numpy as np
import pytest

from alignax.tasks import arithmetic as ar
from alignax.tasks.arithmetic import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    ArithmeticTask,
    Problem,
)


def _reference(prompt: str, modulus: int):
    """Independent left-to-right evaluation of a prompt string: (lhs list, results list)."""
    assert prompt.endswith("?")
    nums = [int(x) for x in re.findall(r"\d+", prompt)]
    ops = re.findall(r"[+\-*]", prompt)
    a, lhs, res = nums[0], [], []
    for op, b in zip(ops, nums[1:]):
        lhs.append(a)
        a = {"+": a + b, "-": a - b, "*": a * b}[op] % modulus
        res.append(a)
    return nums[0], ops, nums[1:], lhs, res


def test_vocab_ids_are_unique_and_specials_reserved():
    ids = list(ar.CHAR_TO_ID.values())
    assert len(set(ids)) == len(ids) == len(ar.CHARS)
    assert min(ids) == 3 and max(ids) == VOCAB_SIZE - 1 and VOCAB_SIZE == 20
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 1, 2)
    assert not {PAD_ID, BOS_ID, EOS_ID} & set(ids)
    assert set(ar.encode("0123456789+-*=;?>")) == set(ids)


def test_encode_decode_round_trip():
    text = "<bos>12+3*4?1+3=4;4*4=6;>6<eos><pad>"
    ids = ar.encode(text)
    assert ids[0] == BOS_ID and ids[-2:] == [EOS_ID, PAD_ID]
    assert ar.decode(ids) == text
    assert ar.decode(ids, skip_special=True) == "12+3*4?1+3=4;4*4=6;>6"
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(0, VOCAB_SIZE, size=30).tolist()
        assert ar.encode(ar.decode(ids)) == ids
    with pytest.raises(ValueError):
        ar.encode("3/4")
    with pytest.raises(ValueError):
        ar.encode("<unk>")
    with pytest.raises(ValueError):
        ar.decode([VOCAB_SIZE])


def test_known_example_left_to_right_and_wrapping_subtraction():
    p = Problem(10, 3, ("+", "*", "-"), (4, 2, 1))
    assert ar.prompt_text(p) == "3+4*2-1?"
    assert ar.solution_text(p) == "3+4=7;7*2=4;4-1=3;>3"
    assert p.answer == 3 and p.results == (7, 4, 3)
    assert Problem(10, 3, ("-",), (4,)).answer == 9


@pytest.mark.parametrize("modulus", [10, 97, 1000])
def test_solutions_are_exactly_correct(modulus):
    task = ArithmeticTask(modulus=modulus, min_steps=1, max_steps=6, seed=2)
    for p in task.sample_problems(200, seed=1):
        a0, ops, operands, lhs, res = _reference(ar.prompt_text(p), modulus)
        assert (a0, tuple(ops), tuple(operands)) == (p.start, p.ops, p.operands)
        assert all(0 <= x < modulus for x in [a0] + operands + res)
        steps = "".join(f"{x}{op}{b}={y};" for x, op, b, y in zip(lhs, ops, operands, res))
        assert ar.solution_text(p) == steps + f">{res[-1]}"
        assert p.answer == res[-1] and ar.extract_answer(ar.solution_text(p)) == res[-1]


def test_determinism_and_seeds():
    task = ArithmeticTask(seed=3)
    assert task.sample_problems(50, seed=4) == task.sample_problems(50, seed=4)
    assert task.sample_problems(50, seed=4) != task.sample_problems(50, seed=5)
    assert task.sample_problems(50, seed=4) != ArithmeticTask(seed=9).sample_problems(50, seed=4)
    a = task.sample_problems(10, rng=np.random.default_rng(7))
    assert a == task.sample_problems(10, rng=np.random.default_rng(7))
    with pytest.raises(ValueError):
        task.sample_problems(1, seed=0, rng=np.random.default_rng(0))
    p = task.sample_problems(20, seed=0)
    c1 = [ar.corrupt_solution(x, rng=np.random.default_rng(1)) for x in p]
    c2 = [ar.corrupt_solution(x, rng=np.random.default_rng(1)) for x in p]
    assert c1 == c2


def test_num_steps_distribution():
    task = ArithmeticTask(min_steps=2, max_steps=5, seed=0)
    ks = np.array([p.num_steps for p in task.sample_problems(2000, seed=0)])
    assert ks.min() >= 2 and ks.max() <= 5
    counts = np.bincount(ks, minlength=6)[2:]
    assert np.all(np.abs(counts / 2000 - 0.25) < 0.05)
    assert {p.num_steps for p in task.sample_problems(30, seed=0, num_steps=8)} == {8}
    ps = task.sample_problems(500, seed=1)
    assert all(1 <= b < 10 for p in ps for b in p.operands)
    assert {op for p in ps for op in p.ops} == set(ar.OPS)
    with pytest.raises(ValueError):
        ArithmeticTask(min_steps=3, max_steps=2)


@pytest.mark.parametrize("modulus", [10, 100])
def test_padded_arrays_and_masks(modulus):
    task = ArithmeticTask(modulus=modulus, min_steps=1, max_steps=5)
    ps = task.sample_problems(64, seed=0)
    plens = [1 + len(ar.prompt_text(p)) for p in ps]
    slens = [len(ar.solution_text(p)) + 1 for p in ps]
    ids, mask = ar.prompt_ids(ps)
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape
    assert ids.shape == (64, max(plens)) and ids.shape[1] <= task.max_prompt_len()
    np.testing.assert_array_equal(mask.sum(1), plens)
    assert np.all(ids[mask == 0] == PAD_ID) and np.all(mask[:, -1] == 1)
    for i, p in enumerate(ps):  # left padded: the prompt ends at the last column
        assert ids[i, -plens[i]] == BOS_ID
        assert ar.decode(ids[i][mask[i] == 1], skip_special=True) == ar.prompt_text(p)
    ids_r, mask_r = ar.prompt_ids(ps, pad_side="right", max_len=task.max_prompt_len())
    assert ids_r.shape[1] == task.max_prompt_len() and np.all(ids_r[:, 0] == BOS_ID)
    np.testing.assert_array_equal(mask_r.sum(1), plens)
    assert np.all(np.diff(mask_r, axis=1) <= 0)  # ones then zeros

    sids, smask = ar.solution_ids(ps, max_len=task.max_solution_len())
    assert sids.shape == (64, task.max_solution_len())
    np.testing.assert_array_equal(smask.sum(1), slens)
    assert np.all(np.diff(smask, axis=1) <= 0) and np.all(sids[smask == 0] == PAD_ID)
    assert np.all(sids[np.arange(64), np.array(slens) - 1] == EOS_ID)
    with pytest.raises(ValueError):
        ar.solution_ids(ps, max_len=min(slens) - 1 if min(slens) < max(slens) else 1)
    with pytest.raises(ValueError):
        ar.prompt_ids(ps, pad_side="middle")

    # SFT records: the loss covers the solution and its EOS.
    ex = ar.sft_examples(ps[:4], max_len=48 if modulus == 10 else 80)
    for e, p, n in zip(ex, ps, plens):
        assert e["input_ids"][0] == BOS_ID
        target = e["input_ids"][e["loss_mask"] == 1]
        assert ar.decode(target) == ar.solution_text(p) + "<eos>"
        assert e["loss_mask"][:n].sum() == 0 and e["mask"].sum() == n + len(target)


def test_bounds_are_tight_for_the_largest_numbers():
    task = ArithmeticTask(modulus=100, max_steps=3)
    p = Problem(100, 99, ("+", "+", "+"), (98, 98, 98))
    assert ar.solution_text(p) == "99+98=97;97+98=95;95+98=93;>93"
    assert len(ar.prompt_ids([p])[0][0]) == task.max_prompt_len()
    assert len(ar.solution_ids([p])[0][0]) == task.max_solution_len()


def test_correct_solutions_have_all_one_labels_and_step_ends_at_separators():
    task = ArithmeticTask(modulus=10, min_steps=1, max_steps=6, seed=1)
    ps = task.sample_problems(100, seed=0)
    sol, _ = ar.solution_ids(ps)
    for p, ids in zip(ps, sol):
        for rule in ar.RULES:
            assert ar.step_labels(p, ids, rule=rule) == [1] * p.num_steps
            assert ar.step_labels(p, ar.solution_text(p), rule=rule) == [1] * p.num_steps
        pos = ar.step_end_positions(ids)
        assert len(pos) == p.num_steps and np.all(ids[pos] == ar.SEP_ID)
    # With the prompt in front (left padded), positions index the full sequence.
    ex = ar.sft_examples(ps)
    full = np.stack([e["input_ids"] for e in ex])
    positions, labels, mask = ar.prm_targets(ps, full)
    assert positions.shape == labels.shape == mask.shape == (100, 6)
    np.testing.assert_array_equal(mask.sum(1), [p.num_steps for p in ps])
    assert np.all(full[np.arange(100)[:, None], positions][mask == 1] == ar.SEP_ID)
    assert np.all(labels == mask)
    np.testing.assert_array_equal(ar.exact_match_reward(ps, full), np.ones(100, np.float32))


@pytest.mark.parametrize("modulus", [10, 13, 100])
def test_consistent_corruption_labels_and_wrong_answer(modulus):
    task = ArithmeticTask(modulus=modulus, min_steps=1, max_steps=6, seed=4)
    rng = np.random.default_rng(0)
    ps = task.sample_problems(150, seed=2)
    texts, errs = [], []
    for p in ps:
        text, e = ar.corrupt_solution(p, rng=rng)
        k = p.num_steps
        assert 0 <= e < k and e in ar.corruptible_steps(p)
        assert ar.step_labels(p, text, rule="local") == [1] * e + [0] + [1] * (k - e - 1)
        assert ar.step_labels(p, text, rule="prefix") == [1] * e + [0] * (k - e)
        # The steps: true before e, a wrong result at e, then followed consistently.
        steps = text.split(">")[0].split(";")[:-1]
        parsed = [re.fullmatch(r"(\d+)([+\-*])(\d+)=(\d+)", s).groups() for s in steps]
        assert [int(g[3]) for g in parsed[:e]] == list(p.results[:e])
        assert int(parsed[e][3]) != p.results[e]
        for j in range(e + 1, k):
            x, op, b, y = int(parsed[j][0]), parsed[j][1], int(parsed[j][2]), int(parsed[j][3])
            assert x == int(parsed[j - 1][3])
            assert y == {"+": x + b, "-": x - b, "*": x * b}[op] % modulus
        assert ar.extract_answer(text) == int(parsed[-1][3]) != p.answer
        assert not ar.is_correct(p, text)
        texts.append(text)
        errs.append(e)
    assert ar.exact_match_reward(ps, texts).sum() == 0
    if modulus == 13:  # prime: every step can be corrupted, and all of them are drawn
        assert all(ar.corruptible_steps(p) == list(range(p.num_steps)) for p in ps)
        assert set(errs) == set(range(6))


def test_inconsistent_corruption_isolates_the_error():
    task = ArithmeticTask(modulus=10, min_steps=2, max_steps=5, seed=5)
    rng = np.random.default_rng(1)
    for p in task.sample_problems(100, seed=0):
        k = p.num_steps
        text, e = ar.corrupt_solution(p, rng=rng, continue_consistently=False)
        local = [1] * e + [0] + ([0] + [1] * (k - e - 2) if e < k - 1 else [])
        assert ar.step_labels(p, text, rule="local") == local
        assert ar.step_labels(p, text, rule="prefix") == [1] * e + [0] * (k - e)
        assert ar.is_correct(p, text) == (e < k - 1)


def test_corruption_at_a_given_step():
    # With p = 10, "*5" then "*2" multiplies by 10 == 0: an error at step 0 cannot survive.
    p = Problem(10, 3, ("+", "*", "*"), (1, 5, 2))
    assert ar.corruptible_steps(p) == [1, 2]
    with pytest.raises(ValueError):
        ar.corrupt_solution(p, rng=np.random.default_rng(0), step=0)
    with pytest.raises(ValueError):
        ar.corrupt_solution(p, rng=np.random.default_rng(0), step=3)
    rng = np.random.default_rng(0)
    assert {ar.corrupt_solution(p, rng=rng)[1] for _ in range(50)} == {1, 2}
    text, e = ar.corrupt_solution(p, rng=rng, step=0, continue_consistently=False)
    assert e == 0 and ar.step_labels(p, text, rule="local") == [0, 0, 1]
    text, e = ar.corrupt_solution(p, rng=rng, step=2)
    assert e == 2 and ar.step_labels(p, text, rule="local") == [1, 1, 0]


def test_step_labels_of_malformed_and_off_problem_steps():
    p = Problem(10, 3, ("+", "*", "-"), (4, 2, 1))
    assert ar.step_labels(p, "3+4=7;7*=4;4-1=3;>3", rule="local") == [1, 0, 0]
    assert ar.step_labels(p, "3+4=7;7*3=1;1-1=0;>0", rule="local") == [1, 0, 1]  # wrong operand
    assert ar.step_labels(p, "3+4=7;7*2=4;4-1=3;3+1=4;>4") == [1, 1, 1, 0]  # extra step
    assert ar.step_labels(p, "3+4=7;7*2=4", rule="prefix") == [1, 1]  # missing step, unterminated
    assert ar.step_labels(p, "3+4=07;7*2=4;>4", rule="local") == [0, 0]  # not canonical
    assert ar.step_labels(p, "") == [] and ar.step_end_positions(ar.encode("")).size == 0
    assert ar.step_end_positions(ar.encode("3+4=7;;7*2")).tolist() == [5, 6, 9]
    with pytest.raises(ValueError):
        ar.step_labels(p, "3+4=7", rule="global")


def test_malformed_answers_are_none_and_get_zero_reward():
    p = Problem(10, 3, ("+",), (4,))
    bad = ["", "3+4=7;", ">", "3+4=7;>", ">>7", ">7>7", ">07", ">7;", ">7=", "7", ">-7",
           ">7 ", "3+4=7;>a", ">x7"]
    for s in bad:
        assert ar.extract_answer(s) is None, s
    assert ar.extract_answer([ar.ANSWER_ID, 99]) is None
    assert ar.extract_answer([ar.ANSWER_ID, BOS_ID, ar.CHAR_TO_ID["7"]]) is None
    np.testing.assert_array_equal(ar.exact_match_reward([p] * len(bad), bad), 0)
    assert ar.extract_answer(">0") == 0 and ar.extract_answer(">123") == 123
    # the wrong number is wrong; the right one from several forms is right
    assert ar.exact_match_reward([p, p], ["3+4=8;>8", "3+4=7;>7"]).tolist() == [0.0, 1.0]


def test_garbage_after_eos_and_padding_are_ignored():
    p = Problem(10, 3, ("+", "*"), (4, 2))  # answer 4
    good = ar.encode(ar.solution_text(p)) + [EOS_ID]
    wrong = ar.encode("3+4=7;7*2=5;>5") + [EOS_ID]
    garbage = ar.encode(">4>>12;3+") + [EOS_ID, BOS_ID]
    rows = [good + garbage, wrong + ar.encode(">4"), [PAD_ID] * 3 + good, good[:-1]]
    ids, _ = ar.pad_sequences(rows, pad_side="right")
    np.testing.assert_array_equal(ar.exact_match_reward([p] * 4, ids), [1, 0, 1, 1])
    assert ar.extract_answer(ids[3], require_eos=True) is None
    assert ar.extract_answer(ids[0], require_eos=True) == 4
    assert ar.step_labels(p, ids[0]) == [1, 1]
    assert ar.step_end_positions(ids[2]).tolist() == [8, 14]
    assert ar.extract_answer("3+4=7;7*2=4;>4<eos>>9") == 4
    with pytest.raises(ValueError):
        ar.exact_match_reward([p], ids)


def test_difficulty_buckets():
    task = ArithmeticTask(modulus=100, min_steps=1, max_steps=6, seed=0)
    ps = task.sample_problems(300, seed=0)
    assert task.digits == 2 and ArithmeticTask().digits == 1 and ar.num_digits(1000) == 3
    assert ar.difficulty(ps[0]) == (ps[0].num_steps, 2)
    ks = np.array([p.num_steps for p in ps])
    buckets = ar.difficulty_bucket(ps, (2, 4))
    assert buckets.dtype == np.int32
    np.testing.assert_array_equal(buckets, np.where(ks <= 2, 0, np.where(ks <= 4, 1, 2)))
    assert set(buckets.tolist()) == {0, 1, 2}
    easy, hard = ar.easy_hard_split(ps, max_easy_steps=3)
    assert len(easy) + len(hard) == 300
    assert max(p.num_steps for p in easy) <= 3 < min(p.num_steps for p in hard)
    assert easy == [p for p in ps if p.num_steps <= 3]  # order kept
    with pytest.raises(ValueError):
        ar.difficulty_bucket(ps, (4, 2))
