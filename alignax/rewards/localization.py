"""Localisation rewards for R1-style RL of models that write boxes as text (Vision-R1).

Zhan et al. 2025, "Vision-R1: Evolving Human-Free Alignment in Large Vision-Language Models via
Vision-Guided Reinforcement Learning" (arXiv 2503.18013), Sections 3.2-3.3. A completion o_i
that localises objects is parsed into predicted boxes, matched one-to-one to the ground-truth
boxes ("box-prioritised prediction matching": a Hungarian matcher on box quality only), and
scored by three criteria (Eq. 4-7):

    R_DF(o)     = 1[template ok and every coordinate valid]                       dual format
    R_recall(o) = #{matched predictions with IoU >= xi_0} / #GT                          Eq. 5
    R_prec(o)   = (1 / M) sum_{m=1..M} 1[IoU_m >= xi_0] IoU_m    (M predictions)          Eq. 6
    R(o)        = R_DF + R_recall + R_prec                                               Eq. 7

(an unmatched prediction has IoU_m = 0, so extra boxes lower R_prec, while R_recall alone is
maximised by spraying boxes: the reward hacking the paper's precision term prevents).
Progressive rule refinement (Sec. 3.3): "differentiation" maps a value x to
f(x) = 1 if x >= xi_2, 0 if x < xi_1, else x (Eq. 8), applied to R_recall of a completion and
to each instance's IoU term of R_prec; "staged progression" raises (xi_0, xi_1, xi_2) from
(0.5, 0.5, 0.75) to (0.75, 0.75, 0.9) at a training step STEP (the paper's best STEP is half of
training, Table 5). `staged_rule(step, switch_step)` is that schedule as a pure function of
the step. The authors' released reward (Griffon repository, EasyR1
`examples/reward_function/visionr1.py`) differs in details that are noted where they matter:
it averages the three terms instead of summing them, keeps the recall differentiation at
(0.5, 0.75) in both stages, and counts an IoU exactly equal to xi_0 as xi_0 true positives;
here the paper's equations are followed (the sum; both stages; IoU >= xi_0 is a hit, as in
COCO's AP at a threshold).

Boxes are [..., 2D] arrays (lo_1..lo_D, hi_1..hi_D): D = 1 intervals [start, end], D = 2
boxes [x1, y1, x2, y2]; every function takes either. Variable box counts are fixed-size arrays
with boolean masks (K predicted, J ground-truth slots); all functions are jnp, jit- and
vmap-able (vmap over completions for a batch), except the text parser `parse_boxes_text`.

Matching (`match_boxes`): "hungarian" is the exact maximum-total-IoU one-to-one assignment,
found by enumerating the K! / (K - J)! injective maps of the smaller side into the larger
(static, a few hundred for K = 6, J = 3; refused above `MAX_ASSIGNMENTS`); "greedy" takes the
highest remaining IoU pair min(K, J) times (O(K J min(K, J)), any size; it equals the optimum
whenever the best pairs do not compete). The paper's matcher cost also has an L1 term and
GIoU (which break ties between non-overlapping pairs); a pair with IoU 0 contributes nothing
to either reward, so the rewards agree except between assignments of equal total IoU.

Evaluation: `average_precision` is detection AP at one IoU threshold (AP@0.5, AP@0.75 of the
paper's tables): predictions ranked by score over all images, each matched greedily in score
order to the unmatched ground truth of highest IoU >= the threshold (COCO's per-image rule),
all-point interpolated precision integrated over recall.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

MATCHERS = ("hungarian", "greedy")
MAX_ASSIGNMENTS = 20_000  # the exact matcher's enumeration limit (K! / (K - J)!)
# the paper's two stages of (xi_0, xi_1, xi_2): TP threshold, penalty and full-credit thresholds
PAPER_STAGES = ((0.5, 0.5, 0.75), (0.75, 0.75, 0.9))


class RewardRule(NamedTuple):
    """The thresholds of one stage of the reward rules (scalars or 0-d arrays).

    Attributes:
      xi: xi_0, the IoU at or above which a matched prediction is a true positive.
      low: xi_1, differentiation's penalty threshold (values below it become 0).
      high: xi_2, differentiation's full-credit threshold (values at or above it become 1).
    """

    xi: float | jax.Array
    low: float | jax.Array = 0.0
    high: float | jax.Array = 1.0


def _split(boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
    boxes = jnp.asarray(boxes, jnp.float32)
    if boxes.ndim < 1 or boxes.shape[-1] % 2:
        raise ValueError(f"boxes must be [..., 2D] (lo..., hi...), got shape {boxes.shape}")
    d = boxes.shape[-1] // 2
    return boxes[..., :d], boxes[..., d:]


def iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Intersection over union of axis-aligned boxes, broadcast over leading dims.

        IoU = prod_d max(0, min(hi_a, hi_b) - max(lo_a, lo_b)) / (|a| + |b| - intersection)

    with |a| = prod_d max(0, hi_a - lo_a); 0 where the union is empty (two degenerate boxes).

    Args:
      a, b: [..., 2D] boxes (lo_1..lo_D, hi_1..hi_D), broadcastable.

    Returns:
      [...] float32 in [0, 1].
    """
    lo_a, hi_a = _split(a)
    lo_b, hi_b = _split(b)
    inter = jnp.prod(jnp.maximum(jnp.minimum(hi_a, hi_b) - jnp.maximum(lo_a, lo_b), 0.0), -1)
    area_a = jnp.prod(jnp.maximum(hi_a - lo_a, 0.0), -1)
    area_b = jnp.prod(jnp.maximum(hi_b - lo_b, 0.0), -1)
    union = area_a + area_b - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def pairwise_iou(pred: jax.Array, gt: jax.Array) -> jax.Array:
    """IoU of every predicted box with every ground-truth box: [..., K, 2D], [..., J, 2D] ->
    [..., K, J]."""
    return iou(jnp.asarray(pred)[..., :, None, :], jnp.asarray(gt)[..., None, :, :])


