"""Co-trained policy + reward model (Cooper): the RM's contrastive loss, the corruption, and
one loss over {"policy", "rm"} that updates both (and leaves a frozen RM alone)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import co_training, small_pg
from alignax.models import sequence_table as st
from alignax.train.small import fit_small


def test_contrastive_rm_loss_is_masked_logistic_and_zero_without_pairs():
    pos = jnp.array([2.0, 0.0, -1.0])
    neg = jnp.array([0.0, 1.0, 5.0])
    mask = jnp.array([True, True, False])
    loss, m = co_training.contrastive_rm_loss(pos, neg, mask)
    want = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0))])
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    assert float(m["pairs"]) == 2 and float(m["pair_accuracy"]) == 0.5
    empty, m0 = co_training.contrastive_rm_loss(pos, neg, jnp.zeros(3, bool))
    assert float(empty) == 0.0 and float(m0["pairs"]) == 0
    g = jax.grad(lambda p: co_training.contrastive_rm_loss(p, neg, jnp.zeros(3, bool))[0])(pos)
    np.testing.assert_array_equal(g, 0.0)


def test_corrupt_answer_token_always_makes_a_wrong_answer_uniformly():
    tokens = jnp.tile(jnp.array([[3, 5, 5]]), (6000, 1))
    out = co_training.corrupt_answer_token(jax.random.key(0), tokens, 0, jnp.full(6000, 3), 8)
    assert out.shape == tokens.shape
    np.testing.assert_array_equal(out[:, 1:], tokens[:, 1:])  # only the answer position
    assert not np.any(np.asarray(out[:, 0]) == 3)
    counts = np.bincount(np.asarray(out[:, 0]), minlength=8)
    np.testing.assert_allclose(np.delete(counts, 3) / 6000, 1 / 7, atol=0.02)


def _toy():
    """One prompt, responses = 2 tokens over {0, 1, 2}: token 0 is the answer, the RM is a
    per-sequence table, the verifier accepts the sequences starting with 0."""
    space = st.SequenceSpace(vocab_size=3, length=2)
    sample_fn, log_prob_fn, kl_fn = small_pg.sequence_table_policy(space)
    first = jnp.asarray(space.sequences[:, 0])

    def reward_fn(rm, prompts, y, data):
        return rm["table"][y]

    def score_fn(rm, prompts, y, data):
        return rm["table"][y]

    def verifier_fn(prompts, y, data):
        return first[y] == 0

    def negative_fn(key, prompts, y, data):
        return (y + 3 * jax.random.randint(key, y.shape, 1, 3)) % 9  # first token changed

    return space, sample_fn, log_prob_fn, kl_fn, reward_fn, score_fn, verifier_fn, negative_fn


def test_co_trained_loss_trains_both_and_a_frozen_rm_gets_no_gradient():
    space, sample_fn, log_prob_fn, kl_fn, reward_fn, score_fn, verifier_fn, negative_fn = _toy()
    rm_loss = co_training.verified_contrastive_rm_loss(score_fn, verifier_fn, negative_fn)
    params = {"policy": st.init_table(space, 1), "rm": {"table": jnp.zeros(9)}}
    batch = {"rng": jax.random.key(0), "data": {"prompts": jnp.ones((4, 1))}}
    co = co_training.co_trained_grpo_loss(sample_fn, log_prob_fn, reward_fn, rm_loss,
                                          group_size=6)
    (loss, metrics), grads = jax.value_and_grad(co, has_aux=True)(params, batch)
    assert {"reward", "kl", "pg_loss", "rm_loss", "rm_pairs", "rm_pair_accuracy"} <= set(metrics)
    assert float(metrics["rm_pairs"]) > 0
    # the RM's gradient raises verified positives (first token 0) and lowers the rest
    g = np.asarray(grads["rm"]["table"])
    assert np.all(g[:3] <= 0) and np.any(g[:3] < 0) and np.all(g[3:] >= 0)
    # the policy's gradient through the surrogate alone is zero here (all rewards are 0)...
    np.testing.assert_allclose(np.asarray(grads["policy"]["bias"]), 0.0, atol=1e-7)
    # ... and the RM's params reach the policy's reward only as a constant (stop_gradient)
    frozen = co_training.co_trained_grpo_loss(sample_fn, log_prob_fn, reward_fn, None,
                                              group_size=6)
    rm_params = {"policy": params["policy"], "rm": {"table": jnp.arange(9.0)}}
    g2 = jax.grad(lambda p: frozen(p, batch)[0])(rm_params)
    np.testing.assert_array_equal(np.asarray(g2["rm"]["table"]), 0.0)
    assert np.any(np.asarray(g2["policy"]["bias"]) != 0)


def test_co_training_through_fit_small_fixes_a_hacked_rm(tmp_path):
    """The RM starts out rating the wrong answers (first token 2) highest; the policy follows it
    while frozen, and the co-trained RM's contrastive updates turn it back to the answer."""
    space, sample_fn, log_prob_fn, kl_fn, reward_fn, score_fn, verifier_fn, negative_fn = _toy()
    first = np.asarray(space.sequences[:, 0])
    hacked = jnp.asarray(np.where(first == 2, 2.0, np.where(first == 0, 1.0, 0.0)), jnp.float32)
    init = {"policy": st.init_table(space, 1), "rm": {"table": hacked}}
    data = {"prompts": jnp.ones((4, 1))}
    right = {}
    for name, rm_loss in (("frozen", None), ("co", co_training.verified_contrastive_rm_loss(
            score_fn, verifier_fn, negative_fn))):
        loss = co_training.co_trained_grpo_loss(sample_fn, log_prob_fn, reward_fn, rm_loss,
                                                group_size=8)
        fit = fit_small(str(tmp_path / name), loss_fn=loss, has_aux=True, init_params=init,
                        tx=optax.adam(0.1), num_steps=150, data=data,
                        batch_fn=small_pg.rl_batch, seeds=[0], steps_per_log=150, plots=False)
        params = jax.tree.map(lambda a: a[0], fit.params)
        probs = np.exp(np.asarray(st.sequence_log_probs(space, params["policy"], jnp.ones(1))))
        right[name] = probs[first == 0].sum()
        if name == "frozen":
            np.testing.assert_array_equal(np.asarray(params["rm"]["table"]), hacked)
    assert right["frozen"] < 0.2 < 0.8 < right["co"], right


