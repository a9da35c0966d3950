"""A tiny GRPO run on a 4-device mesh (data=2 x tensor=2), in one process with 4 CPU devices or in
each of 2 processes with 2 devices (`--coordinator`): test_distributed_online.py runs both and
compares. Process 0 writes {"history", "reward_rows"} as JSON to `--out`; every process records
how many rollout rows its host reward function scored."""

import argparse
import json
import os
import tempfile

import jax
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--coordinator", default=None)
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--recipe", default="grpo",
                    choices=("grpo", "grpo2", "grpo_global", "ppo", "raft", "dpo"))
    args = ap.parse_args()
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)

    from alignax.algorithms import online, online_dpo, policy_gradient, ppo, rejection
    from alignax.models.heads import make_token_reward_model
    from alignax.models.transformer import TransformerConfig, make_lm

    cfg = TransformerConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                            max_len=16)
    model = make_lm(cfg)
    params = model.init(jax.random.key(0))
    prompts = np.array([[4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15],
                        [5, 7, 9], [6, 8, 10], [11, 13, 15], [4, 9, 14]], np.int32)
    targets = np.arange(prompts.shape[0]) % 5 + 1  # the token each prompt's reward asks for
    seen = []

    def reward(rollout):  # host numpy: gets this process's rows
        responses, index = np.asarray(rollout.responses), np.asarray(rollout.prompt_index)
        seen.append(int(responses.shape[0]))
        return (responses == targets[index][:, None]).mean(-1).astype(np.float32)

    common = dict(
        iterations=args.iterations, prompts_per_iteration=4, num_samples=4, max_new_tokens=4,
        minibatches=2, optimizer=dict(name="adamw", learning_rate=3e-3), checkpoint_every=2,
        progress=False, mesh=dict(data=2, fsdp=1, tensor=2))
    workdir = args.workdir or tempfile.mkdtemp()
    data = dict(prompt_ids=prompts, prompt_mask=np.ones_like(prompts, bool), reward_fn=reward)
    if args.recipe == "grpo":
        out = policy_gradient.train(policy_gradient.default_config(**common), workdir,
                                    model=model, init_params=params, ref_params=params, **data)
    elif args.recipe == "grpo_global":  # the same reward, jitted on the global rollout
        table = jax.numpy.asarray(targets)
        data["reward_fn"] = online.global_reward(jax.jit(lambda r: (
            r.responses == table[r.prompt_index][:, None]).mean(-1)))
        out = policy_gradient.train(policy_gradient.default_config(**common), workdir,
                                    model=model, init_params=params, ref_params=params, **data)
    elif args.recipe == "grpo2":  # two objectives: the reward returns [2, N_local]
        data["reward_fn"] = lambda r: np.stack([reward(r), (np.asarray(r.responses) < 8).mean(
            -1).astype(np.float32)])
        out = policy_gradient.train(
            policy_gradient.default_config(**common, objective_weights=[0.7, 0.3]), workdir,
            model=model, init_params=params, ref_params=params, **data)
    elif args.recipe == "ppo":
        vm = make_token_reward_model(cfg)
        out = ppo.train(ppo.default_config(**common), workdir, model=model, value_model=vm,
                        init_params=params, init_value_params=vm.init(jax.random.key(1)),
                        ref_params=params, **data)
    elif args.recipe == "raft":
        out = rejection.train(rejection.default_config(**dict(common, minibatches=1)), workdir,
                              model=model, init_params=params, **data)
    else:
        out = online_dpo.train(online_dpo.default_config(**dict(common, minibatches=1)),
                               workdir, model=model, init_params=params, ref_params=params,
                               **data)
    result = {"history": out["history"], "reward_rows": seen,
              "processes": jax.process_count()}
    path = args.out if jax.process_index() == 0 else f"{args.out}.{jax.process_index()}"
    with open(path, "w") as f:
        json.dump(result, f)
    os.sync()


if __name__ == "__main__":
    main()
