"""Direct alignment on packed pairs (`packing.enabled`, TRL's `padding_free`): the packed rows
carry each side's response mask and per-pair fields, and the loss, per-pair log-probs and
rewards and the gradient on packed rows equal the padded batch's over the same pairs (fp32,
rtol 1e-5); empty pair slots weigh nothing; TDPO and AOT are refused; the recipe trains on
packed rows."""

import json
import os

import grain
import jax
import numpy as np
import pytest

from alignax.algorithms import direct
from alignax.algorithms.direct import make_direct_loss, packed_pair_logps, pair_logps
from alignax.algorithms.reference import REF_FIELDS
from alignax.data.packing import (PackedSource, PackIterDataset, pack_pairs, pad_example,
                                  packed_train_source)
from alignax.models.transformer import TransformerConfig, make_lm

T = 12  # padded length of one side of a pair
MODEL = dict(vocab_size=48, d_model=16, n_layers=1, n_heads=2, d_ff=32)
SIDES = ("chosen", "rejected")


def _pairs(n, seed):
    """n unpadded pairs: a shared prompt (response mask 0), then each side's response (1).
    Some prompts are empty, so that a segment may start with a response token: its log-prob
    has no predicting position and must not be read from the previous segment."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = rng.integers(1, 48, size=int(rng.integers(0, 5)))
        pair = {}
        for side in SIDES:
            response = rng.integers(1, 48, size=int(rng.integers(1, 8)))
            pair[f"{side}_ids"] = np.concatenate([prompt, response]).astype(np.int32)
            pair[f"{side}_response_mask"] = np.concatenate(
                [np.zeros(len(prompt)), np.ones(len(response))]).astype(np.int32)
        out.append(pair)
    return out


def _stack(rows):
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _padded(pairs):
    return _stack([pad_example(p, T, pad_id=0) for p in pairs])


def _random_params(model, seed):
    """Params of the model's shapes drawn in numpy (no init compile; any params show equality)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _close(a, b):
    """Gradient trees equal to rtol 1e-5 of the gradient's scale: elementwise rtol 1e-5 plus an
    atol of 1e-5 max|b|, for entries that are sums with cancellation (the padded layout against
    itself at another padded length differs by 4e-6 on IPO's gradient, whose largest entry is
    7)."""
    scale = max(float(np.abs(np.asarray(y)).max()) for y in jax.tree.leaves(b))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * scale),
                 a, b)


def _slots(source):
    """(flat slot b * S + j, pair index) of every pair of a packed source, through its plan."""
    s = source.max_pairs
    return [(row * s + slot, j) for row, b in enumerate(source.bins) for slot, j in enumerate(b)]


@pytest.fixture(scope="module")
def lm():
    model = make_lm(TransformerConfig(**MODEL))
    return model, _random_params(model, 0), _random_params(model, 1)


@pytest.fixture(scope="module")
def data():
    pairs = _pairs(9, seed=4)
    source = PackedSource(pairs, 2 * T, kind="direct_pair", max_pairs=3)
    packed = _stack([source[i] for i in range(len(source))])
    valid = packed["chosen_end"] >= 0
    assert len(source) < len(pairs) and valid.sum() == len(pairs)
    assert not valid.all()  # some row has an empty slot
    assert sum(int(p["chosen_response_mask"][0]) for p in pairs) >= 2  # responses first
    return pairs, source, packed


# ----------------------------------------------------------------------------- packing


