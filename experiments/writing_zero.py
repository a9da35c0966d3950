"""Writing-Zero / BRPO: a pairwise judge with a bootstrapped reference vs GRPO on a scalar RM.

Paper: Jia et al. 2025, "Writing-Zero: Bridge the Gap Between Non-verifiable Tasks and
Verifiable Rewards" (arXiv 2506.00103).

Setting (a tiny LM with exact expectations, `alignax.models.sequence_table`): responses are
all 5^6 = 15625 token sequences over {END, c1, c2, c3, c4}; the response is the tokens before
the first END, so its length n is 0..6. A prompt asks for two of the four content tokens (its
"key points", 6 kinds of prompt; features = the keys' multi-hot and a constant 1). The gold
quality is a content score: gold(x, y) = m - (n - m) = 2m - n, with m the number of distinct
key points the response covers; every other token (a repeat or an off-topic token) costs 1, so
the best response covers both keys once (n = 2). The policy is log-linear in the prompt
features and starts at an "SFT" reference that already writes on topic at about the right
length: END with probability (0.02, 0.25, 0.6, 0.5, 0.5, 0.5) at depth 0..5 (mean length
about 2.3), each key twice as likely as each off-topic token (`key_boost`).

The two reward signals:
  - scalar RM (the baseline's): a linear BT reward model on the response's statistics
    phi = (m, key tokens, off-topic tokens) (which span the gold and the length), trained on
    `num_pairs` pairs of reference responses labelled by length-biased annotators:
    P(a > b) = sigmoid((u_a - u_b) / T), u = gold + `length_bias` * n (the planted bias of
    human preference data); early-stopped on validation pairs labelled the same way;
  - pairwise judge (BRPO's): a noisy comparator of the gold with a position bias,
    P(first wins) = sigmoid((gold_a - gold_b) / T_J + b), queried in both orders and combined
    by position-swap voting into win / tie / loss (`alignax.rewards.pairwise`).

Variants (same prompts per update M, group size G, updates, learning-rate grid and
checkpoints; no KL term in the loss, as in DAPO / Dr. GRPO: the exact KL to the reference is
reported):
  - `grpo_rm`: GRPO (`small_pg.group_pg_loss`, advantage "grpo") on the scalar RM;
  - `brpo_judge`: BRPO: per prompt one response of the group is drawn as the bootstrapped
    reference, A_i = the swap-voted judge outcome of y_i against it (0 for the reference;
    `pairwise.bootstrapped_reference_outcomes`, `pairwise.brpo_advantages`, reward key from
    `group_pg_loss(reward_key=True)`).
The judge sees the (noisy) gold, the RM only biased preferences: this privileged signal is the
paper's premise (a principled GenRM judges content, a scalar RM learns the annotators'
shortcut), said again in the claims' details.

Splits: experiment seed s draws its training prompts and RM training pairs from data seed 3s,
validation prompts and pairs from 3s + 1, test prompts (and the RM's test pairs) from 3s + 2
(`split_seeds`); policy sampling keys derive from s.

Selection on validation (the same candidates for both: the learning rates of
`learning_rates` x the checkpoints every `eval_every` updates): each method picks the candidate
with the best value of its OWN training signal on the validation prompts, as a practitioner
without gold would: `grpo_rm` the exact E_pi[RM]; `brpo_judge` the exact expected swap-voted
judge outcome against the reference policy (`choose_on_validation`, recorded as chosen_*). The
gold is never used to select. Test metrics of the chosen candidate: exact E_pi[gold]
(`test_gold`), E_pi[length] (`test_length`), their reference values (`test_ref_gold`,
`test_ref_length`), KL to the reference.

Claims (5 seeds, paired 95% Student t intervals; the notes' pass criterion as intervals):
  - threshold: the scalar-RM run's test length is >= 2x the reference's (length hacking);
  - comparative: the scalar-RM run's test gold is below the reference's (difference <= 0);
  - comparative: BRPO raises the test gold over the reference (difference >= 0);
  - threshold: BRPO's length changes by at most 20% (|length / ref length - 1| <= 0.2);
  - comparative: BRPO's test gold beats the scalar-RM run's (difference >= 0);
  - sanity: the learned RM rewards length (its length coefficient > 0, planted by the
    annotators' bias) and the swap-voted judge agrees with the gold on reference pairs.

What the toy can and cannot show: the length bias of the preference data is planted
(`length_bias` > 1 makes the annotators prefer an extra token even when it costs gold), so the
RM's hackability is by construction; what is tested is that GRPO on the learned RM follows it
to >= 2x length within the budget while gold falls, and that BRPO, whose only signal is
pairwise comparisons within its own group, improves the gold without a length drift. The
reference's mean length (about 2.3) is set near the gold-optimal 2 tokens, so "length change
<= 20%" tests that BRPO does not drift, not length neutrality in general. The paper's GenRM is
itself a trained LLM; here the judge is a noisy gold comparator. The prompt space has 6 kinds,
so the splits differ in their prompt draws and RM pairs, not in the kinds of prompt.

    alignax run experiments/writing_zero.py            # full setting, 5 seeds
    alignax run experiments/writing_zero.py:smoke      # seconds, for the tests

`:real` runs the same two methods with the library's GRPO recipe (`policy_gradient.train`, its
`advantage="brpo"` with a `judge_fn` is BRPO's bootstrapped reference) on a Hugging Face policy
checkpoint (`model.path`, also the reference) and the prompts of `data.path` (any TRL format;
the last `data.eval_fraction` of the rows are test prompts, the fraction before them
validation), one method per run (`method`):
  - `grpo_rm`: GRPO on the scalar reward checkpoint at `rm.path` (a one-label
    `*ForSequenceClassification` folder);
  - `brpo_judge`: BRPO with a pairwise judge checkpoint at `judge.path`: a one-label
    sequence-classification model that reads the token concatenation prompt + response a +
    response b (each response as generated, up to and with its stop token) and scores > 0 when
    a is better (a pairwise RM; the paper's GenRM is a generative judge with the same role).
    Both orders are scored and swap-voted into +1 / 0 / -1 (`alignax.rewards.pairwise.
    swap_vote`), each group's bootstrapped reference drawn anew every iteration.
As in the toy there is no KL term in the loss (`rl.kl_coef` = 0; set it to add one). Every
`rl.eval_every` iterations the policy and the reference answer each held-out prompt once (fixed
keys); the run keeps the evaluated iteration with the best validation value of its OWN signal
(`val_rm`: the mean RM score; `val_judge`: the mean swap-voted outcome against the reference's
answer) and reports its test metrics (`test_rm` / `test_judge`, `test_length` and the
reference's `test_ref_length`, `test_length_ratio`). A user's prompts have no gold, so no claim
is evaluated. The checkpoints must share the policy's tokenizer.

    alignax run experiments/writing_zero.py:real --workdir runs/brpo_real \
        --config.method=brpo_judge --config.model.path=/ckpt/policy \
        --config.judge.path=/ckpt/pairwise_rm --config.data.path=/data/prompts \
        --config.model.dtype=bfloat16 --config.model.logits_chunk=8192 --config.lora.rank=16
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import online, policy_gradient, pretrained, real, small_pg
from alignax.losses.reward import bradley_terry_loss
from alignax.models import sequence_table as st
from alignax.protocol import seed_mean
from alignax.rewards import pairwise
from alignax.tasks.simulators import bradley_terry
from alignax.tasks.splits import choose_on_validation, split_seeds
from alignax.train.plots import plot_curves
from alignax.train.small import fit_small, pair_accuracy_selection, stack_seeds

METHODS = ("grpo_rm", "brpo_judge")
END = 0
NUM_CONTENT = 4
KEY_SETS = np.array([[i, j] for i in range(NUM_CONTENT) for j in range(i + 1, NUM_CONTENT)])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.method = "brpo_judge"
    c.variants = {m: {"method": m} for m in METHODS}
    c.length = 4 if smoke else 6
    # P(END) at depth 0..L-1 of the reference, and the log-odds boost of key tokens
    c.ref = dict(end_probs=(0.02, 0.25, 0.6, 0.5, 0.5, 0.5), key_boost=float(np.log(2.0)))
    c.data = dict(train_prompts=64, val_prompts=64, test_prompts=128,
                  num_pairs=200 if smoke else 2000, val_pairs=100 if smoke else 500,
                  test_pairs=100 if smoke else 1000)
    c.annotator = dict(length_bias=1.5, temperature=1.0)  # u = gold + length_bias * n
    c.judge = dict(temperature=0.5, position_bias=1.0)
    c.rm = dict(steps=30 if smoke else 300, learning_rate=0.1, eval_every=10 if smoke else 20)
    c.rl = dict(steps=10 if smoke else 200, prompts_per_update=8 if smoke else 16,
                group_size=8, eval_every=5 if smoke else 20)
    c.learning_rates = (0.1,) if smoke else (0.03, 0.1)
    return c


# ---------------------------------------------------------------------------------------------
# :real: GRPO on a reward checkpoint or BRPO with a pairwise judge checkpoint


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.method = "brpo_judge"
    real.add_real_fields(c, max_length=512)  # data.max_length: the prompt length P
    c.rm = dict(path="")     # grpo_rm: a scalar reward checkpoint
    c.judge = dict(path="")  # brpo_judge: a pairwise judge checkpoint (prompt + a + b -> score)
    c.rl = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8, max_new_tokens=512,
        kl_coef=0.0, eval_every=20, checkpoint_every=20,
        optimizer=real.optimizer(1e-6))
    c.rl.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def _real_rl_cfg(config, stops=None) -> dict:
    return real.online_config(config, "rl", stops,
                              advantage="grpo" if config.method == "grpo_rm" else "brpo")


def validate(config: ml_collections.ConfigDict) -> None:
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; valid: {METHODS}")
    if real.is_real(config):
        key = "rm.path" if config.method == "grpo_rm" else "judge.path"
        real.require(config, "model.path", "data.path", key, what={
            "rm.path": "a reward checkpoint folder, for method grpo_rm",
            "judge.path": "a pairwise judge checkpoint folder, for method brpo_judge"})
        policy_gradient.validate(_real_rl_cfg(config))


def pair_inputs(prompt_ids, prompt_mask, resp_a, mask_a, resp_b, mask_b, pad_id: int = 0):
    """The judge's inputs: row k = the valid tokens of prompt k, response a_k and response b_k,
    left-aligned and right-padded: ids [M, P + 2R] int32 and mask [M, P + 2R] bool, from
    prompts [M, P] (mask [M, P]) and responses [M, R] (masks [M, R])."""
    prompt_ids, resp_a, resp_b = map(np.asarray, (prompt_ids, resp_a, resp_b))
    prompt_mask, mask_a, mask_b = (np.asarray(m, bool) for m in (prompt_mask, mask_a, mask_b))
    m, width = len(prompt_ids), prompt_ids.shape[1] + resp_a.shape[1] + resp_b.shape[1]
    ids = np.full((m, width), pad_id, np.int32)
    mask = np.zeros((m, width), bool)
    for k in range(m):
        seq = np.concatenate([prompt_ids[k][prompt_mask[k]], resp_a[k][mask_a[k]],
                              resp_b[k][mask_b[k]]])
        ids[k, :len(seq)], mask[k, :len(seq)] = seq, True
    return ids, mask


def swap_voted_judge(judge_apply, judge_params, pad_id: int = 0):
    """`(prompt_ids, prompt_mask, resp_a, mask_a, resp_b, mask_b) -> [M]` outcomes of a pairwise
    judge checkpoint: score(prompt + a + b) > 0 means a wins; both orders, swap-voted
    (+1 a wins in both, -1 b wins in both, 0 otherwise)."""
    score = jax.jit(judge_apply)

    def outcomes(prompt_ids, prompt_mask, resp_a, mask_a, resp_b, mask_b):
        ab = score(judge_params, *pair_inputs(prompt_ids, prompt_mask, resp_a, mask_a, resp_b,
                                              mask_b, pad_id))
        ba = score(judge_params, *pair_inputs(prompt_ids, prompt_mask, resp_b, mask_b, resp_a,
                                              mask_a, pad_id))
        return np.asarray(pairwise.swap_vote(ab > 0, ba > 0))

    return outcomes


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): one method from `model.path`, chosen on its own signal."""
    tok = real.tokenizer(config)
    data = real.prompt_data(config, tok, int(config.data.max_length))
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.rl.stop_tokens)
    grpo = config.method == "grpo_rm"
    path = config.rm.path if grpo else config.judge.path
    scorer, scorer_params = pretrained.model_and_params(real.model_config(config, path),
                                                        "reward", seed=seed)
    score = jax.jit(scorer.apply)
    judge = None if grpo else swap_voted_judge(scorer.apply, scorer_params, tok.pad_id)

    def reward_fn(rollout):
        return score(scorer_params, rollout.ids, rollout.mask)

    def judge_fn(rollout, ref_rows):
        prompts, mask = np.asarray(rollout.prompts), np.asarray(rollout.mask)
        resp, rmask = np.asarray(rollout.responses), np.asarray(rollout.response_mask)
        return judge(prompts, mask[:, :prompts.shape[1]], resp, rmask, resp[ref_rows],
                     rmask[ref_rows])

    ids, pmask, n_val = real.held_out_prompts(data)
    sample = jax.jit(online.make_rollout(model, num_samples=1,
                                         max_new_tokens=int(config.rl.max_new_tokens),
                                         stop_tokens=stops, pad_id=tok.pad_id))
    reference = sample(params, ids, pmask, jax.random.key(1))

    def evaluate(policy_params):
        rollout = sample(policy_params, ids, pmask, jax.random.key(2))
        out = real.split_means(np.asarray(rollout.response_mask).sum(-1), n_val, "length")
        if grpo:
            out.update(real.split_means(reward_fn(rollout), n_val, "rm"))
        else:
            out.update(real.split_means(judge(
                ids, pmask, rollout.responses, rollout.response_mask, reference.responses,
                reference.response_mask), n_val, "judge"))
        return out

    out = policy_gradient.train(_real_rl_cfg(config, stops), os.path.join(workdir, "rl"),
                                model=model, init_params=params, ref_params=params,
                                prompt_ids=data["train"]["prompt_ids"],
                                prompt_mask=data["train"]["prompt_mask"],
                                reward_fn=reward_fn if grpo else None,
                                judge_fn=None if grpo else judge_fn, eval_fn=evaluate,
                                seed=seed)
    result = real.choose_iteration(out["history"], "eval/val_rm" if grpo else "eval/val_judge",
                                   workdir)
    ref_length = float(np.asarray(reference.response_mask)[n_val:].sum(-1).mean())
    result.update({"test_ref_length": ref_length,
                   "test_length_ratio": result["test_length"] / max(ref_length, 1e-9)})
    return result


