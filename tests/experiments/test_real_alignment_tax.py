"""The `:real` config of experiments/alignment_tax.py: model averaging of two tiny random
Qwen2-style checkpoints (theta_0 = the world's "lm", theta_1 = another seed), scored by the
world's reward checkpoint on its prompts, the tax measured on a small text dataset; the alpha = 0
and alpha = 1 NLLs and rewards checked against theta_0's and theta_1's own, computed here
directly."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax import cli
from alignax.algorithms import pretrained, real
from tests.experiments import REPO, run_real, write_real_world
from tests.test_utils import write_tiny_checkpoint

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "alignment_tax.py:real")
TEXT_LENGTH = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tax")
    out = write_real_world(root)
    out["lm2"] = write_tiny_checkpoint(root / "lm2", seed=2, n_layers=1)
    out["wide"] = write_tiny_checkpoint(root / "wide", seed=3, n_layers=1, d_model=16)
    rng = np.random.default_rng(5)
    # 16 texts of 3-10 words: 2 validation and 2 test rows at eval_fraction 0.125; the longest
    # are cut to TEXT_LENGTH tokens
    datasets.Dataset.from_list([
        {"text": " ".join(f"w{i}" for i in rng.integers(0, 26, rng.integers(3, 11)))}
        for _ in range(16)]).save_to_disk(str(root / "texts"))
    out["texts"] = str(root / "texts")
    return out


def _direct_nll(world, name):
    """The test texts' mean token NLL under checkpoint `name`, from its own params (no merge):
    sum over texts of -log p(x_t | x_<t), t >= 1, over the number of predicted tokens."""
    from alignax.data import HFTokenizer

    tok = HFTokenizer.from_file(world["lm"])
    data = datasets.load_from_disk(world["texts"])
    _, _, test = real.held_out_split(len(data), 0.125, 256)
    model, params = pretrained.load_pretrained({"path": world[name]}, "lm")
    total, count = 0.0, 0
    for i in test:
        ids = np.asarray(tok.encode(data[int(i)]["text"])[:TEXT_LENGTH], np.int32)[None]
        logits = model.apply(params, jnp.asarray(ids), jnp.ones(ids.shape, bool))  # [1, T, V]
        logp = jax.nn.log_softmax(logits[0, :-1].astype(jnp.float32), -1)
        total -= float(jnp.take_along_axis(logp, jnp.asarray(ids[0, 1:, None]), -1).sum())
        count += ids.shape[1] - 1
    return total / count


def _direct_reward(world, name):
    """The mean RM score of checkpoint `name`'s greedy 4-token completions of the test prompts,
    from its own params (no merge), all prompts in one batch."""
    from alignax import experiment
    from alignax.algorithms import online

    module = experiment.load_module(SPEC.rsplit(":", 1)[0])
    config = experiment.load_config(module, "real")
    experiment.apply_overrides(config, [
        f"model.path={world['lm']}", f"data.path={world['prompts']}", "data.max_length=12",
        "data.eval_fraction=0.125"])
    tok = real.tokenizer(config)
    test = real.prompt_data(config, tok, 12)["test"]
    model, params = pretrained.load_pretrained({"path": world[name]}, "lm")
    rm, rm_params = pretrained.load_pretrained({"path": world["rm"]}, "reward")
    rollout = online.make_rollout(model, num_samples=1, max_new_tokens=4, temperature=0.0,
                                  stop_tokens=(tok.eos_id,), pad_id=tok.pad_id)(
        params, test["prompt_ids"], test["prompt_mask"], jax.random.key(0))
    return float(jnp.mean(rm.apply(rm_params, rollout.ids, rollout.mask)))


def _paths(world, *skip):
    keys = {"aligned": world["lm2"], "rm": world["rm"], "tax": world["texts"]}
    return [f"--config.{k}.path={v}" for k, v in keys.items() if k not in skip]


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_alignment_tax_real(world, tmp_path):
    summary = run_real("alignment_tax", world, tmp_path, "prompts", *_paths(world),
                       "--config.data.max_length=12", f"--config.tax.max_length={TEXT_LENGTH}",
                       "--config.alphas=(0.0, 1.0)", "--config.eval.max_new_tokens=4",
                       "--config.data.eval_batch_size=1")  # 2 chunks of the 2 x 2 rows
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    assert summary["claims"] == []
    for key in ("test_reward_alpha_0", "test_reward_alpha_1", "val_nll_alpha_0",
                "test_reward_hma", "test_nll_hma", "test_reward_uniform", "test_nll_uniform"):
        assert np.isfinite(m[key]), key
    # the averaging path's end points are theta_0 and theta_1 themselves
    nll0, nll1 = _direct_nll(world, "lm"), _direct_nll(world, "lm2")
    assert abs(nll0 - nll1) > 1e-3  # two different models
    assert m["test_nll_alpha_0"] == pytest.approx(nll0, rel=1e-5)
    assert m["test_nll_alpha_1"] == pytest.approx(nll1, rel=1e-5)
    assert m["test_reward_alpha_0"] == pytest.approx(_direct_reward(world, "lm"), rel=1e-5)
    assert m["test_reward_alpha_1"] == pytest.approx(_direct_reward(world, "lm2"), rel=1e-5)
    # HMA: 3 depth groups (embeddings, the block, final norm + head) at mean ratio .5
    alphas = [m[f"chosen_hma_alpha_{k}"] for k in range(3)]
    assert np.mean(alphas) == pytest.approx(0.5) and all(0.3 - 1e-9 <= a <= 0.7 + 1e-9
                                                         for a in alphas)
    assert m["test_hma_above_uniform"] in (0.0, 1.0)
    if np.isfinite(m["test_hma_frontier_reward"]):
        assert m["test_hma_reward_gap"] == pytest.approx(
            m["test_reward_hma"] - m["test_hma_frontier_reward"])


def test_alignment_tax_real_errors(world, tmp_path, capsys):
    base = ["run", SPEC, "--workdir", str(tmp_path / "a"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['prompts']}"]
    assert cli.main(base + _paths(world, "aligned")) != 0
    err = capsys.readouterr().err
    assert "aligned.path is required by the :real config" in err and len(err.splitlines()) == 1
    assert cli.main(base + _paths(world, "aligned")
                    + [f"--config.aligned.path={world['wide']}"]) != 0
    err = capsys.readouterr().err
    assert "config.json field 'hidden_size'" in err and len(err.splitlines()) == 1


def test_uniform_frontier_and_profiles():
    from alignax import experiment

    module = experiment.load_module(SPEC.rsplit(":", 1)[0])
    nll, reward = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.5])
    assert module.uniform_frontier(nll, reward, 1.5) == pytest.approx(0.5)  # on a segment
    assert module.uniform_frontier(nll, reward, 2.5) == pytest.approx(1.0)  # a point below
    assert module.uniform_frontier(nll, reward, 0.5) == -np.inf  # less tax than every point
    profiles = module.hma_profiles(3, 0.5, 0.2)
    assert profiles.shape == (7, 3) and np.allclose(profiles[0], 0.5)
    np.testing.assert_allclose(profiles.mean(1), 0.5)
    assert len({tuple(p) for p in np.round(profiles, 6)}) == 7
    with pytest.raises(ValueError, match="leaves"):
        module.hma_profiles(3, 0.9, 0.2)
