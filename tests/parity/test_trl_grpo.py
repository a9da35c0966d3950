"""Same math as TRL's GRPOTrainer (trl 1.16): one GRPO update on a tiny random Qwen2 model, the
same completions fed to both.

A random fp32 Qwen2-style causal LM (policy) and a second one (reference, so the k3 KL term and
its gradient are not 0) are saved with a word-level tokenizer. TRL's GRPOTrainer runs one step
on 8 prompts x 4 generations = 32 completions as one batch (beta 0.1, k3 KL, clip 0.2,
temperature 1, gradient clipping off); its generation is patched to return fixed completions
(1-8 tokens, some ending with eos, some cut at max_completion_length = 8), rewarded by a
deterministic function, so the advantages are TRL's own group-normalised ones. alignax computes
the reference log-probs itself (`online.response_logps` on the imported reference: equal to
TRL's) and `make_policy_loss` (ppo_clip, k3 KL with kl_coef = beta, old log-probs = the
policy's own, stop-gradient) with `jax.grad` on TRL's prompt + completion rows and advantages.

TRL's loss_type "grpo" = alignax aggregation "seq_mean_token_mean", "dapo" = "token_mean".

Measured (fp32, CPU; relative to TRL; grad rel per tensor, relative to its largest |g|):

| loss_type (aggregation)      | ref logps | loss   | kl     | grad norm | grad rel (abs)  |
|------------------------------|-----------|--------|--------|-----------|-----------------|
| grpo (seq_mean_token_mean)   | 1.1e-7    | 1.0e-5 | 4.0e-7 | 4.3e-8    | 1.2e-5 (4.1e-8) |
| dapo (token_mean)            | 1.1e-7    | 0      | 7.0e-7 | 6.4e-8    | 8.8e-6 (2.6e-8) |

Values: loss 0.00201 / 0.09407 (grpo's loss is small: the group-normalised advantages cancel
within each sequence mean), kl 0.0184 / 0.0133, grad norm 0.78440 / 0.70509.

All within the 1e-4 (relative) the issue asks for; the test asserts that bound.

TRL 1.16's default `use_bias_correction_kl=True` (the KL term multiplied by the differentiable
ratio pi/pi_old, DeepSeek-V3.2) is alignax's `kl_bias_correction=True`: the test runs both
settings. (Before alignax had the option, TRL's default gave equal values but a grad norm 1.2e-3
and a worst tensor 1.4e-2 apart, since the ratio's gradient adds beta * k3 * d log pi even where
the ratio is 1.)

The test also checks that TRL's advantages are (r - group mean) / (Bessel std + 1e-4): alignax's
"grpo_unbiased" estimator (`test_group_advantages_equal_trl`); alignax's "grpo" uses the
population std + 1e-6 (a factor 0.866 at 4 generations), so the update test feeds TRL's
advantages to both.
"""

import numpy as np
import pytest

