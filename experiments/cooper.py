"""Cooper: a policy and its reward model co-optimised against reward hacking.

Paper: Hong, Yan, Wu, Hou, Zhang, Lu, Shen, Xiao 2025, "Cooper: Co-Optimizing Policy and Reward
Models in Reinforcement Learning for Large Language Models" (arXiv 2508.05613).

Setting (a toy LM doing arithmetic, every quantity exact): prompts are problems (a, b) with
a, b in {0..11} and answer a* = (a + b) mod 5. Responses are all 8^3 = 512 sequences of three
tokens over {0..4, E (end), J (filler), X}; the policy is a `sequence_table` prefix tree,
log-linear in the prompt features (one-hot a, one-hot b, one-hot a* -- what a pretrained model
"knows" about the problem -- and a constant), so what it learns on training problems carries to
held-out ones. Gold correctness is lenient: the first token is the answer (y_0 = a*), whatever
follows. The rule verifier is exact-format, y = (a*, E, E): precise (it never accepts a wrong
answer) and low-recall (1 of the 64 gold-correct responses). The reference policy pi_0 (seeded
by the experiment seed, the "SFT model") answers correctly about a third of the time, in the
exact format rarely (~1%), and starts with the filler J about 2% of the time.

The reward model is reference-conditioned, r_phi(q, a_ref, y) = w . [y_t == a_ref, one-hot(y_t)]
+ b (`alignax.rewards.judges`), first fitted with BCE on "hybrid labels" of 2000 random
responses to training problems: a correct response is labelled 1 w.p. 0.7 (correct answers in
odd formats are often rejected), a response that starts with J w.p. 0.9 (the LLM-judge part of
the labels is fooled by a confident filler), any other w.p. 0.05. So the initial RM is
hackable: it rates "J ..." above a correct answer (a sanity check below). Arms, every one from
the same pi_0 and the same fitted RM, GRPO with M = 16 prompts x G = 8 responses per step, the
exact KL(pi || pi_0) with coefficient `kl_coef`, Adam (`alignax.algorithms.co_training`: params
{"policy", "rm"}, one loss, one fit_small program per arm):
  - `static_rm`: GRPO on the frozen RM's score;
  - `cooper`: the same, and every step the RM is updated on the same rollouts with
    -log sigma(r(y+) - r(y-)): y+ = the rollouts the rule verifier accepts, y- = each of them
    with its answer token rewritten into a random other token (the toy's assistant-LLM
    corruption of a correct solution into an incorrect one);
  - `rule_only`: GRPO on the rule verifier's 0/1 reward.

Splits (`alignax.tasks.splits.split_seeds`): the 64 training problems, 32 validation problems
and 40 test problems are drawn with the data seeds 3s, 3s + 1, 3s + 2, each excluding the
problems already drawn (`check_disjoint`); the RM's hybrid-labelled responses are drawn on
training problems with the training seed. pi_0 (the world) is seeded by s.

Selection (every arm the same): early stopping on validation gold accuracy (exact E_pi[y_0 =
a*] on the validation problems, `fit_small(select=("val_gold", "max"))`) over the checkpoints
every `eval_every` of `steps` updates. Learning rates, kl_coef, M, G and steps are fixed a
priori (not tuned). Test metrics: `test_gold` (selected step), `test_gold_final` (last step),
`test_gold_drop` = test_gold - test_gold_final (how much the policy lost after its
validation-chosen peak), `test_rm_gain` (E_pi[r_phi] on test problems, last step minus start),
`test_junk_final` (mass on J-first responses), and `test_rm_auc` (the RM's AUC for gold-correct
vs gold-incorrect responses, over all 512 responses of each test problem, at the end).

Why rule-only can beat Cooper in this toy (the first full run: Cooper 0.925 vs rule-only 0.948
test gold): the exact format is reachable from pi_0 (about 1% of its responses) and the verifier
is exactly precise, so its sparse 0/1 reward still gives GRPO a clean signal towards a
gold-correct response, while Cooper's reward is a learned proxy: the RM also scores the free
tokens after the answer (weights fitted on noisy labels that no contrastive pair corrects, as y+
and y- differ only in the answer), and its updates stop once the policy leaves the exact format
(no more verified positives). The paper's own margin over rule-based reward is small (+0.5 pts
average accuracy).

Claims (5 seeds, paired 95% t intervals): (1) static-RM GRPO hacks its RM: its RM reward
rises (test_rm_gain >= 0) while (2) its test gold accuracy falls >= 20 points after its peak;
(3) Cooper's test gold accuracy >= rule-only's and (4) >= the static-RM run's at its
validation-chosen peak; (5, the mechanism) the co-trained RM's test AUC beats the frozen RM's
by >= 0.05. Sanity: the initial RM rates the J-first response above the exact correct answer.

    alignax run experiments/cooper.py            # full setting, 5 seeds
    alignax run experiments/cooper.py:smoke      # seconds, for the tests
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import co_training, small_pg
from alignax.experiment import is_smoke
from alignax.models import sequence_table as st
from alignax.protocol import seed_mean
from alignax.rewards import judges
from alignax.tasks.splits import check_disjoint, split_seeds
from alignax.train.plots import plot_curves, seed_mean_curve
from alignax.train.small import fit_small

DIGITS = 5  # answers are (a + b) mod 5, tokens 0..4
END, FILLER, OTHER = 5, 6, 7
VOCAB, LENGTH = 8, 3
ARMS = ("static_rm", "cooper", "rule_only")
SPLITS = ("val", "test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = is_smoke(arg)
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.arm = "cooper"
    c.variants = {a: {"arm": a} for a in ARMS}
    c.task = dict(operands=12, num_train=64, num_val=32, num_test=40,
                  answer_boost=1.0, filler_logit=-2.0, end_logit=0.5, noise=0.3)
    # hybrid labels of the RM's fitting set: P(label 1) for correct / J-first / other responses
    c.rm_data = dict(num=2000 if not smoke else 300, p_correct=0.7, p_filler=0.9, p_other=0.05,
                     steps=300 if not smoke else 30, learning_rate=0.1)
    c.train = dict(steps=300 if not smoke else 10, prompts=16, group_size=8, kl_coef=0.01,
                   policy_lr=0.02, rm_lr=0.05, eval_every=10 if not smoke else 5)
    return c


# --------------------------------------------------------------------------------------------
# Data


def problems(config, seed: int):
    """The split problems of experiment seed `seed`: {split: (a, b) int arrays}, drawn with the
    data seeds of `split_seeds(seed)`, each split excluding the problems drawn before."""
    task = config.task
    k = int(task.operands)
    seeds = split_seeds(seed)
    taken: set[int] = set()
    out = {}
    for split, data_seed, n in (("train", seeds.train, task.num_train),
                                ("val", seeds.validation, task.num_val),
                                ("test", seeds.test, task.num_test)):
        rng = np.random.default_rng([data_seed, 6901])
        free = np.array([p for p in range(k * k) if p not in taken])
        ids = rng.choice(free, size=int(n), replace=False)
        taken.update(int(i) for i in ids)
        out[split] = ids
    check_disjoint(train=out["train"].tolist(), validation=out["val"].tolist(),
                   test=out["test"].tolist())
    return {s: (ids // k, ids % k) for s, ids in out.items()}


def prompt_features(config, a, b) -> tuple[np.ndarray, np.ndarray]:
    """(features [P, 2K + 5 + 1], answers [P]) of problems (a, b)."""
    k = int(config.task.operands)
    ans = (a + b) % DIGITS
    eye_k, eye_d = np.eye(k, dtype=np.float32), np.eye(DIGITS, dtype=np.float32)
    feats = np.concatenate([eye_k[a], eye_k[b], eye_d[ans], np.ones((len(a), 1), np.float32)], 1)
    return feats, ans.astype(np.int32)


def space() -> st.SequenceSpace:
    return st.SequenceSpace(vocab_size=VOCAB, length=LENGTH)


def reference_policy(config, seed: int) -> dict:
    """pi_0 of experiment seed `seed`: random node biases (scale `noise`), the end token
    favoured after the first token, the filler J disfavoured first, the first token lifted
    towards the answer by `answer_boost` through the answer features."""
    task, sp = config.task, space()
    num_features = 2 * int(task.operands) + DIGITS + 1
    rng = np.random.default_rng([seed, 6902])
    bias = task.noise * rng.standard_normal((sp.num_nodes, VOCAB)).astype(np.float32)
    bias[1:, END] += task.end_logit
    bias[0, END] -= 2.0
    bias[0, FILLER] += task.filler_logit
    weight = np.zeros((sp.num_nodes, num_features, VOCAB), np.float32)
    answer_rows = 2 * int(task.operands) + np.arange(DIGITS)
    weight[0, answer_rows, np.arange(DIGITS)] = task.answer_boost
    return {"bias": bias, "weight": weight}


def rm_fitting_set(config, train_problems, seed: int) -> dict:
    """2000 uniformly random responses to training problems with hybrid labels (training data
    seed): tokens [n, L], reference answers [n], labels [n]."""
    cfg = config.rm_data
    rng = np.random.default_rng([split_seeds(seed).train, 6903])
    a, b = train_problems
    pick = rng.integers(0, len(a), int(cfg.num))
    ref = ((a[pick] + b[pick]) % DIGITS).astype(np.int32)
    tokens = rng.integers(0, VOCAB, (int(cfg.num), LENGTH)).astype(np.int32)
    correct = tokens[:, 0] == ref
    filler = tokens[:, 0] == FILLER
    p = np.where(correct, cfg.p_correct, np.where(filler, cfg.p_filler, cfg.p_other))
    labels = (rng.random(int(cfg.num)) < p).astype(np.float32)
    return {"rm_tokens": tokens, "rm_reference": ref, "rm_labels": labels}


def make_data(config, seed: int) -> dict:
    probs = problems(config, seed)
    out = {}
    for split, (a, b) in probs.items():
        out[f"{split}_features"], out[f"{split}_answers"] = prompt_features(config, a, b)
    out.update(rm_fitting_set(config, probs["train"], seed))
    ref = reference_policy(config, seed)
    out["ref_bias"], out["ref_weight"] = ref["bias"], ref["weight"]
    return out


# --------------------------------------------------------------------------------------------
# Rewards, verifier, corruption (glue over alignax.rewards.judges / algorithms.co_training)


def tokens_of(responses):
    return jnp.asarray(space().sequences)[responses]


def index_of(tokens):
    powers = VOCAB ** jnp.arange(LENGTH - 1, -1, -1)
    return jnp.sum(tokens * powers, -1).astype(jnp.int32)


def rm_score(rm_params, answers, tokens):
    """The reference-conditioned RM's scores of tokens [..., L] against answers [...]."""
    return judges.linear_judge_score(
        rm_params, judges.reference_match_features(tokens, answers, VOCAB))