def test_pack_pairs_with_response_masks_and_pair_fields():
    pairs = _pairs(3, seed=0)
    for j, p in enumerate(pairs):
        p["ref_chosen_logps"] = np.float32(-1.5 - j)
    row = pack_pairs(pairs, 3 * 2 * T, max_pairs=4, response=True,
                     pair_fields=("ref_chosen_logps",))
    plain = pack_pairs(pairs, 3 * 2 * T, max_pairs=4)
    assert sorted(plain) == ["chosen_end", "input_ids", "mask", "rejected_end"]
    for k, v in plain.items():  # the reward-model row is unchanged
        np.testing.assert_array_equal(row[k], v)
    at = 0
    for j, p in enumerate(pairs):
        for side, seg in zip(SIDES, (2 * j + 1, 2 * j + 2)):
            n = len(p[f"{side}_ids"])
            np.testing.assert_array_equal(row["mask"][at:at + n], seg)
            np.testing.assert_array_equal(row["response_mask"][at:at + n],
                                          p[f"{side}_response_mask"])
            assert row[f"{side}_end"][j] == at + n - 1
            at += n
    assert row["response_mask"][at:].sum() == 0 and row["chosen_end"][3] == -1
    np.testing.assert_array_equal(row["ref_chosen_logps"], [-1.5, -2.5, -3.5, 0.0])
    assert row["ref_chosen_logps"].dtype == np.float32
    with pytest.raises(ValueError, match="pair 0 has no 'chosen_response_mask'"):
        pack_pairs([{"chosen_ids": [1], "rejected_ids": [2]}], 4, max_pairs=1, response=True)
    with pytest.raises(ValueError, match="pair 0 has no field 'delta'"):
        pack_pairs(pairs, 3 * 2 * T, max_pairs=4, response=True, pair_fields=("ref_chosen_logps",
                                                                                "delta"))
    with pytest.raises(ValueError, match="apply to kind 'direct_pair', not 'pair'"):
        PackedSource(pairs, 2 * T, kind="pair", pair_fields=("ref_chosen_logps",))


def test_direct_pair_sources_from_padded_rows_and_streams():
    pairs = _pairs(12, seed=1)
    for j, p in enumerate(pairs):
        p["delta"] = np.float32(j)
    padded = [{**pad_example({k: v for k, v in p.items() if k != "delta"}, T, pad_id=0),
               "delta": p["delta"]} for p in pairs]  # a 0-d field, as RefLogpsSource's rows
    from_pairs = PackedSource(pairs, 2 * T, kind="direct_pair", max_pairs=3,
                              pair_fields=("delta",))
    from_rows = packed_train_source(padded, {"length": 0, "strategy": "bfd", "window": 1000,
                                             "max_pairs": 3}, "direct_pair",
                                    pair_fields=("delta",))
    stream = iter(PackIterDataset(grain.MapDataset.source(padded).to_iter_dataset(), 2 * T,
                                  kind="direct_pair", max_pairs=3, pair_fields=("delta",)))
    assert len(from_rows) == len(from_pairs) and from_rows.bins == from_pairs.bins
    for i in range(len(from_pairs)):
        a, b, c = from_pairs[i], from_rows[i], next(stream)
        assert sorted(a) == sorted(b) == sorted(c)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
            np.testing.assert_array_equal(a[k], c[k])
        np.testing.assert_array_equal(a["delta"][:len(from_pairs.bins[i])],
                                      from_pairs.bins[i])


# ----------------------------------------------------------------------------- equality

