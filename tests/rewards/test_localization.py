"""Vision-R1's localisation rewards (alignax.rewards.localization) against hand computations
and naive NumPy references."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.rewards import localization as loc


def _np_iou(a, b):
    d = len(a) // 2
    inter = np.prod([max(0.0, min(a[d + i], b[d + i]) - max(a[i], b[i])) for i in range(d)])
    area = lambda x: np.prod([max(0.0, x[d + i] - x[i]) for i in range(d)])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


# One compiled program per function and shape, shared by the tests (the values are arguments).
_IOU = jax.jit(loc.iou)
_PAIRWISE = jax.jit(loc.pairwise_iou)
_AP = jax.jit(loc.average_precision)  # iou_threshold is traced
_REWARD = jax.jit(functools.partial(loc.localization_reward, upper=16))


def _reward(pred, pred_mask, gt, gt_mask, *, rule, weights=(1.0, 1.0, 1.0), template_ok=True):
    """localization_reward(..., upper=16) compiled, the rule and weights as float32 data."""
    return _REWARD(pred, pred_mask, gt, gt_mask, template_ok=jnp.asarray(template_ok),
                   rule=loc.RewardRule(*(jnp.float32(v) for v in rule)),
                   weights=jnp.asarray(weights, jnp.float32))


def test_iou_hand_values_1d_and_2d():
    f = _IOU
    assert float(f(jnp.array([0.0, 4.0]), jnp.array([2.0, 6.0]))) == pytest.approx(1 / 3)
    assert float(f(jnp.array([0.0, 4.0]), jnp.array([4.0, 6.0]))) == 0.0  # touching
    assert float(f(jnp.array([1.0, 3.0]), jnp.array([1.0, 3.0]))) == 1.0
    assert float(f(jnp.array([0.0, 0, 2, 2]), jnp.array([1.0, 1, 3, 3]))) == pytest.approx(1 / 7)
    assert float(f(jnp.array([2.0, 2.0]), jnp.array([2.0, 2.0]))) == 0.0  # empty union
    # broadcasting: [3, 2] against [2]
    out = f(jnp.array([[0.0, 2], [0, 4], [3, 5]]), jnp.array([0.0, 4]))
    np.testing.assert_allclose(out, [0.5, 1.0, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="2D"):
        loc.iou(jnp.zeros(3), jnp.zeros(3))


def test_pairwise_iou_matches_numpy():
    rng = np.random.default_rng(0)
    for d in (1, 2):
        lo = rng.uniform(0, 10, (5, d))
        pred = np.concatenate([lo, lo + rng.uniform(0.5, 5, (5, d))], 1)
        lo = rng.uniform(0, 10, (3, d))
        gt = np.concatenate([lo, lo + rng.uniform(0.5, 5, (3, d))], 1)
        want = np.array([[_np_iou(p, g) for g in gt] for p in pred])
        np.testing.assert_allclose(_PAIRWISE(pred, gt), want, rtol=1e-5, atol=1e-6)


def test_valid_boxes_and_dual_format():
    boxes = jnp.array([[1.0, 3.0], [3.0, 3.0], [5.0, 2.0], [-1.0, 2.0], [4.0, 17.0]])
    mask = jnp.array([True, False, False, False, False])

    @jax.jit
    def run(boxes, mask):
        fmt = functools.partial(loc.dual_format_reward, upper=16)
        return (loc.valid_boxes(boxes, upper=16), fmt(True, boxes, mask),
                fmt(False, boxes, mask), fmt(True, boxes, mask.at[1].set(True)))

    valid, ok, no_template, invalid = run(boxes, mask)
    np.testing.assert_array_equal(valid, [True, False, False, False, False])
    assert float(ok) == 1.0
    assert float(no_template) == 0.0
    assert float(invalid) == 0.0


def test_match_hungarian_beats_greedy_where_pairs_compete():
    ious = jnp.array([[0.9, 0.8], [0.8, 0.0]])
    ones = jnp.ones(2, bool)
    both = jax.jit(lambda i, p, g: [loc.match_boxes(i, p, g, method=method)
                                    for method in ("hungarian", "greedy")])
    (p2g, m), greedy = both(ious, ones, ones)
    np.testing.assert_array_equal(p2g, [1, 0])  # total 1.6
    np.testing.assert_allclose(m, [0.8, 0.8])
    p2g, m = greedy
    np.testing.assert_array_equal(p2g, [0, -1])  # total 0.9: the zero pair is not a match
    np.testing.assert_allclose(m, [0.9, 0.0])


@pytest.mark.parametrize("k,j", [(4, 2), (2, 3), (3, 3)])
def test_hungarian_is_the_optimum_with_masks(k, j):
    rng = np.random.default_rng(k * 10 + j)
    match = jax.jit(lambda i, p, g: loc.match_boxes(i, p, g, method="hungarian"))
    for _ in range(5):
        ious = rng.uniform(0, 1, (k, j)) * (rng.random((k, j)) > 0.3)
        pm, gm = rng.random(k) > 0.2, rng.random(j) > 0.2
        w = ious * pm[:, None] * gm[None, :]
        best = max((sum(w[p, g] for g, p in enumerate(perm)) for perm in
                    itertools.permutations(range(k), j)), default=0.0) if j <= k else max(
            sum(w[p, g] for p, g in enumerate(perm))
            for perm in itertools.permutations(range(j), k))
        p2g, m = match(jnp.asarray(ious, jnp.float32), jnp.asarray(pm), jnp.asarray(gm))
        p2g, m = np.asarray(p2g), np.asarray(m)
        assert m.sum() == pytest.approx(best, rel=1e-5, abs=1e-6)
        hit = p2g >= 0
        assert not (hit & ~pm).any()  # masked predictions are never matched
        assert len(set(p2g[hit])) == hit.sum() and gm[p2g[hit]].all()  # one-to-one, valid gt
        np.testing.assert_allclose(m[hit], ious[hit, p2g[hit]], rtol=1e-6)


def test_hungarian_refuses_large_enumerations():
    with pytest.raises(ValueError, match="greedy"):
        loc.match_boxes(jnp.zeros((12, 6)), jnp.ones(12, bool), jnp.ones(6, bool))
    p2g, m = jax.jit(lambda i, p, g: loc.match_boxes(i, p, g, method="greedy"))(
        jnp.eye(12, 6), jnp.ones(12, bool), jnp.ones(6, bool))
    np.testing.assert_array_equal(p2g, list(range(6)) + [-1] * 6)


def test_differentiate_and_staged_rule():
    x = jnp.array([0.2, 0.5, 0.6, 0.75, 0.9])
    diff = jax.jit(loc.differentiate)
    np.testing.assert_allclose(diff(x, 0.5, 0.75), [0, 0.5, 0.6, 1, 1])
    np.testing.assert_allclose(diff(x, 0.0, 1.0), x)  # the identity on [0, 1]
    rule = jax.jit(lambda s: loc.staged_rule(s, 100))
    np.testing.assert_array_equal(rule(99), np.float32([0.5, 0.5, 0.75]))
    np.testing.assert_array_equal(rule(100), np.float32([0.75, 0.75, 0.9]))
    # the stages may be traced data (one program for every rule)
    traced = jax.jit(lambda s, st: loc.staged_rule(s, 1, stages=st))
    assert [float(v) for v in traced(0, jnp.array([[0.5, 0, 1], [0.5, 0, 1]]))] == [0.5, 0, 1]
    with pytest.raises(ValueError, match="triples"):
        loc.staged_rule(0, 1, stages=[(0.5, 0.5, 0.75)])


GT = jnp.array([[0.0, 4.0], [6.0, 10.0], [0.0, 0.0]])
GT_MASK = jnp.array([True, True, False])
# IoUs with the matched ground truth: 1, 3/4, unmatched
PRED = jnp.array([[0.0, 4.0], [7.0, 10.0], [12.0, 14.0], [0.0, 0.0]])
PRED_MASK = jnp.array([True, True, True, False])


@pytest.mark.parametrize("rule,recall,precision", [
    (loc.RewardRule(0.5), 1.0, (1 + 0.75 + 0) / 3),           # fixed, linear
    (loc.RewardRule(0.5, 0.5, 0.75), 1.0, (1 + 1 + 0) / 3),   # stage 1: 0.75 gets full credit
    (loc.RewardRule(0.75, 0.75, 0.9), 1.0, (1 + 0.75) / 3),   # stage 2: 0.75 is kept as is
    (loc.RewardRule(0.8), 0.5, 1 / 3),                        # 0.75 < xi: not a hit
])
def test_localization_reward_hand_values(rule, recall, precision):
    out = _reward(PRED, PRED_MASK, GT, GT_MASK, rule=rule)  # the rule is traced data
    assert float(out["recall"]) == pytest.approx(recall)
    assert float(out["precision"]) == pytest.approx(precision, rel=1e-6)
    assert float(out["format"]) == 1.0
    assert float(out["reward"]) == pytest.approx(1 + recall + precision, rel=1e-6)
    assert float(out["num_pred"]) == 3 and float(out["num_gt"]) == 2


def test_recall_differentiation_and_weights():
    pred = jnp.array([[0.0, 4.0]])
    one = jnp.array([True])
    # recall 1/2: kept between the thresholds of stage 1, penalised to 0 in stage 2
    r1 = _reward(pred, one, GT, GT_MASK, rule=loc.RewardRule(0.5, 0.5, 0.75))
    r2 = _reward(pred, one, GT, GT_MASK, rule=loc.RewardRule(0.75, 0.75, 0.9))
    assert float(r1["recall"]) == 0.5 and float(r2["recall"]) == 0.0
    only = _reward(PRED, PRED_MASK, GT, GT_MASK, template_ok=False, rule=loc.RewardRule(0.5),
                   weights=(0, 1, 0))
    assert float(only["reward"]) == float(only["recall"]) == 1.0


def test_duplicates_do_not_raise_recall_but_lower_precision():
    rule = loc.RewardRule(0.5)
    base = _reward(PRED[:2], PRED_MASK[:2], GT, GT_MASK, rule=rule)
    dup = _reward(jnp.concatenate([PRED[:2], PRED[:2]]), jnp.ones(4, bool), GT, GT_MASK,
                  rule=rule)
    assert float(dup["recall"]) == float(base["recall"]) == 1.0
    assert float(dup["precision"]) == pytest.approx(float(base["precision"]) / 2)


def test_invalid_boxes_do_not_count_and_fail_the_format():
    pred = jnp.array([[0.0, 4.0], [9.0, 7.0]])
    out = _reward(pred, jnp.ones(2, bool), GT, GT_MASK, rule=loc.RewardRule(0.5))
    assert float(out["num_pred"]) == 1 and float(out["format"]) == 0.0
    assert float(out["precision"]) == 1.0 and float(out["recall"]) == 0.5


def test_empty_conventions():
    none_p, none_g = jnp.zeros(2, bool), jnp.zeros(3, bool)
    rule = loc.RewardRule(0.5)
    both = _reward(PRED[:2], none_p, GT, none_g, rule=rule)
    assert float(both["recall"]) == float(both["precision"]) == 1.0
    miss = _reward(PRED[:2], none_p, GT, GT_MASK, rule=rule)
    assert float(miss["recall"]) == float(miss["precision"]) == 0.0
    spurious = _reward(PRED[:2], PRED_MASK[:2], GT, none_g, rule=rule)
    assert float(spurious["recall"]) == float(spurious["precision"]) == 0.0


def test_reward_vmaps_over_completions():
    preds = jnp.stack([PRED, PRED[::-1]])
    masks = jnp.stack([PRED_MASK, PRED_MASK[::-1]])
    f = jax.jit(jax.vmap(lambda p, m: loc.localization_reward(
        p, m, GT, GT_MASK, template_ok=True, rule=loc.RewardRule(0.5), upper=16)["reward"]))
    out = np.asarray(f(preds, masks))
    assert out[0] == pytest.approx(out[1]) == pytest.approx(2 + 1.75 / 3)  # order-free


def _np_ap(pred, scores, pmask, gt, gmask, thr):
    """Naive AP: per-image COCO matching in score order, global ranking, all-point."""
    dets = []
    for i in range(len(pred)):
        taken = set()
        for k in sorted(np.where(pmask[i])[0], key=lambda k: -scores[i][k]):
            ious = [(_np_iou(pred[i][k], gt[i][j]), j) for j in np.where(gmask[i])[0]
                    if j not in taken]
            ious = [(v, j) for v, j in ious if v >= thr]
            hit = bool(ious)
            if hit:
                taken.add(max(ious)[1])
            dets.append((scores[i][k], i, k, hit))
    dets.sort(key=lambda d: (-d[0], d[1], d[2]))
    n_gt = gmask.sum()
    tp = np.cumsum([d[3] for d in dets])
    prec = tp / np.arange(1, len(dets) + 1)
    interp = np.maximum.accumulate(prec[::-1])[::-1]
    return sum(interp[i] for i, d in enumerate(dets) if d[3]) / n_gt


def test_average_precision_hand_value_and_reference():
    pb = jnp.array([[[0.0, 4.0], [0.0, 3.0]], [[2.0, 6.0], [12.0, 14.0]]])
    ps = jnp.array([[0.9, 0.8], [0.7, 0.95]])
    gb = jnp.array([[[0.0, 4.0], [0.0, 0.0]], [[2.0, 6.0], [8.0, 10.0]]])
    gm = jnp.array([[True, False], [True, True]])
    # ranks: FP (0.95), TP (0.9), FP (0.8, its gt taken), TP (0.7); 3 gt: (1/3 + 1/3) * 1/2
    assert float(_AP(pb, ps, jnp.ones((2, 2), bool), gb, gm, iou_threshold=0.5)) == (
        pytest.approx(1 / 3))
    assert float(_AP(gb, ps, gm, gb, gm, iou_threshold=0.75)) == 1.0
    assert float(_AP(pb, ps, jnp.zeros((2, 2), bool), gb, gm, iou_threshold=0.5)) == 0.0
    assert np.isnan(float(_AP(pb, ps, jnp.ones((2, 2), bool), gb, jnp.zeros((2, 2), bool),
                              iou_threshold=0.5)))
    rng = np.random.default_rng(3)
    for _ in range(4):
        lo = rng.integers(0, 12, (6, 4, 1)).astype(float)
        pred = np.concatenate([lo, lo + rng.integers(1, 5, (6, 4, 1))], -1)
        lo = rng.integers(0, 12, (6, 3, 1)).astype(float)
        gt = np.concatenate([lo, lo + rng.integers(1, 5, (6, 3, 1))], -1)
        scores = rng.random((6, 4))
        pmask, gmask = rng.random((6, 4)) > 0.3, rng.random((6, 3)) > 0.3
        for thr in (0.5, 0.75):
            got = float(_AP(pred, scores, pmask, gt, gmask, iou_threshold=thr))
            assert got == pytest.approx(_np_ap(pred, scores, pmask, gt, gmask, thr), abs=1e-6)


def test_parse_box_tokens_template_rules():
    parse = jax.jit(jax.vmap(lambda t: loc.parse_box_tokens(t, stop_id=17, max_boxes=3)))
    rows = jnp.array([
        [1, 4, 6, 9, 17, 17, 17],    # two boxes, well formed
        [1, 4, 6, 17, 17, 17, 17],   # STOP inside a box
        [1, 4, 17, 6, 9, 17, 17],    # coordinates after STOP
        [17, 17, 17, 17, 17, 17, 17],  # no box, well formed
        [1, 4, 6, 9, 2, 3, 5],       # no STOP: three boxes read, template fails
    ])
    boxes, mask, ok = (np.asarray(x) for x in parse(rows))
    np.testing.assert_array_equal(ok, [True, False, False, True, False])
    np.testing.assert_array_equal(mask.sum(1), [2, 1, 1, 0, 3])
    np.testing.assert_array_equal(boxes[0, :2], [[1, 4], [6, 9]])
    np.testing.assert_array_equal(boxes[4], [[1, 4], [6, 9], [2, 3]])
    parse2 = jax.jit(lambda t: loc.parse_box_tokens(t, stop_id=9, max_boxes=2, dim=2))
    b2, m2, ok2 = (np.asarray(x) for x in parse2(np.array([0, 1, 5, 6, 9])))
    assert bool(ok2) and int(m2.sum()) == 1
    np.testing.assert_array_equal(b2[0], [0, 1, 5, 6])


def test_parse_boxes_text_and_pad():
    boxes, ok = loc.parse_boxes_text(" [[12, 40], [55.5, 70]] ")
    assert ok and boxes.tolist() == [[12, 40], [55.5, 70]]
    boxes, ok = loc.parse_boxes_text("```json\n[[1, 2, 3, 4]]\n```", dim=2)
    assert ok and boxes.tolist() == [[1, 2, 3, 4]]
    assert loc.parse_boxes_text("[]")[1] and loc.parse_boxes_text("[]")[0].shape == (0, 2)
    boxes, ok = loc.parse_boxes_text("the cat is at [3, 9] and [10,12], done")
    assert not ok and boxes.tolist() == [[3, 9], [10, 12]]
    boxes, ok = loc.parse_boxes_text("[[1, 2, 3]]")  # wrong arity: no box, no template
    assert not ok and boxes.shape == (0, 2)
    assert not loc.parse_boxes_text("[[1, true]]")[1]
    padded, mask = loc.pad_boxes([np.array([[1.0, 2.0]]), np.zeros((0, 2)),
                                  np.arange(8.0).reshape(4, 2)], 3)
    assert padded.shape == (3, 3, 2) and mask.sum(1).tolist() == [1, 0, 3]
    assert padded[2].tolist() == [[0, 1], [2, 3], [4, 5]]
