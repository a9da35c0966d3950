"""The experiment protocol: intervals over seeds, claim kinds and statuses, paper status, and
what run_experiment records in summary.json."""

import json
import math
import os
import shlex
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from alignax import experiment as ex
from alignax import protocol as pr
from alignax.protocol import Claim

# ---------------------------------------------------------------------------------------------
# t quantiles and intervals


@pytest.mark.parametrize("p, df, expected", [
    # Student t quantiles (R: qt(p, df), 16 digits)
    (0.975, 1, 12.706204736174698), (0.975, 4, 2.7764451051977987),
    (0.975, 9, 2.2621571627409915), (0.975, 29, 2.0452296421327034),
    (0.95, 4, 2.1318467863266495), (0.995, 2, 9.924843200918286),
    (0.5, 3, 0.0), (0.025, 4, -2.7764451051977987),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert pr.t_quantile(p, df) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_t_quantile_matches_scipy_on_a_grid():
    import scipy.stats as stats  # a dependency of jax; alignax itself does not use it
    for df in (1, 2, 3, 4, 5, 7, 10, 30, 100, 1000):
        for p in (0.6, 0.9, 0.95, 0.975, 0.99, 0.999):
            assert pr.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
            assert pr.t_cdf(stats.t.ppf(p, df), df) == pytest.approx(p, rel=1e-12)


def test_mean_interval_t_by_hand():
    iv = pr.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t_{.975,4} * s / sqrt(n)
    assert iv.mean == 3.0 and iv.n == 5 and iv.level == 0.95 and iv.method == "t"
    assert (iv.low, iv.high) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-12)
    one = pr.mean_interval([0.7])
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError, match="non-finite"):
        pr.mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        pr.mean_interval([])


def test_paired_interval_is_the_interval_of_the_differences():
    a, b = [0.9, 0.8, 0.85, 0.95, 0.7], [0.6, 0.65, 0.5, 0.7, 0.55]
    iv = pr.paired_interval(a, b)
    ref = pr.mean_interval(np.subtract(a, b))
    assert iv == ref and iv.mean == pytest.approx(0.24)
    with pytest.raises(ValueError, match="same shape"):
        pr.paired_interval([1.0, 2.0], [1.0])


def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    # 2000 simulated experiments of 5 seeds of normal paired differences (true mean 0.3).
    # Coverage is Binomial(2000, 0.95)/2000: sd = sqrt(0.95 * 0.05 / 2000) = 0.0049, so
    # [0.93, 0.97] is the expected 0.95 +- 4 sd (this fixed draw gives 0.947).
    rng = np.random.default_rng(0)
    a = 1.0 + rng.normal(0.0, 1.0, size=(2000, 5))
    b = 0.7 + rng.normal(0.0, 1.0, size=(2000, 5))
    covered = 0
    for ai, bi in zip(a, b):
        iv = pr.paired_interval(ai, bi)
        covered += iv.low <= 0.3 <= iv.high
    assert 0.93 <= covered / 2000 <= 0.97


def test_pairing_removes_the_shared_seed_effect():
    # a and b share a large per-seed effect (data draw): the paired interval still covers the
    # true difference at its level, and is much narrower than an unpaired one would be.
    rng = np.random.default_rng(1)
    shared = rng.normal(0.0, 5.0, size=(2000, 5))
    a = 0.5 + shared + rng.normal(0.0, 0.2, size=(2000, 5))
    b = shared + rng.normal(0.0, 0.2, size=(2000, 5))
    ivs = [pr.paired_interval(ai, bi) for ai, bi in zip(a, b)]
    coverage = np.mean([iv.low <= 0.5 <= iv.high for iv in ivs])
    assert 0.93 <= coverage <= 0.97  # 0.95 +- 4 binomial sd, as above
    paired_width = np.median([iv.high - iv.low for iv in ivs])
    unpaired_width = np.median([pr.mean_interval(ai).high - pr.mean_interval(ai).low
                                for ai in a[:200]])
    assert paired_width < unpaired_width / 10  # sd 0.28 of a difference vs 5 of one side