# ---------------------------------------------------------------------------------------------
# The world: sequences, responses, gold, reference


def space_of(config) -> st.SequenceSpace:
    return st.SequenceSpace(vocab_size=NUM_CONTENT + 1, length=int(config.length))


def response_stats(tokens, keys):
    """Per response: length n (tokens before the first END), distinct keys covered m, key and
    off-topic token counts. tokens [..., L] int, keys [..., C] multi-hot (broadcast)."""
    alive = jnp.cumprod(tokens != END, axis=-1).astype(jnp.float32)  # before the first END
    onehot = jax.nn.one_hot(tokens - 1, NUM_CONTENT) * alive[..., None]  # [..., L, C]
    counts = onehot.sum(-2)  # [..., C]
    keys = jnp.asarray(keys, jnp.float32)
    n = alive.sum(-1)
    m = jnp.sum((counts > 0) * keys, -1)
    n_key = jnp.sum(counts * keys, -1)
    return {"length": n, "covered": m, "key_tokens": n_key, "off_tokens": n - n_key}


def gold_of(stats):
    """The content score 2m - n: +1 per key covered, -1 per other token."""
    return 2.0 * stats["covered"] - stats["length"]


def rm_features(stats):
    return jnp.stack([stats["covered"], stats["key_tokens"], stats["off_tokens"]], -1)


