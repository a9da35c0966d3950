"""experiments/self_prm.py:real on the tiny world of the `:real` tests: one GRPO iteration with
the outcome reward on a tiny random checkpoint, then Self-PRM (the policy's own mean step
log-probs) over its sampled solutions of the held-out prompts; the token-to-step split by hand;
the one-line config errors."""

import json
import os

import numpy as np
import pytest

from alignax import cli, experiment
from tests.experiments import REPO, run_real, write_real_world

pytest.importorskip("datasets")

SPEC = os.path.join(REPO, "experiments", "self_prm.py:real")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_real_world(tmp_path_factory.mktemp("real"))


@pytest.mark.slow  # an end-to-end :real run (system tier)
def test_real_grpo_then_self_prm_selection(world, tmp_path):
    summary = run_real("self_prm", world, tmp_path, "prompts", "--config.data.max_length=12",
                       "--config.data.step_separator= w0", "--config.with_rl=True",
                       "--config.rl.iterations=1",
                       "--config.rl.prompts_per_iteration=2", "--config.rl.num_samples=2",
                       "--config.rl.max_new_tokens=4", "--config.rl.eval_every=1",
                       "--config.rl.progress=False", "--config.vote.num_samples=3",
                       "--config.vote.max_new_tokens=6", "--config.vote.max_steps=4")
    assert summary["claims"] == []
    m = {k: v["mean"] for k, v in summary["results"]["default"]["metrics"].items()}
    for split in ("val", "test"):
        for rule in ("majority", "self_rerank", "self_vote", "coverage", "sample"):
            assert 0.0 <= m[f"{split}_{rule}_accuracy"] <= 1.0, (split, rule)
        for rule in ("majority", "self_rerank", "self_vote"):
            assert m[f"{split}_{rule}_accuracy"] <= m[f"{split}_coverage_accuracy"]
    assert 1.0 <= m["mean_steps"] <= 4.0
    assert m["rl_chosen_iteration"] in (0.0, 1.0)
    with open(tmp_path / "self_prm" / "default" / "seed_0" / "selection.json") as f:
        assert json.load(f)["metric"] == "eval/val_greedy_accuracy"


def test_token_step_ids_by_hand(world):
    from alignax.algorithms import real

    module = experiment.load_module(SPEC.rsplit(":", 1)[0])
    config = module.get_config("real")
    with config.unlocked():
        config.model.path = world["lm"]
    tok = real.tokenizer(config)
    tokens = [tok.encode(w)[0] for w in "w3 w4 w0 w5 w0 w6 w7".split()]
    # the separator " w0" closes a step: [w3 w4 w0] [w5 w0] [w6 w7]
    ids = module.token_step_ids(tok, tokens, " w0", max_steps=4)
    assert ids.tolist() == [0, 0, 0, 1, 1, 2, 2]
    # steps past max_steps - 1 count in no step
    assert module.token_step_ids(tok, tokens, " w0", max_steps=2).tolist() == [0, 0, 0, 1, 1,
                                                                              -1, -1]


@pytest.mark.parametrize("override, message", [
    ("--config.vote.aggregation=max", "vote.aggregation='max' must be one of"),
    ("--config.vote.max_steps=0", "vote.max_steps=0 must be >= 1"),
    ("--config.vote.num_samples=0", "vote.num_samples=0 must be a positive int"),
])
def test_real_config_errors_are_one_line(world, tmp_path, capsys, override, message):
    argv = ["run", SPEC, "--workdir", str(tmp_path / "x"), f"--config.model.path={world['lm']}",
            f"--config.data.path={world['prompts']}", override]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert cli.main(["run", SPEC, "--workdir", str(tmp_path / "y")]) != 0
    assert "model.path is required by the :real config" in capsys.readouterr().err


def test_toy_pieces_by_hand():
    """The toy's template filling and its gold first errors agree with `chains`."""
    import jax.numpy as jnp

    from alignax.tasks import chains as ch

    module = experiment.load_module(SPEC.rsplit(":", 1)[0])
    chains = ch.sample_chains(6, rng=np.random.default_rng(0), num_steps=(2, 4))
    values = ch.corrupt(chains, 1, rng=np.random.default_rng(1))[0]
    empty, full = module.rows(chains), module.rows(chains, values)
    filled = module.write_results(jnp.asarray(empty["ids"]), jnp.asarray(empty["rpos"]),
                                  jnp.asarray(empty["k"]), jnp.asarray(values))
    np.testing.assert_array_equal(np.asarray(filled), full["ids"])
    ok = module._process_correct({k: jnp.asarray(v) for k, v in full.items()},
                                 jnp.asarray(values), 10)
    assert np.asarray(ok).tolist() == (ch.first_error(chains, values) == chains.num_steps
                                       ).tolist()