def test_bootstrap_is_deterministic_and_covers_at_its_level_for_many_seeds():
    x = [0.1, 0.4, 0.35, 0.2, 0.3, 0.25]
    iv = pr.mean_interval(x, method="bootstrap")
    assert iv == pr.mean_interval(x, method="bootstrap", seed=0)  # fixed seed: same interval
    assert iv != pr.mean_interval(x, method="bootstrap", seed=1)
    assert iv.low < iv.mean < iv.high and iv.method == "bootstrap"
    # Coverage with 50 seeds. The percentile bootstrap of the mean is a normal interval with
    # the ddof=0 std, so its coverage is P(|T_49| < 1.96 * sqrt(49/50)) = 0.942 (computed
    # below), not 0.95. 1000 experiments: binomial sd sqrt(0.942 * 0.058 / 1000) = 0.0074;
    # the band is the expected value +- 4 sd.
    expected = 2 * pr.t_cdf(1.959964 * math.sqrt(49 / 50), 49) - 1
    rng = np.random.default_rng(2)
    data = rng.normal(1.0, 2.0, size=(1000, 50))
    covered = np.mean([(lambda v: v.low <= 1.0 <= v.high)(
        pr.mean_interval(row, method="bootstrap", seed=i, n_bootstrap=2000))
        for i, row in enumerate(data)])
    sd = math.sqrt(expected * (1 - expected) / 1000)
    assert abs(covered - expected) <= 4 * sd, (covered, expected)


# ---------------------------------------------------------------------------------------------
# Claims


def _values(xs):
    return {seed: x for seed, x in enumerate(xs)}


def test_threshold_status_pass_fail_inconclusive():
    tight_high = _values([0.80, 0.81, 0.79, 0.80, 0.80])  # interval about [0.79, 0.81]
    c = pr.decide("acc >= 0.75", tight_high, at_least=0.75)
    assert c.status == pr.PASS and c.passed and c.kind == "threshold" and c.reason == ""
    assert c.interval[0] >= 0.75 and c.n == 5 and c.threshold == 0.75
    assert c.direction == "at_least" and c.seeds == [0, 1, 2, 3, 4] and c.level == 0.95
    c = pr.decide("acc >= 0.85", tight_high, at_least=0.85)
    assert c.status == pr.FAIL and not c.passed and c.interval[1] < 0.85
    c = pr.decide("acc >= 0.80", tight_high, at_least=0.80)
    assert c.status == pr.INCONCLUSIVE and not c.passed
    assert c.interval[0] < 0.80 < c.interval[1]
    # at_most mirrors at_least
    assert pr.decide("x", tight_high, at_most=0.85).status == pr.PASS
    assert pr.decide("x", tight_high, at_most=0.75).status == pr.FAIL
    assert pr.decide("x", tight_high, at_most=0.80).status == pr.INCONCLUSIVE
    # a wide interval (one seed far off) is inconclusive where the mean alone would pass
    wide = _values([0.95, 0.95, 0.95, 0.95, 0.40])
    c = pr.decide("acc >= 0.75", wide, at_least=0.75)
    assert c.mean == pytest.approx(0.84) and c.status == pr.INCONCLUSIVE
    # the claimed region is closed: an interval touching the threshold from inside passes
    flat = _values([0.5] * 5)
    assert pr.decide("x", flat, at_least=0.5).status == pr.PASS
    assert pr.decide("x", flat, at_most=0.5).status == pr.PASS
    with pytest.raises(ValueError, match="exactly one of at_least= or at_most="):
        pr.decide("x", flat)
    with pytest.raises(ValueError, match="exactly one"):
        pr.decide("x", flat, at_least=0.0, at_most=1.0)


def test_fewer_than_five_seeds_is_inconclusive_and_says_why():
    four = _values([0.80, 0.81, 0.79, 0.80])
    c = pr.decide("acc >= 0.5", four, at_least=0.5)
    assert c.status == pr.INCONCLUSIVE and not c.passed and c.interval is not None
    assert c.reason == ("n=4 seeds < 5 required by the protocol (the interval alone would be "
                        "PASS)")
    one = pr.decide("acc >= 0.5", {3: 0.8}, at_least=0.5)
    assert one.status == pr.INCONCLUSIVE and one.interval is None and one.mean == 0.8
    assert one.reason == "n=1 seed: no interval (the protocol needs >= 5)"
    nan = pr.decide("acc >= 0.5", _values([0.8, 0.8, float("nan"), 0.8, 0.8]), at_least=0.5)
    assert nan.status == pr.INCONCLUSIVE and nan.reason == "non-finite values at seeds [2]"
    none = pr.decide("acc >= 0.5", {}, at_least=0.5)
    assert none.status == pr.INCONCLUSIVE and none.reason == "no seeds to measure on"