def reference_params(config, space) -> dict:
    """The SFT reference: END with probability end_probs[depth] before any END (1 - 1e-2
    after it), each content token with log-odds key_boost * (is a key of the prompt)."""
    v, length = space.vocab_size, space.length
    end_probs = np.asarray(config.ref.end_probs, np.float64)[:length]
    a = float(config.ref.key_boost)
    z_content = 2.0 * np.exp(a) + (NUM_CONTENT - 2)  # every prompt has two keys
    depth = np.zeros(space.num_nodes, np.int64)
    ended = np.zeros(space.num_nodes, bool)
    seqs, nodes = space.sequences, space.prefix_nodes
    for t in range(length):
        depth[nodes[:, t]] = t
        if t:
            ended[nodes[:, t]] = np.any(seqs[:, :t] == END, axis=1)
    bias = np.zeros((space.num_nodes, v), np.float32)
    weight = np.zeros((space.num_nodes, NUM_CONTENT + 1, v), np.float32)
    p = end_probs[depth]
    bias[:, END] = np.log(p * z_content / (1.0 - p))
    for k in range(NUM_CONTENT):
        weight[:, k, k + 1] = a
    bias[ended, END] = np.log(99.0 * NUM_CONTENT)  # after END: END with probability 0.99
    weight[ended] = 0.0
    return {"bias": jnp.asarray(bias), "weight": jnp.asarray(weight)}


