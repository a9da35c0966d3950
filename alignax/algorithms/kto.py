"""KTO from unpaired (prompt, completion, label) examples against a frozen reference.

The batch is `alignax.data.unpaired`'s rows: `ids`, `mask`, `response_mask` [B, T] and `label`
[B] (True = desirable). With r_i = log pi(y_i|x_i) - log pi_ref(y_i|x_i) (summed over the
completion tokens) and TRL's reference point

    z0 = max(0, sg(mean_i [log pi(y_d(i)|x_i) - log pi_ref(y_d(i)|x_i)]))

on the mismatched pairs of the same batch (`alignax.data.unpaired.mismatched_rows`: each prompt
with the previous row's completion, d(i) = i - 1 cyclically), the loss is the mean over the batch
of `alignax.losses.kto_loss`:

    lambda_D (1 - sigma(beta (r - z0)))   desirable,   lambda_U (1 - sigma(beta (z0 - r)))   not.

Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization" (arXiv
2402.01306), eqs. 7-8; TRL 1.16 `KTOTrainer._compute_loss`. `loss_type="apo_zero_unpaired"`
(D'Oosterlinck et al. 2024, "Anchored Preference Optimization", arXiv 2408.06266, eq. 7, the
unpaired variant in TRL) has no reference point and no KL rows (`apo_zero_unpaired_loss`).

The KL mean runs over the rows the loss sees: the global batch of one update, on every mesh (TRL
averages each device's mean over the processes, the same number for equal per-device batches),
or each micro-batch with `train.grad_accum_steps` > 1 (as TRL's gradient accumulation: each
micro-step has its own KL). `kl_group_size` makes the rotation run within groups of that many
consecutive rows (TRL rotates within each per-device batch of `per_device_train_batch_size`);
None rotates over the whole (micro-)batch.

`kl_pairs` chooses where the donors come from. "batch" (the default): the rotation above, on
the device, within each shuffled (micro-)batch. "dataset": TRL's rule, the donors fixed once in
dataset order before any shuffling (`alignax.data.unpaired.KLRowsSource`): the dataset is cut
into consecutive blocks of B_kl rows, B_kl = `kl_group_size`, or the micro-batch
`train.batch_size / train.grad_accum_steps` when None (TRL's per_device_train_batch_size, the
`batch_size` of its batched `map`); row n of a block of m rows starting at s takes the
completion of row s + (n - s - 1) mod m (the last block may be shorter; a one-row block is its
own donor, as in TRL); every record then carries its KL row (`kl_ids`, `kl_mask`,
`kl_response_mask`) and the loss reads it from the batch. The KL mean still runs over the rows
of the (micro-)batch; their donors are in general other rows of the dataset than the batch's
(TRL trains with a sequential sampler, alignax shuffles).

`precompute_ref_logps` (TRL's precompute_ref_log_probs, needs kl_pairs="dataset" for "kto"):
the reference's summed completion log-probs of every row and of its fixed KL row are computed
once before training, in dataset order, in jitted batches of `train.batch_size` on the recipe's
mesh (`alignax.algorithms.reference.precompute_row_logps`, stored under the workdir, so that a
resumed run loads them), and ride in the batch as `ref_logps` [B] and `kl_ref_logps` [B]; the
loss reads them and the step carries no reference model. Not with `sync_ref` (the reference
moves) nor on several processes (precompute with one process first, as for DPO).

`sync_ref` = {alpha, steps} moves the reference toward the policy (Gorbatovski et al. 2024,
"Learn Your Reference Model for Real Good Alignment", arXiv 2404.09656, as TRL's KTOConfig
sync_ref_model): after every `steps`-th update ref <- alpha * policy + (1 - alpha) * ref.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from alignax.algorithms import common
from alignax.data.unpaired import KL_FIELDS, KLRowsSource, kl_donors, mismatched_rows
from alignax.losses import kto_loss
from alignax.ops import masked_sum, shift_for_next_token, token_logprobs
from alignax.train.loop import Frozen

LOSS_TYPES = ("kto", "apo_zero_unpaired")
KL_PAIRS = ("batch", "dataset")  # where the KL rows' donors come from (module docstring)
ROW_FIELDS = ("ids", "mask", "response_mask")


def apo_zero_unpaired_loss(policy_logps, ref_logps, desirable, *, beta: float = 0.1,
                           desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """APO-zero on unpaired examples: push desirable log-ratios up, undesirable ones down.

    With r = log pi(y) - log pi_ref(y):

        L = lambda_D (1 - sigma(beta r)) if desirable, else lambda_U sigma(beta r)

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions"
    (arXiv 2408.06266), eq. 7 unpaired, as TRL's KTOTrainer (`loss_type="apo_zero_unpaired"`).

    Args:
      policy_logps, ref_logps: [B] summed completion log-probs.
      desirable: [B] bool.

    Returns:
      (losses [B], {"rewards": beta r [B]}).
    """
    r = jnp.asarray(policy_logps, jnp.float32) - jnp.asarray(ref_logps, jnp.float32)
    loss = jnp.where(jnp.asarray(desirable, bool),
                     desirable_weight * (1.0 - jax.nn.sigmoid(beta * r)),
                     undesirable_weight * jax.nn.sigmoid(beta * r))
    return loss, {"rewards": beta * r}


def row_logps(apply_fn, params, ids, mask, response_mask, *, token_logps: bool = False):
    """Summed completion log-probs [N] of right-padded rows [N, T] (the token at t is read from
    position t - 1). `token_logps=True`: `apply_fn(params, ids, mask, targets=)` returns the
    token log-probs itself (an alignax LM with `logits_chunk > 0`)."""
    targets, target_mask = shift_for_next_token(ids, response_mask, mask)
    if token_logps:
        tl = apply_fn(params, ids, mask, targets=targets)
    else:
        tl = token_logprobs(apply_fn(params, ids, mask), targets)
    return masked_sum(tl, target_mask.astype(bool), axis=-1)


def make_kto_loss(apply_fn, *, loss_type: str = "kto", beta: float = 0.1,
                  desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                  kl_group_size: int | None = None, token_logps: bool = False):
    """`loss_fn(params, batch, rng, ref_params)` = mean over the batch of the KTO loss.

    For "kto" the B rows and their B mismatched KL rows run through the policy in one forward
    of 2B rows, and through the reference (under stop_gradient) in another; z0 is the clamped,
    detached batch mean of the KL rows' log-ratios (module docstring). "apo_zero_unpaired" runs
    the B rows only.

    Optional batch fields: `kl_ids`, `kl_mask`, `kl_response_mask` [B, T] (fixed KL rows,
    `alignax.data.unpaired.KLRowsSource`) replace the in-batch rotation; `ref_logps` [B] and,
    for "kto", `kl_ref_logps` [B] (precomputed reference log-probs of the rows and of their KL
    rows, `reference_forward`) replace the reference's forward, and `ref_params` may be None.

    Args:
      apply_fn: the LM's apply (logits [N, T, V], or token log-probs with `token_logps`).
      loss_type: "kto" or "apo_zero_unpaired" (TRL's `loss_type`).
      beta, desirable_weight, undesirable_weight: TRL's; lambda_D and lambda_U weigh the
        desirable and undesirable examples' losses.
      kl_group_size: KL rows rotate within groups of this many rows (None: the whole batch).
      token_logps: see `row_logps`.

    Metrics: kl (z0), rewards_desirable / rewards_undesirable (mean beta r over each class,
    0 when the batch has none), logps_desirable / logps_undesirable, frac_desirable.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown KTO loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError(f"desirable_weight and undesirable_weight must be >= 0, got "
                         f"{desirable_weight}, {undesirable_weight}")
    weights = dict(beta=beta, desirable_weight=desirable_weight,
                   undesirable_weight=undesirable_weight)
    with_kl = loss_type == "kto"

    def logps(params, ids, mask, response):
        return row_logps(apply_fn, params, ids, mask, response, token_logps=token_logps)

    def reference(ref_params, batch, ids, mask, response):
        """The reference's log-probs of the forward's rows: precomputed ones from the batch
        (`ref_logps`, then `kl_ref_logps`), else a forward of `ref_params`."""
        if "ref_logps" in batch:
            ref = batch["ref_logps"].astype(jnp.float32)
            if with_kl:
                if "kl_ref_logps" not in batch:
                    raise ValueError("precomputed ref_logps without kl_ref_logps: the KL rows' "
                                     "reference log-probs are missing from the batch")
                ref = jnp.concatenate([ref, batch["kl_ref_logps"].astype(jnp.float32)])
            if ref.shape != (ids.shape[0],):
                raise ValueError(f"precomputed reference log-probs {ref.shape} for the "
                                 f"{ids.shape[0]} rows of the forward")
            return jax.lax.stop_gradient(ref)
        return jax.lax.stop_gradient(logps(ref_params, ids, mask, response))

    def loss_fn(params, batch, rng, ref_params=None):
        del rng
        if ref_params is None and "ref_logps" not in batch:
            raise ValueError("KTO needs the reference: pass ref_params to the step")
        ids, mask, response = batch["ids"], batch["mask"], batch["response_mask"]
        b = ids.shape[0]
        desirable = batch["label"].astype(bool)
        if with_kl:
            if "kl_ids" in batch:  # fixed in dataset order (kl_pairs="dataset")
                kl_ids, kl_mask, kl_response = (batch[k] for k in KL_FIELDS)
            else:
                kl_ids, kl_mask, kl_response = mismatched_rows(ids, mask, response,
                                                               group_size=kl_group_size)
            ids = jnp.concatenate([ids, kl_ids.astype(ids.dtype)], axis=0)
            mask = jnp.concatenate([mask, kl_mask.astype(mask.dtype)], axis=0)
            response = jnp.concatenate([response, kl_response.astype(response.dtype)], axis=0)
        pol = logps(params, ids, mask, response)
        ref = reference(ref_params, batch, ids, mask, response)
        if with_kl:
            kl = jax.lax.stop_gradient((pol[b:] - ref[b:]).mean())
            losses, stats = kto_loss(pol[:b], ref[:b], desirable, kl=kl, **weights)
        else:
            losses, stats = apo_zero_unpaired_loss(pol[:b], ref[:b], desirable, **weights)
            stats["kl"] = jnp.zeros(b)
        d = desirable.astype(jnp.float32)
        n_d, n_u = d.sum(), (1.0 - d).sum()
        per_class = lambda v, w, n: (v * w).sum() / jnp.maximum(n, 1.0)  # noqa: E731
        metrics = {
            "kl": stats["kl"][0],
            "rewards_desirable": per_class(stats["rewards"], d, n_d),
            "rewards_undesirable": per_class(stats["rewards"], 1.0 - d, n_u),
            "logps_desirable": per_class(pol[:b], d, n_d),
            "logps_undesirable": per_class(pol[:b], 1.0 - d, n_u),
            "frac_desirable": d.mean(),
        }
        return losses.mean(), metrics

    return loss_fn


def reference_forward(apply_fn, *, loss_type: str = "kto", token_logps: bool = False):
    """`forward(ref_params, batch) -> [B, K]`: the reference values the KTO loss reads from a
    precomputed batch, for `alignax.algorithms.reference.precompute_row_logps`.

    "kto": K = 2, column 0 the summed completion log-probs of the rows (`ids`, `mask`,
    `response_mask` [B, T]), column 1 those of their fixed KL rows (`kl_ids`, `kl_mask`,
    `kl_response_mask` [B, T]), both in one forward of the 2B rows as in the loss;
    "apo_zero_unpaired": K = 1, the rows only. `token_logps`: see `row_logps`.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown KTO loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
    with_kl = loss_type == "kto"

    def forward(params, batch):
        ids, mask, response = batch["ids"], batch["mask"], batch["response_mask"]
        b = ids.shape[0]
        if with_kl:
            ids = jnp.concatenate([ids, batch["kl_ids"].astype(ids.dtype)], axis=0)
            mask = jnp.concatenate([mask, batch["kl_mask"].astype(mask.dtype)], axis=0)
            response = jnp.concatenate(
                [response, batch["kl_response_mask"].astype(response.dtype)], axis=0)
        lp = row_logps(apply_fn, params, ids, mask, response, token_logps=token_logps)
        return jnp.stack([lp[:b], lp[b:]], -1) if with_kl else lp[:, None]

    return forward


def reference_fields(loss_type: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input fields, output fields) of `reference_forward(loss_type=)`'s pass."""
    if loss_type == "kto":
        return ROW_FIELDS + KL_FIELDS, ("ref_logps", "kl_ref_logps")
    return ROW_FIELDS, ("ref_logps",)


DEFAULTS = common.offline_defaults(loss_type="kto", beta=0.1, desirable_weight=1.0,
                                   undesirable_weight=1.0, kl_group_size=None,
                                   kl_pairs="batch", precompute_ref_logps=False, sync_ref=None)


def check_sync_ref(sync_ref, label: str) -> tuple[float, int] | None:
    """(alpha, steps) of a `sync_ref` config value ({alpha, steps}, or None: a fixed
    reference), checked: 0 < alpha <= 1 and steps >= 1. Raises ValueError naming `label`."""
    if sync_ref is None:
        return None
    sync = dict(sync_ref)
    if set(sync) != {"alpha", "steps"}:
        raise ValueError(f"{label}: sync_ref is {{alpha, steps}}, got {sorted(sync)}")
    alpha, steps = float(sync["alpha"]), sync["steps"]
    if (not 0.0 < alpha <= 1.0 or isinstance(steps, bool) or not isinstance(steps, int)
            or steps < 1):
        raise ValueError(f"{label}: sync_ref needs 0 < alpha <= 1 and an int steps >= 1, "
                         f"got {sync}")
    return alpha, steps


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`."""
    return common.offline_config(DEFAULTS, overrides, "kto config")


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the loss type, the KL groups against the (micro-)batch, the optimizer and
    the mesh.

    Raises:
      ValueError: one line naming the bad key or value.
    """
    label = "kto config"
    config = common.validate_offline(DEFAULTS, config, label)
    common.check_name(config["loss_type"], LOSS_TYPES, label, "loss_type")
    try:
        make_kto_loss(None, loss_type=config["loss_type"], beta=float(config["beta"]),
                      desirable_weight=float(config["desirable_weight"]),
                      undesirable_weight=float(config["undesirable_weight"]))
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None
    common.check_name(config["kl_pairs"], KL_PAIRS, label, "kl_pairs")
    with_kl = config["loss_type"] == "kto"
    if config["kl_pairs"] == "dataset" and not with_kl:
        raise ValueError(f"{label}: kl_pairs='dataset' with loss_type "
                         f"{config['loss_type']!r}, which has no KL rows")
    if config["precompute_ref_logps"] and with_kl and config["kl_pairs"] != "dataset":
        raise ValueError(f"{label}: precompute_ref_logps needs kl_pairs='dataset': with "
                         f"kl_pairs='batch' the KL rows pair rows of each shuffled batch, so "
                         f"their reference log-probs are not known before training")
    if config["precompute_ref_logps"] and config["sync_ref"] is not None:
        raise ValueError(f"{label}: sync_ref moves the reference; precomputed log-probs "
                         f"cannot follow it (precompute_ref_logps)")
    if check_sync_ref(config["sync_ref"], label) is not None and config["lora"]:
        raise ValueError(f"{label}: sync_ref moves the reference; with LoRA the reference is "
                         "the frozen base (lora)")
    micro = int(config["train"]["batch_size"]) // int(config["train"]["grad_accum_steps"])
    if with_kl:
        group = config["kl_group_size"]
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
            raise ValueError(f"{label}: kl_group_size must be an int or None, got {group!r}")
        if config["kl_pairs"] == "batch":
            try:
                kl_donors(micro, group)
            except ValueError as e:
                raise ValueError(f"{label}: kl_group_size with a (micro-)batch of {micro}: "
                                 f"{e}") from None
        elif kl_block_size(config) < 2:
            raise ValueError(f"{label}: kl_pairs='dataset' rotates within blocks of "
                             f"{kl_block_size(config)} row(s) (kl_group_size, else the "
                             f"(micro-)batch): need at least 2")
    return config


def kl_block_size(config: Mapping[str, Any]) -> int:
    """The rows of a rotation block of kl_pairs="dataset": `kl_group_size`, else the
    micro-batch `train.batch_size // train.grad_accum_steps` (TRL's
    per_device_train_batch_size)."""
    if config["kl_group_size"] is not None:
        return int(config["kl_group_size"])
    return int(config["train"]["batch_size"]) // int(config["train"]["grad_accum_steps"])


def train(
    config: Mapping[str, Any], workdir: str, *, train_source, ref_params=None, eval_fn=None,
    seed: int = 0,
) -> dict:
    """Trains a policy initialised at `ref_params` (or at the `model.path` checkpoint, which is
    then also the reference) with KTO on unpaired examples.

    Config keys (`default_config()`), TRL's names where they change the math: loss_type ("kto"
    or "apo_zero_unpaired"), beta, desirable_weight, undesirable_weight, kl_group_size (the
    rows the KL rotation runs within, `make_kto_loss`), kl_pairs ("batch": rotate within each
    shuffled batch; "dataset": TRL's donors fixed in dataset order, module docstring),
    precompute_ref_logps (the reference's log-probs of the rows and of their fixed KL rows
    computed once before training and carried in the batch; `result["precomputed"]` then
    holds {"directory", "computed"}: where they are stored and how many rows this call ran the
    reference on, 0 when a resumed run loaded them), sync_ref (None, or {alpha, steps}: TR-DPO's
    reference syncing, TRL's sync_ref_model with ref_model_mixup_alpha and
    ref_model_sync_steps: after every `steps`-th update ref <- alpha * policy + (1 - alpha) *
    ref, in float32; the reference then lives in the checkpointed train state and the loss
    and its KL rows use the current one; `common.fit_recipe(synced_reference=)`; not with
    lora), model, optimizer, train.{steps, batch_size,
    grad_accum_steps, checkpoint_every, eval_every, log_every, progress}, mesh, lora. Unknown
    keys are an error. `train_source` gives `alignax.data.unpaired.tokenize_unpaired` rows
    (ids, mask, response_mask, label). `eval_fn(params) -> metrics` is logged as eval/*.

    The memory levers, as in `alignax.algorithms.direct`: `model.logits_chunk > 0` asks the
    model for token log-probs (chunked over the vocabulary) instead of logits; `lora={rank,
    alpha, ...}` trains adapters on `ref_params`, which stay the one frozen copy and the
    reference; `train.grad_accum_steps` splits each batch into micro-batches inside the step
    (each with its own KL estimate, as TRL's gradient accumulation).
    """
    from alignax.algorithms import pretrained

    config = validate(config)
    precompute = bool(config["precompute_ref_logps"])
    if precompute and jax.process_count() > 1:
        raise ValueError("kto config: precompute_ref_logps runs in one process: precompute "
                         "with one process first (the values are stored in the workdir), then "
                         "start the multi-process run")
    model, ref_params = pretrained.recipe_model(config, "lm", init_params=ref_params,
                                                params_name="ref_params", required=True)
    token_logps = model.config.logits_chunk > 0
    if config["loss_type"] == "kto" and config["kl_pairs"] == "dataset":
        train_source = KLRowsSource(train_source, kl_block_size(config))
    precomputed = None
    if precompute:
        from alignax.algorithms.reference import precompute_row_logps

        inputs, outputs = reference_fields(config["loss_type"])
        train_source = precompute_row_logps(
            reference_forward(model.apply, loss_type=config["loss_type"],
                              token_logps=token_logps),
            ref_params, train_source, input_fields=inputs, output_fields=outputs,
            batch_size=int(config["train"]["batch_size"]), workdir=workdir,
            mesh=common.mesh_from(config["mesh"]) if config["mesh"] else None)
        precomputed = {"directory": train_source.directory, "computed": train_source.computed}
    loss_fn = make_kto_loss(
        model.apply, loss_type=config["loss_type"], beta=float(config["beta"]),
        desirable_weight=float(config["desirable_weight"]),
        undesirable_weight=float(config["undesirable_weight"]),
        kl_group_size=config["kl_group_size"], token_logps=token_logps)
    sync = check_sync_ref(config["sync_ref"], "kto config")
    frozen = [] if config["lora"] or sync or precompute else [Frozen(ref_params, None)]
    result = common.fit_recipe(
        config, workdir, model=model, loss_fn=loss_fn, train_source=train_source, seed=seed,
        init_params=ref_params, frozen=frozen, eval_fn=eval_fn, desc="kto",
        lora_reference=True, synced_reference=None if sync is None else (ref_params, *sync))
    if precomputed is not None:
        result["precomputed"] = precomputed
    return result
