"""experiments/unified_reward_image.py: `:real` refuses with its one-line reason; the toy's golds
and its two-headed task-flag RM wrapper by hand."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO

PATH = os.path.join(REPO, "experiments", "unified_reward_image.py")


@pytest.fixture(scope="module")
def module():
    return experiment.load_module(PATH)


def test_real_refuses_with_one_line_reason(module, tmp_path, capsys):
    with pytest.raises(ValueError, match="no :real config"):
        module.get_config("real")
    code = cli.main(["run", f"{PATH}:real", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    assert "no :real config" in err and len(module.NO_REAL.splitlines()) == 1
    assert not os.path.exists(os.path.join(tmp_path, "summary.json"))


def test_golds_by_hand(module):
    mu = np.zeros((10, 64), np.float32)
    mu[3] = 1.0  # class 3 is the all-ones image, every other class the all-zeros image
    x = np.full((1, 8, 8, 1), 1.0, np.float32)
    temp = 64.0
    g_u, g_g, q = module.golds(x, np.array([3]), mu, temp, 2.0)
    # logits: class 3: 0, others: -64 / 64 = -1 -> log p(3) = -log(1 + 9 e^-1)
    want = -np.log1p(9 * np.exp(-1.0))
    np.testing.assert_allclose(g_u, [want], rtol=1e-6)
    np.testing.assert_allclose(q, [1.0])
    np.testing.assert_allclose(g_g, [want + 2.0], rtol=1e-6)
    # the jnp path agrees
    g2 = module.golds(jnp.asarray(x), jnp.array([3]), jnp.asarray(mu), temp, 2.0, xp=jnp)
    np.testing.assert_allclose(np.asarray(g2[1]), g_g, rtol=1e-5)


def test_rm_wrapper_two_heads_share_the_trunk_and_read_the_flags(module):
    cfg = module.image_rm.ImageRMConfig(data_shape=(8, 8, 13), channels=(4, 8), hidden=8)
    init, apply = module.unified_rm(cfg)
    params = init(jax.random.key(0))
    assert params["fc2"]["kernel"].shape == (8, 2)
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1), minval=-1, maxval=1)
    cls = jnp.array([0, 4, 9])
    u = apply(params, x, cls, 0, 0)
    s = apply(params, x, cls, 0, 1)
    assert u.shape == s.shape == (3,)
    assert not np.allclose(u, s)  # two columns of one last layer
    # the task flag and the class are inputs: changing them changes the score
    assert not np.allclose(apply(params, x, cls, 1, 0), u)
    assert not np.allclose(apply(params, x, jnp.array([1, 5, 8]), 0, 0), u)
    # head h equals the CNN with the h-th column as its one output
    cnn = module.image_rm.make_image_rm(cfg)
    one = {**params, "fc2": {"kernel": params["fc2"]["kernel"][:, 1:],
                             "bias": params["fc2"]["bias"][1:]}}
    # input planes: the image, ten class-gated copies (the prompt's plane holds the image, the
    # others zeros), two constant task-flag planes
    inp = np.zeros((3, 8, 8, 13), np.float32)
    inp[..., 0] = x[..., 0]
    for i, c in enumerate([0, 4, 9]):
        inp[i, :, :, 1 + c] = x[i, :, :, 0]
    inp[..., 11] = 1.0  # task 0
    inp = jnp.asarray(inp)
    np.testing.assert_allclose(cnn.apply(one, inp), s, rtol=1e-5, atol=1e-6)