KIND_FEATURES = np.zeros((len(KEY_SETS), NUM_CONTENT + 1), np.float32)
KIND_FEATURES[np.arange(len(KEY_SETS))[:, None], KEY_SETS] = 1.0
KIND_FEATURES[:, -1] = 1.0  # [6, C + 1]: the keys' multi-hot and a constant 1


def prompt_kinds(n: int, seed: int) -> np.ndarray:
    """[n] prompt kinds (which two of the four content tokens are the keys), uniform."""
    return np.random.default_rng([seed, 7070]).integers(0, len(KEY_SETS), n)


def kind_tables(space) -> dict:
    """Per prompt kind, every sequence's gold [6, N], RM features [6, N, 3], and the length
    [N] (numpy)."""
    stats = response_stats(jnp.asarray(space.sequences)[None],
                           jnp.asarray(KIND_FEATURES)[:, None, :NUM_CONTENT])
    return {"gold": np.asarray(gold_of(stats)), "features": np.asarray(rm_features(stats)),
            "length": np.asarray(stats["length"][0])}


_seq_logp = jax.jit(st.sequence_log_probs, static_argnums=0)


def preference_pairs(config, space, ref, tables, n: int, seed: int) -> dict:
    """n pairs of reference responses to random prompts, labelled by the length-biased
    annotators: chosen / rejected RM features [n, 3] and their gold."""
    rng = np.random.default_rng([seed, 7071])
    kinds = prompt_kinds(n, seed)
    p = np.exp(np.asarray(_seq_logp(space, ref, jnp.asarray(KIND_FEATURES)), np.float64))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    u = rng.random((2, n))
    ya = np.array([min(np.searchsorted(cdf[k], x), space.num_sequences - 1)
                   for k, x in zip(kinds, u[0])])
    yb = np.array([min(np.searchsorted(cdf[k], x), space.num_sequences - 1)
                   for k, x in zip(kinds, u[1])])
    ga, gb = tables["gold"][kinds, ya], tables["gold"][kinds, yb]
    ann = config.annotator
    ua = ga + ann.length_bias * tables["length"][ya]
    ub = gb + ann.length_bias * tables["length"][yb]
    a_pref = bradley_terry(ua, ub, rng=rng, temperature=ann.temperature).astype(bool)
    fa, fb = tables["features"][kinds, ya], tables["features"][kinds, yb]
    return {"chosen": np.where(a_pref[:, None], fa, fb).astype(np.float32),
            "rejected": np.where(a_pref[:, None], fb, fa).astype(np.float32),
            "gold_chosen": np.where(a_pref, ga, gb).astype(np.float32),
            "gold_rejected": np.where(a_pref, gb, ga).astype(np.float32)}