def valid_boxes(boxes: jax.Array, *, lower: float = 0.0, upper: float = 1.0) -> jax.Array:
    """Content check of coordinates: [..., 2D] -> [...] bool, True where lo < hi on every axis
    and lower <= lo, hi <= upper (the paper's f_cont: coordinates within the image and well
    ordered)."""
    lo, hi = _split(boxes)
    ok = (lo < hi) & (lo >= lower) & (hi <= upper)
    return jnp.all(ok, -1)


def _assignments(k: int, j: int) -> np.ndarray:
    """[A, min(k, j)] every injective map of the smaller side into the larger (static)."""
    small, large = min(k, j), max(k, j)
    count = math.perm(large, small)
    if count > MAX_ASSIGNMENTS:
        raise ValueError(f"matcher 'hungarian' would enumerate {count} assignments for K={k}, "
                         f"J={j} (limit {MAX_ASSIGNMENTS}); use method='greedy'")
    return np.array(list(itertools.permutations(range(large), small)), np.int32).reshape(
        count, small)


def match_boxes(ious: jax.Array, pred_mask: jax.Array, gt_mask: jax.Array, *,
                method: str = "hungarian") -> tuple[jax.Array, jax.Array]:
    """One-to-one matching of K predictions to J ground-truth boxes by IoU (box-only cost).

    "hungarian": the assignment maximising the total IoU of the valid pairs (exact, by
    enumeration; ties to the first assignment in lexicographic order); "greedy": repeatedly
    the valid pair of highest IoU among the unmatched rows and columns. Invalid slots (mask
    False) and pairs of IoU 0 are never matched.

    Args:
      ious: [K, J] IoUs (`pairwise_iou`).
      pred_mask: [K] bool, the predictions that exist.
      gt_mask: [J] bool, the ground-truth boxes that exist.
      method: "hungarian" or "greedy".

    Returns:
      (pred_to_gt [K] int32, the matched ground-truth index or -1; matched_iou [K] float32,
      the matched pair's IoU, 0 for an unmatched prediction).
    """
    if method not in MATCHERS:
        raise ValueError(f"unknown matcher {method!r}; one of {MATCHERS}")
    ious = jnp.asarray(ious, jnp.float32)
    if ious.ndim != 2:
        raise ValueError(f"ious must be [K, J], got shape {ious.shape}")
    k, j = ious.shape
    pm, gm = jnp.asarray(pred_mask, bool), jnp.asarray(gt_mask, bool)
    w = jnp.where(pm[:, None] & gm[None, :], ious, 0.0)
    if k == 0 or j == 0:
        return jnp.full((k,), -1, jnp.int32), jnp.zeros((k,), jnp.float32)
    if method == "hungarian":
        perms = jnp.asarray(_assignments(k, j))
        if j <= k:  # perms[a, g] = the prediction of ground truth g
            totals = jnp.sum(w[perms, jnp.arange(j)[None, :]], -1)
            best = perms[jnp.argmax(totals)]
            pair_iou = w[best, jnp.arange(j)]
            pred_to_gt = jnp.full((k,), -1, jnp.int32).at[best].set(
                jnp.where(pair_iou > 0, jnp.arange(j, dtype=jnp.int32), -1))
        else:  # perms[a, p] = the ground truth of prediction p
            totals = jnp.sum(w[jnp.arange(k)[None, :], perms], -1)
            best = perms[jnp.argmax(totals)]
            pair_iou = w[jnp.arange(k), best]
            pred_to_gt = jnp.where(pair_iou > 0, best, -1).astype(jnp.int32)
    else:
        def body(_, carry):
            free_p, free_g, assign = carry
            cand = jnp.where(free_p[:, None] & free_g[None, :], w, 0.0)
            flat = jnp.argmax(cand)
            p, g = flat // j, flat % j
            hit = cand[p, g] > 0
            return (free_p.at[p].set(free_p[p] & ~hit), free_g.at[g].set(free_g[g] & ~hit),
                    assign.at[p].set(jnp.where(hit, g, assign[p]).astype(jnp.int32)))

        _, _, pred_to_gt = jax.lax.fori_loop(
            0, min(k, j), body, (pm, gm, jnp.full((k,), -1, jnp.int32)))
    matched = pred_to_gt >= 0
    matched_iou = jnp.where(matched, w[jnp.arange(k), jnp.maximum(pred_to_gt, 0)], 0.0)
    return pred_to_gt, matched_iou