def gold_correct(answers, tokens):
    return tokens[..., 0] == answers


def rule_verifier(answers, tokens):
    """Exact format (a*, E, E)."""
    return (tokens[..., 0] == answers) & jnp.all(tokens[..., 1:] == END, -1)


# --------------------------------------------------------------------------------------------
# Training


def fit_rm(config, workdir: str, data: dict, seeds):
    """The initial RM of every seed: BCE on the hybrid labels (full batch, Adam)."""
    cfg = config.rm_data
    num_features = LENGTH + LENGTH * VOCAB

    def loss_fn(p, d):
        logits = rm_score(p, d["rm_reference"], d["rm_tokens"])
        return optax.sigmoid_binary_cross_entropy(logits, d["rm_labels"]).mean()

    fit = fit_small(workdir, loss_fn=loss_fn,
                    init_params=lambda key: judges.linear_judge_init(num_features),
                    tx=optax.adam(float(cfg.learning_rate)), num_steps=int(cfg.steps),
                    data={k: data[k] for k in ("rm_tokens", "rm_reference", "rm_labels")},
                    seeds=seeds, per_seed_data=True, steps_per_log=int(cfg.steps), plots=False)
    return fit.params


def expected_metrics(params, features, answers) -> dict:
    """Exact expectations over the policy of one seed on problems (features, answers)."""
    sp = space()
    tokens = jnp.asarray(sp.sequences)  # [N, L]
    probs = jnp.exp(st.sequence_log_probs(sp, params["policy"], features))  # [P, N]
    ans = answers[:, None]
    gold = gold_correct(ans, tokens[None])  # [P, N]
    rule = rule_verifier(ans, tokens[None])
    junk = jnp.broadcast_to(tokens[None, :, 0] == FILLER, gold.shape)
    rm = rm_score(params["rm"], jnp.broadcast_to(ans, gold.shape), tokens[None])
    mean = lambda v: jnp.mean(jnp.sum(probs * v, -1))  # noqa: E731
    return {"gold": mean(gold), "rule": mean(rule), "junk": mean(junk), "rm": mean(rm)}


