"""Direct alignment (DPO and relatives) from preference pairs, offline and online.

One loss wrapper, `make_direct_loss`, serves the offline recipe (`train`, pairs from a dataset
against a frozen reference) and online DPO (`alignax.algorithms.online_dpo`, pairs picked from
the policy's own samples, reference log-probs computed at rollout time). It reads two batch
layouts:

- offline pairs: `chosen_ids`, `rejected_ids`, `chosen_mask`, `rejected_mask`,
  `chosen_response_mask`, `rejected_response_mask` [B, T]; the log-prob of a response token is
  read from the previous position (`shift_for_next_token`);
- stacked rollout rows: `ids`, `mask` [2B, P + R] (rows [0, B) chosen, [B, 2B) rejected) and
  `response_mask` [2B, R]; the LM head runs on the R predicting positions only;
- packed pairs (`train`'s `packing`, TRL's `padding_free`; `alignax.data.packing.pack_pairs`
  with `response=True`): `input_ids`, `mask` (integer segment ids), `response_mask` [B, T],
  `chosen_end`, `rejected_end` [B, S] and per-pair fields [B, S]. Row b holds up to S pairs,
  pair j's chosen and rejected the segments 2j + 1, 2j + 2; one forward over [B, T], then the
  log-probs of each segment's response tokens are summed per segment (`packed_pair_logps`),
  giving the B*S pair slots' values (equal to the padded layout's for the same pairs) and
  `valid` [B*S]; the loss and metrics are means over the valid slots.

The reference enters either as the frozen step argument `ref_params` (recomputed under
stop_gradient) or as precomputed `ref_logps` [2B] in the batch; an optional `weight` [B]
drops or reweights pairs. A loss declares the per-pair inputs it needs in
`alignax.losses.DIRECT_LOSS_INPUTS`: response lengths and TDPO's sequential KLs are computed
here, every other input is read from the batch by its name. With `token_logps=True` (set by
`train` when the model's `logits_chunk > 0`) the model returns token log-probs of the targets
instead of [2B, T, V] logits (chunked over the vocabulary, `alignax.ops.chunked_token_logprobs`).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import common, pretrained
from alignax.algorithms.online import response_logits
from alignax.data.packing import PACKING_DEFAULTS, check_packing, packed_train_source
from alignax.losses import (DIRECT_LOSS_INPUTS, DIRECT_LOSSES, F_DIVERGENCE_LOSSES,
                            F_DIVERGENCES, REFERENCE_FREE_LOSSES, f_divergence_scores,
                            length_desensitized_logps, wpo_weights)
from alignax.ops import (masked_sum, sequence_logprobs, sequential_kl, shift_for_next_token,
                         token_logprobs)
from alignax.train.loop import Frozen

COMPUTED_INPUTS = ("chosen_lengths", "rejected_lengths", "chosen_seq_kl", "rejected_seq_kl")


def _pair_rows(batch):
    """The 2B stacked rows (chosen first) of either layout: (ids, mask, targets, target_mask,
    logits_range); `logits_range` (static) is the span of predicting positions, None = all."""
    if "ids" in batch:  # stacked rollout rows: [prompt, response], response_mask [2B, R]
        rmask = batch["response_mask"]
        r, t = rmask.shape[1], batch["ids"].shape[1]
        return batch["ids"], batch["mask"], batch["ids"][:, -r:], rmask, (t - r - 1, t - 1)
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]], axis=0)
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
    response = jnp.concatenate(
        [batch["chosen_response_mask"], batch["rejected_response_mask"]], axis=0
    )
    targets, target_mask = shift_for_next_token(ids, response, mask)
    return ids, mask, targets, target_mask, None


def _pair_forward(apply_fn, params, batch):
    """One forward over the 2B stacked rows (chosen first): (logits, targets, target_mask)."""
    ids, mask, targets, target_mask, span = _pair_rows(batch)
    if span is not None:
        return response_logits(apply_fn, params, ids, mask, span[1] - span[0]), targets, target_mask
    return apply_fn(params, ids, mask), targets, target_mask


def _pair_token_logps(apply_fn, params, batch, token_logps: bool):
    """Token log-probs [2B, T'] of the targets, and (targets, target_mask) [2B, T'].

    With `token_logps` the model returns them itself (`apply_fn(..., targets=...)`, e.g. an
    alignax causal LM with `logits_chunk > 0`: the [2B, T', V] logits are never formed); else
    they are read from the full logits.
    """
    if not token_logps:
        logits, targets, target_mask = _pair_forward(apply_fn, params, batch)
        return token_logprobs(logits, targets), targets, target_mask
    ids, mask, targets, target_mask, span = _pair_rows(batch)
    kwargs = {} if span is None else {"logits_range": span}
    return apply_fn(params, ids, mask, targets=targets, **kwargs), targets, target_mask


def _pair_seq_logps(apply_fn, params, batch, token_logps: bool):
    """Summed response log-probs [2B] of the stacked rows, and the target mask [2B, T']."""
    logps, _, target_mask = _pair_token_logps(apply_fn, params, batch, token_logps)
    return masked_sum(logps, target_mask.astype(bool), axis=-1), target_mask


def _split(x, b):
    return x[:b], x[b:]


def pair_logps(apply_fn, params, batch, *, token_logps: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """Summed response log-probs of chosen and rejected, one forward over the 2B stacked rows.

    `token_logps=True`: `apply_fn` takes `targets=` and returns token log-probs (see
    `make_direct_loss`)."""
    seq, _ = _pair_seq_logps(apply_fn, params, batch, token_logps)
    return _split(seq, seq.shape[0] // 2)


# ----------------------------------------------------------------------------- packed pairs
# Rows of `alignax.data.packing.pack_pairs(..., response=True)` (kind "direct_pair"): several
# pairs per row, pair j's chosen / rejected the segments 2j + 1 / 2j + 2 of the integer
# segment-id `mask`; `response_mask` [B, T]; `chosen_end`, `rejected_end` [B, S] (-1: empty
# slot); per-pair fields [B, S].

PACKED_ROW_KEYS = ("input_ids", "mask", "response_mask", "chosen_end", "rejected_end")
# losses that cannot train on packed rows, and why
PACKED_REFUSED = {
    "tdpo": "its sequential KL reads both models' full per-token distributions of each "
            "sequence",
    "aot": "it sorts the log-ratios over the batch, where empty pair slots would enter the sort",
    "aot_pair": "it sorts the log-ratios over the batch, where empty pair slots would enter the "
                "sort",
}


def packed_refusal(names) -> str | None:
    """The one-line reason why a direct loss (or a mixture's member) in `names` cannot train on
    packed pairs (`packing.enabled`), or None if all can."""
    for name in names:
        why = PACKED_REFUSED.get(name)
        if why is None and "chosen_seq_kl" in DIRECT_LOSS_INPUTS.get(name, ()):
            why = "it needs token-level sequences of both models"
        if why is not None:
            return f"loss {name!r} cannot train on packed pairs (packing.enabled): {why}"
    return None


def _packed_rows(batch):
    """(ids, seg, targets, target_mask, S) of packed pair rows: the next-token targets of each
    segment's response tokens (`shift_for_next_token` with the segment ids: a target in the next
    segment or in padding does not count)."""
    missing = [k for k in PACKED_ROW_KEYS if k not in batch]
    if missing:
        raise ValueError(f"packed pair rows need {missing}: pack them with "
                         "pack_pairs(..., response=True) (packing kind 'direct_pair')")
    ids, seg = batch["input_ids"], batch["mask"]
    if not jnp.issubdtype(seg.dtype, jnp.integer):
        raise ValueError(f"packed pair rows: mask must hold integer segment ids, got {seg.dtype}")
    targets, target_mask = shift_for_next_token(ids, batch["response_mask"], seg)
    return ids, seg, targets, target_mask, batch["chosen_end"].shape[1]


def _packed_valid(batch):
    """[B*S] float32: 1 where a slot holds a pair."""
    return (batch["chosen_end"] >= 0).reshape(-1).astype(jnp.float32)


def _pair_field(batch, name):
    """A per-pair field of packed rows, [B, S] -> [B*S]."""
    x = batch[name]
    if x.shape != batch["chosen_end"].shape:
        raise ValueError(f"packed pair rows: {name} must be [B, S] = "
                         f"{tuple(batch['chosen_end'].shape)}, got {tuple(x.shape)}")
    return x.reshape(-1)


def segment_sums(x, seg, s: int):
    """Sums over the segments of packed pair rows: x [B, T], seg [B, T] int -> [B, 2S] float32.

    out[b, k] = sum_t [seg[b, t] = k + 1] x[b, t]; padding (segment 0) is dropped. Computed as
    a masked reduction over T (exact float32 adds; no matmul, whose precision an accelerator may
    lower, and no scatter, whose order may vary).
    """
    onehot = seg[:, :, None] == jnp.arange(1, 2 * s + 1, dtype=seg.dtype)
    return jnp.sum(jnp.where(onehot, jnp.asarray(x, jnp.float32)[:, :, None], 0.0), axis=1)


def _sides(per_segment):
    """[B, 2S] per-segment values -> (chosen [B*S], rejected [B*S]): slot j of row b is
    b * S + j, its chosen segment 2j + 1 and rejected 2j + 2."""
    pairs = per_segment.reshape(per_segment.shape[0], -1, 2)
    return pairs[..., 0].reshape(-1), pairs[..., 1].reshape(-1)


def _packed_token_logps(apply_fn, params, ids, seg, targets, token_logps: bool):
    """Token log-probs [B, T] of the targets of packed rows (one forward; see
    `_pair_token_logps` for `token_logps`)."""
    if token_logps:
        return apply_fn(params, ids, seg, targets=targets)
    return token_logprobs(apply_fn(params, ids, seg), targets)


def _packed_seq_logps(tl, target_mask, seg, s: int, ld_alpha: float | None = None):
    """Summed response log-probs per segment [B, 2S] of packed rows.

    With `ld_alpha` (LD-DPO, `alignax.losses.length_desensitized_logps` per pair): a token's
    rank within its segment's response is the row's running response count minus the earlier
    segments' counts; the first min(l_c, l_r) response tokens of each side count fully, the rest
    with weight alpha.
    """
    m = target_mask.astype(jnp.float32)
    lp = jnp.where(m > 0, tl, 0.0)
    if ld_alpha is None:
        return segment_sums(lp, seg, s)
    counts = segment_sums(m, seg, s)
    shared = jnp.repeat(jnp.minimum(counts[:, 0::2], counts[:, 1::2]), 2, axis=1)
    start = jnp.cumsum(counts, axis=1) - counts  # response tokens of the earlier segments
    zero = jnp.zeros_like(counts[:, :1])
    index = seg.astype(jnp.int32)
    pos = jnp.cumsum(m, axis=-1) - jnp.take_along_axis(jnp.concatenate([zero, start], 1),
                                                       index, axis=1)
    limit = jnp.take_along_axis(jnp.concatenate([zero, shared], 1), index, axis=1)
    head = segment_sums(jnp.where(pos <= limit, lp, 0.0), seg, s)
    tail = segment_sums(jnp.where(pos > limit, lp, 0.0), seg, s)
    return head + ld_alpha * tail


def packed_pair_logps(apply_fn, params, batch, *, token_logps: bool = False
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Summed response log-probs of the pairs packed in rows, one forward over [B, T].

    Each segment attends only to itself and its positions restart at 0 (the model's integer
    segment-id `mask`); the log-prob of a response token is read from the previous position of
    the same segment, and each segment's response tokens are summed (`segment_sums`):

        logp(y^c_j) = sum_t [seg_t = 2j + 1] m_{t+1} [seg_{t+1} = seg_t] log pi(x_{t+1} | x_<=t)

    which equals `pair_logps` of the same pair in a padded row (TRL's `padding_free`).

    Args:
      apply_fn: the LM's apply (`token_logps=True`: it takes `targets=`, as in
        `make_direct_loss`).
      params: its params.
      batch: `input_ids`, `mask` (segment ids), `response_mask` [B, T] int; `chosen_end`,
        `rejected_end` [B, S] int (-1: no pair in that slot).

    Returns:
      (chosen [B*S], rejected [B*S] float32 log-probs, 0 in empty slots; valid [B*S] float32,
      1 where a pair is). Slot j of row b is entry b * S + j.
    """
    ids, seg, targets, target_mask, s = _packed_rows(batch)
    tl = _packed_token_logps(apply_fn, params, ids, seg, targets, token_logps)
    chosen, rejected = _sides(_packed_seq_logps(tl, target_mask, seg, s))
    return chosen, rejected, _packed_valid(batch)

def loss_inputs(loss: str) -> tuple[str, ...]:
    """The per-pair inputs `loss` needs from each batch (its declared inputs minus the ones this
    wrapper computes)."""
    return tuple(n for n in DIRECT_LOSS_INPUTS.get(loss, ()) if n not in COMPUTED_INPUTS)


def _member(name: str):
    """(per-example loss, uses the reference) of a mixture member; "sft" is (None, False)."""
    if name == "sft":
        return None, False
    if name in DIRECT_LOSSES:
        return DIRECT_LOSSES[name], True
    if name in REFERENCE_FREE_LOSSES:
        return REFERENCE_FREE_LOSSES[name], False
    valid = sorted(DIRECT_LOSSES) + sorted(REFERENCE_FREE_LOSSES) + ["sft"]
    raise ValueError(f"unknown direct loss {name!r}; valid: {valid}")


def _member_kwargs(names, fns, loss_kwargs):
    """loss_kwargs split over a mixture's members by their signatures (a single loss gets all of
    them, so its own signature reports a bad one); a keyword no member takes is an error."""
    if len(names) == 1:
        return [dict(loss_kwargs)]
    out, used = [], set()
    for fn in fns:
        params = inspect.signature(fn).parameters if fn is not None else {}
        take = {k: v for k, v in loss_kwargs.items() if k in params}
        used |= set(take)
        out.append(take)
    unused = sorted(set(loss_kwargs) - used)
    if unused:
        raise ValueError(f"loss_kwargs {unused} are taken by none of the losses {list(names)}")
    return out


def _log_sum_sq_probs(logits):
    """log sum_v p(v)^2 per position [..., V] -> [...] (WPO's sharpness normaliser)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jax.nn.logsumexp(2.0 * logp, axis=-1)


def make_direct_loss(apply_fn, loss="dpo", loss_kwargs=None, *, token_logps: bool = False,
                     loss_weights=None, ld_alpha: float | None = None,
                     f_divergence: str = "reverse_kl", f_alpha: float = 1.0,
                     use_weighting: bool = False):
    """`loss_fn(params, batch, rng, ref_params=None)` = (weighted) mean over pairs of a direct
    objective.

    `loss` names an entry of DIRECT_LOSSES (with a reference) or REFERENCE_FREE_LOSSES (SimPO,
    CPO, ORPO: no reference forward). The reference log-probs come from the batch's
    `ref_logps` [2B] when present, else from the frozen `ref_params` (under stop_gradient);
    they are never part of the optimizer's tree. Inputs the loss declares in
    DIRECT_LOSS_INPUTS are computed (lengths, sequential KLs) or read from the batch
    (`loss_inputs(loss)`, e.g. iREPO's `preference_rate`, CREAM's `consistency`).

    `token_logps=True` asks `apply_fn(params, ids, mask, targets=targets [N, T'])` (with
    `logits_range=` for stacked rollout rows) for the token log-probs [N, T'] instead of the
    logits [N, T', V]: an alignax causal LM with `logits_chunk > 0` then computes them in
    vocabulary chunks (`alignax.ops.chunked_token_logprobs`), so neither the policy's nor the
    reference's [2B, T, V] logits are materialised; the values and gradients are the same.
    `train` sets it from `config["model"]["logits_chunk"]`. Losses that need the full
    distributions (TDPO's sequential KL) ignore it and use the logits.

    A batch of packed pair rows (it has `chosen_end`; see the module docstring) is read with
    one forward per model over [B, T]: the per-pair log-probs, response lengths (segment
    counts), LD-DPO's weighting, WPO's weights and the "sft" term are per-segment reductions;
    empty slots get finite placeholder inputs (log-prob -1, length 1) and weigh 0, so the loss
    and metrics are means over the real pairs (reported as the metric `pairs`), equal to the
    padded batch's over the same pairs. Per-pair inputs from the batch (precomputed
    `ref_chosen_logps` / `ref_rejected_logps`, `loss_inputs(loss)`) are [B, S]; `weight` and
    stacked `ref_logps` are not read from packed rows. Losses in `packed_refusal` (TDPO, AOT)
    raise a ValueError.

    The options of TRL's DPOConfig that change the objective (docs/trl.md):

    - a list of losses with `loss_weights` (TRL's `loss_type` list, e.g. MPO = ["dpo",
      "bco_pair", "sft"]): sum_k w_k mean_pairs(L_k). "sft" is the negative log-likelihood of
      the chosen responses averaged over their tokens (RPO's term, Pang et al. 2024, arXiv
      2404.19733, when mixed with "dpo"); `loss_kwargs` go to the members whose signatures
      take them.
    - `ld_alpha` (LD-DPO, `alignax.losses.length_desensitized_logps`): the excess tokens of the
      longer response of a pair count with weight alpha, for the policy and the reference.
    - `f_divergence` / `f_alpha` (`alignax.losses.f_divergence_scores`): each log-ratio is
      replaced by f'(pi/pi_ref) of that divergence, for the losses of F_DIVERGENCE_LOSSES.
    - `use_weighting` (WPO, `alignax.losses.wpo_weights`): every pair's loss terms are weighted
      by w(y_c) w(y_r) (needs the logits: not with token_logps).
    """
    names = [loss] if isinstance(loss, str) else list(loss)
    if not names:
        raise ValueError("loss: an empty list of losses")
    if len(set(names)) != len(names):
        raise ValueError(f"loss: {names} names a loss twice")
    members = [_member(n) for n in names]
    if names == ["sft"]:
        raise ValueError("loss 'sft' alone is supervised fine-tuning: use alignax.algorithms.sft")
    weights = [1.0] * len(names) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(names):
        raise ValueError(f"loss_weights has {len(weights)} entries for {len(names)} losses")
    if f_divergence not in F_DIVERGENCES:
        raise ValueError(f"unknown f_divergence {f_divergence!r}; valid: {list(F_DIVERGENCES)}")
    if f_divergence != "reverse_kl":
        bad = [n for n in names if n not in F_DIVERGENCE_LOSSES]
        if bad:
            raise ValueError(f"f_divergence {f_divergence!r} applies to the losses "
                             f"{list(F_DIVERGENCE_LOSSES)} only, not {bad}")
    if ld_alpha is not None and not 0.0 <= float(ld_alpha) <= 1.0:
        raise ValueError(f"ld_alpha must lie in [0, 1], got {ld_alpha}")
    loss_kwargs = dict(loss_kwargs or {})
    declared = tuple(dict.fromkeys(i for n in names for i in DIRECT_LOSS_INPUTS.get(n, ())))
    clash = sorted(set(loss_kwargs) & set(declared))
    if clash:
        raise ValueError(f"loss {loss!r} reads {clash} from each batch, not from loss_kwargs")
    kwargs_of = _member_kwargs(names, [fn for fn, _ in members], loss_kwargs)
    from_batch = tuple(n for n in declared if n not in COMPUTED_INPUTS)
    needs_seq_kl = "chosen_seq_kl" in declared
    uses_ref = any(r for _, r in members)
    if needs_seq_kl and (ld_alpha is not None or use_weighting or f_divergence != "reverse_kl"):
        raise ValueError("TDPO's sequential KL does not combine with ld_alpha, use_weighting "
                         "or f_divergence")
    if use_weighting and token_logps:
        raise ValueError("use_weighting (WPO) needs the policy's full distributions: set "
                         "model.logits_chunk = 0")
    if use_weighting and any(n in ("aot", "aot_pair") for n in names):
        raise ValueError("use_weighting (WPO) does not apply to the batch-sorted AOT losses")
    full_logits = needs_seq_kl or use_weighting

    def seq_logps(tl, mask):
        if ld_alpha is None:
            return masked_sum(tl, mask.astype(bool), axis=-1)
        return length_desensitized_logps(tl, mask, float(ld_alpha))

    def padded_terms(params, batch, ref_params):
        """The per-pair terms of B padded pairs (or 2B stacked rollout rows)."""
        if full_logits:
            logits, targets, target_mask = _pair_forward(apply_fn, params, batch)
            tl = token_logprobs(logits, targets)
        else:
            tl, targets, target_mask = _pair_token_logps(apply_fn, params, batch, token_logps)
        seq = seq_logps(tl, target_mask)
        b = seq.shape[0] // 2
        pc, pr = _split(seq, b)
        rc = rr = None
        extra = {name: batch[name] for name in from_batch}
        lengths = _split(target_mask.sum(-1), b)
        for side, n in zip(("chosen", "rejected"), lengths):  # response token counts
            extra[f"{side}_lengths"] = n
        if uses_ref:
            precomputed = (("ref_chosen_logps" in batch or "ref_logps" in batch)
                           and not needs_seq_kl)
            if precomputed and ld_alpha is not None:
                raise ValueError("ld_alpha re-weights the reference's tokens: precomputed "
                                 "reference log-probs (sums) cannot serve it")
            if "ref_chosen_logps" in batch and not needs_seq_kl:  # precomputed, per pair
                rc, rr = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
            elif "ref_logps" in batch and not needs_seq_kl:  # precomputed, stacked rows
                rc, rr = _split(batch["ref_logps"], b)
            else:
                if ref_params is None:
                    raise ValueError(f"loss {loss!r} needs the reference: pass ref_params to "
                                     "the step or ref_logps in the batch")
                if needs_seq_kl:
                    ref_logits = jax.lax.stop_gradient(_pair_forward(apply_fn, ref_params,
                                                                     batch)[0])
                    rc, rr = _split(sequence_logprobs(ref_logits, targets, target_mask), b)
                    extra["chosen_seq_kl"], extra["rejected_seq_kl"] = _split(
                        sequential_kl(ref_logits, logits, target_mask), b)
                else:
                    ref_tl = _pair_token_logps(apply_fn, ref_params, batch, token_logps)[0]
                    rc, rr = _split(jax.lax.stop_gradient(seq_logps(ref_tl, target_mask)), b)
        if "weight" in batch:
            w = batch["weight"]
            denom = jnp.maximum(w.sum(), 1.0)
            mean = lambda v: (v * w).sum() / denom  # noqa: E731
        else:
            w = None
            mean = jnp.mean
        pair_w = (wpo_weights(tl, _log_sum_sq_probs(jax.lax.stop_gradient(logits)),
                              target_mask) if use_weighting else None)

        def chosen_nll():  # "sft": token-mean NLL of the chosen responses
            cmask = _split(target_mask, b)[0].astype(jnp.float32)
            if w is not None:
                cmask = cmask * w[:, None]
            nll = -(jnp.where(cmask > 0, _split(tl, b)[0], 0.0) * cmask).sum()
            return nll / jnp.maximum(cmask.sum(), 1.0)

        return (pc, pr, rc, rr), extra, mean, chosen_nll, pair_w, {}

    def packed_terms(params, batch, ref_params):
        """The per-pair terms of the B x S pair slots of packed rows (empty slots weigh 0)."""
        refused = packed_refusal(names)
        if refused:
            raise ValueError(refused)
        for key in ("weight", "ref_logps"):
            if key in batch:
                raise ValueError(f"packed pair rows carry per-pair fields as [B, S]; {key!r} "
                                 "is not read from them")
        ids, seg, targets, target_mask, s = _packed_rows(batch)
        valid = _packed_valid(batch)
        if use_weighting:
            logits = apply_fn(params, ids, seg)
            tl = token_logprobs(logits, targets)
        else:
            tl = _packed_token_logps(apply_fn, params, ids, seg, targets, token_logps)
        alpha = None if ld_alpha is None else float(ld_alpha)
        fill = lambda x: jnp.where(valid > 0, x, -1.0)  # noqa: E731  (finite in empty slots)
        pc, pr = map(fill, _sides(_packed_seq_logps(tl, target_mask, seg, s, alpha)))
        rc = rr = None
        extra = {name: _pair_field(batch, name) for name in from_batch}
        counts = segment_sums(target_mask, seg, s)  # [B, 2S] response token counts
        for side, n in zip(("chosen", "rejected"), _sides(counts)):
            extra[f"{side}_lengths"] = jnp.where(valid > 0, n, 1.0)
        if uses_ref:
            if "ref_chosen_logps" in batch:  # precomputed, carried as [B, S] pair fields
                if ld_alpha is not None:
                    raise ValueError("ld_alpha re-weights the reference's tokens: precomputed "
                                     "reference log-probs (sums) cannot serve it")
                rc, rr = (fill(_pair_field(batch, f"ref_{side}_logps"))
                          for side in ("chosen", "rejected"))
            else:
                if ref_params is None:
                    raise ValueError(f"loss {loss!r} needs the reference: pass ref_params to "
                                     "the step or ref_chosen_logps in the packed rows")
                ref_tl = _packed_token_logps(apply_fn, ref_params, ids, seg, targets,
                                             token_logps)
                ref_seq = jax.lax.stop_gradient(_packed_seq_logps(ref_tl, target_mask, seg, s,
                                                                  alpha))
                rc, rr = map(fill, _sides(ref_seq))
        pairs = valid.sum()
        denom = jnp.maximum(pairs, 1.0)
        mean = lambda v: jnp.where(valid > 0, v, 0.0).sum() / denom  # noqa: E731
        pair_w = None
        if use_weighting:
            lssp = _log_sum_sq_probs(jax.lax.stop_gradient(logits))
            m = target_mask.astype(jnp.float32)
            aligned = segment_sums(jnp.where(m > 0, tl - lssp, 0.0), seg, s)
            wc, wr = _sides(jnp.exp(aligned / jnp.maximum(counts, 1.0)))
            pair_w = jax.lax.stop_gradient(wc * wr)

        def chosen_nll():  # "sft": token-mean NLL of the chosen responses (odd segments)
            cmask = (target_mask * (seg % 2 == 1)).astype(jnp.float32)
            nll = -(jnp.where(cmask > 0, tl, 0.0) * cmask).sum()
            return nll / jnp.maximum(cmask.sum(), 1.0)

        return (pc, pr, rc, rr), extra, mean, chosen_nll, pair_w, {"pairs": pairs}

    def loss_fn(params, batch, rng, ref_params=None):
        del rng
        missing = [name for name in from_batch if name not in batch]
        if missing:
            raise ValueError(f"loss {loss!r} needs {missing} in each batch (declared in "
                             "alignax.losses.DIRECT_LOSS_INPUTS)")
        terms = packed_terms if "chosen_end" in batch else padded_terms
        (pc, pr, rc, rr), extra, mean, chosen_nll, pair_w, counts = terms(params, batch,
                                                                          ref_params)
        total, metrics = 0.0, {}
        for name, (fn, member_ref), kw, weight in zip(names, members, kwargs_of, weights):
            inputs = {k: v for k, v in extra.items()
                      if fn is not None and k in inspect.signature(fn).parameters}
            if fn is None:  # "sft": token-mean NLL of the chosen responses
                losses, stats = jnp.broadcast_to(chosen_nll(), pc.shape), {}
            elif member_ref:
                if f_divergence != "reverse_kl":
                    zero = jnp.zeros_like(pc)
                    sc = f_divergence_scores(pc - rc, f_divergence, alpha=f_alpha)
                    sr = f_divergence_scores(pr - rr, f_divergence, alpha=f_alpha)
                    losses, stats = fn(sc, sr, zero, zero, **kw, **inputs)
                else:
                    losses, stats = fn(pc, pr, rc, rr, **kw, **inputs)
            else:
                losses, stats = fn(pc, pr, **kw, **inputs)
            if pair_w is not None:
                losses = losses * pair_w
            term = mean(losses)
            total = total + weight * term
            if not metrics:
                metrics = {k: mean(v) for k, v in stats.items()}
            if len(names) > 1:
                metrics[f"loss_{name}"] = term
        metrics["policy_chosen_logps"] = mean(pc)
        metrics["policy_rejected_logps"] = mean(pr)
        if pair_w is not None:
            metrics["wpo_weight"] = mean(pair_w)
        metrics.update(counts)
        return total, metrics

    return loss_fn


def make_pair_eval(apply_fn, ref_params, pairs: Mapping[str, Any], *, beta: float,
                   token_logps: bool = False):
    """`params -> metrics` of the implicit reward beta log(pi/ref) on fixed held-out pairs.

    `beta` is the trained loss's (read it from its loss_kwargs: `loss_beta`); `token_logps` as
    in `make_direct_loss`.

    Metrics: `pair_accuracy` (fraction of pairs whose implicit-reward margin is positive) and
    `pair_margin` (mean margin).
    """
    keys = ("chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask",
            "chosen_response_mask", "rejected_response_mask")
    inputs = {k: np.asarray(pairs[k]) for k in keys}

    @jax.jit
    def _evaluate(params, ref_params):
        pc, pr = pair_logps(apply_fn, params, inputs, token_logps=token_logps)
        rc, rr = pair_logps(apply_fn, ref_params, inputs, token_logps=token_logps)
        margins = beta * ((pc - rc) - (pr - rr))
        return {"pair_accuracy": (margins > 0).mean(), "pair_margin": margins.mean()}

    return lambda params: _evaluate(params, ref_params)


DEFAULTS = common.offline_defaults(loss="dpo", loss_kwargs=dict(beta=0.1),
                                   precompute_ref_logps=False, loss_weight=1.0,
                                   extra_losses=[], ld_alpha=None, f_divergence="reverse_kl",
                                   f_alpha=1.0, use_weighting=False, sync_ref=None,
                                   packing=dict(PACKING_DEFAULTS, max_pairs=0))
# the config keys of `make_direct_loss`'s TRL options (docs/trl.md)
LOSS_OPTIONS = ("ld_alpha", "f_divergence", "f_alpha", "use_weighting")


def loss_spec(config: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    """(losses, weights) of a direct config: `loss` with `loss_weight`, then `extra_losses`, a
    list of [name, weight] pairs (TRL's `loss_type` / `loss_weights` lists: MPO is loss "dpo"
    with weight 0.8 and extra_losses [["bco_pair", 0.2], ["sft", 1.0]]; RPO is "dpo" with
    [["sft", alpha]])."""
    names, weights = [config["loss"]], [float(config["loss_weight"])]
    for item in config["extra_losses"]:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
            raise ValueError(f"direct config: extra_losses entries are [name, weight] pairs, "
                             f"got {item!r}")
        names.append(item[0])
        weights.append(float(item[1]))
    return names, weights


def make_config_loss(apply_fn, config: Mapping[str, Any], *, token_logps: bool = False):
    """`make_direct_loss` of a resolved direct config (its loss, weights and TRL options)."""
    names, weights = loss_spec(config)
    return make_direct_loss(apply_fn, names[0] if len(names) == 1 else names,
                            config["loss_kwargs"], token_logps=token_logps,
                            loss_weights=None if len(names) == 1 else weights,
                            **{k: config[k] for k in LOSS_OPTIONS})


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return common.offline_config(DEFAULTS, overrides, "direct config")


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the loss name and its loss_kwargs, the optimizer and the mesh.

    Raises:
      ValueError: one line naming the bad key or value.
    """
    names, _ = loss_spec(common.validate_offline(DEFAULTS, config, "direct config"))
    single = len(names) == 1
    config = common.validate_offline(DEFAULTS, config, "direct config",
                                     {**DIRECT_LOSSES, **REFERENCE_FREE_LOSSES} if single
                                     else None)
    check_packing(config["packing"], "direct config")
    if config["loss_weight"] != 1.0 and single:
        raise ValueError("direct config: loss_weight scales the loss within extra_losses; "
                         "alone it only rescales the learning rate")
    try:  # its own checks: names, mixture kwargs, option values and combinations
        make_config_loss(None, config)
    except ValueError as e:
        raise ValueError(f"direct config: {e}") from None
    if config["sync_ref"] is not None:
        sync = dict(config["sync_ref"])
        if set(sync) != {"alpha", "steps"}:
            raise ValueError(f"direct config: sync_ref is {{alpha, steps}}, got {sorted(sync)}")
        if not 0.0 < float(sync["alpha"]) <= 1.0 or int(sync["steps"]) < 1:
            raise ValueError(f"direct config: sync_ref needs 0 < alpha <= 1 and steps >= 1, "
                             f"got {sync}")
        for key, why in (("precompute_ref_logps", "precomputed log-probs cannot follow it"),
                         ("lora", "with LoRA the reference is the frozen base")):
            if config[key]:
                raise ValueError(f"direct config: sync_ref moves the reference; {why} "
                                 f"({key})")
        if not uses_reference(config):
            raise ValueError("direct config: sync_ref with a reference-free loss")
    if config["precompute_ref_logps"] and config["ld_alpha"] is not None:
        raise ValueError("direct config: ld_alpha re-weights the reference's tokens; "
                         "precompute_ref_logps stores their sums and cannot serve it")
    if config["precompute_ref_logps"]:
        if not uses_reference(config):
            raise ValueError(f"direct config: precompute_ref_logps with the reference-free loss "
                             f"{config['loss']!r} has nothing to precompute")
        for name in names:
            if "chosen_seq_kl" in DIRECT_LOSS_INPUTS.get(name, ()):
                raise ValueError(f"direct config: loss {name!r} needs the reference's full "
                                 "logits every step (sequential KL); precompute_ref_logps "
                                 "cannot serve it")
    if config["packing"]["enabled"]:
        refused = packed_refusal(names)
        if refused:
            raise ValueError(f"direct config: {refused}")
    return config


def uses_reference(config: Mapping[str, Any]) -> bool:
    """Whether a direct config's loss (or any loss of its mixture) reads the reference."""
    return any(name in DIRECT_LOSSES for name in loss_spec(config)[0])


def loss_beta(loss: str, loss_kwargs: Mapping[str, Any] | None) -> float:
    """The beta a direct loss trains with: its loss_kwargs' beta, else the loss's default."""
    if loss_kwargs and "beta" in loss_kwargs:
        return float(loss_kwargs["beta"])
    fn = DIRECT_LOSSES.get(loss) or REFERENCE_FREE_LOSSES.get(loss)
    if fn is None:
        raise ValueError(f"unknown direct loss {loss!r}")
    param = inspect.signature(fn).parameters.get("beta")
    if param is None or param.default is param.empty:
        raise ValueError(f"loss {loss!r} has no default beta; set loss_kwargs.beta")
    return float(param.default)


def train(
    config: Mapping[str, Any], workdir: str, *, train_source, ref_params=None, eval_fn=None,
    seed: int = 0,
) -> dict:
    """Trains a policy initialised at `ref_params` with a direct-alignment loss.

    Config keys (`default_config()`): model, optimizer, loss (name in DIRECT_LOSSES or
    REFERENCE_FREE_LOSSES), loss_kwargs (e.g. beta), loss_weight and extra_losses (a weighted
    mixture, `loss_spec`), ld_alpha, f_divergence, f_alpha, use_weighting (TRL's options,
    `make_direct_loss`), sync_ref ({alpha, steps}: TR-DPO, the reference moves toward the
    policy every `steps` updates, `common.fit_recipe(synced_reference=)`), train.{steps,
    batch_size, grad_accum_steps, checkpoint_every, eval_every, log_every, progress}, mesh, lora,
    precompute_ref_logps, packing (below). Unknown keys are an error. `eval_fn(params) ->
    metrics` (e.g. alignax.eval.policy.make_policy_eval) is logged as eval/*. With
    `model.path` (an HF checkpoint folder, `alignax.algorithms.pretrained`) the policy and the
    reference both start from the checkpoint and `ref_params` is not passed; otherwise it is
    required.

    The memory levers: `model.logits_chunk > 0` asks the model for token log-probs (chunked
    over the vocabulary) instead of logits (`make_direct_loss(token_logps=True)`);
    `precompute_ref_logps=True` runs the reference once over `train_source` before training
    (`alignax.algorithms.reference.precompute_ref_logps`, stored under `workdir` and reloaded on
    resume) and the step carries no reference model at all; `lora={rank, alpha, ...}` trains
    adapters on `ref_params`, which stay the one frozen copy and the reference
    (`alignax.models.lora`); `train.grad_accum_steps` splits each batch into micro-batches
    inside the step (equal to the whole batch for unweighted pairs).

    `packing.enabled` (`alignax.data.packing.PACKING_DEFAULTS` plus `max_pairs`; TRL's
    `padding_free`) packs whole pairs of `train_source` into rows of `packing.length` tokens
    (default twice the pairs' row length), chosen and rejected as adjacent segments with their
    response masks (`pack_pairs(..., response=True)`); the policy and the reference run one
    forward over the packed rows and each pair's log-probs are per-segment sums
    (`packed_pair_logps`), equal to the padded ones. `train.batch_size` then counts packed
    rows, the loss is the mean over the batch's pairs (empty slots weigh 0) and accumulated
    micro-batches weigh by their pair counts (the metric `pairs`). With
    `precompute_ref_logps` the reference pass runs over the padded pairs first and its sums are
    carried into the rows' pair slots. Losses that need per-sequence distributions or the whole
    batch (TDPO, AOT) are refused. Use it when pair lengths vary a lot: fewer pad tokens are
    computed for the same update.
    """
    config = validate(config)
    model, ref_params = pretrained.recipe_model(config, "lm", init_params=ref_params,
                                                params_name="ref_params", required=True)
    token_logps = model.config.logits_chunk > 0
    frozen = []
    if config["precompute_ref_logps"]:
        from alignax.algorithms.reference import precompute_ref_logps

        if jax.process_count() > 1:
            raise ValueError("precompute_ref_logps runs in one process: precompute with one "
                             "process first (the values are stored in the workdir), then "
                             "start the multi-process run")
        train_source = precompute_ref_logps(
            model.apply, ref_params, train_source, batch_size=int(config["train"]["batch_size"]),
            workdir=workdir, token_logps=token_logps,
            mesh=common.mesh_from(config["mesh"]) if config["mesh"] else None)
    elif not config["lora"] and uses_reference(config) and config["sync_ref"] is None:
        frozen = [Frozen(ref_params, None)]  # sharded like the policy (fit_recipe)
    synced = None
    if config["sync_ref"] is not None:  # TR-DPO: the reference is train state
        synced = (ref_params, float(config["sync_ref"]["alpha"]), int(config["sync_ref"]["steps"]))
    packing = config["packing"]
    if packing["enabled"]:  # per-pair fields the loss reads ride in the rows' pair slots
        carried = tuple(dict.fromkeys(
            field for name in loss_spec(config)[0] for field in loss_inputs(name)))
        if config["precompute_ref_logps"]:
            from alignax.algorithms.reference import REF_FIELDS

            carried += REF_FIELDS
        train_source = packed_train_source(train_source, packing, "direct_pair",
                                           pair_fields=carried)
    return common.fit_recipe(
        config, workdir, model=model,
        loss_fn=make_config_loss(model.apply, config, token_logps=token_logps),
        train_source=train_source, seed=seed, init_params=ref_params,
        frozen=frozen, eval_fn=eval_fn, desc="direct", lora_reference=True,
        synced_reference=synced, grad_accum_weight="pairs" if packing["enabled"] else None)
