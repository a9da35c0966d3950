"""TDPO, BCO (running shift), iREPO, SELM, CREAM, sequential KL and Kendall's tau."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
from scipy.stats import kendalltau

from alignax.losses import (RunningMean, bco_loss, cream_loss, dpo_loss, irepo_loss, selm_loss,
                            tdpo_loss)
from alignax.ops import kendall_tau, sequential_kl

RNG = np.random.default_rng(3)
B = 10
PC, PR, RC, RR = (RNG.normal(size=(4, B)) * 3).astype(np.float32)
KC, KR = np.abs(RNG.normal(size=(2, B))).astype(np.float32)
H = (PC.astype(np.float64) - RC) - (PR - RR)


def logsig(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


class TestTDPOValues(chex.TestCase):
    """TDPO against its formula and DPO, with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_tdpo_matches_the_formula_and_dpo_at_zero_kl(self):
        def tdpo(**kw):  # hyperparameters static (closed over), arrays traced
            return self.variant(lambda *a, **k: tdpo_loss(*a, **k, **kw))

        l1, m = tdpo(beta=0.2, variant=1)(PC, PR, RC, RR, chosen_seq_kl=KC, rejected_seq_kl=KR)
        chex.assert_trees_all_close(l1, -logsig(0.2 * H - 0.2 * (KR - KC)), rtol=1e-4,
                                    atol=1e-5)
        l2, _ = tdpo(beta=0.2, alpha=0.5)(PC, PR, RC, RR, chosen_seq_kl=KC, rejected_seq_kl=KR)
        chex.assert_trees_all_close(l2, -logsig(0.2 * H - 0.5 * 0.2 * (KR - KC)), rtol=1e-4,
                                    atol=1e-5)
        zero = np.zeros(B, np.float32)
        chex.assert_trees_all_close(
            tdpo(beta=0.2)(PC, PR, RC, RR, chosen_seq_kl=zero, rejected_seq_kl=zero)[0],
            self.variant(lambda *a: dpo_loss(*a, beta=0.2))(PC, PR, RC, RR)[0], rtol=1e-6)
        chex.assert_shape(m["seq_kl_chosen"], (B,))


def test_tdpo_stop_gradient():
    # TDPO2 does not differentiate the chosen KL; TDPO1 does
    g2 = jax.grad(lambda k: tdpo_loss(PC, PR, RC, RR, chosen_seq_kl=k, rejected_seq_kl=KR)[0]
                  .sum())(jnp.asarray(KC))
    g1 = jax.grad(lambda k: tdpo_loss(PC, PR, RC, RR, chosen_seq_kl=k, rejected_seq_kl=KR,
                                      variant=1)[0].sum())(jnp.asarray(KC))
    assert np.all(np.asarray(g2) == 0) and np.any(np.asarray(g1) != 0)


