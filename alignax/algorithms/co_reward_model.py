"""Two reward models trained together, each on the pairs its peer is confident about (CRM).

"Two Minds Better Than One: Collaborative Reward Modeling for LLM Alignment" (2025, arXiv
2505.10597), after co-teaching (Han et al. 2018, arXiv 1804.06872). Against noisy
preference labels, two reward models r_a, r_b of the same architecture review each other's
training data: on every minibatch each model ranks the pairs by its own margin
m_i = r(x_i, y_i^w) - r(x_i, y_i^l), and its (1 - tau_t) most confident pairs (largest margin,
smallest loss) are the pairs its *peer* trains on (`alignax.losses.reward.peer_review_masks`).
A pair with a wrong label tends to have a small or negative margin under a model that has not
memorised it, so each model filters the noise its peer would otherwise fit; two models with
different initialisations make different mistakes, so neither confirms its own errors. The
drop rate follows the curriculum tau_t = tau_max min(1, t / T_warm) over the updates t
(`curriculum_drop_rate`): all pairs while the models are still learning the easy ones, then
more and more of the least confident ones dropped.

One recipe, one trainer. The params are one dict {"rm_a": params_a, "rm_b": params_b}
(`pair_model`: the logical axes of each model under its key, so the trainer shards both the
same way; not "a"/"b", the keys of LoRA's adapter nodes); one jitted loss computes both
models' per-pair losses on the batch, the masks at the current step and the sum of the two
masked means,

    L = sum_i M^a_i l_i(r_a) / max(1, sum_i M^a_i) + sum_i M^b_i l_i(r_b) / max(1, sum_i M^b_i),
    (M^a, M^b) = peer_review_masks(sg(m^a), sg(m^b), tau_t),

where l is the configured pairwise loss (Bradley-Terry by default, `REWARD_LOSSES`) and sg is
stop_gradient: the selection is data, so model a's gradient comes only from the pairs model b
selected and vice versa. It runs through `common.fit_recipe` like `reward_model.train`, so
mesh and shardings, LoRA, gradient accumulation, resume, NaN halt, checkpoints and logging
are the trainer's. The update count t reaches the loss through `fit_recipe(with_step=True)`
(kept in the checkpointed train state, so a resumed run continues the curriculum). With
gradient accumulation the selection is made within each micro-batch.

Starting points (`train`): with `model.path` a causal-LM checkpoint gives both models its
backbone and each a new score head drawn as transformers draws it (`pretrained.
init_score_head`): model a from `seed` (the head `reward_model.train` draws with the same
seed), model b from `seed + PEER_SEED_OFFSET`. A sequence-classification checkpoint is refused:
both models would start, and stay, equal. Without it both are drawn at random from the model
config (keys fold_in(rng, 0) and fold_in(rng, 1)); `init_params` {"rm_a", "rm_b"} starts from
given params. The backbone is held twice, once per model (with LoRA, in the frozen base), and
with LoRA `lora.full` may name "score/" to train the new heads in full.

The reward of the pair is the mean r = (r_a + r_b) / 2 (`make_co_pairwise_eval` reports the
held-out accuracy of a, of b and of the mean).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import common, pretrained
from alignax.algorithms.reward_model import pair_rewards
from alignax.losses import REWARD_LOSSES, pairwise_accuracy
from alignax.losses.reward import curriculum_drop_rate, peer_review_masks
from alignax.models.transformer import Model

# the params' keys of the two models (LoRA's adapter nodes are {"a", "b"} dicts)
MODELS = ("rm_a", "rm_b")
PEER_SEED_OFFSET = 100_003  # model b's head seed is seed + this (distinct across run seeds)
LABEL = "co-reward-model config"

DEFAULTS = common.offline_defaults(
    loss="bradley_terry", loss_kwargs={},
    # tau_t = max_drop_rate * min(1, t / warmup_steps) (warmup_steps 0: tau_max from the start)
    peer_review=dict(max_drop_rate=0.2, warmup_steps=0))


def pair_model(model: Model) -> Model:
    """Two models of one architecture as one Model over params {"rm_a": ..., "rm_b": ...}.

    `init(rng)` draws rm_a from fold_in(rng, 0) and rm_b from fold_in(rng, 1); `apply(params,
    ids [B, T], mask [B, T]) -> [2, B]` the rewards of a and b; `logical_axes(params)` each
    model's logical axes under its key, so both are sharded by the same rules.
    """

    def init(rng):
        return {m: model.init(jax.random.fold_in(rng, i)) for i, m in enumerate(MODELS)}

    def apply(params, input_ids, mask, **kwargs):
        return jnp.stack([model.apply(params[m], input_ids, mask, **kwargs) for m in MODELS])

    def logical_axes(params):
        return {m: model.logical_axes(params[m]) for m in MODELS}

    return Model(init=init, apply=apply, logical_axes=logical_axes, config=model.config)


def make_co_reward_loss(apply_fn, *, max_drop_rate: float, warmup_steps: int,
                        loss: str = "bradley_terry", loss_kwargs=None) -> Callable:
    """`loss_fn(params, batch, rng, *, step) -> (loss, metrics)` of CRM's peer-reviewed
    co-training (module docstring), for `fit_recipe(with_step=True)`.

    Args:
      apply_fn: one reward model's apply, `(params, ids [N, T], mask [N, T]) -> [N]`.
      max_drop_rate: tau_max in [0, 1).
      warmup_steps: T_warm (0: tau_max from the first update).
      loss: a pairwise loss of `REWARD_LOSSES`, per pair l(r_c [B], r_r [B]) -> [B].
      loss_kwargs: its keyword hyperparameters.

    The batch holds B pairs (`chosen_ids`, `chosen_mask`, `rejected_ids`, `rejected_mask`
    [B, T]); `step` is t, the updates before this one. The loss is the sum over the two models
    of the mean of l over the pairs the peer selected. Metrics (labels as given, so accuracies
    count agreement with possibly noisy labels): `a_loss`, `b_loss` (the masked means),
    `a_accuracy`, `b_accuracy`, `mean_accuracy` (of (r_a + r_b) / 2) over all B pairs,
    `drop_rate` (tau_t), `kept_fraction` (pairs each model trains on / B), `overlap` (the
    fraction of a's training pairs that b trains on too) and `agreement` (pairs on which a and
    b prefer the same response).
    """
    if loss not in REWARD_LOSSES:
        raise ValueError(f"unknown reward loss {loss!r}; valid: {sorted(REWARD_LOSSES)}")
    per_example = REWARD_LOSSES[loss]
    loss_kwargs = dict(loss_kwargs or {})
    max_drop_rate, warmup_steps = float(max_drop_rate), int(warmup_steps)

    def loss_fn(params, batch, rng, *, step):
        del rng
        rewards = [pair_rewards(apply_fn, params[m], batch) for m in MODELS]  # a, b
        margins = [jax.lax.stop_gradient(c - r) for c, r in rewards]
        tau = curriculum_drop_rate(step, max_rate=max_drop_rate, warmup_steps=warmup_steps)
        masks = peer_review_masks(*margins, drop_rate=tau)  # (pairs for a, pairs for b)
        total, metrics = 0.0, {}
        for name, (chosen, rejected), mask in zip("ab", rewards, masks):
            losses = per_example(chosen, rejected, **loss_kwargs)
            mean = jnp.sum(mask * losses) / jnp.maximum(jnp.sum(mask), 1.0)
            total = total + mean
            metrics[f"{name}_loss"] = mean
            metrics[f"{name}_accuracy"] = pairwise_accuracy(chosen, rejected).mean()
        (ca, ra), (cb, rb) = rewards
        metrics.update(
            mean_accuracy=pairwise_accuracy(ca + cb, ra + rb).mean(),
            drop_rate=jnp.asarray(tau, jnp.float32),
            kept_fraction=masks[0].mean(),
            overlap=jnp.sum(masks[0] * masks[1]) / jnp.maximum(jnp.sum(masks[0]), 1.0),
            agreement=jnp.mean((margins[0] > 0) == (margins[1] > 0)))
        return total, metrics

    return loss_fn


def make_co_pairwise_eval(apply_fn, pairs: Mapping[str, Any], *, validation_rows: int = 0,
                          chunk: int = 0):
    """Jitted `params {"rm_a", "rm_b"} -> metrics` on fixed held-out pairs.

    Args:
      apply_fn: one reward model's apply.
      pairs: stacked pair arrays (chosen_ids, chosen_mask, rejected_ids, rejected_mask [N, T]).
      validation_rows: V > 0: the first V pairs are validation and the rest test, metrics
        prefixed "val_" and "test_" (one program scores both); 0: one set, no prefix.
      chunk: score the pairs in chunks of this many (`real.map_in_chunks`; 0: all at once).

    Metrics: `a_accuracy`, `b_accuracy` (label accuracy of each model; ties count 1/2),
    `mean_accuracy` (of the pair's reward (r_a + r_b) / 2), `agreement` (both prefer the same
    response).
    """
    from alignax.algorithms import real

    inputs = {k: np.asarray(pairs[k]) for k in
              ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")}
    n = len(inputs["chosen_ids"])
    v = int(validation_rows)
    if not 0 <= v < n:
        raise ValueError(f"validation_rows={v} must be in [0, {n}) (the pairs' count)")
    parts = {"val_": slice(0, v), "test_": slice(v, n)} if v else {"": slice(0, n)}

    @jax.jit
    def evaluate(params):
        def score(x):
            return [pair_rewards(apply_fn, params[m], x) for m in MODELS]

        (ca, ra), (cb, rb) = real.map_in_chunks(score, inputs, chunk)
        per_pair = {"a_accuracy": pairwise_accuracy(ca, ra),
                    "b_accuracy": pairwise_accuracy(cb, rb),
                    "mean_accuracy": pairwise_accuracy(ca + cb, ra + rb),
                    "agreement": ((ca > ra) == (cb > rb)).astype(jnp.float32)}
        return {f"{p}{k}": x[s].mean() for p, s in parts.items() for k, x in per_pair.items()}

    return evaluate


def default_config(**overrides):
    """The locked config of the recipe (every key with its default), updated by `overrides`:
    the offline recipes' keys (`common.OFFLINE_DEFAULTS`), loss, loss_kwargs and
    peer_review.{max_drop_rate, warmup_steps}."""
    return common.offline_config(DEFAULTS, overrides, LABEL)


def validate(config: Mapping[str, Any] | None) -> dict:
    """The resolved config (see `default_config`), checked before any work: known keys, value
    types and ranges, the loss and its loss_kwargs, the optimizer, mesh and LoRA, and
    peer_review.max_drop_rate in [0, 1).

    Raises:
      ValueError: one line naming the bad key or value.
    """
    config = common.validate_offline(DEFAULTS, config, LABEL, REWARD_LOSSES, positional=2)
    tau = config["peer_review"]["max_drop_rate"]
    if not 0.0 <= float(tau) < 1.0:
        raise ValueError(f"{LABEL}: peer_review.max_drop_rate={tau!r} must be in [0, 1)")
    return config


def starting_params(config: Mapping[str, Any], *, seed: int = 0, init_params=None
                    ) -> tuple[Model, Any]:
    """(one reward model, starting params {"rm_a", "rm_b"} or None) of a resolved config.

    With `model.path` (a causal-LM checkpoint): its backbone for both and new score heads from
    `seed` (a) and `seed + PEER_SEED_OFFSET` (b), each as `pretrained.load_pretrained(...,
    "reward", seed=...)` draws it (the checkpoint is read once; b's tree shares a's backbone
    arrays until the trainer copies them). Without it: the config's model and `init_params`
    as given (None: both drawn at random by `pair_model`'s init).

    Raises:
      ValueError: a sequence-classification checkpoint (both models would be equal), init_params
        that are not {"rm_a", "rm_b"}, or both `model.path` and `init_params`.
    """
    if init_params is not None and (not isinstance(init_params, Mapping)
                                    or set(init_params) != set(MODELS)):
        raise ValueError("init_params must be {'rm_a': params_a, 'rm_b': params_b}")
    if not pretrained.has_path(config["model"]):
        return common.make_model(config["model"], "reward"), init_params
    path = config["model"]["path"]
    hf = pretrained.read_hf_config(path)
    if pretrained.checkpoint_kind(hf) == "reward":
        raise ValueError(f"model.path={path!r} is a sequence-classification checkpoint: both "
                         f"reward models would start equal (one score head); use a causal-LM "
                         f"checkpoint (new heads from two seeds) or pass init_params")
    model, params_a = pretrained.recipe_model(config, "reward", init_params=init_params,
                                              seed=seed)
    cfg = model.config
    std = float(hf.get("initializer_range") or pretrained.DEFAULT_INIT_STD)
    head_b = pretrained.init_score_head(jax.random.key(seed + PEER_SEED_OFFSET), cfg.d_model,
                                        std, jnp.dtype(cfg.param_dtype), bias=cfg.score_bias)
    return model, {"rm_a": params_a, "rm_b": {**params_a, "score": head_b}}


def train(
    config: Mapping[str, Any], workdir: str, *, train_source, eval_pairs=None,
    validation_rows: int = 0, eval_chunk: int = 0, seed: int = 0, init_params=None,
) -> dict:
    """Co-trains two reward models with peer review on preference pairs (module docstring).

    Config keys (`default_config()`): model, optimizer, loss (name in REWARD_LOSSES),
    loss_kwargs, peer_review.{max_drop_rate, warmup_steps}, train.{steps, batch_size,
    grad_accum_steps, checkpoint_every, eval_every, log_every, progress}, mesh, lora. Unknown
    keys are an error. Starting params: `starting_params`. `eval_pairs` (stacked held-out
    pairs) are evaluated every `train.eval_every` steps and at the end
    (`make_co_pairwise_eval` with `validation_rows` and `eval_chunk`).

    Returns:
      `common.fit_recipe`'s dict: "params" {"rm_a", "rm_b"}, "model" (the `pair_model`),
      "metrics", "eval", "fit" (its history holds every logged row); with LoRA "adapters".
    """
    config = validate(config)
    model, init_params = starting_params(config, seed=seed, init_params=init_params)
    review = config["peer_review"]
    loss_fn = make_co_reward_loss(model.apply, max_drop_rate=review["max_drop_rate"],
                                  warmup_steps=review["warmup_steps"], loss=config["loss"],
                                  loss_kwargs=config["loss_kwargs"])
    eval_fn = None
    if eval_pairs is not None:
        eval_fn = make_co_pairwise_eval(model.apply, eval_pairs, validation_rows=validation_rows,
                                        chunk=eval_chunk)
    return common.fit_recipe(
        config, workdir, model=pair_model(model), loss_fn=loss_fn, train_source=train_source,
        seed=seed, init_params=init_params, eval_fn=eval_fn, desc="co-trained reward models",
        with_step=True)