def rm_auc(rm_params, answers) -> jax.Array:
    """The RM's AUC for gold-correct vs gold-incorrect responses, over all responses of each
    problem, averaged over problems (ties count half)."""
    tokens = jnp.asarray(space().sequences)

    def one(answer):
        r = rm_score(rm_params, jnp.full((tokens.shape[0],), answer), tokens)
        good = gold_correct(answer, tokens)
        diff = r[:, None] - r[None, :]
        wins = (diff > 0) + 0.5 * (diff == 0)
        pair = good[:, None] & ~good[None, :]
        return jnp.sum(wins * pair) / jnp.sum(pair)

    return jnp.mean(jax.vmap(one)(answers))


def make_loss(config, arm: str):
    tr = config.train
    sp = space()
    sample_fn, log_prob_fn, kl_fn = small_pg.sequence_table_policy(sp)

    def prompt_fn(key, data):
        idx = jax.random.randint(key, (int(tr.prompts),), 0, data["train_answers"].shape[0])
        return {"features": data["train_features"][idx], "answers": data["train_answers"][idx]}

    def rm_reward(rm_params, prompts, responses, data):
        toks = tokens_of(responses)
        gold = gold_correct(prompts["answers"][:, None], toks)
        r = rm_score(rm_params, jnp.broadcast_to(prompts["answers"][:, None], responses.shape),
                     toks)
        return r, {"gold": gold.mean(), "junk": jnp.mean(toks[..., 0] == FILLER)}

    def rule_reward(rm_params, prompts, responses, data):
        toks = tokens_of(responses)
        rule = rule_verifier(prompts["answers"][:, None], toks).astype(jnp.float32)
        gold = gold_correct(prompts["answers"][:, None], toks)
        return rule, {"gold": gold.mean(), "junk": jnp.mean(toks[..., 0] == FILLER)}

    def score_fn(rm_params, prompts, responses, data):
        return rm_score(rm_params, jnp.broadcast_to(prompts["answers"][:, None],
                                                    responses.shape), tokens_of(responses))

    def verifier_fn(prompts, responses, data):
        return rule_verifier(prompts["answers"][:, None], tokens_of(responses))

    def negative_fn(key, prompts, responses, data):
        answers = jnp.broadcast_to(prompts["answers"][:, None], responses.shape)
        return index_of(co_training.corrupt_answer_token(key, tokens_of(responses), 0,
                                                         answers, VOCAB))

    rm_loss = (co_training.verified_contrastive_rm_loss(score_fn, verifier_fn, negative_fn)
               if arm == "cooper" else None)
    return co_training.co_trained_grpo_loss(
        lambda p, k, x, n: sample_fn(p, k, x["features"], n),
        lambda p, x, y: log_prob_fn(p, x["features"], y),
        rule_reward if arm == "rule_only" else rm_reward, rm_loss,
        group_size=int(tr.group_size), kl_coef=float(tr.kl_coef),
        kl_fn=lambda p, x, y, d: kl_fn(p, x["features"], y, d), prompt_fn=prompt_fn)