def test_sequential_kl():
    ref = jnp.asarray(RNG.normal(size=(2, 3, 5)), jnp.float32)
    pol = jnp.asarray(RNG.normal(size=(2, 3, 5)), jnp.float32)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    q, p = jax.nn.softmax(ref), jax.nn.softmax(pol)
    kl = np.sum(q * (np.log(q) - np.log(p)), axis=-1)
    np.testing.assert_allclose(sequential_kl(ref, pol, mask), (kl * mask).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(sequential_kl(ref, ref, mask), [0.0, 0.0], atol=1e-6)


def test_bco_and_running_mean():
    loss, _ = bco_loss(PC, PR, RC, RR, delta=0.3, beta=0.2)
    c, r = PC - RC, PR - RR
    np.testing.assert_allclose(loss, -logsig(0.2 * c - 0.3) - logsig(-(0.2 * r - 0.3)),
                               rtol=1e-4, atol=1e-5)
    w = RNG.uniform(0.5, 2.0, B).astype(np.float32)
    weighted, _ = bco_loss(PC, PR, RC, RR, delta=0.3, beta=0.2, rejected_weights=w)
    np.testing.assert_allclose(weighted, -logsig(0.2 * c - 0.3) - w * logsig(-(0.2 * r - 0.3)),
                               rtol=1e-4, atol=1e-5)
    g = jax.grad(lambda d: bco_loss(PC, PR, RC, RR, delta=d)[0].sum())(jnp.float32(0.3))
    assert float(g) == 0.0  # the shift is a statistic, not a parameter
    state = RunningMean.create()
    chunks = [RNG.normal(size=n).astype(np.float32) for n in (3, 5, 2)]
    for chunk in chunks:
        state = state.update(chunk)
    np.testing.assert_allclose(state.mean, np.concatenate(chunks).mean(), rtol=1e-5)
    assert float(state.count) == 10


def test_irepo():
    p = RNG.uniform(0.05, 0.95, B).astype(np.float32)
    loss, _ = irepo_loss(PC, PR, RC, RR, preference_rate=p, beta=0.1)
    np.testing.assert_allclose(loss, (0.1 * H - np.log(p / (1 - p))) ** 2, rtol=1e-4, atol=1e-5)
    # p = 0.5 -> (beta h)^2; p = 1 is clipped (finite)
    half, _ = irepo_loss(PC, PR, RC, RR, preference_rate=np.full(B, 0.5), beta=0.1)
    np.testing.assert_allclose(half, (0.1 * H) ** 2, rtol=1e-4, atol=1e-6)
    assert np.isfinite(np.asarray(irepo_loss(PC, PR, RC, RR, preference_rate=np.ones(B))[0])).all()


def test_selm():
    ps, rs = (RNG.normal(size=(2, B)) - 5).astype(np.float32)
    loss, _ = selm_loss(PC, PR, RC, RR, policy_sample_logps=ps, ref_sample_logps=rs, beta=0.1,
                        alpha=0.01)
    np.testing.assert_allclose(loss, -logsig(0.1 * H) + 0.01 * 0.1 * (ps - rs), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(
        selm_loss(PC, PR, RC, RR, policy_sample_logps=ps, ref_sample_logps=rs, alpha=0.0)[0],
        dpo_loss(PC, PR, RC, RR)[0], rtol=1e-6)


def test_cream_and_kendall_tau():
    cons = RNG.uniform(0, 1, B).astype(np.float32)
    loss, _ = cream_loss(PC, PR, RC, RR, consistency=cons, beta=0.1)
    np.testing.assert_allclose(loss, -cons * logsig(0.1 * H) - (1 - cons) * logsig(-0.1 * H),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cream_loss(PC, PR, RC, RR, consistency=np.ones(B))[0],
                               dpo_loss(PC, PR, RC, RR)[0], rtol=1e-6)
    a, b = RNG.normal(size=(2, 7))
    np.testing.assert_allclose(kendall_tau(jnp.asarray(a), jnp.asarray(b)), kendalltau(a, b)[0],
                               rtol=1e-5)
    np.testing.assert_allclose(kendall_tau(jnp.arange(5.0), jnp.arange(5.0)[::-1]), -1.0)


def test_gradients():
    args = tuple(jnp.asarray(x[:3] / 3) for x in (PC, PR, RC, RR))
    kw = dict(chosen_seq_kl=jnp.asarray(KC[:3]), rejected_seq_kl=jnp.asarray(KR[:3]))
    for fn, extra in ((tdpo_loss, kw), (bco_loss, {"delta": 0.1}),
                      (irepo_loss, {"preference_rate": jnp.array([0.2, 0.5, 0.9])}),
                      (cream_loss, {"consistency": jnp.array([0.2, 0.5, 0.9])})):
        check_grads(lambda a, b: fn(a, b, args[2], args[3], **extra)[0].sum(), args[:2],
                    order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
        big = jnp.array([1e4, -1e4, 3e3])
        g = jax.grad(lambda a: fn(a, -a, jnp.zeros(3), jnp.zeros(3), **extra)[0].sum())(big)
        assert np.isfinite(np.asarray(g)).all(), fn.__name__