def _results(**variants):
    """{variant: {metric: [per-seed values]}} -> run_experiment's results layout."""
    out = {}
    for variant, metrics in variants.items():
        seeds = {}
        for metric, xs in metrics.items():
            for seed, x in xs.items() if isinstance(xs, dict) else enumerate(xs):
                seeds.setdefault(seed, {})[metric] = x
        out[variant] = {"per_seed": seeds, "metrics": ex.aggregate(seeds)}
    return out


def test_compare_pairs_the_seeds_both_variants_have():
    results = _results(dpo={"gold": {0: 1.5, 1: 1.4, 2: 1.6, 3: 1.45, 4: 1.55, 5: 9.0}},
                       sft={"gold": {0: 0.1, 1: 0.05, 2: 0.2, 3: 0.1, 4: 0.15, 6: -9.0}})
    c = pr.compare("DPO beats SFT by >= 1", results, ("dpo", "gold"), ("sft", "gold"),
                   at_least=1.0)
    assert c.kind == "comparative" and c.status == pr.PASS and c.n == 5
    assert c.seeds == [0, 1, 2, 3, 4]  # seed 5 (dpo only) and 6 (sft only) left out
    assert c.mean == pytest.approx(1.38)
    assert c.measured == pytest.approx({"dpo/gold": 1.5, "sft/gold": 0.12, "difference": 1.38})
    ref = pr.paired_interval([1.5, 1.4, 1.6, 1.45, 1.55], [0.1, 0.05, 0.2, 0.1, 0.15])
    assert c.interval == pytest.approx((ref.low, ref.high))
    # the same difference, claimed the other way round, fails
    c = pr.compare("SFT beats DPO", results, ("sft", "gold"), ("dpo", "gold"), at_least=0.0)
    assert c.status == pr.FAIL and c.mean == pytest.approx(-1.38)
    # paired over seeds: a per-seed effect shared by both sides does not widen the interval
    shared = [0.0, 5.0, -3.0, 10.0, 2.0]
    results = _results(a={"m": [s + 0.1 for s in shared]}, b={"m": shared})
    assert pr.compare("a > b", results, ("a", "m"), ("b", "m"), at_least=0.05).status == \
        pr.PASS
    with pytest.raises(ValueError, match=r"no variant 'c' in the results \(variants: \['a', "
                                         r"'b'\]\)"):
        pr.compare("x", results, ("c", "m"), ("b", "m"), at_least=0.0)
    with pytest.raises(ValueError, match=r"no metric 'acc' in variant 'a' \(metrics: \['m'\]\)"):
        pr.threshold("x", results, ("a", "acc"), at_least=0.0)
    with pytest.raises(ValueError, match="with itself"):
        pr.compare("x", results, ("a", "m"), ("a", "m"), at_least=0.0)


def test_seed_mean_is_the_mean_over_seeds_and_nan_for_a_variant_that_did_not_run():
    results = _results(rm={"acc": {0: 0.9, 1: 0.8, 3: 0.7}})
    assert pr.seed_mean(results, "rm", "acc") == pytest.approx(0.8)
    assert math.isnan(pr.seed_mean(results, "ensemble", "acc"))
    with pytest.raises(ValueError, match="no metric 'loss' in variant 'rm'"):
        pr.seed_mean(results, "rm", "loss")


def test_threshold_reads_results_and_json_loaded_results():
    results = _results(rm={"acc": [0.90, 0.91, 0.89, 0.92, 0.90]})
    c = pr.threshold("RM accuracy >= 0.75", results, ("rm", "acc"), at_least=0.75)
    assert c.kind == "threshold" and c.status == pr.PASS
    assert c.measured == pytest.approx({"rm/acc": 0.904})
    loaded = json.loads(json.dumps(results))  # seeds become strings in summary.json
    again = pr.threshold("RM accuracy >= 0.75", loaded, ("rm", "acc"), at_least=0.75)
    assert again.status == pr.PASS and again.interval == pytest.approx(c.interval)
    assert again.seeds == ["0", "1", "2", "3", "4"]


