"""GTAlign: the mutual-welfare reward sqrt(U L) vs training on the user's or the LLM's payoff.

Paper: Zhu, Zhang, Cisneros-Velarde, You 2025, "GTAlign: Game-Theoretic Alignment of LLM
Assistants for Mutual Welfare" (arXiv 2510.08872).

Mechanism (`alignax.rewards.welfare`): a response earns the user's welfare U and the LLM's
welfare L; GRPO trains on the Cobb-Douglas welfare W = sqrt(U L) (the paper's reward; its
baselines train on U alone, on L alone, and on the linear (U + L) / 2). The reasoning writes a
payoff matrix over (LLM action) x (user type) and acts on the welfare it predicts; a change of
the service's pricing edits the matrix at inference, L' = L - c * tokens(a), with no
retraining.

Setting (a contextual bandit; the notes' toy with noisy query features): a query is clear or
ambiguous (P(clear) = `world.p_clear`) and its user wants a concise or a detailed answer
(P(detail) = `world.p_detail`, independent): four user types k in (clear-concise, clear-detail,
ambiguous-concise, ambiguous-detail). The LLM answers concisely, verbosely, or asks a
clarifying question (tokens 1, 4, 2). Payoffs (U, L) per action and type (`payoffs`):

                 clear-concise  clear-detail  ambig-concise  ambig-detail
    concise       (.90, .40)     (.40, .40)    (.55, .35)     (.25, .35)
    verbose       (.35, .70)     (.90, .70)    (.60, .65)     (.95, .65)
    clarify       (.10, .90)     (.10, .90)    (.75, .90)     (.75, .90)

The prisoner's-dilemma structure of the notes: L favours clarifying, then verbosity, in every
cell (the LLM's individually rational action), which annoys users with clear questions; U alone
prefers a long hedging answer to an ambiguous query (.81 vs .75 in expectation), which the LLM
values less than the clarifying question; W picks concise / verbose for clear queries
(matching the type) and clarify for ambiguous ones, giving up 3.5% of the attainable U.

The policy is GTAlign's reasoning chain in miniature: it forms a belief about the user,
writes a payoff matrix, and acts on the welfare the matrix predicts. Per context it sees
  - x: a noisy clarity signal (+1 clear / -1 ambiguous, + N(0, `world.clarity_noise`^2)), a
    noisy style signal (+1 detail / -1 concise for clear queries, 0 for ambiguous ones: the
    user's type is latent for an ambiguous query; + N(0, `world.style_noise`^2)),
    `world.distractors` N(0, 1) features and a constant;
  - the payoff matrix its reasoning wrote, (U^, L^) [3 actions, 4 types]: the true table +
    N(0, `world.reasoning_noise`^2) per entry, drawn once per context (the matrix is given,
    not learned: the toy trains what the model does with it).
It computes a belief b(x) = softmax(x phi) over the 4 types (learned), the payoff block m_a =
(E_b U^_a, E_b L^_a, E_b W(U^_a, L^_a)) of each action (`welfare.expected_welfare`), and acts
with logit_a = m_a . (eta * reading). With `reading` "welfare" (every variant of the claims)
only the welfare column is read, as GTAlign's analyze step picks the welfare-maximising action;
eta starts at (0, 0, 1) (the format's instruction), phi at 0 (the uniform belief: the starting
policy answers verbosely everywhere). Training can make the policy sharper (eta) and move its
belief (phi); every deterministic behaviour is reachable through the belief (concise from a
clear-concise belief, verbose from clear-detail, clarify from an ambiguous one), so the U- and
L-trained policies can reach their own optima. The ablation `welfare_learned_reading` reads all
three columns with eta learned from 0.

Training: GRPO (`small_pg.group_pg_loss`, advantage (r - mean) / std within each group, M =
`train.contexts` training contexts x G = `train.group_size` sampled actions per update, Adam,
every seed in one `fit_small` program); the reward of a sampled action is the variant's
aggregate of the realised user type's (U, L): `welfare` sqrt(U L), `linear` (U + L) / 2, `user`
U, `llm` L.

Splits: experiment seed s draws its training contexts from data seed 3s, validation from 3s + 1
and test from 3s + 2 (`split_seeds`); sampling keys derive from s. The world and the training
settings were fixed on development seeds 100-104 (not the claim seeds): the first design, a
policy that also read the query features directly and the block with a learned reading, did not
follow the token-cost edit (flip rate about 0.1); the welfare-reading policy is the paper's
structure, and the learned reading stays as the ablation.

Selection on validation (the same for every variant): the policy at the logged step (every
`train.steps_per_log` updates) with the best exact expected training reward of its own variant
on the validation contexts (`fit_small(select=)`; no variant sees another's reward or the test
set). Test metrics of that policy are exact expectations over actions and over the user type
given the features (posterior-weighted, the posterior of the known observation model):
`test_u`, `test_l`, `test_w`, and the ratios to the best any policy can reach from the same
observations, `test_w_ratio` = test_w / E_x max_a E[W | x, a] and `test_u_ratio` likewise for
U; the clarify rate on clear queries (`test_clarify_clear`); the belief's mass on the context's
observable cell (`test_belief_on_cell`).

Inference-time pricing (decided before running, from the payoff table and each observable
cell's belief, `predicted_actions`): `token_cost` (c = 0.2, the LLM pays per token) flips the
clear-detail cell from verbose to concise and keeps the others; `token_revenue` (c = -0.5, per-
token billing) flips clear-concise (concise -> verbose) and ambiguous (clarify -> verbose) and
keeps clear-detail. For the trained policy the price edits its written matrix only (L^ - c
tokens, the block recomputed, parameters untouched); per test context its most likely action is
compared with the prediction: `test_steer_<price>_flip` is the fraction of contexts in the
predicted cells whose action becomes the predicted one, `test_steer_<price>_keep` the fraction
of the other contexts whose action stays, `test_steer_min` the smallest of the four; counted are
the test contexts whose features reveal their cell (posterior mass >= `steer_confidence`,
`test_readable` of them). Not guaranteed by construction: the direction of the edit's effect is
structural (the policy acts on the block's welfare), but GRPO at c = 0 rewards only the argmax
of the block under the learned belief, and many beliefs give the same actions at c = 0 and
different ones at another price (a clear-detail belief with 15% on the ambiguous types turns to
clarify, not concise, at c = 0.2); the claim tests that the belief learned from the welfare
reward is the user's type, as the prediction assumes. The same measure for the exact
payoff-matrix step (`welfare.best_action` on the true table with each context's posterior) is
a sanity check: it is the prediction itself (`bayes_steer_*`). Reported too: the exact step on
each context's written, noisy matrix (`written_steer_*`), the most any reader of that matrix
can follow the prediction.

Reading the full run (5 seeds, one run on the claim seeds): the sqrt(UL) policy reaches 98.6%
of the attainable W [0.984, 0.987] with U at 92.8% [0.924, 0.932] of the attainable U; the
L-only policy clarifies 96% of clear queries and reaches 74.6% [0.738, 0.753] of W; the
U-only policy hedges ambiguous queries verbosely and its W is 0.036 [0.028, 0.045] lower. The
linear aggregate ends where sqrt(UL) does. Steering: the welfare-reading policy keeps the cells
no price should move (0.99, 1.00) and follows the token-revenue edit on 0.84 of the predicted
contexts, and the token-cost edit on 0.79 (test_steer_min 0.793 [0.759, 0.828]: INCONCLUSIVE
against 0.8). Its belief there is right (0.996 on clear-detail); the misses go to clarify,
because at c = 0.2 the clear-detail cell's margin (W 0.283 concise vs 0.224 clarify) is within
the noise of the written matrix: the exact step on the written matrices follows that edit on
0.79 too. The learned-reading ablation reaches the same W (0.991) but follows the token-cost
edit on 0.22 of those contexts: its reading weighs the U column (eta about (10, 6, 9)), which a
price does not touch. The step chosen on validation is at or near the end of the budget
(580-600 of 600) for every claimed variant.

Claims (5 seeds, 95% Student t intervals; the notes' pass criteria):
  - threshold: the sqrt(UL) policy reaches >= 95% of the attainable W (test_w_ratio >= 0.95);
  - threshold: with U >= 90% of the attainable U (test_u_ratio >= 0.9);
  - comparative: the sqrt(UL) policy's test W exceeds the U-only policy's (difference >= 0);
  - threshold: a price change at inference moves the sqrt(UL) policy's action in the predicted
    cells and only there (test_steer_min >= 0.8);
  - sanity: the table has the dilemma structure (L's best action is clarify in every cell, U's
    and W's differ on ambiguous queries); the L-only policy's W <= 80% of the attainable (the
    notes' criterion, but on this table it follows from the first sanity check once training
    maximises L, so it is not counted); the exact payoff-matrix step follows the predicted
    flips on the test contexts (steer min >= 0.9).
Reported without a claim: the linear aggregate (on this table it has W's optimum; the
paper's distinction, a one-sided payoff, needs a cell where one side gets nearly nothing from
the best-sum action) and the learned-reading ablation.

    alignax run experiments/gtalign.py            # full setting, 5 seeds
    alignax run experiments/gtalign.py:smoke      # seconds, for the tests

`:real` runs the mutual-welfare reward with the library's GRPO recipe (`policy_gradient.train`)
on a Hugging Face policy checkpoint (`model.path`, also the reference) and the prompts of
`data.path` (any TRL format; the last `data.eval_fraction` of the rows are test prompts, the
fraction before them validation), with two variants at equal budget: `welfare` (r = sqrt(U L))
and `user` (r = U). The payoffs of a response:
  - U = sigmoid(s / `welfare.user_temperature`), s the score of the reward checkpoint at
    `rm.path` (a one-label `*ForSequenceClassification` folder, the user's welfare; the sigmoid
    is the Bradley-Terry probability of beating a response of score 0, a positive payoff);
  - L = eps + `welfare.format_weight` * finished + `welfare.answer_weight` * correct
    - `welfare.token_price` * tokens / `rl.max_new_tokens`: finished = the response ended with
    a stop token within the budget (the paper's format term checks its four tagged reasoning
    blocks, which a user's checkpoint need not write), correct = the text after the last
    `welfare.answer_marker` (the whole response when "") equals the row's `data.answer_field`
    (the term is left out when that is ""), and the token cost of `welfare.token_price` per
    full budget (`welfare.token_cost`).
Held-out U, L, W and response length (greedy decoding) are reported for the checkpoint
(`test_ref_*`) and for each variant at the evaluated iteration with the best validation value of
its own reward (`selection.json`). The toy claims are not evaluated (the user's data has no
gold welfare); the run reports metrics.

    alignax run experiments/gtalign.py:real --workdir runs/gtalign_real \
        --config.model.path=/ckpt/Qwen2.5-0.5B-Instruct --config.rm.path=/ckpt/rm \
        --config.data.path=/data/gsm8k --config.data.answer_field=answer \
        --config.welfare.answer_marker='####' --config.model.dtype=bfloat16 \
        --config.lora.rank=16
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alignax import protocol
from alignax.algorithms import online, policy_gradient, pretrained, real
from alignax.algorithms.small_pg import group_pg_loss, rl_batch
from alignax.rewards import welfare as wf
from alignax.tasks.splits import split_seeds
from alignax.train.small import fit_small, stack_seeds

ACTIONS = ("concise", "verbose", "clarify")
TYPES = ("clear_concise", "clear_detail", "ambiguous_concise", "ambiguous_detail")
# what the policy can tell apart: clear queries reveal the type, ambiguous ones do not
CELLS = ("clear_concise", "clear_detail", "ambiguous")
CELL_OF_TYPE = np.array([0, 1, 2, 2])
VARIANTS = {"welfare": "cobb_douglas", "linear": "linear", "user": "user", "llm": "llm"}
# the ablation: the sqrt(UL) reward with a reading of the payoff block learned from scratch
ABLATION = {"welfare_learned_reading": {"reward": "cobb_douglas", "reading": "learned",
                                        "init_eta": [0.0, 0.0, 0.0]}}
REAL_VARIANTS = ("welfare", "user")
BLOCK = ("u", "l", "w")  # the payoff block's columns per action
# the columns a policy reads: the welfare column only (GTAlign's analyze step), or all three
READINGS = {"welfare": (0.0, 0.0, 1.0), "learned": (1.0, 1.0, 1.0)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = real.config_mode(arg)
    if mode == "real":
        return _real_config()
    smoke = mode == "smoke"
    c = ml_collections.ConfigDict()
    c.seeds = [0] if smoke else [0, 1, 2, 3, 4]
    c.reward = "cobb_douglas"
    c.variants = {**{v: {"reward": r} for v, r in VARIANTS.items()}, **ABLATION}
    c.payoffs = dict(  # [action][type], ACTIONS x TYPES
        user=[[0.90, 0.40, 0.55, 0.25], [0.35, 0.90, 0.60, 0.95], [0.10, 0.10, 0.75, 0.75]],
        llm=[[0.40, 0.40, 0.35, 0.35], [0.70, 0.70, 0.65, 0.65], [0.90, 0.90, 0.90, 0.90]],
        tokens=[1.0, 4.0, 2.0])
    c.world = dict(p_clear=0.5, p_detail=0.6, clarity_noise=0.6, style_noise=0.6,
                   distractors=4, reasoning_noise=0.05)
    c.prices = dict(token_cost=0.2, token_revenue=-0.5)  # L' = L - c * tokens at inference
    # the steering rates count the test contexts whose posterior puts this much on their cell
    c.steer_confidence = 0.9
    # the block's columns the policy reads: "welfare" (E W^ only, GTAlign's analyze step) or
    # "learned" (all three); init_eta: the reading it starts from
    c.reading = "welfare"
    c.init_eta = [0.0, 0.0, 1.0]
    c.data = dict(num_train=64 if smoke else 1024, num_val=64 if smoke else 512,
                  num_test=96 if smoke else 1024)
    c.train = dict(steps=4 if smoke else 600, contexts=8 if smoke else 64,
                   group_size=4 if smoke else 8, learning_rate=0.05,
                   steps_per_log=2 if smoke else 20)
    return c


def _real_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seeds = [0]
    c.reward = "cobb_douglas"
    c.variants = {v: {"reward": VARIANTS[v]} for v in REAL_VARIANTS}
    real.add_real_fields(c, max_length=512, answer_field="")  # data.max_length: the prompt's
    c.rm = dict(path="")  # the user's welfare: a scalar reward checkpoint
    c.welfare = dict(eps=1e-4, format_weight=0.5, answer_weight=0.5, token_price=0.5,
                     user_temperature=1.0, answer_marker="")
    c.rl = policy_gradient.default_config(
        iterations=200, prompts_per_iteration=16, num_samples=8, max_new_tokens=256,
        kl_coef=0.02, eval_every=20, checkpoint_every=20, optimizer=real.optimizer(1e-6))
    c.rl.stop_tokens = (-1,)  # -1: the tokenizer's eos
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if config.reward not in wf.WELFARES:
        raise ValueError(f"reward={config.reward!r} is not one of {sorted(wf.WELFARES)}")
    if real.is_real(config):
        real.require(config, "model.path", "data.path", "rm.path", what={
            "rm.path": "a scalar reward checkpoint folder, the user's welfare U"})
        if float(config.welfare.user_temperature) <= 0:
            raise ValueError(f"welfare.user_temperature={config.welfare.user_temperature} "
                             "must be > 0")
        policy_gradient.validate(real.online_config(config, "rl"))
        return
    user, llm = np.asarray(config.payoffs.user), np.asarray(config.payoffs.llm)
    if user.shape != (len(ACTIONS), len(TYPES)) or llm.shape != user.shape:
        raise ValueError(f"payoffs.user / payoffs.llm must be {len(ACTIONS)} x {len(TYPES)} "
                         f"(actions {ACTIONS} x types {TYPES}), got {user.shape} and {llm.shape}")
    if len(config.payoffs.tokens) != len(ACTIONS):
        raise ValueError(f"payoffs.tokens needs one count per action {ACTIONS}")
    if config.reading not in READINGS:
        raise ValueError(f"reading={config.reading!r} is not one of {sorted(READINGS)}")
    if len(config.init_eta) != len(BLOCK):
        raise ValueError(f"init_eta needs {len(BLOCK)} weights (of {BLOCK})")
    for key in ("p_clear", "p_detail"):
        if not 0.0 < float(config.world[key]) < 1.0:
            raise ValueError(f"world.{key}={config.world[key]} must be in (0, 1)")
    for key in ("clarity_noise", "style_noise"):
        if float(config.world[key]) <= 0:
            raise ValueError(f"world.{key}={config.world[key]} must be > 0")


# ---------------------------------------------------------------------------------------------
# The world: user types, observations, the reasoning's payoff block


def type_prior(config) -> np.ndarray:
    """[K] P(type) in `TYPES` order."""
    pc, pd = float(config.world.p_clear), float(config.world.p_detail)
    return np.array([pc * (1 - pd), pc * pd, (1 - pc) * (1 - pd), (1 - pc) * pd])


def tables(config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U [A, K], L [A, K] and tokens [A] of the config."""
    return (np.asarray(config.payoffs.user, np.float32), np.asarray(config.payoffs.llm, np.float32),
            np.asarray(config.payoffs.tokens, np.float32))


