"""The memory levers of the online recipes (GRPO family, PPO, online DPO): token log-probs from a
`logits_chunk > 0` model (no [N, R, V] logits) equal the logits path, and gradient accumulation
(`grad_accum_steps`) equals the one-step update, in the losses, the steps and the recipes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import online, online_dpo, policy_gradient, ppo
from alignax.algorithms.direct import make_direct_loss
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train.state import TrainState

# one layer: every test compares two code paths of the same model (the depth plays no part)
CFG = dict(vocab_size=37, d_model=32, n_layers=1, n_heads=2, d_ff=48, max_len=16)
MODELS = {tie: (make_lm(TransformerConfig(**CFG, tie_embeddings=tie)),
                make_lm(TransformerConfig(**CFG, tie_embeddings=tie, logits_chunk=8)))
          for tie in (True, False)}  # V = 37, C = 8: the last chunk overlaps
PLAIN, CHUNKED = MODELS[True]


@functools.cache
def _jit_init(model):
    return jax.jit(model.init)


def _init(model, seed):
    """model.init(key(seed)) as one compiled program per model (not one per op)."""
    return _jit_init(model)(jax.random.key(seed))


PARAMS = _init(PLAIN, 0)
P, R, N = 3, 5, 8
RNG = np.random.default_rng(0)
IDS = RNG.integers(1, 37, (N, P + R)).astype(np.int32)
RMASK = (np.arange(R)[None, :] < np.array([5, 3, 1, 4, 5, 2, 5, 1])[:, None]).astype(np.int32)
MASK = np.concatenate([np.ones((N, P), np.int32), RMASK], 1)
MASK[1, 0] = MASK[5, :2] = 0  # left-padded prompts
SGD = dict(name="sgd", learning_rate=0.5, warmup_steps=0, schedule="constant", clip_norm=0.0,
           kwargs={})


def _assert_value_and_grad_equal(make, args, plain, chunked):
    """value_and_grad of `make(model, token_logps)` on `args`: the chunked model with token
    log-probs equals the plain model's logits path (loss, every metric, gradients)."""
    def run(model, token_logps):
        return jax.jit(jax.value_and_grad(make(model, token_logps), has_aux=True))(*args)

    (want, want_m), want_g = run(plain, False)
    (got, got_m), got_g = run(chunked, True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _close(got_m, want_m)
    _close(got_g, want_g)


def _close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


_LOGPS = {token_logps: jax.jit(functools.partial(online.response_logps, token_logps=token_logps),
                                static_argnums=(0, 4)) for token_logps in (False, True)}


def _batch(params, ref_params):
    old = _LOGPS[False](PLAIN.apply, params, IDS, MASK, R)
    ref = _LOGPS[False](PLAIN.apply, ref_params, IDS, MASK, R)
    return {"ids": IDS, "mask": MASK, "response_mask": RMASK,
            "old_logps": jnp.where(RMASK > 0, old + 0.05 * RNG.standard_normal((N, R)), 0.0),
            "advantages": jnp.asarray(RNG.standard_normal(N), jnp.float32),
            "ref_logps": ref}


BATCH = _batch(PARAMS, _init(PLAIN, 1))


@pytest.mark.parametrize("tie", [True, False])
def test_response_and_reference_logps_equal_the_logits_path(tie):
    plain, chunked = MODELS[tie]
    params = _init(plain, 2)
    want = _LOGPS[False](plain.apply, params, IDS, MASK, R)
    _close(_LOGPS[True](chunked.apply, params, IDS, MASK, R), want)
    ref_fn = online.make_reference_logps(chunked.apply, R, token_logps=True)
    _close(ref_fn(params, IDS, MASK), want)
    assert online.uses_token_logps(chunked) and not online.uses_token_logps(plain)


@pytest.mark.parametrize("loss,tie,aggregation,entropy_coef", [
    ("ppo_clip", True, "token_mean", 0.0), ("gspo", False, "seq_mean_token_sum_norm", 0.05)])
def test_policy_loss_metrics_and_grads_equal_the_logits_path(loss, tie, aggregation,
                                                             entropy_coef):
    """With token_logps the log-probs come from the model and the entropy (metric, and bonus
    with entropy_coef > 0) from the LM head in chunks (`online.head_entropy_fn`): loss, every
    metric and the gradients equal the logits path."""
    plain, chunked = MODELS[tie]
    params = _init(plain, 3)
    assert online.head_entropy_fn(plain) is None

    def make(model, token_logps):
        return policy_gradient.make_policy_loss(
            model.apply, loss=loss, aggregation=aggregation, clip_low=0.1, max_length=R,
            entropy_coef=entropy_coef, token_logps=token_logps,
            entropy_fn=online.head_entropy_fn(model))

    _assert_value_and_grad_equal(make, (params, BATCH, None, jnp.float32(0.3)), plain, chunked)


@functools.cache  # one Model: its programs are compiled once for the tests that use it
def _value_model():
    from alignax.models.heads import make_token_reward_model

    return make_token_reward_model(TransformerConfig(**CFG))


def test_ppo_loss_metrics_and_grads_equal_the_logits_path():
    plain, chunked = MODELS[False]
    value_model = _value_model()
    params = {"policy": _init(plain, 4), "value": _init(value_model, 5)}
    batch = dict(BATCH, old_values=jnp.asarray(RNG.standard_normal((N, R)), jnp.float32),
                 returns=jnp.asarray(RNG.standard_normal((N, R)), jnp.float32),
                 advantages=jnp.asarray(RNG.standard_normal((N, R)), jnp.float32))

    def make(model, token_logps):
        return ppo.make_ppo_loss(model.apply, value_model.apply, token_logps=token_logps,
                                 entropy_coef=0.05, entropy_fn=online.head_entropy_fn(model))

    _assert_value_and_grad_equal(make, (params, batch, None), plain, chunked)


def test_entropy_bonus_with_token_logps_needs_an_entropy_fn():
    with pytest.raises(ValueError, match="entropy_coef=0.01 with token_logps needs an"):
        policy_gradient.make_policy_loss(CHUNKED.apply, entropy_coef=0.01, token_logps=True)
    with pytest.raises(ValueError, match="entropy_coef=0.01 with token_logps needs an"):
        ppo.make_ppo_loss(CHUNKED.apply, None, entropy_coef=0.01, token_logps=True)


def _one_update(loss_fn, batch, *, accum_steps, accum_weight, frozen=()):
    tx = optax.sgd(0.5)
    step = online.make_update_step(online.shd.Placement.from_config(None), loss_fn, tx,
                                   accum_steps=accum_steps, accum_weight=accum_weight)
    state = TrainState.create(jax.tree.map(jnp.copy, PARAMS), tx, jax.random.key(0))
    state, metrics = step(state, batch, *frozen)
    params = jax.tree.map(np.asarray, state.params)
    step(state, batch, *frozen)  # no retrace on a second call
    assert step._cache_size() == 1
    return params, metrics


def test_policy_update_with_accumulation_equals_one_step(aggregation="token_mean"):
    """GRPO's PPO-clip loss with the KL in the loss: 2 micro-batches (rows of 5, 1, 5, 5 and 3,
    4, 2, 1 response tokens) weighed by their tokens (`policy_accum_weight`) give the whole
    minibatch's update and token-mean metrics."""
    loss_fn = policy_gradient.make_policy_loss(CHUNKED.apply, aggregation=aggregation,
                                               token_logps=True)
    weight = policy_gradient.policy_accum_weight("ppo_clip", aggregation)
    assert weight == "tokens"
    assert policy_gradient.policy_accum_weight("ppo_clip", "seq_mean_token_mean") is None
    want, want_m = _one_update(loss_fn, BATCH, accum_steps=1, accum_weight=weight,
                               frozen=(jnp.float32(0.3),))
    got, got_m = _one_update(loss_fn, BATCH, accum_steps=2, accum_weight=weight,
                             frozen=(jnp.float32(0.3),))
    _close(got, want)
    exact = ["loss", "pg_loss", "grad_norm", "param_norm", "kl", "clip_fraction", "ratio",
             "tokens"]
    _close({k: got_m[k] for k in exact}, {k: want_m[k] for k in exact})


def test_online_dpo_update_with_accumulation_equals_one_step():
    """Online DPO's stacked rows [chosen 4, rejected 4] with one tied pair (weight 0): 2
    micro-batches of pairs weighed by their valid pairs ("pairs") equal the whole minibatch,
    and the token log-probs path equals the logits path."""
    ref = _LOGPS[False](PLAIN.apply, _init(PLAIN, 1), IDS, MASK, R)
    batch = {"ids": IDS, "mask": MASK, "response_mask": RMASK,
             "ref_logps": (ref * RMASK).sum(-1), "weight": jnp.array([1.0, 0.0, 1.0, 1.0])}
    plain = online_dpo.with_pair_count(make_direct_loss(PLAIN.apply, "dpo", {"beta": 0.5}))
    chunked = online_dpo.with_pair_count(make_direct_loss(CHUNKED.apply, "dpo", {"beta": 0.5},
                                                          token_logps=True))
    want, want_m = _one_update(plain, batch, accum_steps=1, accum_weight="pairs")
    got, got_m = _one_update(chunked, batch, accum_steps=2, accum_weight="pairs")
    _close(got, want)
    _close(got_m, want_m)
    assert float(got_m["pairs"]) == 3.0


PROMPTS = np.stack([np.arange(3) + 4 + i for i in range(8)]).astype(np.int32)


def _run(recipe, tmp_path, name, model, train_kw=(), **cfg):
    """Two iterations of `recipe` on 4 prompts x 2 samples (rewards: the share of token 5),
    one minibatch, SGD."""
    config = recipe.default_config(**{
        **dict(iterations=2, prompts_per_iteration=4, num_samples=2, max_new_tokens=4,
               optimizer=SGD, progress=False, checkpoint_every=100), **cfg})
    return recipe.train(
        config, str(tmp_path / name), model=model, init_params=PARAMS, ref_params=PARAMS,
        prompt_ids=PROMPTS, prompt_mask=np.ones_like(PROMPTS, bool),
        reward_fn=lambda ro: (ro.responses == 5).astype(jnp.float32).mean(-1), **dict(train_kw))


def _pg_run(tmp_path, name, model, **cfg):
    return _run(policy_gradient, tmp_path, name, model, kl_coef=0.1, **cfg)


@pytest.fixture(scope="module")
def plain_grpo(tmp_path_factory):
    return _pg_run(tmp_path_factory.mktemp("grpo"), "plain", PLAIN)


PG_KEYS = ["reward", "loss", "pg_loss", "kl", "clip_fraction", "ratio", "kl_ref_seq"]


def test_grpo_recipe_with_both_levers_equals_the_plain_recipe(tmp_path, plain_grpo):
    """policy_gradient.train with a logits_chunk model and grad_accum_steps=2 (micro-batches
    of 4 rows) equals the plain model without accumulation: params and every iteration's
    metrics (the entropy from the chunked LM head)."""
    got = _pg_run(tmp_path, "levers", CHUNKED, grad_accum_steps=2)
    _close(got["params"], plain_grpo["params"])
    keys = PG_KEYS + ["tokens", "entropy"]
    for g, w in zip(got["history"], plain_grpo["history"], strict=True):
        _close({k: g[k] for k in keys}, {k: w[k] for k in keys})
    with pytest.raises(ValueError, match="minibatch of 4 rows does not split into "
                                         "grad_accum_steps=3"):
        policy_gradient.validate({"prompts_per_iteration": 4, "num_samples": 2,
                                  "minibatches": 2, "grad_accum_steps": 3})
    with pytest.raises(ValueError, match="grad_accum_steps must be a positive int"):
        policy_gradient.validate({"grad_accum_steps": 0})


@pytest.fixture(scope="module")
def plain_dpo(tmp_path_factory):
    return _run(online_dpo, tmp_path_factory.mktemp("dpo"), "plain", PLAIN)


DPO_KEYS = ["loss", "score", "valid_pairs", "pairs", "policy_chosen_logps"]


def test_online_dpo_recipe_with_both_levers_equals_the_plain_recipe(tmp_path, plain_dpo):
    got = _run(online_dpo, tmp_path, "levers", CHUNKED, grad_accum_steps=2)
    _close(got["params"], plain_dpo["params"])
    for g, w in zip(got["history"], plain_dpo["history"], strict=True):
        _close({k: g[k] for k in DPO_KEYS}, {k: w[k] for k in DPO_KEYS})
    with pytest.raises(ValueError, match="minibatch of 4 pairs does not split"):
        online_dpo.validate({"prompts_per_iteration": 4, "grad_accum_steps": 3})


def test_online_dpo_recipe_with_lora(tmp_path, plain_dpo):
    """Iteration 0 at the base equals the full run; then the adapters moved the policy; the
    base is the reference (a refreshed reference is refused)."""
    from alignax.models import lora

    cfg = dict(rank=4, alpha=8.0, targets="attn/(q|v)")
    out = _run(online_dpo, tmp_path, "lora", PLAIN, lora=cfg)
    _close({k: out["history"][0][k] for k in DPO_KEYS},
           {k: plain_dpo["history"][0][k] for k in DPO_KEYS})
    _close(out["params"], lora.merge(PARAMS, out["state"].train.params,
                                     lora.LoraConfig.from_mapping(cfg)))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(out["params"]),
                                                            jax.tree.leaves(PARAMS)))
    assert moved > 1e-4
    with pytest.raises(ValueError, match="lora needs ref_update_every=0"):
        online_dpo.validate({"lora": cfg, "ref_update_every": 2})