def filler_minus_correct(rm_params) -> jax.Array:
    """The RM's score of (J, E, E) minus that of the exact correct answer (d, E, E), mean over
    the answers d (> 0: the RM is hackable)."""
    answers = jnp.arange(DIGITS)
    junk_tokens = jnp.broadcast_to(jnp.array([FILLER, END, END]), (DIGITS, LENGTH))
    exact_tokens = jnp.stack([answers, jnp.full(DIGITS, END), jnp.full(DIGITS, END)], 1)
    return jnp.mean(rm_score(rm_params, answers, junk_tokens)
                    - rm_score(rm_params, answers, exact_tokens))


@jax.jit
@jax.vmap
def measure(params, d):
    """Per seed (vmapped): the exact test metrics of `expected_metrics`, the RM's test AUC and
    `filler_minus_correct` of the RM; one program for every arm and every call."""
    m = expected_metrics(params, d["test_features"], d["test_answers"])
    return dict(m, auc=rm_auc(params["rm"], d["test_answers"]),
                filler_minus_correct=filler_minus_correct(params["rm"]))


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    """Every seed of one arm in one program: the RM fit, then GRPO (+ the RM update for
    Cooper), early-stopped on validation gold accuracy; each seed's test metrics."""
    arm = config.arm
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; one of {ARMS}")
    seeds = [int(s) for s in config.seeds]
    per_seed = [make_data(config, s) for s in seeds]
    # host arrays (no device transfer program per field; the jitted programs take them as is)
    data = {k: np.stack([row[k] for row in per_seed]) for k in per_seed[0]}
    rm0 = fit_rm(config, os.path.join(workdir, "rm_fit"), data, seeds)
    ref = {"bias": data["ref_bias"], "weight": data["ref_weight"]}
    init = {"policy": ref, "rm": rm0}
    tr = config.train
    tx = optax.multi_transform(
        {"policy": optax.adam(float(tr.policy_lr)), "rm": optax.adam(float(tr.rm_lr))},
        lambda p: {k: jax.tree.map(lambda _: k, v) for k, v in p.items()})
    train_data = {"train_features": data["train_features"],
                  "train_answers": data["train_answers"], "ref_params": ref}
    eval_data = {k: data[k] for s in SPLITS for k in (f"{s}_features", f"{s}_answers")}

    def eval_fn(params, d):
        out = {}
        for s in SPLITS:
            for k, v in expected_metrics(params, d[f"{s}_features"], d[f"{s}_answers"]).items():
                out[f"{s}_{k}"] = v
        return out

    fit = fit_small(os.path.join(workdir, "grpo"), loss_fn=make_loss(config, arm), has_aux=True,
                    init_params=init, per_seed_init=True, tx=tx, num_steps=int(tr.steps),
                    data=train_data, seeds=seeds, per_seed_data=True,
                    batch_fn=small_pg.rl_batch, steps_per_log=int(tr.eval_every),
                    eval_fn=eval_fn, eval_data=eval_data, select=("val_gold", "max"))

    start = jax.device_get(measure(init, eval_data))
    final = jax.device_get(measure(fit.params, eval_data))
    best = jax.device_get(measure(fit.best_params, eval_data))
    hackable = start["filler_minus_correct"]  # of rm0, the RM every arm starts from
    out = {}
    for i, seed in enumerate(seeds):
        out[seed] = {
            "test_gold": float(best["gold"][i]), "test_gold_final": float(final["gold"][i]),
            "test_gold_start": float(start["gold"][i]),
            "test_gold_drop": float(best["gold"][i] - final["gold"][i]),
            "test_rm_gain": float(final["rm"][i] - start["rm"][i]),
            "test_rm_final": float(final["rm"][i]),
            "test_rule_final": float(final["rule"][i]),
            "test_junk_final": float(final["junk"][i]),
            "test_rm_auc": float(final["auc"][i]), "test_rm_auc_start": float(start["auc"][i]),
            "val_gold": float(fit.best_score[i]), "chosen_step": float(fit.best_step[i]),
            "rm0_filler_minus_correct": float(hackable[i]),
        }
    return out