def make_data(config, seed: int, space, ref, tables) -> dict:
    """Seed `seed`'s training prompts (features) and, per split, the prompt-kind frequencies
    (the exact evaluations weight the kinds by them) and the labelled RM pairs."""
    splits = split_seeds(seed)
    d = config.data
    kinds = len(KEY_SETS)
    train = prompt_kinds(int(d.train_prompts), splits.train)
    out = {"train_z": KIND_FEATURES[train]}
    for name, n, s in (("val", d.val_prompts, splits.validation),
                       ("test", d.test_prompts, splits.test)):
        out[f"{name}_w"] = (np.bincount(prompt_kinds(int(n), s), minlength=kinds)
                            / float(n)).astype(np.float32)
    for name, n, s in (("train", d.num_pairs, splits.train), ("val", d.val_pairs,
                                                             splits.validation),
                       ("test", d.test_pairs, splits.test)):
        pairs = preference_pairs(config, space, ref, tables, int(n), s)
        out.update({f"{name}_{k}": v for k, v in pairs.items()})
    return out


# ---------------------------------------------------------------------------------------------
# The scalar RM


def train_rm(config, workdir, data):
    """A linear BT reward model r = theta . (m, key tokens, off-topic tokens) per seed,
    early-stopped on validation pair accuracy; returns the fit."""
    rc = config.rm

    def loss_fn(theta, batch):
        return jnp.mean(bradley_terry_loss(batch["train_chosen"] @ theta,
                                           batch["train_rejected"] @ theta))

    selection = pair_accuracy_selection(
        lambda theta, x: x @ theta,
        {"chosen": data["val_chosen"], "rejected": data["val_rejected"]},
        steps_per_log=int(rc.eval_every))
    return fit_small(workdir, loss_fn=loss_fn, init_params=jnp.zeros(3, jnp.float32),
                     tx=optax.adam(float(rc.learning_rate)), num_steps=int(rc.steps),
                     data={k: data[k] for k in ("train_chosen", "train_rejected")},
                     seeds=list(config.seeds), per_seed_data=True, plots=False, **selection)