def test_sanity_and_legacy_claims():
    s = pr.sanity("items-only BT is at chance on zero-sum groups", True, {"acc": 0.5})
    assert s.kind == "sanity" and s.status == pr.PASS and s.passed and not s.counted
    assert pr.sanity("x", False, {}).status == pr.FAIL
    legacy = Claim("old claim", np.bool_(True), {"gap": 10.0})  # the 27 experiments' form
    assert legacy.kind == "legacy" and legacy.status == pr.PASS and legacy.passed is True
    assert legacy.counted and legacy.interval is None
    assert Claim("old", False, {}).status == pr.FAIL
    assert ex.Claim is Claim  # the class experiments import from alignax.experiment
    with pytest.raises(ValueError, match="contradicts"):
        Claim("x", True, {}, kind="threshold", status=pr.INCONCLUSIVE)
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim("x", True, {}, kind="strong")
    with pytest.raises(ValueError, match="a sanity claim is PASS or FAIL"):
        Claim("x", False, {}, kind="sanity", status=pr.INCONCLUSIVE)


def test_to_json_round_trip():
    claims = [
        pr.compare("a beats b", _results(a={"m": [1.0, 1.2, 1.1, 0.9, 1.0]},
                                         b={"m": [0.5, 0.4, 0.6, 0.5, 0.5]}),
                   ("a", "m"), ("b", "m"), at_least=0.2, detail="paired"),
        pr.decide("n=3", _values([0.8, 0.8, 0.9]), at_most=0.95, method="bootstrap"),
        pr.decide("n=1", {0: 0.8}, at_least=0.5),
        pr.sanity("planted", True, {"x": 1.0}, "by construction"),
        Claim("legacy", False, {"gap": -0.5}, "old"),
    ]
    for c in claims:
        d = c.to_json()
        assert json.loads(json.dumps(d, allow_nan=False)) == d  # strict JSON
        assert Claim.from_json(d) == c
    assert claims[0].to_json() == {
        "name": "a beats b", "passed": True, "measured": claims[0].measured,
        "detail": "paired", "kind": "comparative", "status": "PASS", "mean": claims[0].mean,
        "interval": list(claims[0].interval), "n": 5, "level": 0.95, "threshold": 0.2,
        "direction": "at_least", "method": "t", "seeds": [0, 1, 2, 3, 4], "reason": ""}
    # a legacy claim keeps the record it always had; summary.json files written before the
    # protocol read back as legacy claims
    assert claims[-1].to_json() == {"name": "legacy", "passed": False,
                                    "measured": {"gap": -0.5}, "detail": "old"}
    old = Claim.from_json({"name": "x", "passed": True, "measured": {"a": 1}, "detail": ""})
    assert old.kind == "legacy" and old.status == pr.PASS
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        Claim.from_json({"name": "x", "passed": True, "measured": {}, "colour": "red"})


# ---------------------------------------------------------------------------------------------
# Paper status


def _claim(status, kind="threshold"):
    return Claim(f"{kind} {status}", status == pr.PASS, {}, kind=kind, status=status)


def test_paper_status_rules():
    P, F, I = pr.PASS, pr.FAIL, pr.INCONCLUSIVE  # noqa: E741
    assert pr.paper_status([_claim(P), _claim(P, "comparative")]) == "REPRODUCED"
    assert pr.paper_status([_claim(P), _claim(I), _claim(F)]) == "NOT REPRODUCED"
    assert pr.paper_status([_claim(P), _claim(I)]) == "INCONCLUSIVE"
    v = pr.paper_verdict([_claim(P), _claim(I), _claim(F), pr.sanity("s", True, {})])
    assert v.to_json() == {"status": "NOT REPRODUCED", "reason": "1 of 3 claims FAIL",
                           "counts": {"PASS": 1, "FAIL": 1, "INCONCLUSIVE": 1, "sanity": 1}}
    assert pr.paper_verdict([_claim(P), _claim(I)]).reason == "1 of 2 claims INCONCLUSIVE"
    assert pr.paper_verdict([_claim(P)]).reason == "all 1 claims PASS"


def test_sanity_claims_are_never_counted():
    # a failing sanity check does not make a paper NOT REPRODUCED ...
    assert pr.paper_status([_claim(pr.PASS), pr.sanity("s", False, {})]) == "REPRODUCED"
    # ... and passing ones do not make it REPRODUCED
    only_sanity = pr.paper_verdict([pr.sanity("s", True, {}), pr.sanity("t", True, {})])
    assert only_sanity.status == "INCONCLUSIVE"
    assert only_sanity.reason == "no falsifiable claim (only sanity checks)"
    assert only_sanity.counts == {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0, "sanity": 2}
    assert pr.paper_verdict([]).reason == "no falsifiable claim"
    assert pr.paper_status([pr.sanity("s", True, {}), _claim(pr.INCONCLUSIVE)]) == \
        "INCONCLUSIVE"


