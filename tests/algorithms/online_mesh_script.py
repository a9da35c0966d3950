"""Runs each online recipe on one device and on a 2x2 mesh (data x tensor) of 4 CPU devices and
prints the per-iteration metrics as JSON (run by test_online_mesh.py in a subprocess, because
the device count is fixed when jax starts)."""

import json
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import online_dpo, policy_gradient, ppo, rejection
from alignax.models.heads import make_token_reward_model
from alignax.models.transformer import TransformerConfig, make_lm

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
PROMPTS = np.array([[4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]], np.int32)
PMASK = np.ones_like(PROMPTS, bool)
COMMON = dict(iterations=3, prompts_per_iteration=4, num_samples=4, max_new_tokens=4,
              minibatches=2, optimizer=dict(name="adamw", learning_rate=3e-3))


def _reward(rollout):
    return (rollout.responses == 3).astype(jnp.float32).mean(-1)


def _run(name, mesh):
    cfg = dict(COMMON, mesh=mesh)
    with tempfile.TemporaryDirectory() as wd:
        if name == "grpo":
            out = policy_gradient.train(policy_gradient.default_config(**cfg), wd, model=MODEL,
                                        init_params=PARAMS, ref_params=PARAMS,
                                        prompt_ids=PROMPTS, prompt_mask=PMASK,
                                        reward_fn=_reward)
        elif name == "ppo":
            vm = make_token_reward_model(CFG)
            out = ppo.train(ppo.default_config(**cfg), wd, model=MODEL, value_model=vm,
                            init_params=PARAMS, init_value_params=vm.init(jax.random.key(1)),
                            ref_params=PARAMS, prompt_ids=PROMPTS, prompt_mask=PMASK,
                            reward_fn=_reward)
        elif name == "raft":
            out = rejection.train(rejection.default_config(**dict(cfg, minibatches=1)), wd,
                                  model=MODEL, init_params=PARAMS, prompt_ids=PROMPTS,
                                  prompt_mask=PMASK, reward_fn=_reward)
        else:
            out = online_dpo.train(online_dpo.default_config(**dict(cfg, minibatches=1)), wd,
                                   model=MODEL, init_params=PARAMS, ref_params=PARAMS,
                                   prompt_ids=PROMPTS, prompt_mask=PMASK, reward_fn=_reward)
    spec = {} if mesh is None else {
        "sharding": str(jax.tree.leaves(out["params"])[0].sharding)}
    return {"history": out["history"], **spec}


if __name__ == "__main__":
    results = {}
    for name in sys.argv[1:]:
        results[name] = {"one": _run(name, None),
                         "mesh": _run(name, dict(data=2, fsdp=1, tensor=2))}
    print("RESULTS " + json.dumps(results))