def cell_beliefs(config) -> np.ndarray:
    """[3, K] the belief over types in each observable cell (clear-concise, clear-detail:
    the type; ambiguous: the prior's detail share)."""
    pd = float(config.world.p_detail)
    return np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1 - pd, pd]], np.float32)


def predicted_actions(config, price: float = 0.0) -> np.ndarray:
    """[3] the payoff-matrix step's action in each observable cell at token price `price`
    (`welfare.best_action` on the true table): the prediction the steering claim tests."""
    user, llm, tokens = tables(config)
    return np.asarray(wf.best_action(user, llm, cell_beliefs(config), price=price,
                                     tokens=tokens))


def make_contexts(config, n: int, data_seed: int) -> dict[str, np.ndarray]:
    """n contexts of one split: user type [n], features x [n, D], the exact posterior over
    types [n, K] and the reasoning's payoff matrix U^, L^ [n, A, K]."""
    w = config.world
    rng = np.random.default_rng([int(data_seed), 4101])
    kind = rng.choice(len(TYPES), size=n, p=type_prior(config))
    clear, detail = kind < 2, (kind % 2) == 1
    mu_c = np.where(clear, 1.0, -1.0)
    mu_s = np.where(clear, np.where(detail, 1.0, -1.0), 0.0)
    s_c = mu_c + float(w.clarity_noise) * rng.standard_normal(n)
    s_s = mu_s + float(w.style_noise) * rng.standard_normal(n)
    z = rng.standard_normal((n, int(w.distractors)))
    x = np.concatenate([s_c[:, None], s_s[:, None], z, np.ones((n, 1))], axis=1)
    # posterior over types from the two signals (the distractors are independent of the type)
    type_mu_c = np.array([1.0, 1.0, -1.0, -1.0])
    type_mu_s = np.array([-1.0, 1.0, 0.0, 0.0])
    log_post = (np.log(type_prior(config))[None]
                - (s_c[:, None] - type_mu_c) ** 2 / (2 * float(w.clarity_noise) ** 2)
                - (s_s[:, None] - type_mu_s) ** 2 / (2 * float(w.style_noise) ** 2))
    post = np.exp(log_post - log_post.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    user, llm, _ = tables(config)
    sigma = float(w.reasoning_noise)
    u_hat = user[None] + sigma * rng.standard_normal((n, *user.shape))
    l_hat = llm[None] + sigma * rng.standard_normal((n, *llm.shape))
    return {"type": kind.astype(np.int32), "x": x.astype(np.float32),
            "post": post.astype(np.float32), "u_hat": u_hat.astype(np.float32),
            "l_hat": l_hat.astype(np.float32)}


def payoff_block(u_hat, l_hat, belief, tokens, price: float = 0.0) -> jax.Array:
    """The reasoning's numbers per action, m [..., A, 3] = (E_b U^_a, E_b L'_a, E_b W(U^_a,
    L'_a)) with L' = L^ - price * tokens (the pricing edit): u_hat, l_hat [..., A, K],
    belief [..., K]."""
    l_priced = wf.price_payoffs(l_hat, tokens, price=price)
    b = jnp.asarray(belief)[..., None, :]
    return jnp.stack([jnp.sum(jnp.asarray(u_hat) * b, -1), jnp.sum(l_priced * b, -1),
                      wf.expected_welfare(u_hat, l_priced, belief)], axis=-1)


def init_policy(num_features: int, eta=(0.0, 0.0, 0.0)) -> dict:
    """The starting reasoning policy: belief weights phi [D, K] = 0 (the uniform belief),
    block reading eta [3] (default 0: the uniform policy)."""
    return {"phi": jnp.zeros((num_features, len(TYPES)), jnp.float32),
            "eta": jnp.asarray(eta, jnp.float32)}


def policy_belief(params, x) -> jax.Array:
    """The policy's belief over user types, softmax(x phi): x [..., D] -> [..., K]."""
    return jax.nn.softmax(x @ params["phi"])


def policy_logits(params, ctx, tokens, reading, price: float = 0.0) -> jax.Array:
    """logit_a = m_a . (eta * reading), m the payoff block of the context's written matrix
    (ctx["u_hat"], ctx["l_hat"] [..., A, K]) under the policy's belief from ctx["x"] [..., D],
    at `price`; `reading` [3] masks the block's columns the policy may read: [..., A]."""
    belief = policy_belief(params, ctx["x"])
    block = payoff_block(ctx["u_hat"], ctx["l_hat"], belief, tokens, price)
    return block @ (params["eta"] * jnp.asarray(reading, jnp.float32))


def split_data(config, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The seed's train / val / test contexts."""
    s = split_seeds(seed)
    return {name: make_contexts(config, int(n), data_seed)
            for name, data_seed, n in (("train", s.train, config.data.num_train),
                                       ("val", s.validation, config.data.num_val),
                                       ("test", s.test, config.data.num_test))}


# ---------------------------------------------------------------------------------------------
# Training


def train(config, workdir: str, splits: list[dict]):
    """GRPO on the variant's reward, every seed in one program, the step chosen on
    validation by the exact expected reward of the variant."""
    tr = config.train
    user, llm, tokens = tables(config)
    table = np.asarray(wf.welfare(config.reward, user, llm))  # [A, K] the training reward
    # the reward table and the reading mask are data, so every variant runs one program
    fixed = {"table": table, "reading": np.asarray(READINGS[config.reading], np.float32)}
    keys = ("x", "u_hat", "l_hat")
    data = stack_seeds([{**{k: s["train"][k] for k in (*keys, "type")}, **fixed}
                        for s in splits])
    val = stack_seeds([{**{k: s["val"][k] for k in (*keys, "post")}, **fixed}
                       for s in splits])
    m_per = int(tr.contexts)

    def prompt_fn(key, d):
        pick = jax.random.randint(key, (m_per,), 0, d["x"].shape[0])
        return {**{k: d[k][pick] for k in (*keys, "type")}, "reading": d["reading"]}

    def sample_fn(params, key, prompts, n):
        logits = policy_logits(params, prompts, tokens, prompts["reading"])
        return jax.random.categorical(key, logits, shape=(n, logits.shape[0])).T  # [M, G]

    def log_prob_fn(params, prompts, actions):
        logp = jax.nn.log_softmax(policy_logits(params, prompts, tokens, prompts["reading"]))
        return jnp.take_along_axis(logp, actions, axis=1)

    def reward_fn(prompts, actions, d):
        return d["table"][actions, prompts["type"][:, None]]

    def val_metrics(params, v):
        probs = jax.nn.softmax(policy_logits(params, v, tokens, v["reading"]))
        return {"val_reward": jnp.mean(jnp.sum(probs * (v["post"] @ v["table"].T), -1))}

    loss = group_pg_loss(sample_fn, log_prob_fn, reward_fn, group_size=int(tr.group_size),
                         advantage="grpo", prompt_fn=prompt_fn)
    num_features = splits[0]["train"]["x"].shape[1]
    eta0 = tuple(float(e) for e in config.init_eta)
    return fit_small(workdir, loss_fn=loss, init_params=lambda k: init_policy(num_features, eta0),
                     tx=optax.adam(float(tr.learning_rate)), num_steps=int(tr.steps), data=data,
                     seeds=[int(s) for s in config.seeds], per_seed_data=True,
                     batch_fn=rl_batch, has_aux=True, steps_per_log=int(tr.steps_per_log),
                     eval_fn=val_metrics, eval_data=val, select=("val_reward", "max"),
                     checkpoint_every=10)


# ---------------------------------------------------------------------------------------------
# Evaluation


def policy_values(probs, post, user, llm) -> dict[str, float]:
    """Exact means over contexts of U, L, W of a policy's action probabilities [n, A], the
    user type weighted by the posterior [n, K], and the best any policy reaches from the same
    observations (E_x max_a E[. | x, a])."""
    out = {}
    for name, table in (("u", user), ("l", llm), ("w", wf.cobb_douglas(user, llm))):
        per_action = np.asarray(post @ np.asarray(table).T)  # [n, A]
        out[name] = float(np.mean(np.sum(probs * per_action, -1)))
        out[f"{name}_max"] = float(np.mean(per_action.max(-1)))
    return out


def readable(config, ctx) -> tuple[np.ndarray, np.ndarray]:
    """The observable cell [n] of each context (from its user type) and whether the features
    reveal it ([n] bool: posterior mass on the cell >= `steer_confidence`)."""
    cells = CELL_OF_TYPE[ctx["type"]]
    mass = np.stack([ctx["post"][:, CELL_OF_TYPE == c].sum(1) for c in range(len(CELLS))], 1)
    return cells, mass[np.arange(len(cells)), cells] >= float(config.steer_confidence)


def steering(config, actions_at, cells) -> dict[str, float]:
    """Per price: the fraction of contexts in the predicted cells whose action becomes the
    predicted one (`flip`) and of the others whose action stays (`keep`); `actions_at(price)`
    -> [n] the actions chosen at that price; cells [n] the observable cell of each context."""
    base = predicted_actions(config, 0.0)
    now = np.asarray(actions_at(0.0))
    out = {}
    for name, price in config.prices.items():
        new = predicted_actions(config, float(price))
        moved = np.isin(cells, np.flatnonzero(new != base))
        acts = np.asarray(actions_at(float(price)))
        out[f"{name}_flip"] = float(np.mean(acts[moved] == new[cells[moved]]))
        out[f"{name}_keep"] = float(np.mean(acts[~moved] == now[~moved]))
    out["min"] = min(out.values())
    return out


def evaluate_seed(config, params, split: dict) -> dict[str, float]:
    """Validation and test metrics of one seed's chosen policy."""
    user, llm, tokens = tables(config)
    reading = READINGS[config.reading]
    res = {}
    for name in ("val", "test"):
        d = split[name]
        probs = np.asarray(jax.nn.softmax(policy_logits(params, d, tokens, reading)))
        vals = policy_values(probs, d["post"], user, llm)
        res.update({f"{name}_{k}": v for k, v in vals.items()})
        for k in ("w", "u", "l"):
            res[f"{name}_{k}_ratio"] = vals[k] / vals[f"{k}_max"]
    d = split["test"]
    probs = np.asarray(jax.nn.softmax(policy_logits(params, d, tokens, reading)))
    cells, seen = readable(config, d)
    for a, action in enumerate(ACTIONS):
        res[f"test_rate_{action}"] = float(probs[:, a].mean())
    res["test_clarify_clear"] = float(probs[cells < 2, ACTIONS.index("clarify")].mean())
    belief = np.asarray(policy_belief(params, d["x"]))
    res["test_belief_on_cell"] = float(np.mean(
        [belief[i, CELL_OF_TYPE == c].sum() for i, c in enumerate(cells)]))
    res["test_readable"] = float(seen.mean())
    sub = {k: v[seen] for k, v in d.items()}

    def policy_actions(price):
        return np.argmax(np.asarray(policy_logits(params, sub, tokens, reading, price)), -1)

    def exact_step(price):
        return np.asarray(wf.best_action(user, llm, sub["post"], price=price, tokens=tokens))

    def written_step(price):  # the exact step on each context's written (noisy) matrix
        return np.asarray(wf.best_action(sub["u_hat"], sub["l_hat"], sub["post"], price=price,
                                         tokens=tokens))

    for prefix, actions_at in (("test_steer", policy_actions), ("bayes_steer", exact_step),
                               ("written_steer", written_step)):
        res.update({f"{prefix}_{k}": v
                    for k, v in steering(config, actions_at, cells[seen]).items()})
    for name, price in config.prices.items():  # the steered policy's welfare at the new price
        probs_p = np.asarray(jax.nn.softmax(policy_logits(params, d, tokens, reading,
                                                           float(price))))
        priced = policy_values(probs_p, d["post"], user,
                               np.asarray(wf.price_payoffs(llm, tokens, price=float(price))))
        res[f"test_w_{name}_ratio"] = priced["w"] / priced["w_max"]
    return res


def run_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, float]]:
    seeds = [int(s) for s in config.seeds]
    if real.is_real(config):
        return {s: _run_real(config, os.path.join(workdir, f"seed_{s}"), s) for s in seeds}
    splits = [split_data(config, s) for s in seeds]
    fit = train(config, os.path.join(workdir, "grpo"), splits)
    out = {}
    for i, (seed, split) in enumerate(zip(seeds, splits)):
        params = jax.tree.map(lambda leaf, i=i: leaf[i], fit.best_params)
        res = evaluate_seed(config, params, split)
        res["chosen_step"] = float(fit.best_step[i])
        res["val_reward"] = float(fit.best_score[i])
        reading = READINGS[config.reading]
        res.update({f"reading_{c}": float(params["eta"][k] * reading[k])
                    for k, c in enumerate(BLOCK)})
        out[seed] = res
    return out


