"""Same math as TRL's RewardTrainer (trl 1.16): one step on a tiny random Qwen2 reward model.

A random fp32 Qwen2ForSequenceClassification (one label; 2 layers, d_model 32, vocab 64, score
head N(0, 0.5^2) so the rewards spread) is saved as safetensors with a word-level tokenizer
(Qwen's special tokens: eos <|im_end|>, pad <|endoftext|>, no bos). TRL's RewardTrainer runs one
optimizer step on 32 standard pairs as one batch (gradient clipping off: max_grad_norm=1e9); its
collated batch, loss, logged accuracy/margin/grad_norm and the gradients before the optimizer
step are recorded. alignax imports the checkpoint with `import_hf(kind="reward")`, tokenises the
records itself (`tokenize_pair`: the full sequences and masks equal TRL's), and computes
`make_reward_loss` (Bradley-Terry, `center_coef` = TRL's center_rewards_coefficient) with
`jax.grad`.

Measured (fp32, CPU; relative to TRL; grad rel per tensor, relative to its largest |g|):

| variant                   | loss | accuracy | margin | grad norm | grad rel (abs)  |
|---------------------------|------|----------|--------|-----------|-----------------|
| Bradley-Terry             | 0    | 0        | 5.5e-6 | 3.6e-7    | 2.9e-5 (2.3e-6) |
| + center coefficient 0.1  | 0    | 0        | 5.5e-6 | 5.7e-9    | 8.6e-7 (1.1e-5) |

Values: loss 0.70959 / 3.07133, accuracy 0.53125, margin 0.012781, grad norm 2.27540 / 330.086.

All within the 1e-4 (relative) the issue asks for; the test asserts that bound.

The imported reward head has no bias (`TransformerConfig.score_bias=False`), as Hugging Face's
`score` layer: with centring, a bias would get the gradient d L / d b = 2 c mean(r_c + r_r)
(1.93 here), a parameter TRL's model does not have, in the gradient norm and clipping, and
`export_hf` would refuse it once nonzero. So both models have the same parameters.

`test_pad_equal_to_eos_pools_like_transformers`: when the pad id equals the eos id,
transformers scores the token before the trailing eos; `pool="last_non_pad"` reproduces it.
"""

import numpy as np
import pytest

pytest.importorskip("trl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402

from alignax.algorithms.reward_model import make_reward_loss  # noqa: E402
from alignax.models.hf import import_hf  # noqa: E402
from tests.parity.trl_fixtures import (  # noqa: E402
    RTOL,
    assert_same_tokens,
    grad_report,
    hf_grads,
    rel,
    run_one_step,
    standard_pairs,
    write_checkpoint,
    write_tokenizer,
)

CENTER = {"bradley_terry": None, "center_0.1": 0.1}  # variant -> center_rewards_coefficient


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm_parity")
    tokenizer = write_tokenizer(root / "tokenizer")
    write_checkpoint(root / "rm", tokenizer, seed=2, kind="reward")
    model, params = import_hf(str(root / "rm"), kind="reward")
    return root, tokenizer, model, params


@pytest.mark.parametrize("variant", sorted(CENTER))
def test_first_step_equals_trl(setup, variant, tmp_path):
    root, tokenizer, model, params = setup
    records = standard_pairs(seed=1)
    center = CENTER[variant]
    trl = run_one_step(RewardTrainer, RewardConfig, Dataset.from_list(records), tokenizer,
                       output_dir=tmp_path, model_kwargs={"model": str(root / "rm")},
                       center_rewards_coefficient=center, max_length=None)
    ids, mask = trl["inputs"]["input_ids"], trl["inputs"]["attention_mask"]
    b = ids.shape[0] // 2
    batch = {"chosen_ids": ids[:b], "rejected_ids": ids[b:], "chosen_mask": mask[:b],
             "rejected_mask": mask[b:]}
    assert_same_tokens(records, root / "rm", batch, response=False)

    loss_fn = make_reward_loss(model.apply, "bradley_terry",
                               {} if center is None else {"center_coef": center})
    grad_fn = jax.jit(jax.value_and_grad(lambda p, x: loss_fn(p, x, None), has_aux=True))
    (loss, metrics), grads = grad_fn(params, jax.tree.map(jnp.asarray, batch))
    grads = jax.device_get(grads)
    ours = hf_grads(model, grads, "reward")
    report = grad_report(ours, trl["grads"])
    logs = trl["logs"]
    measured = {
        "loss": rel(loss, trl["loss"]),
        "accuracy": rel(metrics["accuracy"], logs["accuracy"]),
        "margin": rel(metrics["margin"], logs["margin"]),
        "grad_norm": rel(report["norm_ours"], logs["grad_norm"]),
        "grads_max_rel": report["max_rel"],
    }
    assert set(grads["score"]) == {"kernel"}  # no bias: the parameters of TRL's model
    print(variant, measured, report, {k: logs[k] for k in ("accuracy", "margin", "grad_norm")},
          trl["loss"])
    assert rel(report["norm_theirs"], logs["grad_norm"]) < 1e-6  # the recorded gradients
    for name, value in measured.items():
        assert value < RTOL, (variant, name, value)
    grad_fn(params, jax.tree.map(jnp.asarray, batch))
    assert grad_fn._cache_size() == 1


def test_pad_equal_to_eos_pools_like_transformers(tmp_path):
    """With pad == eos (Llama-3 and Qwen2.5 base tokenizers under TRL, which pads with eos when
    there is no pad token) transformers' sequence classifier scores the last token that is not
    the pad id, i.e. the token before the trailing eos; alignax's default pooling (the last
    valid token of the attention mask) scores the eos itself (rewards differ by up to 2.55 on
    these 8 sequences).

    Decision: the mask stays the default (it is what the model is trained on, is defined for
    packed rows and left padding, and does not depend on which id pads), and
    `pool="last_non_pad"` (a keyword of `import_hf`, `TransformerConfig.pool`, with the
    checkpoint's or the given `pad_token_id`) reproduces transformers exactly, so a published
    reward model whose pad id is its eos scores as in RewardBench / TRL."""
    import torch

    from tests.parity.trl_fixtures import EOS

    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    tokenizer.pad_token = EOS
    hf = write_checkpoint(tmp_path / "rm", tokenizer, seed=2, kind="reward").eval()
    hf.config.pad_token_id = tokenizer.pad_token_id  # what RewardTrainer sets
    texts = [p["prompt"] + p["chosen"] + EOS for p in standard_pairs(seed=1)[:8]]
    enc = tokenizer(texts, padding=True, return_tensors="pt")  # right-padded with eos
    with torch.no_grad():
        want = hf(**enc).logits[:, 0].numpy()
    ids, mask = (jnp.asarray(enc[k].numpy()) for k in ("input_ids", "attention_mask"))
    model, params = import_hf(str(tmp_path / "rm"), kind="reward", pool="last_non_pad",
                              pad_token_id=tokenizer.pad_token_id)
    got = jax.jit(model.apply)(params, ids, mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=1e-6)
    default, _ = import_hf(str(tmp_path / "rm"), kind="reward")  # the mask: scores the eos
    assert np.abs(np.asarray(jax.jit(default.apply)(params, ids, mask)) - want).max() > 0.1
