"""TRL's DPO loss types: each equals its published formula (NumPy, float64) on random inputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from alignax.losses import DPO_LOSS_TYPES, dpo_loss

RNG = np.random.default_rng(0)
PC, PR, RC, RR = (RNG.normal(size=(4, 16)) * 4).astype(np.float32)
LENGTHS = dict(chosen_lengths=RNG.integers(1, 20, 16).astype(np.float32),
               rejected_lengths=RNG.integers(1, 20, 16).astype(np.float32))
BETA, EPS, TAU = 0.3, 0.1, 0.05


def logsig(x):
    return -np.logaddexp(0.0, -x)


def sig(x):
    return 1 / (1 + np.exp(-x))


def reference(name):
    """The formulas as published (TRL's DPOTrainer and the papers), in float64."""
    pc, pr, rc, rr = (np.asarray(a, np.float64) for a in (PC, PR, RC, RR))
    c, r = pc - rc, pr - rr
    h = c - r
    x = BETA * h
    smooth = lambda z: -(1 - EPS) * logsig(z) - EPS * logsig(-z)  # noqa: E731
    return {
        "sigmoid": -logsig(x),
        "hinge": np.maximum(0, 1 - x),
        "ipo": (h - 1 / (2 * BETA)) ** 2,
        "exo_pair": sig(x) * (logsig(x) - np.log1p(-EPS)) + sig(-x) * (logsig(-x) - np.log(EPS)),
        "nca_pair": -logsig(BETA * c) - 0.5 * logsig(-BETA * c) - 0.5 * logsig(-BETA * r),
        "robust": (-(1 - EPS) * logsig(x) + EPS * logsig(-x)) / (1 - 2 * EPS),
        "bco_pair": -logsig(BETA * c) - logsig(-BETA * r),
        "sppo_hard": (c - 0.5 / BETA) ** 2 + (r + 0.5 / BETA) ** 2,
        "aot": smooth(BETA * (np.sort(pc - pr) - np.sort(rc - rr))),
        "aot_pair": smooth(BETA * (np.sort(c) - np.sort(r))),
        "apo_zero": (1 - sig(BETA * c)) + sig(BETA * r),
        "apo_down": sig(BETA * c) + (1 - sig(x)),
        "discopop": ((1 - sig(x / TAU)) * -logsig(x) + sig(x / TAU) * np.exp(-x)),
        "sigmoid_norm": -logsig(BETA * (c / LENGTHS["chosen_lengths"]
                                        - r / LENGTHS["rejected_lengths"])),
    }[name]


def kwargs(name):
    kw = {"beta": BETA}
    if name in ("exo_pair", "robust", "aot", "aot_pair"):
        kw["label_smoothing"] = EPS
    if name == "discopop":
        kw["tau"] = TAU
    if name == "sigmoid_norm":
        kw.update(LENGTHS)
    return kw


@pytest.mark.parametrize("name", sorted(DPO_LOSS_TYPES))
def test_matches_the_published_formula(name):
    fn = jax.jit(lambda *a: DPO_LOSS_TYPES[name](*a, **kwargs(name)))
    loss, metrics = fn(PC, PR, RC, RR)
    np.testing.assert_allclose(loss, reference(name), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(metrics["reward_margins"], BETA * ((PC - RC) - (PR - RR)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(DPO_LOSS_TYPES))
def test_gradients_numerical_and_finite_at_extremes(name):
    small = tuple(jnp.asarray(a[:4] / 4) for a in (PC, PR, RC, RR))
    kw = kwargs(name)
    if name == "sigmoid_norm":
        kw = {**kw, **{k: v[:4] for k, v in LENGTHS.items()}}
    check_grads(lambda pc, pr: DPO_LOSS_TYPES[name](pc, pr, small[2], small[3], **kw)[0].sum(),
                small[:2], order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    big = jnp.array([1e4, -1e4, 3e3, -3e3])
    grads = jax.grad(lambda pc: DPO_LOSS_TYPES[name](pc, -pc, jnp.zeros(4), jnp.zeros(4),
                                                      **kw)[0].sum())(big)
    assert np.isfinite(np.asarray(grads)).all(), name


class TestGoldenValues(chex.TestCase):
    """Hand-computed values, each checked with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_golden_values(self):
        z = jnp.zeros(1)
        one, minus_one = jnp.ones(1), -jnp.ones(1)

        def loss(name, *args, **kw):  # hyperparameters are static: closed over, not traced
            return self.variant(lambda *a: DPO_LOSS_TYPES[name](*a, **kw))(*args)[0]

        # beta 0.5, h = 1: hinge = 1 - 0.5 (np.testing's default rtol 1e-7 kept)
        chex.assert_trees_all_close(loss("hinge", one, z, z, z, beta=0.5), np.array([0.5]),
                                    rtol=1e-7)
        # c = r = 0: nca = -log(1/2) (1 + 1/2 + 1/2) = 2 log 2
        chex.assert_trees_all_close(loss("nca_pair", z, z, z, z), np.array([2 * np.log(2)]),
                                    rtol=1e-6)
        # c = 1, r = -1, beta = 0.5: sppo_hard = (1 - 1)^2 + (-1 + 1)^2 = 0
        chex.assert_trees_all_close(loss("sppo_hard", one, minus_one, z, z, beta=0.5),
                                    np.array([0.0]), rtol=1e-7, atol=1e-7)
        # c = r = 0: apo_zero = 1/2 + 1/2; apo_down = 1/2 + 1/2
        chex.assert_trees_all_close(loss("apo_zero", z, z, z, z), np.array([1.0]), rtol=1e-7)
        chex.assert_trees_all_close(loss("apo_down", z, z, z, z), np.array([1.0]), rtol=1e-7)
        # x = 0: discopop = (1 - 1/2) log 2 + 1/2 e^0
        chex.assert_trees_all_close(loss("discopop", z, z, z, z), np.array([0.5 * np.log(2) + 0.5]),
                                    rtol=1e-6)


def test_relations_between_the_variants():
    base, _ = dpo_loss(PC, PR, RC, RR, beta=BETA)
    # robust with epsilon 0 and a single-pair AOT are plain sigmoid DPO
    np.testing.assert_allclose(DPO_LOSS_TYPES["robust"](PC, PR, RC, RR, beta=BETA)[0], base,
                               rtol=1e-6)
    for i in range(3):
        row = tuple(a[i:i + 1] for a in (PC, PR, RC, RR))
        np.testing.assert_allclose(DPO_LOSS_TYPES["aot"](*row, beta=BETA)[0],
                                   dpo_loss(*row, beta=BETA)[0], rtol=1e-6)
    # sigmoid_norm with unit lengths is sigmoid DPO
    ones = np.ones(16, np.float32)
    np.testing.assert_allclose(
        DPO_LOSS_TYPES["sigmoid_norm"](PC, PR, RC, RR, beta=BETA, chosen_lengths=ones,
                                       rejected_lengths=ones)[0], base, rtol=1e-6)
    # the robust loss is unbiased: its expectation under flips at rate eps is the clean loss
    x = BETA * ((PC - RC) - (PR - RR))
    flipped, _ = DPO_LOSS_TYPES["robust"](PR, PC, RR, RC, beta=BETA, label_smoothing=EPS)
    clean, _ = DPO_LOSS_TYPES["robust"](PC, PR, RC, RR, beta=BETA, label_smoothing=EPS)
    np.testing.assert_allclose((1 - EPS) * clean + EPS * flipped, -logsig(np.float64(x)),
                               rtol=1e-4, atol=1e-5)


def test_bad_hyperparameters():
    z = jnp.zeros(2)
    with pytest.raises(ValueError, match="exo_pair needs"):
        DPO_LOSS_TYPES["exo_pair"](z, z, z, z, label_smoothing=0.0)
    with pytest.raises(ValueError, match="robust needs"):
        DPO_LOSS_TYPES["robust"](z, z, z, z, label_smoothing=0.5)
