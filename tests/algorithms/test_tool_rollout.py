"""Multi-turn tool rollouts (alignax.algorithms.tool_rollout): layout and masks, the sampler's
log-probs equal the training forward's, tool-call counts, stop strings, the policy loss ignores
observation tokens, and policy_gradient.train with the tool rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import online, policy_gradient, tool_rollout
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.types import Rollout

CFG = TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=64)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
# two prompts, padded on either side (the rollout left-aligns them)
PROMPTS = np.array([[0, 3, 4, 5], [6, 7, 0, 0]], np.int32)
PROMPT_MASK = PROMPTS != 0
K, T_TURN, T_OBS, N_SAMPLES = 2, 4, 3, 3
R = (K + 1) * T_TURN + K * T_OBS


class CharTokenizer:
    """ids 0 = pad, 1 = eos, 2..15 = the letters a..n (one id per character)."""

    pad_id, eos_id = 0, 1
    letters = "abcdefghijklmn"

    def encode(self, text):
        return [self.letters.index(c) + 2 for c in text]

    def decode(self, ids):
        return "".join(self.letters[i - 2] for i in ids if i >= 2)


TOK = CharTokenizer()


class FakeEnv:
    """Deterministic: rows r % 3 == 0 never call a tool, r % 3 == 1 call once (observation
    "ab"), r % 3 == 2 call every time they may (observation "cdefg", cut to T_OBS tokens).
    Records every call's text."""

    def __init__(self):
        self.calls = {}

    def __call__(self, row, text):
        done = len(self.calls.setdefault(row, []))
        kind = row % 3
        if kind == 0 or (kind == 1 and done >= 1):
            return None
        self.calls[row].append(text)
        return "ab" if kind == 1 else "cdefg"


def _rollout(env, **kwargs):
    fn = tool_rollout.make_tool_rollout(
        MODEL, env, TOK, num_samples=N_SAMPLES, max_tool_calls=K, turn_tokens=T_TURN,
        max_observation_tokens=T_OBS, **kwargs)
    return fn, fn(PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(1))


def _turns(ro, r):
    """Row r's turns: the runs of its policy tokens, as lists of ids."""
    resp, rmask = np.asarray(ro.ids)[r, -R:], np.asarray(ro.response_mask)[r]
    length = int(np.asarray(ro.mask)[r, -R:].sum())
    segments, current = [], []
    for j in range(length):
        if rmask[j]:
            current.append(int(resp[j]))
        elif current:
            segments.append(current)
            current = []
    return segments + [current]


_logps = jax.jit(lambda p, ids, mask: online.response_logps(MODEL.apply, p, ids, mask, R))


@pytest.fixture(scope="module")
def rolled():
    env = FakeEnv()
    fn, rollout = _rollout(env, stop_tokens=(1,))
    return env, fn, rollout


def test_layout_masks_and_counts(rolled):
    env, fn, ro = rolled
    n = PROMPTS.shape[0] * N_SAMPLES
    assert fn.response_len == R == tool_rollout.tool_response_length(
        max_tool_calls=K, turn_tokens=T_TURN, max_observation_tokens=T_OBS)
    assert ro.ids.shape == ro.mask.shape == (n, PROMPTS.shape[1] + R)
    assert ro.response_mask.shape == ro.old_logps.shape == (n, R)
    np.testing.assert_array_equal(ro.prompt_index, np.repeat([0, 1], N_SAMPLES))
    ids, mask = np.asarray(ro.ids), np.asarray(ro.mask)
    rmask, obs = np.asarray(ro.response_mask), np.asarray(tool_rollout.observation_mask(ro))
    # the prompts, left-aligned, then the response
    np.testing.assert_array_equal(ids[0, :4], [0, 3, 4, 5])
    np.testing.assert_array_equal(ids[N_SAMPLES, :4], [0, 0, 6, 7])
    calls = np.asarray(tool_rollout.tool_calls(ro))
    for r in range(n):
        expected = {0: 0, 1: 1, 2: K}[r % 3]
        assert calls[r] == expected == len(env.calls.get(r, []))
        resp, m = ids[r, 4:], mask[r, 4:]
        # packed from the first response column: valid tokens, then padding
        length = int(m.sum())
        assert m[:length].all() and not m[length:].any() and (resp[length:] == 0).all()
        # observation tokens: attended to (mask) but not the policy's (response_mask)
        assert not (rmask[r] & ~m).any()
        obs_ids = resp[obs[r]]
        want = {0: [], 1: TOK.encode("ab"), 2: TOK.encode("cde") * K}[r % 3]
        np.testing.assert_array_equal(obs_ids, want)
        # each turn's text as the environment saw it
        segments = _turns(ro, r)
        assert len(segments) == expected + 1 and all(1 <= len(s) <= T_TURN for s in segments)
        assert env.calls.get(r, []) == [TOK.decode(s) for s in segments[:expected]]
        # a turn ends at the eos or at the budget
        for s in segments:
            assert len(s) == T_TURN or s[-1] == 1
            assert 1 not in s[:-1]
        # the final turn: the policy tokens after the last observation
        final = np.asarray(tool_rollout.final_turn_mask(ro))[r]
        np.testing.assert_array_equal(resp[final], segments[-1])
    assert (calls == 0).any() and (calls == K).any()  # a row that never calls a tool


