"""Packed SFT and reward-model training (`packing.enabled`): the loss, gradients and rewards on
packed rows equal the unpacked (padded) ones over the same examples (fp32, 1e-5), no retrace,
and both recipes train on packed rows (with gradient accumulation)."""

import jax
import numpy as np
import pytest

from alignax.algorithms import reward_model, sft
from alignax.algorithms.reward_model import make_reward_loss, packed_pair_rewards
from alignax.algorithms.sft import make_sft_loss
from alignax.data.packing import PackedSource, pad_example
from alignax.models.transformer import TransformerConfig, make_lm, make_reward_model

T = 12  # padded length of one example (or one side of a pair)
MODEL = dict(vocab_size=48, d_model=32, n_layers=2, n_heads=4, d_ff=48)


def _sequences(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(3, T + 1))
        loss_mask = np.ones(k, np.int32)
        loss_mask[: int(rng.integers(1, k))] = 0  # a prompt, then the completion
        out.append({"input_ids": rng.integers(1, 48, size=k).astype(np.int32),
                    "loss_mask": loss_mask})
    return out


def _pairs(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = rng.integers(1, 48, size=int(rng.integers(1, 5)))
        sides = {s: np.concatenate([prompt, rng.integers(1, 48, size=int(rng.integers(1, 8)))])
                 for s in ("chosen", "rejected")}
        out.append({f"{s}_ids": v.astype(np.int32) for s, v in sides.items()})
    return out


def _stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _assert_trees_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)