# ---------------------------------------------------------------------------------------------
# RL


def gold_values(space):
    return np.arange(-space.length, 3, dtype=np.float32)  # 2m - n takes these values


def eval_fn_of(config, space, tables):
    """Exact metrics on the val / test prompts: per prompt kind over all N sequences, weighted
    by the split's kind frequencies: E_pi[gold], E_pi[length], E_pi[RM], the expected
    swap-voted judge outcome of pi against the reference, KL(pi || ref)."""
    values = jnp.asarray(gold_values(space))
    outcome = pairwise.expected_judge_outcome(values[:, None], values[None, :],
                                              **config.judge.to_dict())  # [K, K]
    z = jnp.asarray(KIND_FEATURES)
    gold, length = jnp.asarray(tables["gold"]), jnp.asarray(tables["length"])
    feats = jnp.asarray(tables["features"])
    onehot = (gold[..., None] == values).astype(jnp.float32)  # [6, N, K]

    def eval_fn(params, e):
        lp = st.sequence_log_probs(space, params, z)
        lq = st.sequence_log_probs(space, e["ref_params"], z)
        p, q = jnp.exp(lp), jnp.exp(lq)
        pv, qv = jnp.einsum("pn,pnk->pk", p, onehot), jnp.einsum("pn,pnk->pk", q, onehot)
        per_kind = {"gold": jnp.sum(p * gold, -1), "length": p @ length,
                    "rm": jnp.sum(p * (feats @ e["theta"]), -1),
                    "judge": jnp.einsum("pk,kl,pl->p", pv, outcome, qv),
                    "kl": jnp.sum(p * (lp - lq), -1)}
        return {f"{split}_{k}": jnp.sum(e[f"{split}_w"] * v)
                for split in ("val", "test") for k, v in per_kind.items()}

    return eval_fn


def loss_of(config, space, method: str):
    rl = config.rl
    seqs = jnp.asarray(space.sequences)

    def sample_fn(params, key, prompts, n):  # token by token: no V^L table per update
        return st.sample_paths(space, params, key, n, prompts)

    def log_prob_fn(params, prompts, responses):
        return st.path_log_probs(space, params, responses, prompts[:, None, :])

    num_prompts = int(rl.prompts_per_update)
    judge_kw = config.judge.to_dict()

    def prompt_fn(key, data):
        rows = jax.random.randint(key, (num_prompts,), 0, data["prompts"].shape[0])
        return data["prompts"][rows]

    def stats_of(prompts, responses):
        return response_stats(seqs[responses], prompts[:, None, :NUM_CONTENT])

    def rm_reward(prompts, responses, data):
        stats = stats_of(prompts, responses)
        return rm_features(stats) @ data["theta"], {"length": stats["length"].mean(),
                                                    "gold": gold_of(stats).mean()}

    def judge_reward(prompts, responses, data, key):
        stats = stats_of(prompts, responses)
        gold = gold_of(stats)

        def judge(k, ga, gb):
            return pairwise.pairwise_judge(k, ga, gb, **judge_kw)

        outcomes, _ = pairwise.bootstrapped_reference_outcomes(key, judge, gold)
        return outcomes, {"length": stats["length"].mean(), "gold": gold.mean()}

    common = dict(group_size=int(rl.group_size), prompt_fn=prompt_fn)
    if method == "grpo_rm":
        return small_pg.group_pg_loss(sample_fn, log_prob_fn, rm_reward, advantage="grpo",
                                      **common)
    return small_pg.group_pg_loss(sample_fn, log_prob_fn, judge_reward,
                                  advantage=pairwise.brpo_advantages, reward_key=True,
                                  **common)


EVAL_METRICS = ("val_gold", "val_length", "val_rm", "val_judge", "val_kl", "test_gold",
                "test_length", "test_rm", "test_judge", "test_kl")