pytest.importorskip("trl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from alignax.algorithms.online import response_logps  # noqa: E402
from alignax.algorithms.policy_gradient import make_policy_loss  # noqa: E402
from tests.parity.trl_fixtures import (  # noqa: E402
    RTOL,
    grad_report,
    hf_grads,
    policy_and_reference,
    rel,
    run_one_step,
    standard_pairs,
)

AGGREGATION = {"grpo": "seq_mean_token_mean", "dapo": "token_mean"}  # TRL loss_type -> alignax
PROMPTS, GENERATIONS, MAX_COMPLETION = 8, 4, 8
BETA = 0.1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo_parity")
    return (root, *policy_and_reference(root))


def _completions(tokenizer, n):
    """n fixed completions: 1-8 word tokens; every other one ends with eos (if it fits)."""
    rng = np.random.default_rng(3)
    words = [i for t, i in tokenizer.get_vocab().items() if not t.startswith(("<", "["))]
    out = []
    for k in range(n):
        ids = [int(i) for i in rng.choice(words, size=int(rng.integers(1, MAX_COMPLETION + 1)))]
        if k % 2 == 0:
            ids = ids[:MAX_COMPLETION - 1] + [tokenizer.eos_token_id]
        out.append(ids)
    return out


def trl_group_advantages(rewards, n):
    """TRL's scale_rewards="group" advantages: (r - group mean) / (group std + 1e-4), the std
    with Bessel's correction (`trl.trainer.utils.nanstd`). [B] -> [B]."""
    g = np.asarray(rewards, np.float64).reshape(-1, n)
    centred = g - g.mean(1, keepdims=True)
    return (centred / (g.std(1, ddof=1, keepdims=True) + 1e-4)).reshape(-1)


def _reward(completions, **kwargs):
    """A deterministic reward: occurrences of "cat" and "dog" minus a tenth of the length."""
    return [c.count("cat") + c.count("dog") - 0.1 * len(c.split()) for c in completions]


@pytest.mark.parametrize("loss_type,bias_correction", [("dapo", False), ("grpo", False),
                                                        ("dapo", True)])
def test_one_update_equals_trl(setup, loss_type, bias_correction, tmp_path):
    root, tokenizer, model, params, ref_params = setup
    fixed = _completions(tokenizer, PROMPTS * GENERATIONS)
    prompts = [{"prompt": p["prompt"]} for p in standard_pairs(seed=2)[:PROMPTS]]

    def patch(trainer):
        def generate(prompt_ids, *args, **kwargs):
            assert len(prompt_ids) == len(fixed)
            return [list(c) for c in fixed], None
        trainer._generate_single_turn = generate
        ref = transformers.AutoModelForCausalLM.from_pretrained(str(root / "ref"))
        if trainer.ref_model is not None:
            trainer.ref_model.load_state_dict(ref.state_dict())  # keeps TRL's fused-head patch

    trl = run_one_step(GRPOTrainer, GRPOConfig, Dataset.from_list(prompts), tokenizer,
                       output_dir=tmp_path, before_train=patch,
                       model_kwargs={"model": str(root / "policy"), "reward_funcs": _reward},
                       per_device_train_batch_size=PROMPTS * GENERATIONS,
                       num_generations=GENERATIONS, max_completion_length=MAX_COMPLETION,
                       beta=BETA, loss_type=loss_type, epsilon=0.2, temperature=1.0,
                       use_bias_correction_kl=bias_correction)
    x = trl["inputs"]
    # TRL shuffles the rows after generation: put its advantages back in generation order
    where = {tuple(c): k for k, c in enumerate(fixed)}
    assert len(where) == len(fixed)
    order = [where[tuple(c[m > 0].tolist())] for c, m in zip(x["completion_ids"],
                                                             x["completion_mask"])]
    advantages = np.zeros(len(fixed))
    advantages[order] = x["advantages"]
    rewards = _reward(tokenizer.batch_decode(fixed, skip_special_tokens=True))
    np.testing.assert_allclose(advantages, trl_group_advantages(rewards, GENERATIONS),
                               rtol=1e-5, atol=1e-6)  # TRL's advantages, as read
    r = x["completion_ids"].shape[1]
    ids = np.concatenate([x["prompt_ids"], x["completion_ids"]], axis=1)
    mask = np.concatenate([x["prompt_mask"], x["completion_mask"]], axis=1)
    rmask = x["completion_mask"]
    ref_logps = response_logps(model.apply, ref_params, jnp.asarray(ids), jnp.asarray(mask), r)
    trl_ref = x.get("ref_per_token_logps", np.asarray(ref_logps))
    ref_rel = float(np.abs(np.where(rmask > 0, ref_logps - trl_ref, 0)).max()
                    / np.abs(np.where(rmask > 0, trl_ref, 0)).max())
    old_logps = response_logps(model.apply, params, jnp.asarray(ids), jnp.asarray(mask), r)
    batch = {"ids": ids, "mask": mask, "response_mask": rmask, "advantages": x["advantages"],
             "old_logps": old_logps, "ref_logps": ref_logps}
    loss_fn = make_policy_loss(model.apply, loss="ppo_clip", clip_low=0.2, kl_estimator="k3",
                               aggregation=AGGREGATION[loss_type],
                               kl_bias_correction=bias_correction)
    grad_fn = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b, None, kl_coef=BETA),
                                         has_aux=True))
    (loss, metrics), grads = grad_fn(params, jax.tree.map(jnp.asarray, batch))
    ours = hf_grads(model, grads)
    report = grad_report(ours, trl["grads"])
    logs = trl["logs"]
    measured = {"ref_logps": ref_rel, "loss": rel(loss, trl["loss"]),
                "kl": rel(metrics["kl"], logs["kl"]) if BETA else 0.0,
                "grad_norm": rel(report["norm_ours"], logs["grad_norm"]),
                "grads_max_rel": report["max_rel"]}
    print(loss_type, measured, report, {k: logs.get(k) for k in ("kl", "grad_norm")}, trl["loss"],
          "adv", np.round(x["advantages"], 3).tolist())
    assert np.abs(x["advantages"]).max() > 0.1  # the groups are not all ties
    assert rel(report["norm_theirs"], logs["grad_norm"]) < 1e-6  # the recorded gradients
    for name, value in measured.items():
        assert value < RTOL, (loss_type, name, value)
    grad_fn(params, jax.tree.map(jnp.asarray, batch))
    assert grad_fn._cache_size() == 1


def test_group_advantages_equal_trl():
    """TRL's scale_rewards "group" is alignax's "grpo_unbiased", "batch" is "grpo_batch_std";
    alignax's "grpo" (population std + 1e-6) is not TRL's."""
    from alignax.algorithms.online import compute_advantages

    rewards = np.random.default_rng(0).normal(size=PROMPTS * GENERATIONS)
    ours = np.asarray(compute_advantages("grpo_unbiased", rewards, GENERATIONS))
    np.testing.assert_allclose(ours, trl_group_advantages(rewards, GENERATIONS), rtol=RTOL,
                               atol=1e-6)
    g = rewards.reshape(-1, GENERATIONS)
    batch = ((g - g.mean(1, keepdims=True)) / (rewards.std(ddof=1) + 1e-4)).reshape(-1)
    np.testing.assert_allclose(np.asarray(compute_advantages("grpo_batch_std", rewards,
                                                             GENERATIONS)),
                               batch, rtol=RTOL, atol=1e-6)
    plain = np.asarray(compute_advantages("grpo", rewards, GENERATIONS))
    assert np.abs(plain - ours).max() > 0.05