def _random_params(model, seed):
    """Params of the model's shapes drawn in numpy (no init compile; any params show equality)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def lm():
    model = make_lm(TransformerConfig(**MODEL))
    return model, _random_params(model, 0)


@pytest.fixture(scope="module")
def rm():
    model = make_reward_model(TransformerConfig(**MODEL))
    return model, _random_params(model, 1)


def test_sft_packed_loss_and_grads_equal_unpacked(lm):
    model, params = lm
    examples = _sequences(10, seed=0)
    padded = _stack([pad_example(e, T, pad_id=0) for e in examples])
    source = PackedSource(examples, 2 * T)
    assert len(source) < len(examples)  # rows really hold several examples
    packed = _stack([source[i] for i in range(len(source))])
    grad = jax.value_and_grad(make_sft_loss(model.apply), has_aux=True)
    both = jax.jit(lambda p, u, k: (grad(p, u, None), grad(p, k, None)))  # one compile
    ((loss_u, aux_u), g_u), ((loss_p, aux_p), g_p) = both(params, padded, packed)
    # the same target tokens: a segment's last token never predicts the next segment
    assert float(aux_p["tokens"]) == float(aux_u["tokens"]) == sum(
        int(e["loss_mask"][1:].sum()) for e in examples)
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5, atol=1e-5)
    _assert_trees_close(g_p, g_u)
    # another packed batch of the same shape: no retrace
    other = PackedSource(_sequences(10, seed=1), 2 * T)
    rows = _stack([other[i % len(other)] for i in range(packed["input_ids"].shape[0])])
    both(params, padded, rows)
    assert both._cache_size() == 1


def test_rm_packed_rewards_loss_and_grads_equal_unpacked(rm):
    model, params = rm
    pairs = _pairs(9, seed=2)
    padded = _stack([pad_example(p, T, pad_id=0) for p in pairs])
    source = PackedSource(pairs, 2 * T, kind="pair")
    assert len(source) < len(pairs) and source.max_pairs > 1
    packed = _stack([source[i] for i in range(len(source))])
    grad = jax.value_and_grad(make_reward_loss(model.apply), has_aux=True)

    @jax.jit
    def both(p, u, k):  # one compile: unpacked and packed losses, grads and rewards
        rewards = packed_pair_rewards(model.apply, p, k)
        ref = [model.apply(p, u[f"{s}_ids"], u[f"{s}_mask"]) for s in ("chosen", "rejected")]
        return grad(p, u, None), grad(p, k, None), rewards, ref

    ((loss_u, aux_u), g_u), ((loss_p, aux_p), g_p), rewards, ref = both(params, padded, packed)
    assert float(aux_p["pairs"]) == len(pairs)
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5, atol=1e-5)
    for k in ("accuracy", "margin", "reward_mean"):
        np.testing.assert_allclose(aux_p[k], aux_u[k], rtol=1e-5, atol=1e-5)
    _assert_trees_close(g_p, g_u)
    # each pair's rewards, found through the plan, equal its unpacked rewards
    chosen, rejected, valid = rewards
    s = source.max_pairs
    order = [(row * s + slot, j) for row, b in enumerate(source.bins) for slot, j in enumerate(b)]
    assert float(valid.sum()) == len(pairs) == len(order)
    for flat, j in order:
        np.testing.assert_allclose(chosen[flat], ref[0][j], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rejected[flat], ref[1][j], rtol=1e-5, atol=1e-5)
    both(params, padded, {k: v[::-1] for k, v in packed.items()})  # other rows: no retrace
    assert both._cache_size() == 1


def test_packing_config_errors():
    with pytest.raises(ValueError, match="unknown packing.strategy 'best'"):
        sft.validate({"packing": {"enabled": True, "strategy": "best"}})
    with pytest.raises(ValueError, match="packing.window must be an int >= 1"):
        reward_model.validate({"packing": {"window": 0}})
    with pytest.raises(ValueError, match="unknown"):
        sft.validate({"packing": {"max_pairs": 2}})  # a reward-model key only


def _train_config(recipe, accum, **packing):  # one layer: these only show the wiring
    return recipe.default_config(
        model={**MODEL, "n_layers": 1},
        train=dict(steps=2, batch_size=2, grad_accum_steps=accum, checkpoint_every=2,
                   log_every=1, progress=False),
        packing=dict(enabled=True, **packing))


def test_sft_recipe_packs_its_source(tmp_path, monkeypatch):
    """sft.train hands fit_recipe the packed rows (the loss on them: the equality test above;
    a packed training run: the reward-model test below and docs/byom.md's checks)."""
    from alignax.algorithms import common

    seen = {}
    monkeypatch.setattr(common, "fit_recipe", lambda *a, **k: seen.update(k) or {})
    rows = [pad_example(e, T, pad_id=0) for e in _sequences(16, seed=3)]
    sft.train(_train_config(sft, 1), str(tmp_path), train_source=rows)
    source = seen["train_source"]
    assert isinstance(source, PackedSource) and len(source) < len(rows)
    assert source[0]["input_ids"].shape == (T,)
    assert max(source[i]["mask"].max() for i in range(len(source))) > 1
    assert seen["grad_accum_weight"] == "tokens"


def test_rm_recipe_trains_on_packed_rows(tmp_path):
    rows = [pad_example(p, T, pad_id=0) for p in _pairs(16, seed=4)]
    out = reward_model.train(_train_config(reward_model, 2, max_pairs=3), str(tmp_path),
                             train_source=rows)
    assert np.isfinite(out["metrics"]["loss"])
    # accumulated micro-batches (one row each) weigh by their pairs: the metric is their sum
    assert 2 <= out["metrics"]["pairs"] <= 2 * 3


def test_byom_data_cached_padded_and_packed(tmp_path):
    """examples/byom.py's train_data: the cached, padded rows equal tokenize_pair's (so :dpo and
    unpacked :rm / :sft see the same batches as without the cache); with data.packing the
    recipes get the cached examples and a packing section."""
    datasets = pytest.importorskip("datasets")
    import os

    from alignax import experiment
    from alignax.data import HFSource
    from alignax.data.token_cache import TokenCache
    from alignax.data.tokenize import tokenize_pair
    from tests.data import QWEN25, QWEN_SPECIALS, templated

    tok = templated(QWEN25, QWEN_SPECIALS)  # a tiny BPE with a Qwen2.5-style template
    rng = np.random.default_rng(0)
    words = np.array(["the", "capital", "of", "Paris"])
    text = lambda n: " ".join(words[rng.integers(0, 4, n)])  # noqa: E731
    dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": text(int(rng.integers(1, 6)))}],
         "chosen": [{"role": "assistant", "content": text(int(rng.integers(1, 5)))}],
         "rejected": [{"role": "assistant", "content": text(2)}]} for _ in range(6)])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    module = experiment.load_module(os.path.join(root, "examples", "byom.py"))

    def data(recipe, *overrides):
        config = experiment.load_config(module, recipe)
        experiment.apply_overrides(config, ["data.max_length=96", *overrides])
        return module.train_data(config, str(tmp_path), tok, dataset)

    records = [HFSource(dataset, lambda r: r).record(i) for i in range(6)]
    source, overrides = data("dpo")
    assert overrides == {}
    for i, record in enumerate(records):
        expected = tokenize_pair(record, tok, max_length=96)
        assert sorted(source[i]) == sorted(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(source[i][k], v)
    sft_rows, _ = data("sft")
    expected = tokenize_pair(records[2], tok, max_length=96)
    for a, b in (("input_ids", "chosen_ids"), ("mask", "chosen_mask"),
                 ("loss_mask", "chosen_response_mask")):
        np.testing.assert_array_equal(sft_rows[2][a], expected[b])
    pairs, overrides = data("rm", "data.packing=True")
    assert isinstance(pairs, TokenCache) and overrides == {
        "packing": {"enabled": True, "length": 192}}
    assert os.path.dirname(pairs.folder) == str(tmp_path / "token_cache")
    assert len(os.listdir(tmp_path / "token_cache")) == 1  # one cache for every recipe
    pairs, overrides = data("dpo", "data.packing=True")  # TRL's padding_free
    assert isinstance(pairs, TokenCache) and overrides == {
        "packing": {"enabled": True, "length": 192}}
    assert "chosen_response_mask" in pairs[0]  # what the packed DPO loss sums over