def claims(results) -> list[protocol.Claim]:
    gold = {v: seed_mean(results, v, "test_gold") for v in results}
    final = {v: seed_mean(results, v, "test_gold_final") for v in results}
    junk = {v: seed_mean(results, v, "test_junk_final") for v in results}
    hack = protocol.per_seed(results, "static_rm", "rm0_filler_minus_correct")
    summary = ("test gold at the validation-chosen step / at the end: " + "; ".join(
        f"{v} {gold[v]:.3f} / {final[v]:.3f} (J-first mass at the end {junk[v]:.3f})"
        for v in results))
    return [
        protocol.sanity("the fitted RM is hackable: it scores (J, E, E) above the exact "
                        "correct answer", all(v > 0 for v in hack.values()),
                        {"rm0_filler_minus_correct_min": min(hack.values())},
                        "planted by the hybrid labels (J-first labelled 1 w.p. 0.9, correct "
                        "answers w.p. 0.7)"),
        protocol.threshold(
            "static-RM GRPO raises its RM reward (E_pi[r_phi] on test problems, end minus "
            "start, >= 0)", results, ("static_rm", "test_rm_gain"), at_least=0.0,
            detail=summary),
        protocol.threshold(
            "static-RM GRPO's test gold accuracy falls >= 20 points after its "
            "validation-chosen peak (reward hacking)", results,
            ("static_rm", "test_gold_drop"), at_least=0.20, detail=summary),
        protocol.compare(
            "Cooper's test gold accuracy >= rule-only GRPO's (each at its validation-chosen "
            "step)", results, ("cooper", "test_gold"), ("rule_only", "test_gold"),
            at_least=0.0,
            detail=summary + f"; exact-format rate at the end: Cooper "
                             f"{seed_mean(results, 'cooper', 'test_rule_final'):.3f}, rule-only "
                             f"{seed_mean(results, 'rule_only', 'test_rule_final'):.3f} (the "
                             f"exact format is reachable from pi_0 and the verifier is exactly "
                             f"precise, so rule-only's sparse reward is a clean signal; Cooper's "
                             f"RM stops updating once its policy leaves the exact format)"),
        protocol.compare(
            "Cooper's test gold accuracy >= the static-RM run's at its validation-chosen peak",
            results, ("cooper", "test_gold"), ("static_rm", "test_gold"), at_least=0.0,
            detail=summary),
        protocol.compare(
            "the co-trained RM separates gold-correct from gold-incorrect responses better than "
            "the frozen RM (test AUC at the end, >= +0.05)", results,
            ("cooper", "test_rm_auc"), ("static_rm", "test_rm_auc"), at_least=0.05,
            detail=f"AUC at the start {seed_mean(results, 'static_rm', 'test_rm_auc_start'):.3f}"
                   f"; at the end static {seed_mean(results, 'static_rm', 'test_rm_auc'):.3f}, "
                   f"Cooper {seed_mean(results, 'cooper', 'test_rm_auc'):.3f}"),
    ]


def plots(results, workdir: str) -> list[str]:
    """Test gold accuracy and the policy's RM reward along training, per arm."""
    outs = []
    for metric, label in (("test_gold", "test gold accuracy"), ("test_rm", "E_pi[RM score]")):
        curves = {}
        for arm, res in results.items():
            curve = seed_mean_curve(os.path.join(workdir, arm, "grpo", "metrics.jsonl"),
                                    f"eval/{metric}", res["per_seed"])
            if curve is not None:
                curves[arm] = curve
        out = os.path.join(workdir, "plots", f"cooper_{metric}.png")
        plot_curves(curves, out, title=f"Cooper vs static RM vs rule-only: {label}",
                    xlabel="evaluation (every eval_every updates)", ylabel=label)
        outs.append(out)
    return outs
