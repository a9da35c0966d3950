"""IRL reward loss with on-policy negatives, category routing and the co-trained GRPO loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignax.algorithms import irl
from alignax.algorithms.small_pg import rl_batch, sequence_table_policy
from alignax.models import sequence_table as st
from alignax.train.small import fit_small


def test_irl_reward_loss_values_and_gradient_direction():
    demo = jnp.array([1.0, 0.0])
    pol = jnp.array([[0.0, 2.0], [0.0, 0.0]])
    loss, m = irl.irl_reward_loss(demo, pol)
    sp = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(loss, [(sp(-1.0) + sp(1.0)) / 2, sp(0.0)], rtol=1e-6)
    assert float(m["irl_accuracy"]) == pytest.approx(0.25)
    assert float(m["irl_gap"]) == pytest.approx((1 - 1 + 0 + 0) / 4)
    g_demo, g_pol = jax.grad(lambda d, p: irl.irl_reward_loss(d, p)[0].sum(), (0, 1))(demo, pol)
    # the loss pushes the demonstration's reward up and the samples' down
    assert np.all(np.asarray(g_demo) < 0) and np.all(np.asarray(g_pol) > 0)


def test_route_by_category_and_bilinear_reward():
    params = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]]),
              "W": jnp.zeros((2, 3, 2)).at[1, 0, 0].set(2.0)}
    cat = jnp.array([1, 0])
    x = jnp.array([[1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    y = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [M, K, H]
    r = irl.bilinear_reward(irl.route_by_category(params, cat), x, y)
    # prompt 0 (category 1): weight (0, 1) + 1 * (2, 0) = (2, 1); prompt 1 (category 0): (1, 0)
    np.testing.assert_allclose(r, [[2.0, 1.0], [1.0, 0.0]])
    rm0 = irl.init_bilinear(7, 3, 2)
    assert rm0["w"].shape == (7, 2) and rm0["W"].shape == (7, 3, 2)


def _problem():
    space = st.SequenceSpace(vocab_size=2, length=2)
    phi = jnp.eye(4)  # one feature per sequence: the RM can represent any reward

    def reward_model(rm, prompts, responses):
        return irl.bilinear_reward(irl.route_by_category(rm, prompts["category"]),
                                   prompts["features"], phi[responses])

    prompts = {"features": jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
               "category": jnp.array([0, 0, 1, 1]),
               "demos": jnp.array([[3, 3], [3, 3], [1, 1], [1, 1]]),
               "hardness": jnp.array([1.0, 1.0, 1.0, 1.0])}
    data = {"prompts": prompts, "ref_params": st.init_table(space, 2)}
    params = {"policy": st.init_table(space, 2), "rm": irl.init_bilinear(2, 2, 4)}
    return space, reward_model, data, params


def test_irl_grpo_loss_updates_both_models_and_scale_changes_only_the_policy_step():
    space, reward_model, data, params = _problem()
    params["rm"]["w"] = jnp.array([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    batch = {"rng": jax.random.key(0), "data": data}
    policy = sequence_table_policy(space)
    shapes = {}

    def gap_scale(prompts, gap, data):
        shapes["gap"] = gap.shape
        return 1.0 + gap

    losses = {
        "plain": irl.irl_grpo_loss(policy, reward_model, num_prompts=4, group_size=4),
        # GRPO-S with a constant scale of 2
        "double": irl.irl_grpo_loss(policy, reward_model, num_prompts=4, group_size=4,
                                    scale_fn=lambda p, gap, d: 2.0 * jnp.ones_like(gap)),
        # the scale_fn receives the gap r(demo) - mean r(samples) [M] of the stop-gradient RM
        "gap": irl.irl_grpo_loss(policy, reward_model, num_prompts=4, group_size=4,
                                 scale_fn=gap_scale, kl_coef=0.1)}

    # the RM learns from a separate demonstration set (category 1's prompts only)
    rm_set = jax.tree.map(lambda a: a[2:], data["prompts"])
    separate = {"rng": batch["rng"], "data": {**data, "rm_prompts": rm_set}}

    @jax.jit  # one compile for all the losses (the batch an argument: no constant folding)
    def everything(p, b, b_sep):
        out = {k: jax.value_and_grad(f, has_aux=True)(p, b) for k, f in losses.items()}
        out["separate"] = jax.value_and_grad(losses["plain"], has_aux=True)(p, b_sep)
        return out

    out = everything(params, batch, separate)
    (value, m), g = out["gap"]
    assert np.isfinite(float(value)) and float(m["kl"]) >= 0
    assert {"reward", "kl", "reward_std", "irl_loss", "irl_accuracy", "irl_gap",
            "scale_max"} <= set(m)
    for tree in (g["policy"], g["rm"]):  # both models get a gradient from the one loss
        assert sum(float(jnp.abs(a).sum()) for a in jax.tree.leaves(tree)) > 0
    # the constant scale of 2 doubles the policy's surrogate gradient only, not the RM's
    g1, g2 = out["plain"][1], out["double"][1]
    assert float(jnp.abs(g1["policy"]["bias"]).sum()) > 0
    np.testing.assert_allclose(g2["policy"]["bias"], 2 * g1["policy"]["bias"], atol=1e-6)
    np.testing.assert_allclose(g2["rm"]["w"], g1["rm"]["w"], atol=1e-6)
    # with the separate set the RM's gradient touches category 1's RM only; the policy's
    # surrogate is the same as without it (same RL rollouts)
    g_sep = out["separate"][1]
    assert float(jnp.abs(g_sep["rm"]["w"][0]).sum()) == 0.0
    assert float(jnp.abs(g_sep["rm"]["w"][1]).sum()) > 0.0
    assert float(jnp.abs(g1["rm"]["w"][0]).sum()) > 0.0
    # here r(demo) = 1 and every sample's reward is 0 or 1, so the gap lies in [0, 1]
    assert shapes["gap"] == (4,)
    assert 1.0 <= float(out["gap"][0][1]["scale_max"]) <= 2.0


def test_co_training_learns_the_demonstrations(tmp_path):
    """IRL with on-policy negatives + GRPO: the policy moves to each category's demo."""
    space, reward_model, data, params = _problem()
    loss = irl.irl_grpo_loss(sequence_table_policy(space), reward_model, num_prompts=4,
                             group_size=4, rm_l2=1e-3)
    fit = fit_small(str(tmp_path), loss_fn=loss, init_params=params, tx=optax.adam(0.1),
                    num_steps=150, data=data, batch_fn=rl_batch, has_aux=True, seeds=[0],
                    steps_per_log=150, plots=False)
    policy = jax.tree.map(lambda a: a[0], fit.params["policy"])
    probs = np.exp(np.asarray(st.sequence_log_probs(space, policy, jnp.eye(2))))
    assert probs[0, 3] > 0.8 and probs[1, 1] > 0.8  # each category's demonstration
    rm = jax.tree.map(lambda a: a[0], fit.params["rm"])
    assert int(np.argmax(rm["w"][0])) == 3 and int(np.argmax(rm["w"][1])) == 1