def train_rl(config, workdir, data, space, ref, tables, theta, lr: float):
    """One method at one learning rate, every seed at once; returns [(updates, {metric: [S]})]
    at every logged checkpoint."""
    seeds = [int(s) for s in config.seeds]
    rl = config.rl
    s = len(seeds)
    rep = lambda x: jnp.broadcast_to(x, (s,) + x.shape)  # noqa: E731
    ref_s = jax.tree.map(rep, ref)
    train = {"prompts": data["train_z"], "theta": theta}
    evals = {"val_w": data["val_w"], "test_w": data["test_w"], "ref_params": ref_s,
             "theta": theta}
    fit = fit_small(workdir, loss_fn=loss_of(config, space, config.method),
                    init_params=ref_s, per_seed_init=True, tx=optax.adam(lr),
                    num_steps=int(rl.steps), data=train, seeds=seeds, per_seed_data=True,
                    batch_fn=small_pg.rl_batch, has_aux=True,
                    steps_per_log=int(rl.eval_every), eval_fn=eval_fn_of(config, space, tables),
                    eval_data=evals, plots=False)
    points = []
    for t, row in enumerate(fit.history):
        points.append(((t + 1) * int(rl.eval_every),
                       {m: np.array([row[f"seed_{x}/eval/{m}"] for x in seeds])
                        for m in EVAL_METRICS}))
    return points


def reference_metrics(config, space, ref, tables, data, theta) -> dict:
    """The reference policy's exact metrics (the same evaluator at params = ref)."""
    s = data["val_w"].shape[0]
    ref_s = jax.tree.map(lambda x: jnp.broadcast_to(x, (s,) + x.shape), ref)
    ev = jax.jit(jax.vmap(eval_fn_of(config, space, tables)))
    out = ev(ref_s, {"val_w": data["val_w"], "test_w": data["test_w"], "ref_params": ref_s,
                     "theta": theta})
    return {k: np.asarray(v) for k, v in out.items()}


def judge_gold_agreement(config, data) -> np.ndarray:
    """[S] expected agreement of the swap-voted judge with the gold order on the test pairs of
    reference responses with different gold (a tie counts half)."""
    gc, gr = np.asarray(data["test_gold_chosen"]), np.asarray(data["test_gold_rejected"])
    e = np.asarray(pairwise.expected_judge_outcome(gc, gr, **config.judge.to_dict()))
    differ = gc != gr
    agree = 0.5 + 0.5 * e * np.sign(gc - gr)
    return np.array([agree[i][differ[i]].mean() for i in range(gc.shape[0])])


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    if real.is_real(config):
        return {int(s): _run_real(config, os.path.join(workdir, f"seed_{s}"), int(s))
                for s in config.seeds}
    method = config.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    seeds = [int(s) for s in config.seeds]
    space = space_of(config)
    ref = reference_params(config, space)
    tables = kind_tables(space)
    per_seed = [make_data(config, s, space, ref, tables) for s in seeds]
    data = stack_seeds(per_seed, list(per_seed[0]))
    out = {s: {} for s in seeds}
    if method == "grpo_rm":
        rm = train_rm(config, os.path.join(workdir, "reward_model"), data)
        theta = rm.best_params
        tc, tr = data["test_chosen"], data["test_rejected"]
        acc = np.asarray(jnp.mean((jnp.einsum("snf,sf->sn", tc - tr, theta) > 0), -1))
        for i, s in enumerate(seeds):
            out[s].update({"rm_val_accuracy": float(rm.best_score[i]),
                           "rm_test_accuracy": float(acc[i]),
                           "rm_chosen_step": float(rm.best_step[i]),
                           "rm_coef_covered": float(theta[i, 0]),
                           "rm_coef_key_token": float(theta[i, 1]),
                           "rm_coef_off_token": float(theta[i, 2])})
    else:
        theta = jnp.zeros((len(seeds), 3), jnp.float32)  # unused by BRPO (its metric is 0)
        agree = judge_gold_agreement(config, data)
        for i, s in enumerate(seeds):
            out[s]["judge_test_agreement"] = float(agree[i])
    ref_m = reference_metrics(config, space, ref, tables, data, theta)
    candidates = {}
    for lr in [float(x) for x in config.learning_rates]:
        for updates, m in train_rl(config, os.path.join(workdir, f"lr_{lr:g}"), data, space,
                                   ref, tables, theta, lr):
            candidates[f"lr={lr:g},updates={updates}"] = (lr, updates, m)
    signal = "val_rm" if method == "grpo_rm" else "val_judge"
    for i, s in enumerate(seeds):
        name, record = choose_on_validation(
            {n: float(m[signal][i]) for n, (_, _, m) in candidates.items()}, float)
        lr, updates, m = candidates[name]
        res = out[s]
        res.update({k: float(v[i]) for k, v in m.items()})
        res.update({"chosen_lr": lr, "chosen_updates": float(updates),
                    "num_candidates": float(len(record["scores"])),
                    "test_ref_gold": float(ref_m["test_gold"][i]),
                    "test_ref_length": float(ref_m["test_length"][i]),
                    "val_ref_gold": float(ref_m["val_gold"][i])})
        res["test_length_ratio"] = res["test_length"] / res["test_ref_length"]
        res["test_length_change"] = abs(res["test_length_ratio"] - 1.0)
        res["test_gold_gain"] = res["test_gold"] - res["test_ref_gold"]
        # the end of the budget at the chosen learning rate, for reference
        last = max((v for v in candidates.values() if v[0] == lr), key=lambda v: v[1])
        res["test_gold_final"] = float(last[2]["test_gold"][i])
        res["test_length_final"] = float(last[2]["test_length"][i])
    return out