def differentiate(x: jax.Array, low, high) -> jax.Array:
    """Vision-R1's differentiation policy (Eq. 8): f(x) = 1 if x >= high, 0 if x < low, else x.

    `low` = 0 and `high` = 1 leave values in [0, 1] unchanged (the plain linear reward)."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.where(x >= high, 1.0, jnp.where(x < low, 0.0, x))


def staged_rule(step, switch_step, *, stages: Sequence[Sequence[float]] = PAPER_STAGES
                ) -> RewardRule:
    """Staged progression (Sec. 3.3): the rule (xi_0, xi_1, xi_2) of `stages[0]` before
    `switch_step` and of `stages[1]` from it on (the paper: (0.5, 0.5, 0.75) then
    (0.75, 0.75, 0.9), switching at STEP = half of training).

    Args:
      step: the 0-based training step (an int or int array; traced under jit).
      switch_step: the first step of the advanced stage (int or array).
      stages: [2, 3], two (xi, low, high) triples (an array may be traced: a schedule passed
        as data keeps one compiled program for every rule).

    Returns:
      RewardRule of float32 scalars.
    """
    stages = jnp.asarray(stages, jnp.float32)
    if stages.shape != (2, 3):
        raise ValueError(f"stages must be two (xi, low, high) triples, got shape {stages.shape}")
    later = jnp.asarray(step) >= jnp.asarray(switch_step)
    values = jnp.where(later, stages[1], stages[0])
    return RewardRule(values[0], values[1], values[2])


def recall_reward(matched_iou: jax.Array, pred_mask: jax.Array, gt_mask: jax.Array, *,
                  xi, low=0.0, high=1.0) -> jax.Array:
    """R_recall (Eq. 5) after differentiation (Eq. 8).

        recall = #{m : pred_mask_m and matched_iou_m >= xi} / #{j : gt_mask_j}
        R_recall = f_{low, high}(recall)

    With no ground truth: 1 if there is no prediction, else 0 (the released reward's rule for
    negative samples).

    Args:
      matched_iou: [K] IoU of each prediction's matched ground truth (0 if unmatched).
      pred_mask: [K] bool, the predictions that count.
      gt_mask: [J] bool.
      xi, low, high: the rule (`RewardRule`).

    Returns:
      scalar float32 in [0, 1].
    """
    pm, gm = jnp.asarray(pred_mask, bool), jnp.asarray(gt_mask, bool)
    n_gt = jnp.sum(gm)
    tp = jnp.sum(pm & (matched_iou >= xi))
    recall = jnp.where(n_gt > 0, tp / jnp.maximum(n_gt, 1), jnp.where(jnp.any(pm), 0.0, 1.0))
    return differentiate(recall, low, high)


def precision_reward(matched_iou: jax.Array, pred_mask: jax.Array, gt_mask: jax.Array, *,
                     xi, low=0.0, high=1.0) -> jax.Array:
    """R_prec (Eq. 6) with differentiation applied per instance (Eq. 8).

        R_prec = (1 / M) sum_{m : pred_mask_m} f_{low, high}(1[IoU_m >= xi] IoU_m)

    over the M predictions (unmatched ones have IoU 0). With no prediction: 1 if there is no
    ground truth either, else 0.

    Args:
      matched_iou: [K]; pred_mask: [K] bool; gt_mask: [J] bool; xi, low, high: the rule.

    Returns:
      scalar float32 in [0, 1].
    """
    pm, gm = jnp.asarray(pred_mask, bool), jnp.asarray(gt_mask, bool)
    m = jnp.sum(pm)
    gated = jnp.where(matched_iou >= xi, matched_iou, 0.0)
    per = jnp.where(pm, differentiate(gated, low, high), 0.0)
    return jnp.where(m > 0, jnp.sum(per) / jnp.maximum(m, 1),
                     jnp.where(jnp.any(gm), 0.0, 1.0))


def dual_format_reward(template_ok, boxes: jax.Array, mask: jax.Array, *, lower: float = 0.0,
                       upper: float = 1.0) -> jax.Array:
    """R_DF (Eq. 4): 1 when the completion follows the template (f_tem, `template_ok`, from the
    parser) and every box it holds has valid coordinates (f_cont, `valid_boxes`), else 0.

    Args:
      template_ok: scalar bool.
      boxes: [K, 2D] the parsed boxes; mask: [K] bool, the slots that hold one.
      lower, upper: the coordinate range.
    """
    content = jnp.all(valid_boxes(boxes, lower=lower, upper=upper) | ~jnp.asarray(mask, bool))
    return (jnp.asarray(template_ok, bool) & content).astype(jnp.float32)


def localization_reward(pred_boxes: jax.Array, pred_mask: jax.Array, gt_boxes: jax.Array,
                        gt_mask: jax.Array, *, template_ok, rule: RewardRule,
                        weights: Sequence[float] | jax.Array = (1.0, 1.0, 1.0),
                        lower: float = 0.0, upper: float = 1.0, method: str = "hungarian"
                        ) -> dict[str, jax.Array]:
    """Vision-R1's criterion-driven reward of one completion (Eq. 7), with the rule's
    differentiation and TP threshold.

        reward = w_DF R_DF + w_recall R_recall + w_prec R_prec

    The predictions that count are the parsed slots with valid coordinates (the released
    reward drops boxes with lo >= hi before matching); they are matched to the ground truth
    with `match_boxes(method)`. Weights (1, 1, 1) are the paper's sum; (0, 1, 0) is the
    hackable recall-only reward.

    Args:
      pred_boxes: [K, 2D] parsed boxes; pred_mask: [K] bool, slots holding a parsed box.
      gt_boxes: [J, 2D]; gt_mask: [J] bool.
      template_ok: scalar bool, the parser's template check.
      rule: RewardRule (xi, low, high), e.g. `staged_rule(step, switch)` or
        RewardRule(0.5) (fixed threshold, no differentiation).
      weights: [3] (w_DF, w_recall, w_prec).
      lower, upper: the coordinate range (content check).
      method: the matcher.

    Returns:
      {"reward", "format", "recall", "precision", "num_pred" (predictions that count),
      "num_gt"}, float32 scalars.
    """
    pm = jnp.asarray(pred_mask, bool) & valid_boxes(pred_boxes, lower=lower, upper=upper)
    gm = jnp.asarray(gt_mask, bool)
    _, matched_iou = match_boxes(pairwise_iou(pred_boxes, gt_boxes), pm, gm, method=method)
    xi, low, high = rule
    fmt = dual_format_reward(template_ok, pred_boxes, pred_mask, lower=lower, upper=upper)
    rec = recall_reward(matched_iou, pm, gm, xi=xi, low=low, high=high)
    prec = precision_reward(matched_iou, pm, gm, xi=xi, low=low, high=high)
    w = jnp.asarray(weights, jnp.float32)
    return {"reward": w[0] * fmt + w[1] * rec + w[2] * prec, "format": fmt, "recall": rec,
            "precision": prec, "num_pred": jnp.sum(pm).astype(jnp.float32),
            "num_gt": jnp.sum(gm).astype(jnp.float32)}


def _image_true_positives(ious, scores, pred_mask, gt_mask, threshold):
    """[K] bool: COCO's per-image matching at `threshold` (predictions in score order, each to
    the unmatched ground truth of highest IoU >= threshold)."""
    k = ious.shape[0]
    order = jnp.argsort(-jnp.where(pred_mask, scores, -jnp.inf), stable=True)

    def body(i, carry):
        taken, tp = carry
        p = order[i]
        cand = gt_mask & ~taken & (ious[p] >= threshold) & pred_mask[p]
        g = jnp.argmax(jnp.where(cand, ious[p], -1.0))
        hit = jnp.any(cand)
        return taken.at[g].set(taken[g] | hit), tp.at[p].set(hit)

    _, tp = jax.lax.fori_loop(0, k, body, (jnp.zeros_like(gt_mask), jnp.zeros((k,), bool)))
    return tp


def average_precision(pred_boxes: jax.Array, pred_scores: jax.Array, pred_mask: jax.Array,
                      gt_boxes: jax.Array, gt_mask: jax.Array, *, iou_threshold: float
                      ) -> jax.Array:
    """Detection AP at one IoU threshold over a set of images (single class).

    Per image, predictions in descending score are matched to the unmatched ground truth of
    highest IoU >= `iou_threshold` (true positive) or are false positives; then all images'
    predictions are ranked by score (ties in image-major, slot order), giving precision
    p_i = TP_i / i and recall r_i = TP_i / #GT at each rank, and

        AP = sum_i (r_i - r_{i-1}) max_{i' >= i} p_{i'}       (all-point interpolation)

    Args:
      pred_boxes: [N, K, 2D]; pred_scores: [N, K] confidences; pred_mask: [N, K] bool.
      gt_boxes: [N, J, 2D]; gt_mask: [N, J] bool.
      iou_threshold: e.g. 0.5 (AP50) or 0.75 (AP75).

    Returns:
      scalar float32 in [0, 1]; NaN when there is no ground-truth box.
    """
    pm, gm = jnp.asarray(pred_mask, bool), jnp.asarray(gt_mask, bool)
    scores = jnp.asarray(pred_scores, jnp.float32)
    ious = pairwise_iou(pred_boxes, gt_boxes)  # [N, K, J]
    tp = jax.vmap(_image_true_positives, in_axes=(0, 0, 0, 0, None))(
        ious, scores, pm, gm, iou_threshold)
    valid, tp, flat = pm.reshape(-1), tp.reshape(-1), scores.reshape(-1)
    order = jnp.argsort(-jnp.where(valid, flat, -jnp.inf), stable=True)
    valid, tp = valid[order], tp[order] & valid[order]
    cum_tp = jnp.cumsum(tp)
    cum_det = jnp.cumsum(valid)
    precision = jnp.where(cum_det > 0, cum_tp / jnp.maximum(cum_det, 1), 0.0)
    interp = jax.lax.cummax(precision, reverse=True)
    n_gt = jnp.sum(gm)
    ap = jnp.sum(jnp.where(tp, interp, 0.0)) / jnp.maximum(n_gt, 1)
    return jnp.where(n_gt > 0, ap, jnp.nan).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Parsers: a token format (the toy policies) and a text format (LMs)


def parse_box_tokens(tokens: jax.Array, *, stop_id: int, max_boxes: int, dim: int = 1
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Boxes written as coordinate tokens: b_1 ... b_k STOP STOP ..., each box 2D tokens whose
    ids are the coordinates (ids < stop_id), then STOP to the end.

    The boxes are read from the complete groups of 2D tokens before the first STOP (all
    `max_boxes` groups when there is none), whatever follows (the released reward also
    extracts boxes from malformed completions). The template holds when a STOP occurs, at a
    group boundary, at most `max_boxes` groups precede it, and every later token is STOP.

    Args:
      tokens: [R] int response tokens.
      stop_id: the STOP token id (coordinates are the ids below it).
      max_boxes: K, the box slots returned.
      dim: D (1: intervals, 2: boxes).

    Returns:
      (boxes [K, 2D] float32 coordinates, mask [K] bool, template_ok scalar bool).
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be [R], got shape {tokens.shape}")
    r, width = tokens.shape[0], 2 * dim
    is_stop = tokens == stop_id
    has_stop = jnp.any(is_stop)
    first = jnp.where(has_stop, jnp.argmax(is_stop), r)
    after = jnp.arange(r) >= first
    template_ok = (has_stop & (first % width == 0) & (first // width <= max_boxes)
                   & jnp.all(is_stop | ~after))
    need = max_boxes * width
    padded = jnp.concatenate([tokens, jnp.full((max(0, need - r),), stop_id, tokens.dtype)])
    boxes = padded[:need].reshape(max_boxes, width).astype(jnp.float32)
    mask = jnp.arange(max_boxes) < jnp.minimum(first // width, max_boxes)
    return boxes, mask, template_ok


_NUMBER = r"-?\d+(?:\.\d+)?"


def parse_boxes_text(text: str, *, dim: int = 1) -> tuple[np.ndarray, bool]:
    """Boxes written as text: a JSON list of boxes, each a list of 2D numbers (lo..., hi...),
    e.g. "[[12, 40], [55, 70]]" (intervals, D = 1) or "[[10, 20, 50, 80]]" (D = 2); "[]" is no
    box. Surrounding whitespace and a Markdown ```json fence are ignored.

    The template holds when the whole text parses as such a list. Otherwise the boxes are
    extracted leniently, every bracketed group of exactly 2D numbers in the text in order (as
    the released reward's regular-expression fallback), and the template fails.

    Args:
      text: the completion.
      dim: D.

    Returns:
      (boxes [k, 2D] float32 array, k >= 0, in the text's order; template_ok bool).
    """
    width = 2 * dim
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        value = None
    if isinstance(value, list) and all(
            isinstance(b, list) and len(b) == width
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
            for b in value):
        return np.asarray(value, np.float32).reshape(len(value), width), True
    group = r"\[\s*" + r"\s*,\s*".join([f"({_NUMBER})"] * width) + r"\s*\]"
    found = [[float(x) for x in m] for m in re.findall(group, text)]
    return np.asarray(found, np.float32).reshape(len(found), width), False


def pad_boxes(boxes: Sequence[np.ndarray], max_boxes: int, *, dim: int = 1
              ) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length box lists -> fixed slots: (boxes [N, K, 2D] float32, mask [N, K] bool),
    the first `max_boxes` boxes of each list (the rest are dropped)."""
    width = 2 * dim
    out = np.zeros((len(boxes), max_boxes, width), np.float32)
    mask = np.zeros((len(boxes), max_boxes), bool)
    for i, b in enumerate(boxes):
        b = np.asarray(b, np.float32).reshape(-1, width)[:max_boxes]
        out[i, :len(b)] = b
        mask[i, :len(b)] = True
    return out, mask
