"""WaltzRL's two-agent pieces: the rewards against hand computations, the small agents'
rollout (log-probs, revision masks, exact inference distributions), the joint loss's
gradients, and the LM role rows of the waltz rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import two_agent as ta
from alignax.types import Rollout


def test_rewards_by_hand():
    unsafe = jnp.array([True, False, False, True])
    over = jnp.array([False, True, False, True])
    np.testing.assert_array_equal(ta.conversation_reward(unsafe, over), [0, 0, 1, 0])
    np.testing.assert_array_equal(ta.alignment_label(unsafe, over), [1, 2, 0, 1])
    np.testing.assert_array_equal(ta.label_reward(jnp.array([1, 0, 0, -1]),
                                                  jnp.array([1, 2, 0, 0])), [1, 0, 1, 0])
    np.testing.assert_array_equal(ta.format_reward(jnp.array([True, False])), [1, 0])
    # DIR: R_c(c_1) - R_c(c_0) where revised, else 0
    d = ta.dynamic_improvement_reward(jnp.array([0., 1., 0., 1.]), jnp.array([1., 0., 1., 1.]),
                                      jnp.array([True, True, False, True]))
    np.testing.assert_array_equal(d, [1, -1, 0, 0])
    # R_f = w_fmt fmt + w_lab lab + w_dir * lab * DIR (gated), or without the gate
    dirr, lab, fmt = jnp.array([1., 1., -1.]), jnp.array([1., 0., 1.]), jnp.array([1., 1., 0.])
    np.testing.assert_allclose(ta.feedback_reward(dirr, lab, fmt), [3, 1, 0])
    np.testing.assert_allclose(ta.feedback_reward(dirr, lab, fmt, gate_dir=False), [3, 2, 0])
    np.testing.assert_allclose(
        ta.feedback_reward(dirr, lab, fmt, dir_weight=2.0, label_weight=0.5,
                           format_weight=0.1), [0.1 + 0.5 + 2, 0.1, -2 + 0.5])


def _agents(seed=0, d=4):
    k = jax.random.split(jax.random.key(seed), 3)
    return {"conv": jax.random.normal(k[0], (3, d)),
            "revise": jax.random.normal(k[1], (2, 3, d)),
            "feedback": jax.random.normal(k[2], (3, 3, d))}


def test_rollout_log_probs_masks_and_exact_distributions():
    params = _agents()
    x = jax.random.normal(jax.random.key(5), (6, 4))
    traj = jax.jit(lambda p, x, k: ta.two_agent_rollout(p, x, k, 4000))(
        params, x, jax.random.key(1))
    # the rollout's log-probs are the recomputed ones
    again = ta.trajectory_log_probs(params, x, traj)
    for name in ("logp_c0", "logp_f", "logp_c1"):
        np.testing.assert_allclose(traj[name], again[name], atol=1e-6)
    # no revision where the feedback agent did not flag, and then final = c_0
    revised = np.asarray(traj["revised"])
    np.testing.assert_array_equal(revised, np.asarray(traj["f"]) > 0)
    assert np.all(np.asarray(traj["logp_c1"])[~revised] == 0)
    np.testing.assert_array_equal(np.asarray(traj["final"])[~revised],
                                  np.asarray(traj["c0"])[~revised])
    np.testing.assert_array_equal(np.asarray(traj["final"])[revised],
                                  np.asarray(traj["c1"])[revised])
    # by hand: the log-probs of the first trajectory of prompt 0
    c0, f, c1 = (int(traj[k][0, 0]) for k in ("c0", "f", "c1"))
    lsm = jax.nn.log_softmax
    np.testing.assert_allclose(traj["logp_c0"][0, 0], lsm(params["conv"] @ x[0])[c0], atol=1e-6)
    np.testing.assert_allclose(traj["logp_f"][0, 0], lsm(params["feedback"][c0] @ x[0])[f],
                               atol=1e-6)
    if f > 0:
        np.testing.assert_allclose(traj["logp_c1"][0, 0],
                                   lsm(params["revise"][f - 1] @ x[0])[c1], atol=1e-6)
    # the exact final distribution and trigger rate match the samples' frequencies
    exact = ta.final_action_probs(params, x)
    freq = np.stack([(np.asarray(traj["final"]) == a).mean(1) for a in range(3)], -1)
    np.testing.assert_allclose(freq, exact["final"], atol=0.03)
    np.testing.assert_allclose(revised.mean(1), exact["trigger"], atol=0.03)
    np.testing.assert_allclose(np.asarray(exact["final"]).sum(-1), 1.0, atol=1e-6)
    # single agent: never a feedback round
    solo = ta.two_agent_rollout(params, x, jax.random.key(2), 8, feedback=False)
    assert not np.asarray(solo["revised"]).any()
    np.testing.assert_array_equal(solo["final"], solo["c0"])


def test_trajectory_kl_by_hand_and_zero_at_the_reference():
    params, ref = _agents(0), _agents(1)
    x = jax.random.normal(jax.random.key(5), (3, 4))
    traj = ta.two_agent_rollout(params, x, jax.random.key(3), 5)
    kl_c, kl_f = ta.trajectory_kl(params, ref, x, traj)

    def kl(p, q):
        p, q = jax.nn.log_softmax(p), jax.nn.log_softmax(q)
        return float(jnp.sum(jnp.exp(p) * (p - q)))

    m, i = 1, 2
    c0, f = int(traj["c0"][m, i]), int(traj["f"][m, i])
    want_c = kl(params["conv"] @ x[m], ref["conv"] @ x[m])
    if f > 0:
        want_c += kl(params["revise"][f - 1] @ x[m], ref["revise"][f - 1] @ x[m])
    np.testing.assert_allclose(kl_c[m, i], want_c, rtol=1e-5)
    np.testing.assert_allclose(kl_f[m, i], kl(params["feedback"][c0] @ x[m],
                                              ref["feedback"][c0] @ x[m]), rtol=1e-5)
    zc, zf = ta.trajectory_kl(params, params, x, traj)
    np.testing.assert_allclose(zc, 0.0, atol=1e-6)
    np.testing.assert_allclose(zf, 0.0, atol=1e-6)


def _judge(prompts, actions):
    """Toy: harmful prompts (kind 1): help (0) or help+unsafe (1) is unsafe; benign: refuse
    (2) over-refuses, help+unsafe is unsafe."""
    harmful = prompts["harmful"][:, None]
    unsafe = (actions == 1) | (harmful & (actions == 0))
    return unsafe, (~harmful) & (actions == 2)


def _loss(**kw):
    ref = ta.init_agents(4)
    x = jax.random.normal(jax.random.key(0), (8, 4))
    data = {"features": x, "harmful": jnp.arange(8) % 2 == 0}
    loss = ta.two_agent_pg_loss(_judge, group_size=4, ref_params=ref,
                                prompt_fn=lambda k, d: d, kl_coef=0.1, **kw)
    return loss, data


def test_joint_loss_gradients_reach_both_agents_and_the_stage_schedule():
    loss, data = _loss(stage1_steps=5)
    params = _agents(3)

    def grads(step):
        batch = {"rng": jax.random.key(7), "data": data, "step": jnp.int32(step)}
        (value, metrics), g = jax.value_and_grad(loss, has_aux=True)(params, batch)
        assert np.isfinite(float(value))
        return g, metrics

    g, metrics = grads(10)  # stage 2: both agents move
    for name in ("conv", "revise", "feedback"):
        assert float(jnp.abs(g[name]).sum()) > 0, name
    assert 0 <= float(metrics["trigger"]) <= 1
    g1, _ = grads(0)  # stage 1: the conversation agent is frozen
    assert float(jnp.abs(g1["conv"]).sum()) == 0 and float(jnp.abs(g1["revise"]).sum()) == 0
    assert float(jnp.abs(g1["feedback"]).sum()) > 0
    # single-agent RL: the feedback agent gets no gradient
    solo, _ = _loss(feedback=False)
    gs = jax.grad(lambda p: solo(p, {"rng": jax.random.key(7), "data": data})[0])(params)
    assert float(jnp.abs(gs["feedback"]).sum()) == 0 and float(jnp.abs(gs["conv"]).sum()) > 0


def test_joint_training_lowers_unsafe_and_overrefusal():
    """A few hundred Adam steps of the joint loss on a separable toy: the final response's
    expected R_c rises (the mechanism trains end to end)."""
    import optax

    loss, data = _loss()
    tx = optax.adam(0.1)
    params = ta.init_agents(4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, k):
        g = jax.grad(lambda p: loss(p, {"rng": k, "data": data, "step": 100})[0])(params)
        up, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, up), opt

    def value(p):
        dist = ta.final_action_probs(p, data["features"])["final"]
        acts = jnp.broadcast_to(jnp.arange(3), (8, 3))
        unsafe, over = _judge(data, acts)
        return float(jnp.mean(jnp.sum(dist * ta.conversation_reward(unsafe, over), -1)))

    before = value(params)
    for i in range(150):
        params, opt = step(params, opt, jax.random.key(i))
    assert value(params) > before + 0.3


class _Words:
    """A word tokenizer: 'w<k>' -> k (space-joined on decode)."""
    pad_id = 0

    def encode(self, text):
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids):
        return " ".join(f"w{int(i)}" for i in ids)


def test_split_roles_and_text_rewards():
    # one prompt (P = 2), n = 2 trajectories; R = 10 response columns: policy (1) / obs (2)
    #   row 0: c0 c0 | obs | f f | obs | c1 | pad     (flagged, revised)
    #   row 1: c0 | obs | f | pad...                   (not flagged)
    layout = np.array([[1, 1, 2, 1, 1, 2, 1, 0, 0, 0], [1, 2, 1, 0, 0, 0, 0, 0, 0, 0]])
    r = layout.shape[1]
    ids = np.arange(2 * (2 + r)).reshape(2, 2 + r) % 25 + 1
    mask = np.concatenate([np.ones((2, 2), bool), layout > 0], 1)
    roll = Rollout(ids=jnp.asarray(ids), mask=jnp.asarray(mask),
                   response_mask=jnp.asarray(layout == 1),
                   old_logps=jnp.asarray(np.where(layout == 1, -0.5, 0.0), jnp.float32),
                   prompt_index=jnp.zeros(2, jnp.int32))
    out = ta.split_roles(roll, 2)
    assert out.ids.shape == (6, 2 + r)
    np.testing.assert_array_equal(ta.row_roles(6, 2), [0, 0, 1, 1, 2, 2])
    want = np.zeros((6, r), bool)
    want[0, :2], want[1, 0] = True, True          # conversation rows: c_0
    want[2, 3:5], want[3, 2] = True, True         # feedback rows: f
    want[4, 6] = True                             # revision rows: c_1 (row 1 not revised)
    np.testing.assert_array_equal(np.asarray(out.response_mask), want)
    np.testing.assert_array_equal(np.asarray(out.old_logps), np.where(want, -0.5, 0.0))
    for k in range(3):
        np.testing.assert_array_equal(out.ids[2 * k:2 * k + 2], ids)

    tok = _Words()
    texts = ta.trajectory_texts(tok, out, 2)
    assert texts["conversation"] == [tok.decode(ids[0, 2:4]), tok.decode(ids[1, 2:3])]
    assert texts["revision"][1] == ""
    markers = {"none": "w20", "unsafe": "w21", "overrefuse": "w22"}
    assert ta.parse_label("w3 w21", markers) == 1
    assert ta.parse_label("w20 w21", markers) == -1 and ta.parse_label("w3", markers) == -1
    # the rule judge: refusal marker w9
    judge = lambda h, t: ta.rule_judge(h, t, ["w9"])  # noqa: E731
    assert judge(True, "w1 w9") == (False, False) and judge(True, "w1") == (True, False)
    assert judge(False, "w9") == (False, True) and judge(False, "w2") == (False, False)
    # trajectory 0: harmful prompt, c_0 unsafe, flagged unsafe (right), revised into a refusal
    # trajectory 1: benign prompt, c_0 refuses, feedback malformed (no label)
    t = {"conversation": ["w1", "w9"], "feedback": ["w21 w4", "w4"], "revision": ["w9", ""]}
    rw = ta.waltz_text_rewards(t, [True, False], judge, markers)
    np.testing.assert_array_equal(rw["conversation"], [0, 0])
    np.testing.assert_array_equal(rw["revision"], [1, 0])
    np.testing.assert_array_equal(rw["dir"], [1, 0])
    np.testing.assert_array_equal(rw["label_correct"], [1, 0])
    np.testing.assert_array_equal(rw["format"], [1, 0])
    np.testing.assert_array_equal(rw["feedback"], [3, 0])
    np.testing.assert_array_equal(rw["flagged"], [True, False])
    np.testing.assert_array_equal(rw["overrefuse"], [False, True])
    np.testing.assert_array_equal(
        ta.rows_from_roles([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], 2),
        [1, 2, 5, 6, 9, 10, 3, 4, 7, 8, 11, 12])
    # stage 1: advantages only on the feedback rows
    adv_fn = ta.role_advantage("rloo", 2, ("feedback",))
    adv, _ = adv_fn(jnp.arange(12, dtype=jnp.float32) ** 2, None, None)
    adv = np.asarray(adv).reshape(2, 3, 2)
    assert np.all(adv[:, 0] == 0) and np.all(adv[:, 2] == 0) and np.all(adv[:, 1] != 0)
    with pytest.raises(ValueError, match="unknown roles"):
        ta.role_advantage("rloo", 2, ("judge",))
