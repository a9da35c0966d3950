"""The protocol claims of bt_dpo_synthetic, grpo_arithmetic and rlhf_frontier on made-up
per-seed results (no training): kinds, papers, paired intervals and what each claim reads."""

import os

import numpy as np
import pytest

from alignax import experiment as ex
from alignax import protocol
from alignax.experiment import aggregate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module(name):
    return ex.load_module(os.path.join(REPO, "experiments", f"{name}.py"))


def _results(per_variant: dict) -> dict:
    return {v: {"per_seed": seeds, "metrics": aggregate(seeds)} for v, seeds in per_variant.items()}


def test_bt_dpo_claims_name_the_dpo_paper_and_read_test_metrics():
    m = _module("bt_dpo_synthetic")
    rng = np.random.default_rng(0)
    seeds = {s: {"test_rm_gold_accuracy": 0.9 + 0.01 * rng.standard_normal(),
                 "test_rm_label_accuracy": 0.87, "rm_chosen_step": 400.0,
                 "test_dpo_gold_reward": 1.4 + 0.02 * rng.standard_normal(),
                 "test_ref_gold_reward": 0.1 + 0.02 * rng.standard_normal(),
                 "dpo_chosen_step": 300.0, "test_dpo_kl_ref": 12.0,
                 "test_dpo_gold_reward_last_step": 1.4, "test_dpo_kl_ref_last_step": 12.0}
             for s in range(5)}
    claims = m.claims(_results({"default": seeds}))
    assert [c.kind for c in claims] == [protocol.THRESHOLD, protocol.COMPARATIVE]
    assert [c.status for c in claims] == [protocol.PASS, protocol.PASS]
    assert claims[0].paper == m.RM_PAPER == "Ouyang et al. 2022 (BT reward model)"
    assert claims[1].paper == m.DPO_PAPER == "Rafailov et al. 2023 (DPO)"
    # DPO no better than the reference: the paired interval straddles 0
    for s, row in seeds.items():
        row["test_dpo_gold_reward"] = row["test_ref_gold_reward"] + (0.01 if s % 2 else -0.01)
    assert m.claims(_results({"default": seeds}))[1].status == protocol.INCONCLUSIVE
    assert m.claims(_results({"default": {0: {"test_rm_label_accuracy": 0.7}}})) == []  # a file


def test_grpo_claim_is_a_paired_interval_over_seeds():
    m = _module("grpo_arithmetic")
    gains = [0.05, 0.04, 0.06, 0.05, 0.007]
    seeds = {s: {"test_grpo_accuracy": 0.6 + g, "test_sft_accuracy": 0.6,
                 "sft_chosen_steps": 400.0, "grpo_chosen_iteration": 160.0,
                 "test_grpo_accuracy_last_iteration": 0.6}
             for s, g in enumerate(gains)}
    (claim,) = m.claims(_results({"default": seeds}))
    assert claim.kind == protocol.COMPARATIVE and claim.status == protocol.PASS
    assert claim.n == 5 and claim.mean == pytest.approx(np.mean(gains))
    seeds[4]["test_grpo_accuracy"] = 0.4  # one seed loses a lot: the interval reaches below 0
    assert m.claims(_results({"default": seeds}))[0].status == protocol.INCONCLUSIVE


def _frontier_seed(ref, peak, final, proxy_peak, proxy_final):
    return {"test_ref_gold": ref, "test_gold_at_peak": peak, "test_final_gold": final,
            "test_peak_gold_gain": peak - ref, "test_gold_drop_from_peak": peak - final,
            "test_proxy_at_peak": proxy_peak, "test_final_proxy": proxy_final,
            "test_proxy_gain": proxy_final - 0.2, "peak_iteration": 30.0,
            "test_kl_at_peak": 5.0, "test_final_kl": 10.0}


def test_frontier_drop_is_decided_per_seed_and_proxy_rise_is_sanity():
    m = _module("rlhf_frontier")
    rng = np.random.default_rng(1)
    grpo = {s: _frontier_seed(0.1, 0.8, 0.5 + 0.05 * rng.standard_normal(), 3.6, 4.1)
            for s in range(5)}
    ppo = {s: _frontier_seed(0.1, 0.7, 0.68, 2.0, 3.0) for s in range(5)}
    bon = {s: {"test_proxy_gain": 4.0} for s in range(5)}
    claims = m.claims(_results({"grpo": grpo, "ppo": ppo, "bon": bon}))
    assert [c.kind for c in claims] == [protocol.SANITY, protocol.COMPARATIVE,
                                        protocol.COMPARATIVE]
    assert all(c.status == protocol.PASS for c in claims)
    assert not claims[0].counted
    margins = [r["test_gold_drop_from_peak"] - 0.1 * r["test_peak_gold_gain"]
               for r in grpo.values()]
    assert claims[1].mean == pytest.approx(np.mean(margins))
    # gold ends where it peaked: the drop claim fails, whatever the proxy does
    flat = {s: _frontier_seed(0.1, 0.8, 0.8 + 0.01 * (s - 2), 3.6, 4.1) for s in range(5)}
    assert m.claims(_results({"grpo": flat, "bon": bon}))[1].status == protocol.FAIL
