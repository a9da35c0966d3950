"""KTO with precomputed reference log-probs (TRL's precompute_ref_log_probs): the KL rows'
donors fixed in dataset order (TRL's rotation within blocks), the reference's log-probs of the
rows and of their KL rows computed once and carried in the batch, the loss against hand
computations, against the same fixed donors with an in-step reference, resume, and errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.algorithms import common, kto
from alignax.algorithms.reference import precompute_row_logps
from alignax.data.unpaired import (KL_FIELDS, KLRowsSource, dataset_kl_donors, kl_donors,
                                   mismatched_rows)
from alignax.losses import kto_loss
from alignax.models.transformer import TransformerConfig, make_lm
from tests.algorithms import unpaired_rows
from tests.test_utils import ListSource

MODEL_CFG = dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16)
MODEL = make_lm(TransformerConfig(**MODEL_CFG))
REF = MODEL.init(jax.random.key(1))
POLICY = MODEL.init(jax.random.key(3))
APPLY = jax.jit(MODEL.apply)
T, N, B = 12, 10, 4  # blocks of B rows: [0..3], [4..7] and a last, shorter one [8, 9]
WEIGHTS = dict(beta=0.5, desirable_weight=1.5, undesirable_weight=0.75)
SEED = 3  # its second batch's KL rows have a positive mean log-ratio after the first update


def unpaired_source(n=N, seed=0):
    """n random right-padded rows (prompt 1-4 tokens, completion 1-6), with their `index`."""
    return ListSource(unpaired_rows(n, T, seed, index=True))


SOURCE = unpaired_source()


def _hand_donor(n, i, block):
    """TRL's batched map over the dataset order: blocks of `block` rows, completions rotated
    by +1 within each block (the last block has the rows left)."""
    start = (i // block) * block
    size = min(block, n - start)
    return start + (i - start - 1) % size


def _hand_kl_row(i, block=B):
    """Row i's prompt + its donor's completion, cut to T, right-padded."""
    row, donor = SOURCE[i], SOURCE[_hand_donor(N, i, block)]
    prompt = row["ids"][(row["mask"] == 1) & (row["response_mask"] == 0)].tolist()
    comp = donor["ids"][donor["response_mask"] == 1].tolist()
    full = (prompt + comp)[:T]
    ids, mask, resp = np.zeros(T, np.int32), np.zeros(T, np.int32), np.zeros(T, np.int32)
    ids[:len(full)], mask[:len(full)], resp[len(prompt):len(full)] = full, 1, 1
    return ids, mask, resp


def _hand_logps(params, ids, mask, resp):
    """sum_t log p(ids[t] | ids[<t]) over the completion tokens, row by row (float64)."""
    logp = np.asarray(jax.nn.log_softmax(APPLY(params, ids, mask), -1), np.float64)
    return np.array([sum(logp[r, t - 1, ids[r, t]] for t in range(1, T) if resp[r, t])
                     for r in range(len(ids))])


def _rows(indices):
    ids, mask, resp = (np.stack([SOURCE[i][k] for i in indices])
                       for k in ("ids", "mask", "response_mask"))
    kl = [np.stack(x) for x in zip(*(_hand_kl_row(i) for i in indices))]
    return (ids, mask, resp), kl


def _hand_loss(params, indices, ref_params=REF):
    """The KTO loss of the rows `indices`, the KL over their fixed (dataset-order) donors."""
    rows, kl_rows = _rows(indices)
    pol, ref = _hand_logps(params, *rows), _hand_logps(ref_params, *rows)
    kl = (_hand_logps(params, *kl_rows) - _hand_logps(ref_params, *kl_rows)).mean()
    labels = np.array([bool(SOURCE[i]["label"]) for i in indices])
    losses, _ = kto_loss(jnp.asarray(pol, jnp.float32), jnp.asarray(ref, jnp.float32), labels,
                         kl=kl, **WEIGHTS)
    return float(losses.mean()), kl


def _cfg(steps, **kw):
    return kto.default_config(model=MODEL_CFG, optimizer=dict(learning_rate=3e-2),
                              train=dict(steps=steps, batch_size=B, checkpoint_every=1,
                                         log_every=1, progress=False),
                              **WEIGHTS, **{"kl_pairs": "dataset", **kw})


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if "train/loss" in line]


def test_fixed_donors_rotate_within_dataset_blocks_and_build_the_batch_kl_rows():
    donors = dataset_kl_donors(N, B)
    np.testing.assert_array_equal(donors, [3, 0, 1, 2, 7, 4, 5, 6, 9, 8])
    np.testing.assert_array_equal(donors, [_hand_donor(N, i, B) for i in range(N)])
    np.testing.assert_array_equal(dataset_kl_donors(8, 4), kl_donors(8, 4))  # whole blocks
    assert dataset_kl_donors(9, 4)[-1] == 8  # a one-row block is its own donor (TRL)
    with pytest.raises(ValueError, match="block_size must be an int >= 2, got 1"):
        dataset_kl_donors(N, 1)
    src = KLRowsSource(SOURCE, B)
    records = src.__getitems__(range(N))
    for i in range(N):
        ids, mask, resp = _hand_kl_row(i)
        for record in (records[i], src[i]):
            np.testing.assert_array_equal(record["kl_mask"], mask)
            np.testing.assert_array_equal(record["kl_response_mask"], resp)
            # past the valid tokens a KL row keeps its own ids (masked), as mismatched_rows
            np.testing.assert_array_equal(np.where(mask == 1, record["kl_ids"], 0), ids)
    # a whole block's fixed KL rows are the in-batch rotation of that block
    block = {k: np.stack([SOURCE[i][k] for i in range(4, 8)])
             for k in ("ids", "mask", "response_mask")}
    for got, field in zip(mismatched_rows(block["ids"], block["mask"], block["response_mask"]),
                          KL_FIELDS):
        np.testing.assert_array_equal(got, np.stack([records[i][field] for i in range(4, 8)]))


def test_precomputed_batch_gives_the_loss_of_fixed_donors_and_the_reference():
    """The store's values are the reference's log-probs of each row and of its fixed KL row;
    the loss on a batch carrying them equals the hand-computed one with the fixed donors and
    the loss with the same KL rows and the reference run in the step (kto and APO-zero)."""
    forward = kto.reference_forward(MODEL.apply)
    inputs, outputs = kto.reference_fields("kto")
    pre = precompute_row_logps(forward, REF, KLRowsSource(SOURCE, B), input_fields=inputs,
                               output_fields=outputs, batch_size=B)
    (ids, mask, resp), kl_rows = _rows(range(N))
    np.testing.assert_allclose(pre.logps[:, 0], _hand_logps(REF, ids, mask, resp), rtol=1e-5)
    np.testing.assert_allclose(pre.logps[:, 1], _hand_logps(REF, *kl_rows), rtol=1e-5)
    indices = [5, 0, 9, 2, 7, 4, 8, 3]  # a shuffled batch: donors outside it too
    batch = {k: np.stack([np.asarray(r[k]) for r in pre.__getitems__(indices)])
             for k in pre[0]}
    fn = jax.jit(kto.make_kto_loss(MODEL.apply, **WEIGHTS))
    loss, metrics = fn(POLICY, batch, None, None)
    expected, kl = _hand_loss(POLICY, indices)
    assert kl > 0  # z0 is not clamped away: the KL rows move the loss
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # atol: the KL is a small mean of differences of float32 sequence log-probs of about -20
    # (rounding ~1e-6 absolute), as in test_kto
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5, atol=2e-6)
    in_step = {k: v for k, v in batch.items() if k not in outputs}
    loss_ref, metrics_ref = fn(POLICY, in_step, None, REF)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl"], metrics_ref["kl"], rtol=1e-5, atol=2e-6)
    with pytest.raises(ValueError, match="without kl_ref_logps"):
        fn(POLICY, {k: v for k, v in batch.items() if k != "kl_ref_logps"}, None, None)
    # APO-zero: one column, no KL rows
    apo = kto.make_kto_loss(MODEL.apply, loss_type="apo_zero_unpaired", **WEIGHTS)
    inputs, outputs = kto.reference_fields("apo_zero_unpaired")
    pre = precompute_row_logps(kto.reference_forward(MODEL.apply, loss_type="apo_zero_unpaired"),
                               REF, SOURCE, input_fields=inputs, output_fields=outputs,
                               batch_size=B)
    batch = {k: np.stack([np.asarray(r[k]) for r in pre.__getitems__(indices)])
             for k in pre[0]}
    in_step = {k: v for k, v in batch.items() if k != "ref_logps"}
    np.testing.assert_allclose(apo(POLICY, batch, None, None)[0],
                               apo(POLICY, in_step, None, REF)[0], rtol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Precomputed: 1 step then resumed to 2 (one workdir), and 2 straight on a 1-device mesh;
    the same fixed donors with the reference in the step, 2 straight."""
    root = tmp_path_factory.mktemp("kto_precompute")
    out = {}
    pre = dict(precompute_ref_logps=True, mesh=dict(data=1))  # the pass runs on the mesh
    for name, steps, kw in (("first", 1, pre), ("resumed", 2, pre), ("straight", 2, pre),
                            ("in_step", 2, {})):
        workdir = str(root / ("resumed" if name == "first" else name))
        out[name] = kto.train(_cfg(steps, **kw), workdir, train_source=SOURCE, ref_params=REF,
                              seed=SEED)
        out[name]["rows"] = _metrics(workdir)
    return out