# ---------------------------------------------------------------------------------------------
# :real: GRPO on sqrt(U L) with U from a reward checkpoint, vs r = U


def _run_real(config, workdir: str, seed: int) -> dict[str, float]:
    """`:real` (module docstring): GRPO from `model.path` on the variant's aggregate of
    U (reward checkpoint) and L (finished / correct minus a token cost)."""
    tok = real.tokenizer(config)
    field = config.data.answer_field
    data = real.prompt_data(config, tok, int(config.data.max_length),
                            fields=(field,) if field else ())
    model, params = pretrained.model_and_params(real.model_config(config), "lm", seed=seed)
    stops = real.stop_tokens(tok, config.rl.stop_tokens)
    rm, rm_params = pretrained.model_and_params(real.model_config(config, config.rm.path),
                                                "reward", seed=seed)
    score = jax.jit(rm.apply)
    wc, max_new = config.welfare, int(config.rl.max_new_tokens)

    def payoffs(rollout, answers) -> dict[str, np.ndarray]:
        u = jax.nn.sigmoid(score(rm_params, rollout.ids, rollout.mask)
                           / float(wc.user_temperature))
        length = np.asarray(rollout.response_mask).sum(-1).astype(np.float32)
        finished = ~np.asarray(policy_gradient.truncated_rows(rollout.responses,
                                                              rollout.response_mask, stops))
        parts, weights = [finished.astype(np.float32)], [float(wc.format_weight)]
        if answers is not None:
            texts = real.decode_responses(tok, rollout.responses, rollout.response_mask)
            rows = np.asarray(rollout.prompt_index)
            parts.append(np.array([float(real.final_answer(t, wc.answer_marker)
                                         == str(answers[i]).strip())
                                   for t, i in zip(texts, rows)], np.float32))
            weights.append(float(wc.answer_weight))
        llm = wf.token_cost(wf.compose_payoff(np.stack(parts, -1), weights, eps=float(wc.eps)),
                            length / max_new, price=float(wc.token_price))
        return {"u": np.asarray(u), "l": np.asarray(llm),
                "w": np.asarray(wf.cobb_douglas(u, llm)), "length": length,
                "reward": np.asarray(wf.welfare(config.reward, u, llm))}

    train_answers = data["train"][field] if field else None
    held_answers = ([*data["validation"][field], *data["test"][field]] if field else None)

    def reward_fn(rollout):
        return payoffs(rollout, train_answers)["reward"]

    ids, pmask, n_val = real.held_out_prompts(data)
    greedy = jax.jit(online.make_rollout(model, num_samples=1, temperature=0.0,
                                         max_new_tokens=max_new, stop_tokens=stops,
                                         pad_id=tok.pad_id))

    def evaluate(policy_params):
        p = payoffs(greedy(policy_params, ids, pmask, jax.random.key(0)), held_answers)
        out = {}
        for name, values in p.items():
            out.update(real.split_means(values, n_val, name))
        return out

    before = evaluate(params)
    out = policy_gradient.train(real.online_config(config, "rl", stops),
                                os.path.join(workdir, "rl"), model=model, init_params=params,
                                ref_params=params, prompt_ids=data["train"]["prompt_ids"],
                                prompt_mask=data["train"]["prompt_mask"], reward_fn=reward_fn,
                                eval_fn=evaluate, seed=seed)
    result = real.choose_iteration(out["history"], "eval/val_reward", workdir)
    result.update({f"{k.split('_', 1)[0]}_ref_{k.split('_', 1)[1]}": v
                   for k, v in before.items()})
    return result


