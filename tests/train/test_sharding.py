"""Mesh construction and logical-axis -> mesh sharding rules (on a 1-device mesh and fake sizes)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alignax.train import sharding as shd


class FakeMesh:
    """Only `.shape` is used by the rule functions."""

    def __init__(self, **shape):
        self.shape = shape


def test_make_mesh_fills_minus_one_and_rejects_bad_sizes():
    mesh = shd.make_mesh()
    assert mesh.axis_names == shd.MESH_AXES
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="needs"):
        shd.make_mesh(data=jax.device_count() + 1, fsdp=1, tensor=1)
    with pytest.raises(ValueError, match="at most one"):
        shd.make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        shd.mesh_from_config({"dta": 1})


def test_logical_to_spec_maps_names_and_replicates_indivisible_dims():
    mesh = FakeMesh(data=2, fsdp=2, tensor=4)
    fallbacks = []
    assert shd.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    assert shd.logical_to_spec(("vocab", "embed"), (32, 64), mesh) == P("tensor", "fsdp")
    assert shd.logical_to_spec(("norm",), (64,), mesh) == P(None)
    # 6 is not divisible by tensor=4: replicated, and reported
    assert shd.logical_to_spec(("embed", "heads"), (64, 6), mesh, fallbacks=fallbacks) == P(
        "fsdp", None)
    assert fallbacks == [(("embed", "heads"), (64, 6), 1)]
    # a mesh axis is used at most once per array
    assert shd.logical_to_spec(("mlp", "heads"), (8, 8), mesh) == P("tensor", None)
    # axes of size 1 are dropped
    assert shd.logical_to_spec(("embed",), (3,), FakeMesh(data=8, fsdp=1, tensor=1)) == P(None)


def test_opt_state_leaves_inherit_param_shardings():
    mesh = shd.make_mesh()
    import optax

    params = {"w": np.zeros((4, 8), np.float32), "b": np.zeros((8,), np.float32)}
    axes = {"w": ("embed", "mlp"), "b": ("norm",)}
    abstract = jax.eval_shape(lambda: params)
    sh = shd.param_shardings(abstract, axes, mesh)
    opt = jax.eval_shape(optax.adamw(1e-3).init, abstract)
    opt_sh = shd.tree_shardings_like(opt, abstract, sh, mesh)
    mu = opt_sh[0].mu
    assert mu["w"] is sh["w"] and mu["b"] is sh["b"]
    assert opt_sh[0].count.spec == P()


def test_global_batch_single_process_roundtrip():
    mesh = shd.make_mesh()
    batch = {"x": np.arange(8 * 3).reshape(8, 3)}
    out = shd.global_batch(batch, shd.batch_sharding(mesh))
    np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])
