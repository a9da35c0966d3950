"""Runs one online recipe (with evolving state) to completion in a workdir, resuming from it:
`python online_resume_script.py {grpo|ppo|dpo} WORKDIR` (test_online_resume.py kills it)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from alignax.algorithms import online_dpo, policy_gradient, ppo
from alignax.models.heads import make_token_reward_model
from alignax.models.transformer import TransformerConfig, make_lm

CFG = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16)
MODEL = make_lm(CFG)
PARAMS = MODEL.init(jax.random.key(0))
PROMPTS = np.array([[4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]], np.int32)
PMASK = np.ones_like(PROMPTS, bool)
ITERATIONS = 8
COMMON = dict(iterations=ITERATIONS, prompts_per_iteration=2, num_samples=4, max_new_tokens=4,
              checkpoint_every=2, progress=False,
              optimizer=dict(name="adamw", learning_rate=3e-2))


def _reward(rollout):
    return (rollout.responses == 3).astype(jnp.float32).mean(-1)


def main(name: str, workdir: str) -> None:
    if name == "grpo":  # adaptive KL in the reward: the coefficient is evolving state
        policy_gradient.train(
            policy_gradient.default_config(**COMMON, kl_in="reward", kl_coef=0.1,
                                           kl_target=0.01, kl_horizon=50),
            workdir, model=MODEL, init_params=PARAMS, ref_params=PARAMS, prompt_ids=PROMPTS,
            prompt_mask=PMASK, reward_fn=_reward)
    elif name == "ppo":
        vm = make_token_reward_model(CFG)
        ppo.train(ppo.default_config(**COMMON, kl_target=0.01, kl_horizon=50), workdir,
                  model=MODEL, value_model=vm, init_params=PARAMS,
                  init_value_params=vm.init(jax.random.key(1)), ref_params=PARAMS,
                  prompt_ids=PROMPTS, prompt_mask=PMASK, reward_fn=_reward)
    elif name == "dpo":  # iterative rounds: the reference is refreshed every 3 iterations
        online_dpo.train(online_dpo.default_config(**COMMON, ref_update_every=3), workdir,
                         model=MODEL, init_params=PARAMS, ref_params=PARAMS,
                         prompt_ids=PROMPTS, prompt_mask=PMASK, reward_fn=_reward)
    else:
        raise SystemExit(f"unknown recipe {name!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
