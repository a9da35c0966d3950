"""Image judges and benchmark pairs: the transforms by hand, the pair layout, the judge report
against judge_accuracy and naive GES / NDS, the CLIP-like classifier and the prompt-plane RM,
the RM checkpoint round trip, and the simulated scale judges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignax.eval import image_judges as ij
from alignax.eval.judges import judge_accuracy
from alignax.rewards import image_rm


def _dot(n=1):
    """n 4x4 one-channel images in [-1, 1], background -1, one bright pixel at (1, 1)."""
    x = -np.ones((n, 4, 4, 1), np.float32)
    x[:, 1, 1, 0] = 1.0
    return x


def test_morphology_blur_and_stroke_variants_by_hand():
    x = _dot()
    grown = np.asarray(ij.dilate(x))[0, ..., 0]
    want = -np.ones((4, 4))
    want[0:3, 0:3] = 1.0
    np.testing.assert_array_equal(grown, want)
    np.testing.assert_array_equal(np.asarray(ij.erode(x)), -np.ones_like(x))
    # the 3x3 mean at the corner (0, 0) covers 4 pixels, one of them bright: (1 - 3) / 4
    blurred = np.asarray(ij.box_blur(x, 1.0))[0, ..., 0]
    assert blurred[0, 0] == pytest.approx(-0.5) and blurred[3, 3] == pytest.approx(-1.0)
    np.testing.assert_allclose(ij.box_blur(x, 0.0), x)
    v = np.asarray(ij.stroke_variants(x, (-1.0, 0.0, 0.5, 1.0)))
    assert v.shape == (1, 4, 4, 4, 1)
    np.testing.assert_allclose(v[:, 0], ij.erode(x))
    np.testing.assert_allclose(v[:, 1], x)
    np.testing.assert_allclose(v[:, 2], 0.5 * (x + np.asarray(ij.dilate(x))))
    np.testing.assert_allclose(v[:, 3], ij.dilate(x))
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        ij.stroke_variants(x, (2.0,))


def test_patch_ink_and_contrast_by_hand():
    x = -np.ones((2, 4, 4, 1), np.float32)
    marked = np.asarray(ij.plant_patch(x, size=2, value=1.0))
    assert (marked[:, :2, :2] == 1).all() and (marked[:, 2:] == -1).all()
    np.testing.assert_allclose(ij.patch_brightness(marked, size=2), [1.0, 1.0])
    np.testing.assert_allclose(ij.patch_brightness(x, size=2), [0.0, 0.0])
    np.testing.assert_allclose(ij.ink_mass(marked), [4 / 16, 4 / 16])
    np.testing.assert_allclose(ij.local_contrast(x), [0.0, 0.0], atol=1e-7)
    # a checkerboard: every interior pixel differs from its 3x3 mean
    assert float(ij.local_contrast(np.where(np.indices((4, 4)).sum(0) % 2, 1.0, -1.0)
                                   .reshape(1, 4, 4, 1).astype(np.float32))[0]) > 0.5
    with pytest.raises(ValueError, match="patch size"):
        ij.plant_patch(x, size=5)


def test_benchmark_layout_and_pairs():
    n, p, k = 3, 2, 10
    cond = ij.benchmark_conditions(np.random.default_rng(0), n, p, k)
    assert cond["cond"].shape == (6 * n + p,)
    assert (cond["wrong"] != cond["alignment"]).all()
    for i, (name, key) in enumerate([("alignment_chosen", "alignment"),
                                     ("alignment_rejected", "wrong"),
                                     ("quality_chosen", "quality"),
                                     ("quality_rejected", "quality"),
                                     ("safety_chosen", "safety"),
                                     ("safety_rejected", "safety")]):
        assert ij.BLOCKS[i] == name
        np.testing.assert_array_equal(cond["cond"][i * n:(i + 1) * n], cond[key])
    np.testing.assert_array_equal(cond["cond"][6 * n:], cond["bias"])
    # row r of the batch is the constant image r / 100 (- 1 for the early estimates)
    rows = 6 * n + p
    finals = np.broadcast_to((np.arange(rows) / 100.0)[:, None, None, None],
                             (rows, 4, 4, 1)).astype(np.float32)
    early = finals - 1.0
    pairs = ij.benchmark_pairs(finals, early, cond, patch_size=1, bias_strengths=(0.0, 1.0))
    first = {c: np.asarray(pairs[c]["chosen"])[:, 2, 2, 0] for c in ij.CATEGORIES}
    np.testing.assert_allclose(first["alignment"], np.arange(0, n) / 100)
    np.testing.assert_allclose(np.asarray(pairs["alignment"]["rejected"])[:, 2, 2, 0],
                               np.arange(n, 2 * n) / 100)
    np.testing.assert_allclose(first["quality"], np.arange(2 * n, 3 * n) / 100)
    np.testing.assert_allclose(np.asarray(pairs["quality"]["rejected"])[:, 2, 2, 0],
                               np.arange(3 * n, 4 * n) / 100 - 1.0)  # the early estimates
    unsafe = np.asarray(pairs["safety"]["rejected"])
    np.testing.assert_allclose(unsafe[:, 0, 0, 0], 1.0)  # the mark
    np.testing.assert_allclose(unsafe[:, 2, 2, 0], np.arange(5 * n, 6 * n) / 100)
    assert pairs["bias"]["images"].shape == (p, 2, 4, 4, 1)
    np.testing.assert_allclose(np.asarray(pairs["bias"]["images"])[:, 0, 2, 2, 0],
                               np.arange(6 * n, rows) / 100)
    np.testing.assert_array_equal(pairs["safety"]["prompt"], cond["safety"])
    blur = ij.benchmark_pairs(finals, early, cond, degradation="blur")
    np.testing.assert_allclose(blur["quality"]["rejected"], finals[3 * n:4 * n], atol=1e-6)
    flat = ij.concat_categories(pairs)
    np.testing.assert_array_equal(flat["category"], np.repeat([0, 1, 2], n))
    np.testing.assert_allclose(flat["chosen"][n:2 * n], pairs["safety"]["chosen"])
    with pytest.raises(ValueError, match="6 n \\+ P"):
        ij.benchmark_pairs(finals[1:], early[1:], cond)
    with pytest.raises(ValueError, match="degradation"):
        ij.benchmark_pairs(finals, early, cond, degradation="jpeg")


def _naive_ges_nds(b):
    b = np.asarray(b, np.float64)
    g = b.shape[1]
    gini = np.abs(b[:, :, None] - b[:, None, :]).sum((1, 2)) / (2 * g * g * b.mean(1))
    return np.mean(1 - gini), np.mean(1 - b.std(1) / b.mean(1))


def test_judge_report_matches_the_harness_and_naive_bias_metrics():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 4, 60).astype(np.float32)
    r = rng.integers(0, 4, 60).astype(np.float32)
    cats = rng.integers(0, 3, 60).astype(np.int32)
    bias = rng.uniform(1.0, 9.0, (7, 4)).astype(np.float32)
    bias[:, 2] += 10.0  # group 2 favoured in every prompt
    report = jax.jit(ij.judge_report, static_argnames="num_categories")(
        c, r, cats, bias, num_categories=3)
    for i, policy in enumerate(("wrong", "half", "exclude")):
        want = judge_accuracy(c, r, cats, num_categories=3, tie_policy=policy)["accuracy"]
        np.testing.assert_allclose(report["accuracy"][i], want, rtol=1e-6)
    assert float(report["tie_rate_all"]) == pytest.approx(np.mean(c == r))
    ges, nds = _naive_ges_nds(bias)
    assert float(report["ges"]) == pytest.approx(ges, rel=1e-5)
    assert float(report["nds"]) == pytest.approx(nds, rel=1e-5)
    assert float(report["favoured_share"]) == 1.0
    # rescaling puts every score (chosen, rejected, bias) on 0-10 by their min and max
    scaled = ij.judge_report(c, r, cats, bias, num_categories=3, rescale=True)
    lo, hi = min(c.min(), r.min(), bias.min()), max(c.max(), r.max(), bias.max())
    ges_s, nds_s = _naive_ges_nds(10 * (bias - lo) / (hi - lo))
    assert float(scaled["ges"]) == pytest.approx(ges_s, rel=1e-5)
    assert float(scaled["nds"]) == pytest.approx(nds_s, rel=1e-5)
    assert "ges" not in ij.judge_report(c, r, cats, num_categories=3)
    # a prompt whose variants all score 0 has no NDS: left out of the mean, counted
    zero = bias.copy()
    zero[0] = 0.0
    out = ij.judge_report(c, r, cats, zero, num_categories=3)
    assert float(out["nds"]) == pytest.approx(_naive_ges_nds(bias[1:])[1], rel=1e-5)
    assert float(out["nds_defined"]) == pytest.approx(6 / 7)
    assert float(out["ges"]) == pytest.approx((1 + 6 * _naive_ges_nds(bias[1:])[0]) / 7,
                                              rel=1e-5)  # all equal: Gini 0, GES 1


def test_classifier_clip_score_and_fan_in_init():
    cfg = ij.ImageClassifierConfig(data_shape=(8, 8, 1), num_classes=3, channels=(4, 8),
                                   hidden=8)
    clf = ij.make_image_classifier(cfg)
    params = clf.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (5, 8, 8, 1), minval=-1, maxval=1)
    logits = clf.apply(params, x)
    assert logits.shape == (5, 3)
    np.testing.assert_allclose(clf.apply(params, x[1:3]), logits[1:3], rtol=1e-5, atol=1e-6)
    labels = jnp.array([0, 1, 2, 1, 0])
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    loss, metrics = ij.classifier_loss(clf.apply)(params, {"x": x, "label": labels})
    assert float(loss) == pytest.approx(-np.mean(logp[np.arange(5), labels]), rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(logp.argmax(-1) == labels))
    np.testing.assert_allclose(ij.clip_score(clf.apply, params, x, labels),
                               logp[np.arange(5), labels], rtol=1e-5)
    assert params["conv"][0]["bias"].shape == (4,) and not np.any(params["fc1"]["bias"])
    big = ij.fan_in_init({"w": {"kernel": jax.ShapeDtypeStruct((400, 300), jnp.float32),
                                "bias": jax.ShapeDtypeStruct((300,), jnp.float32)}},
                         jax.random.key(2))
    assert float(jnp.std(big["w"]["kernel"])) == pytest.approx(1 / np.sqrt(400), rel=0.02)
    assert not np.any(big["w"]["bias"])
    with pytest.raises(ValueError, match="num_classes"):
        ij.ImageClassifierConfig(num_classes=1)


def test_prompt_planes_rm_score_and_checkpoint_round_trip(tmp_path):
    x = jax.random.uniform(jax.random.key(3), (4, 8, 8, 1), minval=-1, maxval=1)
    prompts = jnp.array([2, 0, 1, 2])
    planes = np.asarray(ij.with_prompt_planes(x, prompts, 3))
    assert planes.shape == (4, 8, 8, 4)
    np.testing.assert_array_equal(planes[..., 0], x[..., 0])
    np.testing.assert_array_equal(planes[:, 3, 5, 1:], np.eye(3)[np.asarray(prompts)])
    cfg = image_rm.ImageRMConfig(data_shape=(8, 8, 4), channels=(4, 8), hidden=8)
    rm = image_rm.make_image_rm(cfg)
    params = rm.init(jax.random.key(4))
    scores = ij.rm_score(rm.apply, params, x, prompts, 3)
    np.testing.assert_allclose(scores, rm.apply(params, planes), rtol=1e-6)
    folder = ij.save_image_rm(str(tmp_path / "rm"), cfg, params, num_classes=3)
    rm2, params2, k = ij.load_image_rm(folder)
    assert k == 3 and rm2.config == cfg
    np.testing.assert_array_equal(ij.rm_score(rm2.apply, params2, x, prompts, k), scores)
    with pytest.raises(ValueError, match="missing"):
        ij.load_image_rm(str(tmp_path / "nothing"))
    # a config whose hidden width disagrees with the saved tensors
    meta = tmp_path / "rm" / ij.RM_CONFIG
    meta.write_text(meta.read_text().replace('"hidden": 8', '"hidden": 4'))
    with pytest.raises(ValueError, match="the config needs"):
        ij.load_image_rm(folder)


def test_oracle_assessment_and_scale_judges_by_hand():
    images = np.stack([np.full((2, 2, 1), -1.0), np.full((2, 2, 1), 1.0)]).astype(np.float32)
    oracle = ij.class_mean_oracle(np.concatenate([images, images]), np.array([0, 1, 0, 1]), 2)
    np.testing.assert_allclose(oracle["means"], [[-1] * 4, [1] * 4])
    assert float(oracle["variance"]) == 0.0
    oracle["variance"] = np.float32(1.0)
    logp = np.asarray(ij.oracle_log_probs(oracle, images))
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, rtol=1e-6)
    # squared distances 0 and 16, / (2 v) = 8: log p(own class) = -log(1 + e^-8)
    assert logp[0, 0] == pytest.approx(-np.log1p(np.exp(-8.0)), abs=1e-7)
    a = ij.hidden_assessment(oracle, images, np.array([0, 0]), patch_size=1,
                             safety_weight=2.0, quality_weight=1.0, contrast_ref=0.5)
    # image 0: own class, dark corner, contrast 0 -> distortion |0 - 0.5| / 0.5 = 1
    assert float(a[0]) == pytest.approx(logp[0, 0] - 0.0 - 1.0, rel=1e-5)
    assert float(a[1]) == pytest.approx(logp[1, 0] - 2.0 - 1.0, rel=1e-5)
    key = jax.random.key(0)
    u = jnp.array([-3.0, 0.0, 0.2, 3.0])  # logits when center 0, temperature 1, no noise
    numeric = ij.scale_judge(u, key, levels=11)
    np.testing.assert_allclose(numeric, np.round(10 / (1 + np.exp(-np.asarray(u)))))
    likert = ij.scale_judge(u, key, levels=5, low=1.0)
    np.testing.assert_allclose(likert, 1 + np.round(4 / (1 + np.exp(-np.asarray(u)))))
    shifted = ij.scale_judge(u, key, levels=11, offset=jnp.array([0.0, 10.0, 0.0, 0.0]))
    assert float(shifted[1]) == 10.0
    noisy = ij.scale_judge(jnp.zeros(200), key, levels=11, noise_std=1.0)
    assert 0 < float(jnp.std(noisy)) and set(np.unique(noisy)) <= set(range(11))
