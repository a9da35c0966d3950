"""Device mesh, logical-axis rules and the shardings of params, optimizer state and batches.

One style everywhere: `jax.jit` with explicit `in_shardings`/`out_shardings` over a mesh whose axes
are all `AxisType.Auto` (the classic pjit style). Mesh axes are ("data", "fsdp", "tensor"):

- batches are split over data x fsdp (rows), replicated over tensor;
- parameters carry logical names (e.g. ("embed", "mlp")) that `DEFAULT_RULES` maps to mesh axes:
  "embed" -> fsdp (ZeRO-3 style parameter sharding), "heads"/"mlp"/"vocab" -> tensor,
  "layers" (the leading axis of scanned blocks) -> replicated.

A dimension whose size is not divisible by its mesh axes is replicated instead (so tiny test models
run on any mesh); `param_shardings` reports such fallbacks through `fallbacks`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# the logical-axis rules live in a bottom-layer module so that models (HF import onto a mesh)
# can use them; they are this module's API
from alignax._src.logical import (  # noqa: F401
    BATCH_AXES,
    DEFAULT_RULES,
    MESH_AXES,
    _axis_size,
    logical_to_spec,
    param_shardings,
)

def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, devices=None) -> Mesh:
    """Mesh with axes (data, fsdp, tensor) over all (global) devices; one size may be -1.

    Raises:
      ValueError: if the sizes do not multiply to the device count.
    """
    devices = list(jax.devices()) if devices is None else list(devices)
    sizes = [data, fsdp, tensor]
    n = len(devices)
    if sizes.count(-1) > 1:
        raise ValueError(
            f"at most one mesh size may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if n % known:
            raise ValueError(f"{n} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) != n:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {n}"
        )
    device_array = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def mesh_from_config(mesh_config: Mapping[str, int] | None) -> Mesh:
    """`make_mesh` from a config mapping with keys among data/fsdp/tensor."""
    mesh_config = dict(mesh_config or {})
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; valid: {MESH_AXES}")
    return make_mesh(**mesh_config)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over data x fsdp, everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)


def tree_shardings_like(abstract_tree: Any, params_abstract: Any, params_sharding: Any, mesh: Mesh):
    """Shardings for a tree (e.g. optimizer state) whose leaves mirror params.

    A leaf whose key path ends with a parameter's key path and has the same shape gets that
    parameter's sharding (Adam's mu and nu, for instance); every other leaf is replicated.
    """
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_flatten_with_path(params_abstract)[0],
        jax.tree_util.tree_leaves(params_sharding),
    ):
        by_path[_path_keys(path)] = (tuple(leaf.shape), sharding)
    max_len = max((len(k) for k in by_path), default=0)

    def pick(path, leaf):
        keys = _path_keys(path)
        for n in range(min(len(keys), max_len), 0, -1):
            hit = by_path.get(keys[-n:])
            if hit is not None and hit[0] == tuple(getattr(leaf, "shape", ())):
                return hit[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
    """Global jax.Arrays from this process's rows (works for 1 or many processes)."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