def test_grpo_recipe_with_lora_trains_adapters_on_the_frozen_base(tmp_path, plain_grpo):
    """lora: the trained state is the adapters (B = 0: iteration 0 runs at the base, so its
    rollouts and update metrics equal the full-parameter run's); the rollouts of iteration 1
    run the adapted policy (a KL to the base, the reference); "params" are merged."""
    from alignax.models import lora

    cfg = dict(rank=4, alpha=8.0, targets="attn/(q|v)")
    out = _pg_run(tmp_path, "lora", PLAIN, lora=cfg)
    _close({k: out["history"][0][k] for k in PG_KEYS},
           {k: plain_grpo["history"][0][k] for k in PG_KEYS})
    adapters = out["state"].train.params
    leaves = jax.tree.leaves(adapters)
    assert sum(x.size for x in leaves) < sum(x.size for x in jax.tree.leaves(PARAMS)) / 4
    _close(out["params"], lora.merge(PARAMS, adapters, lora.LoraConfig.from_mapping(cfg)))
    assert out["history"][1]["kl_ref_seq"] != 0.0  # sampled by the adapted policy
    with pytest.raises(ValueError, match="lora"):
        policy_gradient.validate({"lora": {"rank": 0}})


def test_ppo_recipe_with_lora_and_both_levers(tmp_path):
    """PPO with LoRA on the policy, a logits_chunk policy and grad_accum_steps=2: iteration 0
    (adapters at B = 0) equals the plain full-parameter run; its rollouts then come from the
    adapted policy; "params" are merged, the value model is trained in full."""
    from alignax.models import lora

    value_model = _value_model()
    lcfg = dict(rank=4, alpha=8.0, targets="attn/(q|v)")
    kw = dict(train_kw=dict(value_model=value_model,
                            init_value_params=_init(value_model, 5)),
              epochs=1, minibatches=1)
    want = _run(ppo, tmp_path, "plain", PLAIN, **kw)
    got = _run(ppo, tmp_path, "levers", CHUNKED, grad_accum_steps=2, lora=lcfg, **kw)
    keys = ["reward", "loss", "pg_loss", "value_loss", "clip_fraction", "ratio", "kl_ref_seq",
            "value_mean", "tokens", "entropy"]
    _close({k: got["history"][0][k] for k in keys}, {k: want["history"][0][k] for k in keys})
    adapters = got["state"].train.params["policy"]
    _close(got["params"], lora.merge(PARAMS, adapters, lora.LoraConfig.from_mapping(lcfg)))
    assert got["history"][1]["kl_ref_seq"] != 0.0  # sampled by the adapted policy
    assert jax.tree.structure(got["value_params"]) == jax.tree.structure(want["value_params"])


def test_compiled_grpo_step_holds_no_vocabulary_sized_activation():
    """The compiled GRPO update (KL in the loss, entropy bonus) of the logits_chunk model holds
    no array with the vocabulary dim larger than the LM head itself (V x D); the logits
    model's holds the [N, R, V] logits (the check sees them)."""
    from alignax._src.hlo import largest_array_with_dim

    def largest(model, token_logps):
        loss_fn = policy_gradient.make_policy_loss(
            model.apply, entropy_coef=0.05, token_logps=token_logps,
            entropy_fn=online.head_entropy_fn(model))
        tx = optax.sgd(0.1)
        step = online.make_update_step(online.shd.Placement.from_config(None), loss_fn, tx)
        state = TrainState.create(PARAMS, tx, jax.random.key(0))
        text = step.lower(state, BATCH, jnp.float32(0.3)).compile().as_text()
        return largest_array_with_dim(text, CFG["vocab_size"])

    head = CFG["vocab_size"] * CFG["d_model"] * 4
    assert largest(CHUNKED, True)[1] <= head, largest(CHUNKED, True)
    assert largest(PLAIN, False)[1] >= N * R * CFG["vocab_size"] * 4