def test_legacy_claims_count_as_what_they_say_and_are_marked():
    v = pr.paper_verdict([Claim("a", True, {}), Claim("b", True, {})])
    assert v.status == "REPRODUCED" and v.reason == "all 2 claims PASS (legacy claims, no " \
                                                    "intervals)"
    v = pr.paper_verdict([Claim("a", False, {}), _claim(pr.PASS)])
    assert v.status == "NOT REPRODUCED"
    assert v.reason == "1 of 2 claims FAIL (1 legacy claims, no intervals)"


# ---------------------------------------------------------------------------------------------
# summary.json


TOY = textwrap.dedent('''
    """Toy: protocol (arXiv 0000.00000)."""
    import os
    import ml_collections
    from alignax.experiment import Claim
    from alignax import protocol

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.seeds = [0, 1, 2, 3, 4]
        c.x = 0.0
        c.name = "toy"
        c.flag = False
        c.variants = {"method": {"x": 1.0}, "baseline": {"x": 0.0}}
        return c

    def run(config, workdir):
        os.makedirs(workdir, exist_ok=True)
        return {"m": config.x + 0.1 * ((config.seed * 7) % 5)}

    def claims(results):
        return [
            protocol.compare("method beats baseline", results, ("method", "m"),
                             ("baseline", "m"), at_least=0.5),
            protocol.threshold("baseline is low", results, ("baseline", "m"), at_most=1.0),
            protocol.sanity("by construction", True, {"one": 1.0}),
            Claim("a legacy claim", True, {"v": 2.0}),
        ]
''')


def test_summary_records_command_commit_seeds_claims_and_paper_status(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(TOY)
    module = ex.load_module(str(path))
    config = ex.load_config(module, None, str(path))
    ex.apply_overrides(config, ["name=a b", "flag=true", "seeds=[0, 1, 2, 3, 4, 5]"])
    workdir = tmp_path / "run"
    summary = ex.run_experiment(module, config, str(workdir), path=str(path),
                                log=lambda _: None)
    assert summary["command"] == (f"alignax run {path} --config.flag=true "
                                  "'--config.name=a b' '--config.seeds=[0, 1, 2, 3, 4, 5]'")
    assert summary["seeds"] == [0, 1, 2, 3, 4, 5]
    assert summary["commit"] == ex.git_commit(str(path))
    claims = [Claim.from_json(c) for c in summary["claims"]]
    assert [(c.kind, c.status) for c in claims] == [
        ("comparative", "PASS"), ("threshold", "PASS"), ("sanity", "PASS"), ("legacy", "PASS")]
    assert summary["claims"][0]["interval"] == pytest.approx([1.0, 1.0])  # each seed: +1
    assert summary["paper_status"] == {
        "status": "REPRODUCED", "reason": "all 3 claims PASS (1 legacy claims, no intervals)",
        "counts": {"PASS": 3, "FAIL": 0, "INCONCLUSIVE": 0, "sanity": 1}}
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["paper_status"] == summary["paper_status"]
    assert on_disk["claims"] == summary["claims"]

    # the command reproduces the config: its overrides, applied to get_config, give it back
    again = ex.load_config(module, None, str(path))
    ex.apply_overrides(again, [a[len("--config."):] for a in shlex.split(summary["command"])[3:]])
    assert again.to_dict() == config.to_dict()

    # no workdir and no time in it: the same command in another folder writes the same bytes
    other = tmp_path / "other"
    ex.run_experiment(module, config, str(other), path=str(path), log=lambda _: None)
    assert (other / "summary.json").read_bytes() == (workdir / "summary.json").read_bytes()
    # the defaults alone: just the spec (with its argument)
    plain = ex.load_config(module, None, str(path))
    assert ex.command_line(module, plain, "experiments/toy.py", "smoke") == \
        "alignax run experiments/toy.py:smoke"


def _git(folder, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def test_git_commit_short_hash_dirty_and_no_git(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("no git here")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "exp.py").write_text("x = 1\n")
    _git(repo, "add", "exp.py")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert ex.git_commit(str(repo / "exp.py")) == head
    (repo / "untracked.txt").write_text("not part of the commit\n")
    assert ex.git_commit(str(repo / "exp.py")) == head  # untracked files do not count
    (repo / "exp.py").write_text("x = 2\n")
    assert ex.git_commit(str(repo / "exp.py")) == head + "-dirty"
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert ex.git_commit(str(repo / "exp.py")) is None  # no git: tolerated
