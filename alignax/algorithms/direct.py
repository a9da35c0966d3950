"""Direct alignment (DPO and relatives) from preference pairs against a frozen reference policy."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import common
from alignax.losses import DIRECT_LOSSES, REFERENCE_FREE_LOSSES
from alignax.ops import sequence_logprobs, sequential_kl, shift_for_next_token
from alignax.train.loop import Frozen


def _pair_forward(apply_fn, params, batch):
    """One forward over the 2B stacked rows (chosen first): (logits, targets, target_mask)."""
    ids = jnp.concatenate([batch["chosen_ids"], batch["rejected_ids"]], axis=0)
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]], axis=0)
    response = jnp.concatenate(
        [batch["chosen_response_mask"], batch["rejected_response_mask"]], axis=0
    )
    targets, target_mask = shift_for_next_token(ids, response, mask)
    return apply_fn(params, ids, mask), targets, target_mask


def _split(x, b):
    return x[:b], x[b:]


def pair_logps(apply_fn, params, batch) -> tuple[jax.Array, jax.Array]:
    """Summed response log-probs of chosen and rejected, one forward over the 2B stacked rows."""
    logits, targets, target_mask = _pair_forward(apply_fn, params, batch)
    return _split(sequence_logprobs(logits, targets, target_mask), batch["chosen_ids"].shape[0])


def make_direct_loss(apply_fn, loss: str = "dpo", loss_kwargs=None,
                     batch_fields: tuple[str, ...] = ()) -> Callable:
    """`loss_fn(params, batch, rng, ref_params)` = mean over pairs of a direct objective.

    `loss` names an entry of DIRECT_LOSSES (with a reference) or REFERENCE_FREE_LOSSES (SimPO,
    CPO, ORPO: the reference forward is skipped). The reference log-probs are recomputed in the
    step from the frozen `ref_params` (under stop_gradient); they are never part of the
    optimizer's tree. Response lengths are passed to losses that take them, and TDPO's
    sequential KLs are computed from both models' logits in the step. Per-pair inputs that only
    the data knows (iREPO's `preference_rate`, CREAM's `consistency`) are named in `batch_fields`
    and read from each batch under those names.
    """
    if loss in DIRECT_LOSSES:
        per_example, uses_ref = DIRECT_LOSSES[loss], True
    elif loss in REFERENCE_FREE_LOSSES:
        per_example, uses_ref = REFERENCE_FREE_LOSSES[loss], False
    else:
        valid = sorted(DIRECT_LOSSES) + sorted(REFERENCE_FREE_LOSSES)
        raise ValueError(f"unknown direct loss {loss!r}; valid: {valid}")
    loss_kwargs = dict(loss_kwargs or {})
    accepted = inspect.signature(per_example).parameters
    # token-level KL to the reference (TDPO) needs both models' logits, computed in the step
    needs_seq_kl = "chosen_seq_kl" in accepted
    batch_fields = tuple(batch_fields)
    unknown = sorted(set(batch_fields) - set(accepted))
    if unknown:
        raise ValueError(f"loss {loss!r} takes no inputs named {unknown}")
    provided = set(loss_kwargs) | set(batch_fields) | {"chosen_lengths", "rejected_lengths"}
    if needs_seq_kl:
        provided |= {"chosen_seq_kl", "rejected_seq_kl"}
    missing = sorted(name for name, p in accepted.items()
                     if p.kind is p.KEYWORD_ONLY and p.default is p.empty and name not in provided)
    if missing:
        raise ValueError(f"loss {loss!r} needs {missing}, which this recipe does not compute; "
                         "put them in each batch and name them in batch_fields, or call the "
                         "loss from your own step")

    def loss_fn(params, batch, rng, ref_params):
        del rng
        b = batch["chosen_ids"].shape[0]
        logits, targets, target_mask = _pair_forward(apply_fn, params, batch)
        pc, pr = _split(sequence_logprobs(logits, targets, target_mask), b)
        extra = {name: batch[name] for name in batch_fields}
        for side in ("chosen", "rejected"):  # response token counts, for length-aware losses
            if f"{side}_lengths" in accepted:
                extra[f"{side}_lengths"] = batch[f"{side}_response_mask"].sum(-1)
        if uses_ref:
            ref_logits = jax.lax.stop_gradient(_pair_forward(apply_fn, ref_params, batch)[0])
            rc, rr = _split(sequence_logprobs(ref_logits, targets, target_mask), b)
            if needs_seq_kl:
                extra["chosen_seq_kl"], extra["rejected_seq_kl"] = _split(
                    sequential_kl(ref_logits, logits, target_mask), b)
            losses, stats = per_example(pc, pr, rc, rr, **loss_kwargs, **extra)
        else:
            losses, stats = per_example(pc, pr, **loss_kwargs, **extra)
        metrics = {k: v.mean() for k, v in stats.items()}
        metrics["policy_chosen_logps"] = pc.mean()
        metrics["policy_rejected_logps"] = pr.mean()
        return losses.mean(), metrics

    return loss_fn


def make_pair_eval(apply_fn, ref_params, pairs: Mapping[str, Any], *, beta: float = 0.1):
    """`params -> metrics` of the implicit reward beta log(pi/ref) on fixed held-out pairs.

    Metrics: `pair_accuracy` (fraction of pairs whose implicit-reward margin is positive) and
    `pair_margin` (mean margin).
    """
    keys = ("chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask",
            "chosen_response_mask", "rejected_response_mask")
    inputs = {k: np.asarray(pairs[k]) for k in keys}

    @jax.jit
    def _evaluate(params, ref_params):
        pc, pr = pair_logps(apply_fn, params, inputs)
        rc, rr = pair_logps(apply_fn, ref_params, inputs)
        margins = beta * ((pc - rc) - (pr - rr))
        return {"pair_accuracy": (margins > 0).mean(), "pair_margin": margins.mean()}

    return lambda params: _evaluate(params, ref_params)


def train(
    config: Mapping[str, Any], workdir: str, *, train_source, ref_params, eval_fn=None,
    seed: int = 0,
) -> dict:
    """Trains a policy initialised at `ref_params` with a direct-alignment loss.

    Config keys: model, optimizer, loss (name in DIRECT_LOSSES), loss_kwargs (e.g. beta),
    train.{steps, batch_size, checkpoint_every, log_every, eval_every}, mesh.
    `eval_fn(params) -> metrics` (e.g. alignax.eval.policy.make_policy_eval) is logged as eval/*.
    """
    model = common.make_model(config["model"], "lm")
    axes = model.logical_axes(jax.eval_shape(model.init, jax.random.key(0)))
    return common.fit_recipe(
        config, workdir, model=model,
        loss_fn=make_direct_loss(model.apply, config.get("loss", "dpo"),
                                 config.get("loss_kwargs")),
        train_source=train_source, seed=seed, init_params=ref_params,
        frozen=[Frozen(ref_params, axes)], eval_fn=eval_fn, desc="direct")
