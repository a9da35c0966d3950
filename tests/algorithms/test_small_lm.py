"""Causal-LM fit_small losses: pretraining NLL, sequence DPO, on-policy GRPO, sampled metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax import ops
from alignax.algorithms import small_lm
from alignax.losses.direct import dpo_loss
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train.small import fit_small

V = 6
LM = make_lm(TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                               max_len=8))
_INIT = jax.jit(LM.init)  # one program, not one per op


def _target_reward(prompts, responses, data):
    del prompts, data
    return jnp.mean((responses == 3).astype(jnp.float32), axis=1)


def test_next_token_loss_is_the_mean_nll():
    @jax.jit  # one program for every value the assertions read
    def values(key):
        params = LM.init(key)
        ids = jax.random.randint(jax.random.key(1), (3, 5), 0, V)
        loss, m = small_lm.next_token_loss(LM.apply)(params, ids)
        logp = jax.nn.log_softmax(LM.apply(params, ids, jnp.ones(ids.shape, bool)), -1)
        return ids, loss, m, logp

    ids, loss, m, logp = values(jax.random.key(0))
    ids, logp = np.asarray(ids), np.asarray(logp)
    manual = -np.mean([logp[b, t, ids[b, t + 1]] for b in range(3) for t in range(4)])
    assert float(loss) == pytest.approx(manual, rel=1e-5)
    assert float(m["nll"]) == float(loss)


def test_sequence_dpo_loss_matches_dpo_on_response_logps_and_weights_drop_pairs():
    params = _INIT(jax.random.key(0))
    ref = _INIT(jax.random.key(9))

    @jax.jit  # the pairs in one program, not one per op
    def pairs(key):
        key_c, key_r = jax.random.split(jax.random.key(2))
        prompt = jax.random.randint(key, (4, 3), 0, V)
        return (jnp.concatenate([prompt, jax.random.randint(key_c, (4, 2), 0, V)], 1),
                jnp.concatenate([prompt, jax.random.randint(key_r, (4, 2), 0, V)], 1))

    chosen, rejected = pairs(jax.random.key(3))
    lp = jax.jit(lambda p, x: small_lm.response_logps(LM.apply, p, x, 2).sum(-1))
    batch = {"chosen": chosen, "rejected": rejected, "ref_chosen": lp(ref, chosen),
             "ref_rejected": lp(ref, rejected)}
    loss_fn = jax.jit(small_lm.sequence_dpo_loss(LM.apply, response_len=2, beta=0.5))
    loss, m = loss_fn(params, batch)
    per_pair, _ = jax.jit(lambda *a: dpo_loss(*a, beta=0.5))(
        lp(params, chosen), lp(params, rejected), batch["ref_chosen"], batch["ref_rejected"])
    per_pair = np.asarray(per_pair)
    assert float(loss) == pytest.approx(float(per_pair.mean()), rel=1e-5)
    weighted, mw = loss_fn(params, {**batch, "weight": jnp.array([1.0, 0.0, 1.0, 0.0])})
    assert float(weighted) == pytest.approx(float(per_pair[np.array([0, 2])].mean()), rel=1e-5)
    assert float(mw["pairs"]) == 2.0
    # the policy equal to the reference: log 2 per pair
    same, _ = loss_fn(ref, batch)
    assert float(same) == pytest.approx(np.log(2.0), rel=1e-5)
    # response log-probs are those of the last tokens only
    manual = jax.jit(lambda p, x: ops.token_logprobs(
        LM.apply(p, x, jnp.ones(x.shape, bool))[:, 2:4], x[:, 3:5]))(params, chosen)
    np.testing.assert_allclose(jax.jit(small_lm.response_logps, static_argnums=(0, 3))(
        LM.apply, params, chosen, 2), manual, atol=1e-5)


@pytest.fixture
def grpo_run(tmp_path):
    prompts = jax.random.randint(jax.random.key(4), (32, 2), 0, V)
    ref = _INIT(jax.random.key(0))
    loss_fn = small_lm.grpo_loss(LM.apply, _target_reward, response_len=2, num_samples=4,
                                 kl_coef=0.01)

    def batch_fn(data, rng):
        idx = jax.random.randint(rng, (8,), 0, data["prompts"].shape[0])
        return {"rng": jax.random.fold_in(rng, 1), "prompts": data["prompts"][idx],
                "ref_params": data["ref_params"]}

    @jax.jit
    def evaluate(p):
        return small_lm.sampled_response_metrics(LM.apply, p, jnp.repeat(prompts, 8, 0),
                                                 jax.random.key(7), _target_reward,
                                                 response_len=2)

    fit = fit_small(str(tmp_path), loss_fn=loss_fn, init_params=ref, tx=optax.adam(3e-2),
                    num_steps=60, data={"prompts": prompts, "ref_params": ref},
                    batch_fn=batch_fn, has_aux=True, steps_per_log=30)
    return evaluate(ref), evaluate(fit.seed_params(0)), fit


def test_grpo_on_policy(grpo_run):
    before, after, fit = grpo_run
    assert float(before["reward"]) < 0.4
    assert float(after["reward"]) > float(before["reward"]) + 0.3
    assert float(after["entropy"]) < float(before["entropy"]) - 0.3
    assert fit.history[-1]["kl"] > 0.0


def test_grpo_gradient_vanishes_when_every_sample_earns_the_same():
    params = _INIT(jax.random.key(0))
    flat = lambda p, r, d: jnp.ones(r.shape[0])  # noqa: E731
    loss_fn = small_lm.grpo_loss(LM.apply, flat, response_len=2, num_samples=4)
    batch = {"rng": jax.random.key(1), "prompts": jnp.zeros((2, 2), jnp.int32)}
    grads, m = jax.jit(jax.grad(loss_fn, has_aux=True))(params, batch)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) == 0.0
    assert float(m["solved"]) == 1.0
    with pytest.raises(ValueError, match="num_samples"):
        small_lm.grpo_loss(LM.apply, flat, response_len=2, num_samples=1)


def test_sampled_metrics_of_a_uniform_policy():
    def uniform(params, ids, mask, logits_range=None):
        t = ids.shape[1] if logits_range is None else logits_range[1] - logits_range[0]
        return jnp.zeros((ids.shape[0], t, V)) + 0.0 * params

    m = jax.jit(lambda p: small_lm.sampled_response_metrics(
        uniform, p, jnp.zeros((4000, 2), jnp.int32), jax.random.key(0), _target_reward,
        response_len=3))(jnp.float32(0.0))
    assert float(m["entropy"]) == pytest.approx(np.log(V), rel=1e-5)
    assert float(m["reward"]) == pytest.approx(1 / V, abs=0.02)