def _batches(steps):
    it = iter(common.make_iterator(SOURCE, batch_size=B, seed=SEED))
    return [np.asarray(next(it)["index"]).tolist() for _ in range(steps)]


def test_recipe_losses_are_the_hand_losses_with_fixed_donors(runs):
    """Step 1 (the policy is the reference: 1/2 of each example's weight) and step 2 (after one
    update) are the hand-computed losses of the recipe's shuffled batches with the fixed
    donors and the reference's log-probs."""
    first, second = _batches(2)
    rows = runs["straight"]["rows"]
    expected, kl = _hand_loss(REF, first)
    assert kl == 0.0
    np.testing.assert_allclose(rows[0]["train/loss"], expected, rtol=1e-5)
    expected, kl = _hand_loss(runs["first"]["params"], second)
    assert kl > 0.05  # z0 moves the loss
    np.testing.assert_allclose(rows[1]["train/loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(rows[1]["train/kl"], kl, rtol=1e-5, atol=2e-6)


def test_precomputed_equals_the_in_step_reference_with_the_same_donors(runs):
    a, b = runs["straight"], runs["in_step"]
    assert "precomputed" not in b
    for key in ("train/loss", "train/kl", "train/grad_norm", "train/rewards_desirable"):
        np.testing.assert_allclose([r[key] for r in a["rows"]], [r[key] for r in b["rows"]],
                                   rtol=1e-5, atol=2e-6)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_resume_reads_the_stored_reference_logps(runs):
    first, resumed, straight = runs["first"], runs["resumed"], runs["straight"]
    assert first["precomputed"]["computed"] == N
    assert resumed["precomputed"] == {"directory": first["precomputed"]["directory"],
                                      "computed": 0}
    assert os.path.exists(os.path.join(first["precomputed"]["directory"], "ref_logps.npy"))
    assert resumed["fit"].resumed_from == 1 and resumed["fit"].compiles == 1
    assert [r["train/loss"] for r in resumed["rows"]] == [r["train/loss"]
                                                          for r in straight["rows"]]
    for x, y in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(straight["params"])):
        np.testing.assert_array_equal(x, y)


def test_config_errors(monkeypatch):
    with pytest.raises(ValueError, match="kto config: precompute_ref_logps needs "
                                         "kl_pairs='dataset'"):
        kto.validate(_cfg(1, precompute_ref_logps=True, kl_pairs="batch"))
    with pytest.raises(ValueError, match="precomputed log-probs cannot follow it"):
        kto.validate(_cfg(1, precompute_ref_logps=True, sync_ref={"alpha": 0.5, "steps": 1}))
    with pytest.raises(ValueError, match="kl_pairs='dataset' with loss_type "
                                         "'apo_zero_unpaired', which has no KL rows"):
        kto.validate(_cfg(1, loss_type="apo_zero_unpaired"))
    with pytest.raises(ValueError, match="unknown kl_pairs 'datset'; did you mean 'dataset'"):
        kto.validate(_cfg(1, kl_pairs="datset"))
    with pytest.raises(ValueError, match="blocks of 1 row"):
        kto.validate(kto.default_config(kl_pairs="dataset",
                                        train=dict(batch_size=2, grad_accum_steps=2)))
    # blocks need not divide the batch; APO-zero precomputes without KL rows
    assert kto.validate(_cfg(1, kl_group_size=3))["kl_group_size"] == 3
    kto.validate(_cfg(1, loss_type="apo_zero_unpaired", kl_pairs="batch",
                      precompute_ref_logps=True))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="kto config: precompute_ref_logps runs in one process"):
        kto.train(_cfg(1, precompute_ref_logps=True), "/nonexistent", train_source=SOURCE,
                  ref_params=REF)
