"""alignax.losses.daa: the unified DAA objective g(beta (h_w - h_l)) of Rafailov et al. 2024."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.losses import direct
from alignax.losses.daa import DAA_KINDS, daa_link, daa_loss

PC = jnp.array([-1.0, -2.5, -0.3])
PR = jnp.array([-2.0, -1.0, -0.4])
RC = jnp.array([-1.5, -2.0, -0.5])
RR = jnp.array([-1.5, -1.5, -0.2])


def test_links_match_their_formulas():
    u = jnp.array([-2.0, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(daa_link("dpo", u), np.log1p(np.exp(-np.asarray(u))), rtol=1e-6)
    np.testing.assert_allclose(daa_link("ipo", u), (np.asarray(u) - 1.0) ** 2)
    np.testing.assert_allclose(daa_link("slic", u), np.maximum(0.0, 1.0 - np.asarray(u)))
    with pytest.raises(ValueError, match="unknown DAA loss"):
        daa_link("kto", u)


def test_loss_is_the_link_of_the_scaled_margin_and_matches_direct_losses():
    beta = 0.3
    h = (PC - RC) - (PR - RR)
    for kind in DAA_KINDS:
        losses, metrics = daa_loss(PC, PR, RC, RR, kind=kind, beta=beta)
        np.testing.assert_allclose(losses, daa_link(kind, beta * h), rtol=1e-6)
        np.testing.assert_allclose(metrics["reward_margins"], beta * h, rtol=1e-6)
    # DPO and SLiC are alignax.losses.direct's dpo_loss and hinge_loss exactly
    np.testing.assert_allclose(daa_loss(PC, PR, RC, RR, kind="dpo", beta=beta)[0],
                               direct.dpo_loss(PC, PR, RC, RR, beta=beta)[0], rtol=1e-6)
    np.testing.assert_allclose(daa_loss(PC, PR, RC, RR, kind="slic", beta=beta)[0],
                               direct.hinge_loss(PC, PR, RC, RR, beta=beta)[0], rtol=1e-6)
    # IPO here is beta^2 (h - 1/beta)^2; direct.ipo_loss (Azar et al.) targets 1/(2 beta)
    np.testing.assert_allclose(daa_loss(PC, PR, RC, RR, kind="ipo", beta=beta)[0],
                               beta ** 2 * direct.ipo_loss(PC, PR, RC, RR, beta=beta / 2)[0],
                               rtol=1e-5)


def test_gradients_raise_the_chosen_and_lower_the_rejected_log_prob():
    for kind in DAA_KINDS:
        g = jax.grad(lambda pc, pr: daa_loss(pc, pr, RC, RR, kind=kind, beta=0.1)[0].sum(),
                     argnums=(0, 1))(PC, PR)
        assert np.all(np.asarray(g[0]) <= 0) and np.all(np.asarray(g[1]) >= 0), kind
    # SLiC stops at margin 1, IPO pulls back beyond it, DPO never stops
    big = jnp.array([30.0])
    zero = jnp.zeros(1)
    grads = {k: float(jax.grad(lambda pc: daa_loss(pc, zero, zero, zero, kind=k,
                                                   beta=0.1)[0].sum())(big)[0])
             for k in DAA_KINDS}
    assert grads["slic"] == 0.0 and grads["ipo"] > 0 and grads["dpo"] < 0