# ---------------------------------------------------------------------------------------------
# Claims and plots


def structure(config) -> dict[str, float]:
    """The dilemma of the table, per observable cell: the best action of U, L and W."""
    user, llm, _ = tables(config)
    beliefs = cell_beliefs(config)
    out = {}
    for name in ("user", "llm", "cobb_douglas"):
        best = np.asarray(wf.best_action(user, llm, beliefs, welfare_name=name))
        out.update({f"best_{name}_{c}": float(best[i]) for i, c in enumerate(CELLS)})
    return out


def claims(results) -> list[protocol.Claim]:
    if "llm" not in results:  # :real: metrics only (no gold welfare on the user's data)
        return []
    config = get_config()
    mean = {v: {m: protocol.seed_mean(results, v, m) for m in
                ("test_u", "test_l", "test_w", "test_w_ratio", "test_u_ratio",
                 "test_clarify_clear", "test_steer_min")} for v in results}
    detail = "; ".join(f"{v}: U {mean[v]['test_u']:.3f}, L {mean[v]['test_l']:.3f}, W "
                       f"{mean[v]['test_w']:.3f} (W ratio {mean[v]['test_w_ratio']:.3f}, U ratio "
                       f"{mean[v]['test_u_ratio']:.3f}, clarifies clear queries "
                       f"{mean[v]['test_clarify_clear']:.2f}, steering min "
                       f"{mean[v]['test_steer_min']:.2f})" for v in results)
    attain = (f"attainable from the observations: W {protocol.seed_mean(results, 'welfare', 'test_w_max'):.3f}, "  # noqa: E501
              f"U {protocol.seed_mean(results, 'welfare', 'test_u_max'):.3f} (test contexts)")
    s = structure(config)
    clar, verb = float(ACTIONS.index("clarify")), float(ACTIONS.index("verbose"))
    dilemma = (all(s[f"best_llm_{c}"] == clar for c in CELLS)
               and s["best_user_ambiguous"] == verb
               and s["best_cobb_douglas_ambiguous"] == clar
               and s["best_cobb_douglas_clear_concise"] != clar)
    bayes = protocol.seed_mean(results, "welfare", "bayes_steer_min")
    llm_ratio = protocol.seed_mean(results, "llm", "test_w_ratio")
    steer_detail = (
        "predicted (payoff table, cell beliefs): token_cost c=0.2 flips clear-detail verbose -> "
        "concise; token_revenue c=-0.5 flips clear-concise concise -> verbose and ambiguous "
        "clarify -> verbose; per test context the policy's most likely action with its payoff "
        "block re-priced (no retraining); flip / keep means: " + ", ".join(
            f"{k} {protocol.seed_mean(results, 'welfare', f'test_steer_{k}'):.2f}"
            for name in config.prices for k in (f"{name}_flip", f"{name}_keep")))
    return [
        protocol.threshold(
            "the sqrt(UL) policy reaches >= 95% of the attainable welfare W", results,
            ("welfare", "test_w_ratio"), at_least=0.95, detail=f"{detail}; {attain}"),
        protocol.threshold(
            "the sqrt(UL) policy keeps the user's welfare U >= 90% of the attainable U", results,
            ("welfare", "test_u_ratio"), at_least=0.9, detail=f"{detail}; {attain}"),
        protocol.sanity(
            "the L-only policy's welfare is <= 80% of the attainable (it over-clarifies)",
            llm_ratio <= 0.8, {"llm_test_w_ratio": llm_ratio},
            "follows from the table (L's best action is clarify in every cell, the first "
            f"sanity check) once training maximises L; {detail}; {attain}"),
        protocol.compare(
            "the sqrt(UL) policy's test welfare exceeds the U-only policy's", results,
            ("welfare", "test_w"), ("user", "test_w"), at_least=0.0, detail=detail),
        protocol.threshold(
            "a price change at inference moves the sqrt(UL) policy's action in the predicted "
            "cells and only there (min of flip and keep rates >= 0.8)", results,
            ("welfare", "test_steer_min"), at_least=0.8, detail=steer_detail),
        protocol.sanity(
            "the payoff table has the dilemma: L's best action is clarify in every cell, U's "
            "is verbose and W's clarify on ambiguous queries, W's is not clarify on clear ones",
            dilemma, s, "by construction of the table"),
        protocol.sanity(
            "the exact payoff-matrix step (true table, each test context's posterior) follows "
            "the predicted flips (min of flip and keep rates >= 0.9)", bayes >= 0.9,
            {"bayes_steer_min": bayes}, "the prediction itself, up to the feature noise"),
    ]


def plots(results, workdir: str) -> list[str]:
    """The training reward (batch mean, mean over seeds) of each variant along training."""
    from alignax.train.plots import plot_curves
    from alignax.train.writers import read_metrics

    curves = {}
    for variant in results:
        path = os.path.join(workdir, variant, "grpo", "metrics.jsonl")
        if os.path.exists(path):
            rows = read_metrics(path)
            curves[variant] = ([r["step"] for r in rows], [r["reward"] for r in rows])
    if not curves:
        return []
    out = os.path.join(workdir, "plots", "train_reward.png")
    plot_curves(curves, out, title="training reward of each variant (its own reward)",
                xlabel="loop step", ylabel="reward")
    return [out]