def test_old_logps_are_the_training_forward(rolled):
    _, _, ro = rolled
    logps = _logps(PARAMS, ro.ids, ro.mask)
    rmask = np.asarray(ro.response_mask)
    np.testing.assert_allclose(np.where(rmask, logps, 0.0), ro.old_logps, atol=1e-5)
    assert np.all(np.asarray(ro.old_logps)[~rmask] == 0.0)
    assert np.all(np.asarray(ro.old_logps)[rmask] < 0.0)


def test_stop_strings_cut_the_turn():
    cut = tool_rollout._cut_at_stop_string
    toks = np.array(TOK.encode("abcdcd"))
    assert cut(toks, TOK.decode, ("cd",)) == 4  # keeps "abcd"
    assert cut(toks, TOK.decode, ("zz",)) == 6 and cut(toks, TOK.decode, ()) == 6
    assert cut(toks, TOK.decode, ("a", "cd")) == 1

    env = FakeEnv()
    _, ro = _rollout(env, stop_strings=("b", "c", "d"))  # a turn ends after its first b, c, d
    rmask = np.asarray(ro.response_mask)
    cut_turns = 0
    for r in range(rmask.shape[0]):
        turns = _turns(ro, r)
        assert env.calls.get(r, []) == [TOK.decode(t) for t in turns[:-1]]
        for t in turns:
            assert not any(c in TOK.decode(t[:-1]) for c in "bcd")
            assert len(t) == T_TURN or TOK.decode(t[-1:]) in "bcd"
            cut_turns += len(t) < T_TURN
    assert cut_turns > 0
    np.testing.assert_allclose(np.where(rmask, _logps(PARAMS, ro.ids, ro.mask), 0.0),
                               ro.old_logps, atol=1e-5)


def test_bad_budget_and_empty_observation():
    with pytest.raises(ValueError, match="turn_tokens must be an int >= 1"):
        tool_rollout.make_tool_rollout(MODEL, FakeEnv(), TOK, num_samples=1, max_tool_calls=1,
                                       turn_tokens=0, max_observation_tokens=2)
    fn = tool_rollout.make_tool_rollout(MODEL, lambda row, text: "", TOK, num_samples=1,
                                        max_tool_calls=K, turn_tokens=T_TURN,
                                        max_observation_tokens=T_OBS)
    with pytest.raises(ValueError, match="observation of no tokens"):
        fn(PARAMS, PROMPTS, PROMPT_MASK, jax.random.key(1))
    build = tool_rollout.tool_rollout_from_config(FakeEnv(), TOK, max_tool_calls=K,
                                                  turn_tokens=T_TURN, max_observation_tokens=T_OBS)
    with pytest.raises(ValueError, match=f"max_new_tokens=5 must be the tool rollout's "
                                         f"response length {R}"):
        build(MODEL, policy_gradient.default_config(max_new_tokens=5), 2)


