"""Same math as TRL's DPOTrainer (trl 1.16): one step on a tiny random Qwen2 model.

A random fp32 Qwen2-style causal LM (2 layers, d_model 32, vocab 64, q/k/v biases, perturbed
norms) and a second one as the reference (so the first step's log-ratios, rewards and loss are
not the trivial 0, 0 and log 2) are saved as safetensors with a word-level tokenizer (Qwen's
special tokens, no bos) and, for the conversational pairs, Qwen2.5's chat template. TRL's
DPOTrainer runs one optimizer step on 32 pairs as one batch (beta 0.1, no dropout, gradient
clipping off: max_grad_norm=1e9); its collated batch, loss, logged rewards and grad_norm, and the
gradients before the optimizer step are recorded. alignax imports both checkpoints with
`import_hf`, tokenises the same records itself (`tokenize_pair`: the ids, attention and response
masks equal TRL's), and computes `make_direct_loss` and `jax.grad` on them.

Measured (fp32, CPU; relative to TRL; grad rel: per tensor, relative to its largest |g|):

| pairs, loss                  | loss   | rewards chosen, rejected | grad norm | grad rel (abs)  |
|------------------------------|--------|--------------------------|-----------|-----------------|
| standard, sigmoid            | 0      | 5.9e-7, 3.1e-7           | 0         | 3.2e-6 (1.5e-8) |
| chat, sigmoid                | 8.6e-8 | 8.8e-7, 4.1e-7           | 0         | 5.2e-6 (1.4e-8) |
| standard, sigmoid + 0.5 sft, | 1.7e-7 | 3.1e-6, 2.1e-6           | 0         | 3.8e-6 (3.0e-8) |
| ld_alpha 0.5                 |        |                          |           |                 |

"chat": the conversational pairs rendered with Qwen2.5's template. Values: loss 0.69432 /
0.69283 / 2.77047, grad norm 0.26937 / 0.26242 / 0.92073 (equal in fp32), rewards about 0.02
(the two random models are close). All within the 1e-4 (relative) the issue asks for; the test
asserts that bound.
"""

import pytest

pytest.importorskip("trl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from alignax.algorithms.direct import make_direct_loss  # noqa: E402
from tests.data import QWEN25  # noqa: E402
from tests.parity.trl_fixtures import (  # noqa: E402
    RTOL,
    assert_same_tokens,
    conversational_pairs,
    grad_report,
    hf_grads,
    policy_and_reference,
    rel,
    run_one_step,
    standard_pairs,
)

VARIANTS = {  # name -> (pairs, TRL DPOConfig fields, alignax make_direct_loss arguments)
    "sigmoid": (standard_pairs, {"loss_type": ["sigmoid"]}, {"loss": "dpo"}),
    "conversational": (conversational_pairs, {"loss_type": ["sigmoid"]}, {"loss": "dpo"}),
    "mixture_ld": (standard_pairs,
                   {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5], "ld_alpha": 0.5},
                   {"loss": ["dpo", "sft"], "loss_weights": [1.0, 0.5], "ld_alpha": 0.5}),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_parity")
    return (root, *policy_and_reference(root, chat_template=QWEN25))


def _alignax_batch(trl_inputs):
    """TRL's collated [2B, T] rows (chosen first) as alignax's pair batch."""
    ids, mask, response = (trl_inputs[k] for k in ("input_ids", "attention_mask",
                                                   "completion_mask"))
    b = ids.shape[0] // 2
    return {"chosen_ids": ids[:b], "rejected_ids": ids[b:], "chosen_mask": mask[:b],
            "rejected_mask": mask[b:], "chosen_response_mask": response[:b],
            "rejected_response_mask": response[b:]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_first_step_equals_trl(setup, variant, tmp_path):
    root, tokenizer, model, params, ref_params = setup
    make_pairs, trl_config, ours_config = VARIANTS[variant]
    records = make_pairs()
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(str(root / "ref"))
    trl = run_one_step(DPOTrainer, DPOConfig, Dataset.from_list(records), tokenizer,
                       output_dir=tmp_path, model_kwargs={"model": str(root / "policy"),
                                                          "ref_model": ref_model},
                       beta=0.1, max_length=None, **trl_config)
    batch = _alignax_batch(trl["inputs"])
    assert_same_tokens(records, root / "policy", batch)

    loss_fn = make_direct_loss(model.apply, ours_config["loss"], {"beta": 0.1},
                               loss_weights=ours_config.get("loss_weights"),
                               ld_alpha=ours_config.get("ld_alpha"))
    grad_fn = jax.jit(jax.value_and_grad(
        lambda p, b, r: loss_fn(p, b, None, ref_params=r), has_aux=True))
    (loss, metrics), grads = grad_fn(params, jax.tree.map(jnp.asarray, batch), ref_params)
    ours = hf_grads(model, grads)
    report = grad_report(ours, trl["grads"])
    logs = trl["logs"]
    measured = {
        "loss": rel(loss, trl["loss"]),
        "rewards/chosen": rel(metrics["chosen_rewards"], logs["rewards/chosen"]),
        "rewards/rejected": rel(metrics["rejected_rewards"], logs["rewards/rejected"]),
        "grad_norm": rel(optax.global_norm(grads), logs["grad_norm"]),
        "grads_max_rel": report["max_rel"],
    }
    print(variant, measured, report, {k: logs[k] for k in ("rewards/chosen", "rewards/rejected",
                                                          "grad_norm")}, trl["loss"])
    assert rel(report["norm_theirs"], logs["grad_norm"]) < 1e-6  # the recorded gradients
    for name, value in measured.items():
        assert value < RTOL, (variant, name, value)
    # a second call with the same shapes does not retrace
    grad_fn(params, jax.tree.map(jnp.asarray, batch), ref_params)
    assert grad_fn._cache_size() == 1