class Placement:
    """Where an online recipe's arrays live: one device (`mesh=None`) or sharded over a mesh.

    With a mesh (axes data x fsdp x tensor, `make_mesh`), the trained params and their
    optimizer state are sharded by their logical axis names, frozen params (the reference)
    likewise, and every row-major array (prompts, rollouts, training minibatches) is split by
    rows over data x fsdp. The jitted sampler and reference forward follow their inputs'
    shardings; the update step is compiled with explicit shardings (`make_train_step`).

    Several processes (`jax.process_count() > 1`, `jax.distributed.initialize`): the mesh
    spans the devices of every process and each row-sharded array is global, each process
    holding the rows of its devices' shards. Host code meets only this process's rows
    (`local_rows` / `from_local_rows`: a reward function in numpy scores the rollouts where
    they were sampled) or whole small arrays gathered on purpose (`to_host`); everything
    jitted (sampler, reference, advantages, update) runs on the global arrays, so the result
    equals one process's run on the same mesh. A mesh is required then (ValueError): without
    one every process would run a separate copy of the recipe into the same workdir.
    """

    def __init__(self, mesh: Mesh | None = None):
        if mesh is None and jax.process_count() > 1:
            raise ValueError(
                f"an online recipe on {jax.process_count()} processes needs a mesh over all "
                "their devices (config mesh, e.g. {'data': -1})")
        self.mesh = mesh

    @property
    def multiprocess(self) -> bool:
        """Whether the mesh spans several processes (host arrays then hold local rows)."""
        return self.mesh is not None and jax.process_count() > 1

    @classmethod
    def from_config(cls, mesh_config: Mapping[str, int] | None) -> "Placement":
        """No mesh for None; otherwise `mesh_from_config` (keys among data/fsdp/tensor)."""
        return cls(None if mesh_config is None else mesh_from_config(mesh_config))

    @property
    def row_shards(self) -> int:
        """How many ways rows are split (data x fsdp; 1 without a mesh)."""
        if self.mesh is None:
            return 1
        return int(self.mesh.shape["data"]) * int(self.mesh.shape["fsdp"])

    def check_rows(self, rows: int, what: str) -> None:
        if rows % self.row_shards:
            raise ValueError(f"{what} = {rows} rows do not split over the mesh's "
                             f"data x fsdp = {self.row_shards} shards")

    def put_rows(self, tree):
        """Row-sharded copies of a tree of [rows, ...] arrays (unchanged without a mesh).

        On several processes a host leaf (numpy, or a jax.Array on this process's devices) is
        the whole array, the same on every process (e.g. the iteration's prompts, drawn from a
        shared seed): each process places only the rows of its own devices; a global jax.Array
        leaf is resharded by a jitted identity.
        """
        if self.mesh is None:
            return tree
        sharding = batch_sharding(self.mesh)
        if not self.multiprocess:
            return jax.device_put(tree, sharding)

        def put(x):
            if isinstance(x, jax.Array) and not x.is_fully_addressable:  # global
                return _with_sharding(x, sharding)
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree.map(put, tree)

    def row_range(self, rows: int) -> tuple[int, int]:
        """[start, stop) of the rows of a row-sharded [rows, ...] array this process holds:
        (0, rows) in one process. Raises ValueError if its shards are not one contiguous
        block (a mesh whose batch axes interleave the processes' devices)."""
        if not self.multiprocess:
            return 0, rows
        index_map = batch_sharding(self.mesh).addressable_devices_indices_map((rows,))
        ranges = sorted({idx[0].indices(rows)[:2] for idx in index_map.values()})
        for (_, stop), (start, _) in zip(ranges, ranges[1:]):
            if start != stop:
                raise ValueError(
                    f"process {jax.process_index()} holds the rows {ranges} of a batch, not one "
                    "block: order the mesh's devices by process (make_mesh does)")
        return ranges[0][0], ranges[-1][1]

    def local_rows(self, tree):
        """This process's rows (`row_range`) of a tree of [rows, ...] arrays, as numpy arrays;
        the whole arrays (np.asarray) in one process. A global array that XLA laid out
        otherwise is first resharded by rows (a collective: every process calls this on the
        same tree); a host leaf is the whole array, the same on every process."""
        if not self.multiprocess:
            return jax.tree.map(np.asarray, tree)
        sharding = batch_sharding(self.mesh)

        def local(x):
            start, stop = self.row_range(x.shape[0])
            if not isinstance(x, jax.Array) or x.is_fully_addressable:
                return np.asarray(x)[start:stop]
            x = _with_sharding(x, sharding)
            shards = {s.index[0].indices(x.shape[0])[0]: s.data for s in x.addressable_shards}
            return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)], axis=0)

        return jax.tree.map(local, tree)

    def from_local_rows(self, tree, rows: int):
        """The global row-sharded arrays whose rows `row_range(rows)` are this process's
        numpy leaves [stop - start, ...] (the inverse of `local_rows`); in one process the
        leaves are the whole arrays, placed like `put_rows`."""
        if not self.multiprocess:
            return self.put_rows(jax.tree.map(np.asarray, tree))
        sharding = batch_sharding(self.mesh)
        start, stop = self.row_range(rows)

        def glob(x):
            x = np.asarray(x)
            if x.shape[0] != stop - start:
                raise ValueError(f"process {jax.process_index()} must give rows [{start}, "
                                 f"{stop}) of {rows}, got {x.shape[0]} rows")
            return jax.make_array_from_process_local_data(sharding, x, (rows, *x.shape[1:]))

        return jax.tree.map(glob, tree)

    def to_host(self, tree):
        """The whole arrays as numpy on every process (an all-gather across processes; for
        small arrays: rewards, scores, metrics)."""
        if not self.multiprocess:
            return jax.tree.map(np.asarray, tree)
        def host(x):
            if not isinstance(x, jax.Array) or x.is_fully_addressable:
                return np.asarray(x)
            if not x.is_fully_replicated:
                x = _replicate(x)
            return np.asarray(x.addressable_shards[0].data)

        return jax.tree.map(host, tree)

    def param_shardings(self, params, logical_axes):
        return param_shardings(jax.eval_shape(lambda: params), logical_axes, self.mesh)

    def put_params(self, params, logical_axes):
        """Frozen params placed by their logical axes (unchanged without a mesh)."""
        if self.mesh is None:
            return params
        return jax.device_put(params, self.param_shardings(params, logical_axes))

    def state_shardings(self, abstract_state, logical_axes):
        """Shardings of a TrainState-like tree (params by logical axes, optimizer state like
        its params, scalars replicated); None without a mesh."""
        if self.mesh is None:
            return None
        p_sh = param_shardings(abstract_state.params, logical_axes, self.mesh)
        repl = replicated(self.mesh)
        return abstract_state._replace(
            params=p_sh,
            opt_state=tree_shardings_like(abstract_state.opt_state, abstract_state.params, p_sh,
                                          self.mesh),
            step=repl, rng=repl)



def _replicate(x: jax.Array) -> jax.Array:
    """`x` fully replicated over its mesh (a collective: every process calls it)."""
    return _reshard(x, NamedSharding(x.sharding.mesh, PartitionSpec()))


@functools.lru_cache(maxsize=64)
def _identity_to(sharding: NamedSharding):
    return jax.jit(lambda a: a, out_shardings=sharding)


def _with_sharding(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    """`x` itself if it is laid out as `sharding`, else resharded (`_reshard`)."""
    return x if x.sharding.is_equivalent_to(sharding, x.ndim) else _reshard(x, sharding)


def _reshard(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    """`x` with `sharding` (a jitted identity, compiled once per sharding and shape: works
    across processes, where device_put of a global array may not)."""
    return _identity_to(sharding)(x)