def test_observation_tokens_get_no_gradient_and_no_kl(rolled):
    """The policy loss on a tool rollout: its gradient w.r.t. the logits at observation
    positions is 0, and the KL term and metric ignore what the reference says there."""
    _, _, ro = rolled
    n, v = ro.response_mask.shape[0], CFG.vocab_size

    def apply_fn(params, ids, mask, logits_range):  # the logits are the "params"
        assert logits_range == (ids.shape[1] - R - 1, ids.shape[1] - 1)
        return params

    loss_fn = policy_gradient.make_policy_loss(apply_fn, kl_estimator="k3")

    @jax.jit  # one program for the inputs and the gradient, not one per op
    def values(ro):
        logits = jax.random.normal(jax.random.key(3), (n, R, v))
        ref = jax.random.normal(jax.random.key(4), (n, R))
        obs = tool_rollout.observation_mask(ro)
        batch = online.training_batch(ro, jnp.linspace(-1.0, 1.0, n), ref_logps=ref)
        grads, _ = jax.grad(lambda p, b: loss_fn(p, b, None, 0.5), has_aux=True)(logits, batch)
        # another reference on the observation tokens
        moved = dict(batch, ref_logps=jnp.where(obs, ref - 5.0, ref))
        return logits, obs, grads, batch, moved

    logits, obs, grads, batch, moved = values(ro)
    loss_at = jax.jit(lambda p, b: loss_fn(p, b, None, 0.5))  # one program for both batches
    assert float(jnp.abs(grads).sum()) > 0
    np.testing.assert_array_equal(np.asarray(grads)[np.asarray(obs)], 0.0)
    np.testing.assert_array_equal(np.asarray(grads)[~np.asarray(ro.mask)[:, -R:]], 0.0)
    # another reference on the observation tokens: the same loss and KL
    (a, ma), (b, mb) = loss_at(logits, batch), loss_at(logits, moved)
    assert float(a) == float(b) and float(ma["kl"]) == float(mb["kl"])
    assert float(ma["tokens"]) == float(np.asarray(ro.response_mask).sum())


def test_policy_gradient_trains_through_the_tool_rollout(tmp_path):
    env = FakeEnv()
    build = tool_rollout.tool_rollout_from_config(env, TOK, max_tool_calls=K, turn_tokens=T_TURN,
                                                  max_observation_tokens=T_OBS)
    seen = []

    def reward_fn(ro: Rollout):
        seen.append(ro)
        return -0.1 * np.asarray(tool_rollout.tool_calls(ro), np.float32) + np.asarray(
            tool_rollout.final_turn_mask(ro)).sum(-1)

    cfg = dict(iterations=2, prompts_per_iteration=2, num_samples=2, max_new_tokens=R,
               stop_tokens=(1,), kl_coef=0.05, progress=False, checkpoint_every=100,
               optimizer=dict(name="adamw", learning_rate=1e-2, warmup_steps=0,
                              schedule="constant", clip_norm=1.0, kwargs=dict(weight_decay=0.0)))
    out = policy_gradient.train(cfg, str(tmp_path / "pg"), model=MODEL, init_params=PARAMS,
                                ref_params=PARAMS, prompt_ids=PROMPTS, prompt_mask=PROMPT_MASK,
                                reward_fn=reward_fn, rollout_fn=build)
    assert len(out["history"]) == 2 and len(seen) == 2
    for row in out["history"]:
        for key in ("reward", "kl", "pg_loss", "kl_ref_seq", "response_length"):
            assert np.isfinite(row[key]), key
    # the mean response length counts the policy's tokens only
    ro = seen[-1]
    assert out["history"][-1]["response_length"] == pytest.approx(
        float(np.asarray(ro.response_mask).sum(-1).mean()))
    assert ro.ids.shape == (4, PROMPTS.shape[1] + R)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                         out["params"], PARAMS))
    assert max(moved) > 0
    with pytest.raises(ValueError, match="must be the tool rollout's response length"):
        policy_gradient.train({**cfg, "max_new_tokens": R + 1}, str(tmp_path / "bad"),
                              model=MODEL, init_params=PARAMS, ref_params=PARAMS,
                              prompt_ids=PROMPTS, prompt_mask=PROMPT_MASK, reward_fn=reward_fn,
                              rollout_fn=build)
