"""waltzrl's `:real` config: two-stage WaltzRL GRPO of the tiny random Qwen2-style checkpoint
(tests/experiments write_real_world) in both roles, on safety prompts with a `label` column
written here; plus the waltz rollout's role rows on that checkpoint and the config's one-line
errors."""

import os

import jax
import numpy as np
import pytest

from alignax.experiment import load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

# the tiny tokenizer knows only w0..w25 (whitespace-split words): the role prompts, the label
# markers and the refusal marker are words, so that the random model's turns often hold them
WORDS = ["--config.waltz.feedback_instruction=w7 w8", "--config.waltz.revision_instruction=w9",
         "--config.waltz.label_markers.none=w20", "--config.waltz.label_markers.unsafe=w21",
         "--config.waltz.label_markers.overrefuse=w22", "--config.judge.refusal_markers=('w3',)"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_waltz")
    out = write_real_world(root)
    rng = np.random.default_rng(2)
    datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": " ".join(f"w{i}" for i in rng.integers(0, 8, 3))}],
         "label": "harmful" if i % 2 else "benign"} for i in range(16)]
    ).save_to_disk(str(root / "safety"))
    out["safety"] = str(root / "safety")
    return out


def _module():
    return load_module(os.path.join(REPO, "experiments", "waltzrl.py"))


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_waltzrl_runs_both_stages(world, tmp_path):
    summary = run_real(
        "waltzrl", world, tmp_path, "safety", *WORDS, "--config.waltz.turn_tokens=3",
        "--config.waltz.stage1_iterations=1", "--config.grpo.iterations=1",
        "--config.grpo.prompts_per_iteration=2", "--config.grpo.num_samples=2",
        "--config.grpo.eval_every=1", "--config.data.max_length=16")
    assert summary["claims"] == []
    metrics = summary["results"]["default"]["metrics"]
    for name in ("reward", "unsafe", "overrefuse", "trigger_benign", "label_accuracy"):
        assert f"test_{name}" in metrics and f"test_ref_{name}" in metrics, name
    for name in ("reward", "label_accuracy"):
        assert 0.0 <= metrics[f"test_{name}"]["mean"] <= 1.0
    # both stages trained, stage 2 with the eval that chose the iteration
    run = tmp_path / "waltzrl" / "default" / "seed_0"
    assert (run / "stage1" / "metrics.jsonl").exists()
    assert (run / "stage2" / "metrics.jsonl").exists() and (run / "selection.json").exists()


@pytest.mark.slow  # an end-to-end training run: the system tier (make test-slow)
def test_waltz_rollout_role_rows_on_the_checkpoint(world):
    """Three role rows per trajectory, sharing ids; their masks split the policy's tokens; the
    rollout's log-probs are the model's (recomputed by the training forward)."""
    from alignax.algorithms import online, pretrained
    from alignax.algorithms import two_agent as ta
    from alignax.data import HFTokenizer

    model, params = pretrained.model_and_params({"path": world["lm"]}, "lm")
    tok = HFTokenizer.from_file(world["lm"])
    markers = {"none": "w20", "unsafe": "w21", "overrefuse": "w22"}
    roll = ta.make_waltz_rollout(model, tok, num_samples=3, turn_tokens=3,
                                 feedback_instruction="w7 w8", revision_instruction="w9",
                                 label_markers=markers, temperature=1.0, pad_id=tok.pad_id)
    ids = np.array([[1, 2, 3], [0, 4, 5]])
    out = roll(params, ids, ids > 0, jax.random.key(0))
    assert out.ids.shape[0] == 2 * 3 * 3 and out.response_len == roll.response_len
    roles = ta.row_roles(18, 3)
    mask = np.asarray(out.response_mask)
    ids_all = np.asarray(out.ids)
    for b in range(2):
        rows = [np.flatnonzero((np.arange(18) // 9 == b) & (roles == k)) for k in range(3)]
        np.testing.assert_array_equal(ids_all[rows[0]], ids_all[rows[1]])
        np.testing.assert_array_equal(ids_all[rows[0]], ids_all[rows[2]])
        assert mask[rows[0]].sum(1).min() >= 1 and mask[rows[1]].sum(1).min() >= 1
        assert not (mask[rows[0]] & mask[rows[1]]).any()
    texts = ta.trajectory_texts(tok, out, 3)
    flagged = [ta.parse_label(t, markers) in (1, 2) for t in texts["feedback"]]
    assert [bool(t) for t in texts["revision"]] == flagged
    logps = online.response_logps(model.apply, params, out.ids, out.mask, out.response_len)
    np.testing.assert_allclose(np.where(mask, logps, 0.0), out.old_logps, atol=1e-4)


@pytest.mark.parametrize("override, message", [
    ("--config.waltz.turn_tokens=0", "waltz.turn_tokens"),
    ("--config.waltz.stage1_iterations=-1", "waltz.stage1_iterations"),
    ("--config.waltz.label_markers.unsafe= ", "waltz.label_markers.unsafe"),
    ("--config.judge.refusal_markers=('',)", "judge.refusal_markers"),
])
def test_real_config_errors_name_the_key(override, message, tmp_path):
    from alignax import cli

    code = cli.main(["run", os.path.join(REPO, "experiments", "waltzrl.py:real"),
                     "--workdir", str(tmp_path), "--config.model.path=/nowhere",
                     "--config.data.path=/nowhere", override])
    assert code != 0
    mod = _module()
    cfg = mod.get_config("real")
    cfg.model.path, cfg.data.path = "/m", "/d"
    key, _, value = override[len("--config."):].partition("=")
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = eval(value) if value.startswith("(") else (
        int(value) if value.lstrip("-").isdigit() else value)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        mod.validate(cfg)