def claims(results) -> list[protocol.Claim]:
    if "default" in results:  # :real: one method on a user's checkpoints, metrics only
        return []
    def show(v):
        return (f"{v}: gold {seed_mean(results, v, 'test_gold'):.2f}, length "
                f"{seed_mean(results, v, 'test_length'):.2f}")

    ref = (f"reference gold {seed_mean(results, 'brpo_judge', 'test_ref_gold'):.2f}, length "
           f"{seed_mean(results, 'brpo_judge', 'test_ref_length'):.2f}")
    detail = f"{show('grpo_rm')}; {show('brpo_judge')}; {ref} (test prompts, exact)"
    privileged = ("; the judge compares the (noisy) gold while the RM learned length-biased "
                  "preferences: the paper's premise, not a like-for-like reward")
    out = [
        protocol.threshold(
            "GRPO on the length-biased scalar RM at least doubles the response length",
            results, ("grpo_rm", "test_length_ratio"), at_least=2.0, detail=detail),
        protocol.compare(
            "GRPO on the scalar RM lowers the gold content score below the reference's",
            results, ("grpo_rm", "test_gold"), ("grpo_rm", "test_ref_gold"), at_most=0.0,
            detail=detail),
        protocol.compare(
            "BRPO with the swap-voted pairwise judge raises the gold over the reference",
            results, ("brpo_judge", "test_gold"), ("brpo_judge", "test_ref_gold"),
            at_least=0.0, detail=detail),
        protocol.threshold(
            "BRPO changes the response length by at most 20% (|length / ref - 1| <= 0.2)",
            results, ("brpo_judge", "test_length_change"), at_most=0.2, detail=detail),
        protocol.compare(
            "BRPO + pairwise judge reaches a higher test gold than GRPO + scalar RM", results,
            ("brpo_judge", "test_gold"), ("grpo_rm", "test_gold"), at_least=0.0,
            detail=detail + privileged),
    ]
    if "rm_coef_key_token" in next(iter(results["grpo_rm"]["per_seed"].values()), {}):
        coef = protocol.per_seed(results, "grpo_rm", "rm_coef_off_token")
        out.append(protocol.sanity(
            "the scalar RM learned the annotators' length bias (an off-topic token is rewarded)",
            all(c > 0 for c in coef.values()),
            {"mean_off_token_coef": float(np.mean(list(coef.values()))),
             "rm_test_accuracy": seed_mean(results, "grpo_rm", "rm_test_accuracy")},
            "planted: annotators add length_bias = 1.5 per token, more than its gold cost 1"))
    if "judge_test_agreement" in next(iter(results["brpo_judge"]["per_seed"].values()), {}):
        agree = seed_mean(results, "brpo_judge", "judge_test_agreement")
        out.append(protocol.sanity(
            "the swap-voted judge agrees with the gold order on most reference pairs",
            agree > 0.5, {"agreement": agree},
            "by construction: a noisy comparator of the gold (ties count half)"))
    return out


def plots(results, workdir: str) -> list[str]:
    if "default" in results:
        return []
    curves = {v: ([seed_mean(results, v, "test_length")],
                  np.asarray([seed_mean(results, v, "test_gold")])) for v in results}
    out = os.path.join(workdir, "plots", "writing_zero_gold_vs_length.png")
    plot_curves(curves, out, title="test gold vs length at the validation-chosen checkpoints",
                xlabel="E_pi[length]", ylabel="E_pi[gold]")
    return [out]
