"""experiments/gtalign.py: its `:real` config on the tiny world of the `:real` tests (GRPO from a
tiny random checkpoint with r = sqrt(U L), U from the reward checkpoint, L finished / correct
minus a token cost, against r = U), its one-line errors, and the toy's payoff table (the
dilemma and the predicted pricing flips the steering claim tests)."""

import os

import numpy as np
import pytest

from alignax import cli
from alignax.experiment import load_config, load_module
from tests.experiments import REPO, run_real, write_real_world

datasets = pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "gtalign.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real_gtalign"))


def _module():
    return load_module(SPEC)


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_gtalign_real_reports_welfare_and_user_runs_before_and_after(world, tmp_path):
    summary = run_real("gtalign", world, tmp_path, "prompts", "--config.data.max_length=12",
                       f"--config.rm.path={world['rm']}", "--config.data.answer_field=answer",
                       "--config.rl.eval_every=1", *[f"--config.rl.{k}" for k in (
                           "iterations=2", "prompts_per_iteration=2", "num_samples=2",
                           "max_new_tokens=4", "kl_coef=0.04", "progress=False")])
    assert summary["claims"] == []
    assert set(summary["results"]) == {"welfare", "user"}
    for variant in ("welfare", "user"):
        m = {k: v["mean"] for k, v in summary["results"][variant]["metrics"].items()}
        for split in ("val", "test"):
            for who in ("", "ref_"):
                u, l_, w = (m[f"{split}_{who}{k}"] for k in ("u", "l", "w"))
                assert 0 < u < 1 and 1 <= m[f"{split}_{who}length"] <= 4
                # L: eps + 0.5 finished + 0.5 correct - 0.5 * tokens / 4
                assert 1e-4 - 0.5 - 1e-6 <= l_ <= 1 + 1e-4 + 1e-6
                # mean of sqrt(U L) <= sqrt(mean U * mean L) (Cauchy-Schwarz); 0 where L <= 0
                assert 0 <= w <= np.sqrt(u * max(l_, 0.0)) + 1e-6
        # each variant is chosen on its own reward: W for `welfare`, U for `user`
        own = "w" if variant == "welfare" else "u"
        assert m["val_reward"] == pytest.approx(m[f"val_{own}"], rel=1e-5)
        assert m["chosen_iteration"] in (1.0, 2.0)
        assert os.path.exists(tmp_path / "gtalign" / variant / "seed_0" / "selection.json")


def test_gtalign_real_needs_the_reward_checkpoint(world, tmp_path, capsys):
    code = cli.main(["run", f"{SPEC}:real", "--workdir", str(tmp_path / "a"),
                     f"--config.model.path={world['lm']}",
                     f"--config.data.path={world['prompts']}"])
    err = capsys.readouterr().err
    assert code != 0 and "rm.path is required by the :real config" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["run", f"{SPEC}:real", "--workdir", str(tmp_path / "b"),
                     f"--config.model.path={world['lm']}", f"--config.rm.path={world['rm']}",
                     f"--config.data.path={world['prompts']}",
                     "--config.welfare.user_temperature=0"]) != 0
    assert "welfare.user_temperature=0.0 must be > 0" in capsys.readouterr().err


def test_the_toy_table_has_the_dilemma_and_the_predicted_flips():
    mod = _module()
    config = load_config(mod, None, SPEC)
    concise, verbose, clarify = range(3)
    s = mod.structure(config)
    # L's best action is to clarify everywhere; U hedges ambiguous queries verbosely; W asks
    assert [s[f"best_llm_{c}"] for c in mod.CELLS] == [clarify] * 3
    assert [s[f"best_user_{c}"] for c in mod.CELLS] == [concise, verbose, verbose]
    assert [s[f"best_cobb_douglas_{c}"] for c in mod.CELLS] == [concise, verbose, clarify]
    # the predictions of the steering claim (the module docstring states them)
    assert list(mod.predicted_actions(config, 0.0)) == [concise, verbose, clarify]
    assert list(mod.predicted_actions(config, config.prices.token_cost)) == [
        concise, concise, clarify]
    assert list(mod.predicted_actions(config, config.prices.token_revenue)) == [
        verbose, verbose, verbose]


def test_the_toy_contexts_hide_the_type_of_ambiguous_queries():
    mod = _module()
    config = load_config(mod, "smoke", SPEC)
    ctx = mod.make_contexts(config, 4000, 7)
    np.testing.assert_allclose(ctx["post"].sum(1), 1.0, rtol=1e-5)
    ambiguous = ctx["type"] >= 2
    # the posterior cannot tell the two ambiguous types apart: their ratio is the prior's
    ratio = ctx["post"][:, 3] / ctx["post"][:, 2]
    np.testing.assert_allclose(ratio, config.world.p_detail / (1 - config.world.p_detail),
                               rtol=1e-4)
    # the style signal is centred on 0 for ambiguous queries, on +-1 for clear ones
    assert abs(ctx["x"][ambiguous, 1].mean()) < 0.05
    assert ctx["x"][ctx["type"] == 1, 1].mean() > 0.9 > -0.9 > ctx["x"][ctx["type"] == 0, 1].mean()
    # the written matrix is the table plus noise
    user = np.asarray(config.payoffs.user)
    np.testing.assert_allclose(ctx["u_hat"].mean(0), user, atol=0.01)
    # different data seeds draw different contexts, the same seed the same ones
    first = mod.make_contexts(config, 50, 7)
    np.testing.assert_array_equal(mod.make_contexts(config, 50, 7)["x"], first["x"])
    assert not np.allclose(mod.make_contexts(config, 50, 8)["x"], first["x"])
