"""Under `jax.set_mesh`, the decoder pins its activations' rows to the batch axes
(`rows_on_batch_axes`): same loss and gradients, less temp memory per device. Run in a
subprocess with 4 simulated CPU devices (the device count is fixed when jax starts)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.runs import REPO, env

SCRIPT = r'''
import contextlib
import json
import jax, jax.numpy as jnp, numpy as np
from alignax.models.transformer import TransformerConfig, make_lm
from alignax.train.sharding import batch_sharding, make_mesh, param_shardings

cfg = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                        scan_layers=True)
model = make_lm(cfg)
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype),
                      jax.eval_shape(model.init, jax.random.key(0)))
ids = jnp.asarray(rng.integers(2, 37, size=(8, 16)))
mask = jnp.ones((8, 16), bool)
mesh = make_mesh(1, 4, 1)  # fsdp = 4: params sharded on their embed dim, rows over 4 devices
p_sh = param_shardings(jax.eval_shape(lambda: params), model.logical_axes(params), mesh)
b_sh = batch_sharding(mesh)
w = jnp.cos(jnp.arange(37.0))
step = jax.jit(jax.value_and_grad(lambda p, i, m: jnp.mean(model.apply(p, i, m) * w)),
               in_shardings=(p_sh, b_sh, b_sh))
args = (jax.device_put(params, p_sh), jax.device_put(ids, b_sh), jax.device_put(mask, b_sh))
out = {}
for name in ("plain", "mesh"):
    with jax.set_mesh(mesh) if name == "mesh" else contextlib.nullcontext():
        lowered = step.lower(*args)
    compiled = lowered.compile()
    v, g = compiled(*args)
    out[name] = dict(v=float(v), g=[np.asarray(x).ravel().tolist() for x in jax.tree.leaves(g)],
                     constraints=lowered.as_text().count("sharding_constraint"),
                     temp=compiled.memory_analysis().temp_size_in_bytes)

# make_train_step with a mesh traces under it: the constraints are in its program
import optax
from alignax.train.sharding import replicated, tree_shardings_like
from alignax.train.state import TrainState
from alignax.train.step import make_train_step
tx = optax.sgd(0.1)
state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key(0), ())
s_sh = TrainState(p_sh, tree_shardings_like(jax.eval_shape(tx.init, params), params, p_sh, mesh),
                  replicated(mesh), replicated(mesh), ())
loss = lambda p, b, r: (jnp.mean(model.apply(p, b["ids"], b["mask"]) * w), {})
train_step = make_train_step(loss, tx, mesh=mesh, state_sharding=s_sh, batch_sharding=b_sh,
                             donate=False)
lowered = train_step.lower(jax.device_put(state, s_sh),
                           {"ids": args[1], "mask": args[2]})
out["train_step"] = dict(constraints=lowered.as_text().count("sharding_constraint"),
                         temp=lowered.compile().memory_analysis().temp_size_in_bytes)
print(json.dumps(out))
'''


@pytest.mark.slow
def test_rows_pinned_to_batch_axes_under_a_mesh_keep_the_math_and_shrink_temps():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env(4),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    plain, mesh = out["plain"], out["mesh"]
    assert plain["constraints"] == 0  # no mesh set: the program is unchanged
    assert mesh["constraints"] > 0
    np.testing.assert_allclose(mesh["v"], plain["v"], rtol=1e-5, atol=1e-5)
    for a, b in zip(mesh["g"], plain["g"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mesh["temp"] < plain["temp"], (mesh["temp"], plain["temp"])
    step = out["train_step"]  # the trainer's step gets the same constraints
    assert step["constraints"] >= mesh["constraints"]
    assert step["temp"] < plain["temp"], (step["temp"], plain["temp"])