CASES = {  # name: (make_direct_loss arguments, reference: "params" | "precomputed" | None)
    "dpo": (dict(loss="dpo", loss_kwargs={"beta": 0.2}), "params"),
    "irepo": (dict(loss="irepo"), "params"),  # reads preference_rate per pair from the batch
    "dpo_precomputed": (dict(loss="dpo", loss_kwargs={"beta": 0.2}), "precomputed"),
    "ipo": (dict(loss="ipo", loss_kwargs={"beta": 0.3}), "params"),
    "ld_alpha": (dict(loss="dpo", ld_alpha=0.4), "params"),
    "simpo": (dict(loss="simpo", loss_kwargs={"beta": 2.0, "gamma": 0.5}), None),
    "mpo_wpo": (dict(loss=["dpo", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0],
                     use_weighting=True), "params"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_loss_rewards_and_grads_equal_padded(lm, data, case):
    model, params, ref = lm
    pairs, source, packed = data
    kwargs, reference = CASES[case]
    padded = _padded(pairs)
    fields = {}  # per-pair fields: [N] in the padded batch, carried into the rows' pair slots
    if reference == "precomputed":  # the reference's sums
        fields = dict(zip(REF_FIELDS, map(np.asarray, jax.jit(
            lambda r, u: pair_logps(model.apply, r, u))(ref, padded))))
    if kwargs["loss"] == "irepo":
        fields["preference_rate"] = np.random.default_rng(5).uniform(0.5, 1.0, len(pairs))
    if fields:
        padded = {**padded, **fields}
        carried = PackedSource([{**p, **{k: v[j] for k, v in fields.items()}}
                                for j, p in enumerate(pairs)], 2 * T, kind="direct_pair",
                               max_pairs=3, pair_fields=tuple(fields))
        assert carried.bins == source.bins
        packed = _stack([carried[i] for i in range(len(carried))])
    grad = jax.value_and_grad(make_direct_loss(model.apply, **kwargs), has_aux=True)
    ref_arg = ref if reference == "params" else None

    @jax.jit
    def both(p, u, k):  # one compile: the padded and the packed loss and gradient
        return grad(p, u, None, ref_arg), grad(p, k, None, ref_arg)

    ((loss_u, aux_u), g_u), ((loss_p, aux_p), g_p) = both(params, padded, packed)
    assert float(aux_p.pop("pairs")) == len(pairs)
    assert sorted(aux_p) == sorted(aux_u)
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5)
    for k in aux_u:  # chosen/rejected rewards, margins, accuracies, policy log-probs, ...
        np.testing.assert_allclose(aux_p[k], aux_u[k], rtol=1e-5, atol=1e-6, err_msg=k)
    _close(g_p, g_u)
    assert np.abs(np.asarray(jax.tree.leaves(g_p)[0])).max() > 0


def test_packed_pair_logps_per_pair(lm, data):
    """Each pair's log-probs (and so its implicit rewards beta (log pi - log ref)), found through
    the plan, equal its padded log-probs; the empty slots read 0 and are not valid."""
    model, params, ref = lm
    pairs, source, packed = data
    padded = _padded(pairs)

    @jax.jit
    def logps(p, u, k):
        return pair_logps(model.apply, p, u), packed_pair_logps(model.apply, p, k)

    for p in (params, ref):
        (pc, pr), (kc, kr, valid) = logps(p, padded, packed)
        order = _slots(source)
        assert float(valid.sum()) == len(order) == len(pairs)
        for flat, j in order:
            np.testing.assert_allclose([kc[flat], kr[flat]], [pc[j], pr[j]], rtol=1e-5)
        empty = np.asarray(valid) == 0
        assert (np.asarray(kc)[empty] == 0).all() and (np.asarray(kr)[empty] == 0).all()
    # chunked token log-probs (model.logits_chunk > 0): the same values
    chunked = make_lm(TransformerConfig(**MODEL, logits_chunk=16))
    kc2, _, _ = jax.jit(lambda p, k: packed_pair_logps(chunked.apply, p, k, token_logps=True))(
        params, packed)
    np.testing.assert_allclose(kc2, logps(params, padded, packed)[1][0], rtol=1e-5, atol=1e-6)


def test_empty_slots_and_empty_rows_weigh_nothing(lm):
    """A row with an empty slot and a row with no pair at all leave the loss and the gradient
    of the real pairs unchanged, also for losses that divide by lengths or take log(1 - p)."""
    model, params, ref = lm
    pairs = _pairs(5, seed=3)
    rows = [pack_pairs(pairs[:3], 6 * T, max_pairs=3, response=True),
            pack_pairs(pairs[3:], 6 * T, max_pairs=3, response=True)]  # slot 2 empty
    empty = pack_pairs([], 6 * T, max_pairs=3, response=True)
    assert (empty["mask"] == 0).all()
    batches = (_stack(rows), _stack(rows + [empty, empty]), _padded(pairs))
    for name in ("dpo", "orpo"):  # orpo: length-normalised log-probs inside log(1 - p)
        grad = jax.value_and_grad(make_direct_loss(model.apply, name), has_aux=True)
        three = jax.jit(lambda p, bs: [grad(p, b, None, ref) for b in bs])  # noqa: B023
        ((loss, aux), g), ((loss_e, aux_e), g_e), ((loss_u, _), g_u) = three(params, batches)
        assert float(aux["pairs"]) == float(aux_e["pairs"]) == 5
        np.testing.assert_allclose([loss, loss_e], [loss_u, loss_u], rtol=1e-5)
        for leaf in jax.tree.leaves(g_e):
            assert np.isfinite(np.asarray(leaf)).all(), name
        _close(g, g_u)
        _close(g_e, g_u)


def test_refusals(lm, data):
    model, params, ref = lm
    _, _, packed = data
    for loss in ("tdpo", "aot", ["dpo", "aot_pair"]):
        fn = make_direct_loss(model.apply, loss)
        with pytest.raises(ValueError, match="cannot train on packed pairs \\(packing.enabled\\)"):
            fn(params, packed, None, ref)
    with pytest.raises(ValueError, match="loss 'tdpo' cannot train on packed pairs "
                                         "\\(packing.enabled\\): its sequential KL"):
        direct.validate({"loss": "tdpo", "packing": {"enabled": True}})
    direct.validate({"loss": "tdpo"})  # unpacked: fine
    with pytest.raises(ValueError, match="unknown packing.strategy"):
        direct.validate({"packing": {"enabled": True, "strategy": "best"}})
    with pytest.raises(ValueError, match="packing.max_pairs must be an int >= 0"):
        direct.validate({"packing": {"max_pairs": -1}})
    fn = make_direct_loss(model.apply, "dpo")
    with pytest.raises(ValueError, match="'weight' is not read from them"):
        fn(params, {**packed, "weight": np.ones(packed["chosen_end"].shape, np.float32)}, None,
           ref)
    with pytest.raises(ValueError, match="need \\['response_mask'\\]"):
        fn(params, {k: v for k, v in packed.items() if k != "response_mask"}, None, ref)


# ----------------------------------------------------------------------------- the recipe


def _train_config(batch_size, accum=1, packing=False, **kw):
    return direct.default_config(
        model=MODEL, optimizer=dict(learning_rate=1e-2),
        train=dict(steps=2, batch_size=batch_size, grad_accum_steps=accum, checkpoint_every=2,
                   log_every=1, progress=False),
        packing=dict(enabled=packing, max_pairs=3), **kw)


def _step_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "train/loss" in r]