def test_co_trained_loss_validates_the_policy_arguments():
    space, sample_fn, log_prob_fn, kl_fn, reward_fn, *_ = _toy()
    with pytest.raises(ValueError, match="group_size"):
        co = co_training.co_trained_grpo_loss(sample_fn, log_prob_fn, reward_fn, None,
                                              group_size=1)
        co({"policy": st.init_table(space, 1), "rm": {"table": jnp.zeros(9)}},
           {"rng": jax.random.key(0), "data": {"prompts": jnp.ones((2, 1))}})


def test_self_judged_loss_uses_the_detached_model_for_prompts_and_rewards():
    """One model scores its own responses (here by its own log-prob) and builds its prompts
    from its params: the gradient is GRPO's with those rewards held fixed."""
    space = st.SequenceSpace(vocab_size=2, length=2)
    sample_fn, log_prob_fn, _ = small_pg.sequence_table_policy(space)
    params = st.init_table(space, 1, key=jax.random.key(3), scale=0.5)
    data = {"prompts": jnp.ones((5, 1))}
    seen = {}

    def prompt_fn(key, p, d):
        seen["params"] = p
        return d["prompts"]

    def reward_fn(p, x, y, d):
        return st.gather(st.sequence_log_probs(space, p, x), y)

    loss = co_training.self_judged_grpo_loss(sample_fn, log_prob_fn, reward_fn, group_size=4,
                                             prompt_fn=prompt_fn)
    batch = {"rng": jax.random.key(7), "data": data}
    grad = jax.grad(lambda p: loss(p, batch)[0])(params)
    assert seen["params"] is not None
    fixed = st.sequence_log_probs(space, params, data["prompts"])
    plain = small_pg.group_pg_loss(sample_fn, log_prob_fn,
                                   lambda x, y, d: st.gather(fixed, y), group_size=4)
    want = jax.grad(lambda p: plain(p, {"rng": jax.random.split(batch["rng"])[1],
                                        "data": data})[0])(params)
    for k in ("bias", "weight"):
        np.testing.assert_allclose(grad[k], want[k], rtol=1e-5, atol=1e-7)
