"""The alignax side of the benchmarks: the library's own step builders on the spec's workloads.

Each function builds the workload exactly as a user would (`make_train_step` with the recipe's
loss function, `alignax.sampling.sample`), runs one step to compile, `warmup` more, then times
`steps` steps, each ended by `block_until_ready`. Inputs are the arrays of `benchmarks.spec`.

    python -m benchmarks.ours --workload w1 --size tiny --steps 3 --warmup 1 --out r.json
    python -m benchmarks.ours --workload w2 --size 1b --dtype bfloat16    # on a GPU
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import spec

# The attention implementation of the model (alignax.models.attention), "auto" if unset: set by
# `benchmarks/gpu.py --attention` for its subprocesses.
ATTENTION_ENV = "ALIGNAX_BENCH_ATTENTION"


def _config(size: str, max_len: int, dtype: str = "float32"):
    from alignax.models.transformer import TransformerConfig

    m = spec.SIZES[size]
    # optional keys of a size (GQA, tying, RoPE base); absent ones keep the config's defaults
    extra = {k: m[k] for k in ("n_kv_heads", "tie_embeddings", "rope_theta") if k in m}
    attention = os.environ.get(ATTENTION_ENV, "auto")
    if attention != "auto":  # benchmarks/gpu.py --attention
        if "attention" not in {f.name for f in dataclasses.fields(TransformerConfig)}:
            raise ValueError(f"{ATTENTION_ENV}={attention}: this TransformerConfig has no "
                             "attention field")
        extra["attention"] = attention
    return TransformerConfig(vocab_size=m["vocab_size"], d_model=m["d_model"],
                             n_layers=m["n_layers"], n_heads=m["n_heads"], d_ff=m["d_ff"],
                             max_len=max_len, dtype=dtype, **extra)


def _result(name, size, first_s, times, notes, dtype="float32"):
    return {"impl": "alignax", "workload": name, "size": size, "compile_s": first_s,
            "step_times": times, "tokens_per_step": spec.tokens_per_step(name.split("_")[0], size),
            "flops_per_step": spec.step_flops(name.split("_")[0], size),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "devices": str(jax.devices()), "dtype": dtype,
            "notes": f"{notes}; {dtype} compute, float32 parameters"}


def _time_steps(run_one, num_batches, *, steps, warmup):
    """run_one(i) runs step i and returns something to block on. Every workload takes
    `timer=` in place of this function (benchmarks/profile.py passes one that keeps run_one)."""
    t0 = time.perf_counter()
    jax.block_until_ready(run_one(0))
    first = time.perf_counter() - t0
    for i in range(1, 1 + warmup):
        jax.block_until_ready(run_one(i % num_batches))
    times = []
    for i in range(1 + warmup, 1 + warmup + steps):
        t0 = time.perf_counter()
        jax.block_until_ready(run_one(i % num_batches))
        times.append(time.perf_counter() - t0)
    return first, times


def _pair_batches(name, size, num_batches):
    w = spec.workload(name, size)
    data = spec.inputs(name, size, num_batches=num_batches)
    ones = np.ones((w.batch, w.seq_len), np.int32)
    response = ones.copy()
    response[:, :w.prompt_len] = 0
    return [{"chosen_ids": data["chosen_ids"][i], "rejected_ids": data["rejected_ids"][i],
             "chosen_mask": ones, "rejected_mask": ones, "chosen_response_mask": response,
             "rejected_response_mask": response} for i in range(num_batches)]


def reward_step(size: str, *, steps: int, warmup: int, seed: int = 0, timer=None,
                dtype: str = "float32") -> dict:
    """W1: one BT reward-model step (forward of 2B sequences, backward, AdamW)."""
    from alignax.algorithms.reward_model import make_reward_loss
    from alignax.models.transformer import make_reward_model
    from alignax.train.state import TrainState
    from alignax.train.step import make_train_step

    w = spec.workload("w1", size)
    model = make_reward_model(_config(size, w.seq_len, dtype))
    tx = optax.adamw(1e-5)
    state = TrainState.create(model.init(jax.random.key(seed)), tx, jax.random.key(seed))
    step = make_train_step(make_reward_loss(model.apply), tx)
    batches = [jax.device_put(b) for b in _pair_batches("w1", size, 4)]
    holder = [state]

    def run_one(i):
        holder[0], metrics = step(holder[0], batches[i])
        return metrics["loss"]

    first, times = (timer or _time_steps)(run_one, len(batches), steps=steps, warmup=warmup)
    return _result("w1", size, first, times, "make_train_step(make_reward_loss), optax.adamw, "
                   "donated state", dtype)


def dpo_step(size: str, *, steps: int, warmup: int, precompute_ref: bool = False,
             seed: int = 0, timer=None, dtype: str = "float32") -> dict:
    """W2: one sigmoid-DPO step; the frozen reference forward is in the step unless
    `precompute_ref` (then its log-probs are computed once, outside the timed steps)."""
    from alignax.algorithms.direct import make_direct_loss, pair_logps
    from alignax.losses import dpo_loss
    from alignax.models.transformer import make_lm
    from alignax.train.state import TrainState
    from alignax.train.step import make_train_step

    w = spec.workload("w2", size)
    model = make_lm(_config(size, w.seq_len, dtype))
    tx = optax.adamw(1e-5)
    params = model.init(jax.random.key(seed))
    ref = jax.tree.map(jnp.copy, params)
    state = TrainState.create(params, tx, jax.random.key(seed))
    batches = [jax.device_put(b) for b in _pair_batches("w2", size, 4)]
    if precompute_ref:
        ref_logps = jax.jit(lambda p, b: pair_logps(model.apply, p, b))
        for b in batches:
            b["ref_chosen_logps"], b["ref_rejected_logps"] = ref_logps(ref, b)

        def loss_fn(p, batch, rng):
            pc, pr = pair_logps(model.apply, p, batch)
            losses, stats = dpo_loss(pc, pr, batch["ref_chosen_logps"],
                                     batch["ref_rejected_logps"], beta=0.1)
            return losses.mean(), {k: v.mean() for k, v in stats.items()}

        step = make_train_step(loss_fn, tx)
        frozen = ()
    else:
        step = make_train_step(make_direct_loss(model.apply, "dpo", {"beta": 0.1}), tx)
        frozen = (ref,)
    holder = [state]

    def run_one(i):
        holder[0], metrics = step(holder[0], batches[i], *frozen)
        return metrics["loss"]

    first, times = (timer or _time_steps)(run_one, len(batches), steps=steps, warmup=warmup)
    name = "w2_pre" if precompute_ref else "w2"
    notes = ("reference log-probs precomputed outside the timed steps" if precompute_ref else
             "reference forward (stop_gradient) inside the jitted step")
    out = _result(name, size, first, times, notes, dtype)
    if precompute_ref:  # no reference forward in the step: 3 forwards instead of 4
        out["flops_per_step"] *= 3 / 4
    return out


def sampling(size: str, *, steps: int, warmup: int, seed: int = 0, timer=None,
             dtype: str = "float32") -> dict:
    """W3: `alignax.sampling.sample` (one prefill + a lax.scan decode with a KV cache)."""
    from alignax.models.transformer import make_lm
    from alignax.sampling import sample

    w = spec.workload("w3", size)
    model = make_lm(_config(size, w.prompt_len + w.new_tokens, dtype))
    params = model.init(jax.random.key(seed))
    if dtype != "float32":  # inference weights in the compute dtype, as a server holds them
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    prompts = jnp.asarray(spec.inputs("w3", size, num_batches=1)["prompt_ids"])
    mask = jnp.ones_like(prompts, bool)

    def run_one(i):
        out = sample(model, params, prompts, mask, jax.random.key(i),
                     max_new_tokens=w.new_tokens, temperature=1.0, top_k=0, top_p=1.0)
        return out.tokens

    first, times = (timer or _time_steps)(run_one, 10**9, steps=steps, warmup=warmup)
    out = _result("w3", size, first, times, "sample(): jitted prefill + lax.scan decode, "
                  "temperature 1, no truncation", dtype)
    if dtype != "float32":
        out["notes"] = out["notes"].replace("float32 parameters", f"{dtype} parameters")
    out["param_bytes"] = jnp.dtype(dtype).itemsize
    return out


def grpo_iteration(size: str, *, steps: int, warmup: int, seed: int = 0,
                   timer=None, dtype: str = "float32") -> dict:
    """W4: one GRPO iteration = rollouts (B prompts x n samples) + rule reward on the host +
    group advantages + reference log-probs + one update (PPO-clip, k3 KL in the loss, beta
    0.04), with the pieces of `alignax.algorithms.online`."""
    from alignax.algorithms import online, policy_gradient
    from alignax.models.transformer import make_lm
    from alignax.train.state import TrainState
    from alignax.train.step import make_train_step

    w = spec.workload("w4", size)
    model = make_lm(_config(size, w.prompt_len + w.new_tokens, dtype))
    params = model.init(jax.random.key(seed))
    ref = jax.tree.map(jnp.copy, params)
    tx = optax.adamw(1e-5)
    state = TrainState.create(params, tx, jax.random.key(seed))
    rollout_fn = jax.jit(online.make_rollout(model, num_samples=w.samples,
                                             max_new_tokens=w.new_tokens))
    ref_logps_fn = online.make_reference_logps(model.apply, w.new_tokens)
    policy_loss = policy_gradient.make_policy_loss(model.apply)
    step = make_train_step(lambda p, b, r: policy_loss(p, b, r, 0.04), tx)
    prompts = jnp.asarray(spec.inputs("w4", size, num_batches=1)["prompt_ids"])
    mask = jnp.ones_like(prompts, bool)
    vocab = spec.SIZES[size]["vocab_size"]
    holder = [state]

    def run_one(i):
        rollout = rollout_fn(holder[0].params, prompts, mask, jax.random.key(i))
        rewards = spec.w4_reward(np.asarray(rollout.responses), vocab)  # host, like the peer
        adv = online.compute_advantages("grpo", rewards, w.samples)
        batch = online.training_batch(rollout, adv,
                                      ref_logps=ref_logps_fn(ref, rollout.ids, rollout.mask))
        holder[0], metrics = step(holder[0], batch)
        return metrics["loss"]

    first, times = (timer or _time_steps)(run_one, 10**9, steps=steps, warmup=warmup)
    return _result("w4", size, first, times, "make_rollout (jitted sampler) + host reward + "
                   "GRPO advantages + reference log-probs + one make_train_step update", dtype)


WORKLOADS = {
    "w1": reward_step,
    "w2": dpo_step,
    "w2_pre": lambda size, **kw: dpo_step(size, precompute_ref=True, **kw),
    "w3": sampling,
    "w4": grpo_iteration,
}


def main(argv=None) -> None:
    spec.run_cli(WORKLOADS, __doc__.splitlines()[0], argv, dtypes=("float32", "bfloat16"))


if __name__ == "__main__":
    main()