def test_recipe_first_step_loss_packed_equals_padded(lm, tmp_path):
    """The recipe shuffles its (padded or packed) rows, so each run's batch is the whole data set
    (one epoch): then step 1 sees the same pairs, at the same initial params, in both runs.
    Packed: every row in one batch, and in two accumulated micro-batches weighed by pairs."""
    model, params, _ = lm
    pairs = _pairs(10, seed=0)
    rows = [pad_example(p, T, pad_id=0) for p in pairs]
    n_rows = len(PackedSource(rows, 2 * T, kind="direct_pair", max_pairs=3))
    assert n_rows < len(pairs) and n_rows % 2 == 0
    simpo = dict(loss="simpo", loss_kwargs={"beta": 2.0})
    runs = {"padded": _train_config(len(pairs), **simpo),
            "packed": _train_config(n_rows, packing=True, **simpo),
            "packed_accum": _train_config(n_rows, accum=2, packing=True, **simpo)}
    first = {}
    for name, cfg in runs.items():
        out = direct.train(cfg, str(tmp_path / name), train_source=rows, ref_params=params)
        steps = _step_metrics(str(tmp_path / name))
        assert len(steps) == 2 and np.isfinite(out["metrics"]["loss"])
        first[name] = steps[0]
    for name in ("packed", "packed_accum"):
        assert first[name]["train/pairs"] == len(pairs)
        for k in ("train/loss", "train/chosen_rewards", "train/rejected_rewards"):
            np.testing.assert_allclose(first[name][k], first["padded"][k], rtol=1e-5, err_msg=k)


def test_recipe_packs_precomputed_reference_logps(lm, tmp_path):
    """precompute_ref_logps + packing: the reference's sums ride in the rows' pair slots. At
    step 1 the policy is the reference, so every slot's margin is 0 (DPO loss log 2) only if
    each carried sum sits in its own pair's slot."""
    _, params, _ = lm
    rows = [pad_example(p, T, pad_id=0) for p in _pairs(8, seed=5)]
    n_rows = len(PackedSource(rows, 2 * T, kind="direct_pair", max_pairs=3))
    cfg = _train_config(n_rows, packing=True, precompute_ref_logps=True)
    direct.train(cfg, str(tmp_path), train_source=rows, ref_params=params)
    step1 = _step_metrics(str(tmp_path))[0]
    assert step1["train/pairs"] == 8
    np.testing.assert_allclose(step1["train/loss"], np.log(2.0), rtol=1e-5)
    np.testing.assert_allclose(step1["train/reward_margins"], 0.0, atol=1e-6)
