"""The TRL option map: every field of TRL's DPOConfig, KTOConfig, RewardConfig, GRPOConfig and
RLOOConfig that is not a plain `transformers.TrainingArguments` field, with what alignax does
with it. Rendered to docs/trl.md by `python tools/trl_map.py`; tests/test_trl_map.py checks that
the page is current, that every field of the installed TRL is listed, and that every alignax
config key named here exists in the recipe's defaults.

Each entry is `(kind, text)`:
- `("key", "recipe:path")`: the alignax config key (dotted path in that recipe's
  `default_config()`; `loss_kwargs.<name>` must be a keyword of one of the recipe's losses),
  optionally followed by " | a note";
- `("data", text)`: implemented in the data pipeline (a keyword of the tokeniser or reader that
  the text names), not a recipe key;
- `("na", reason)`: does not apply to alignax (why);
- `("todo", what)`: not implemented yet (what is missing).
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NO_MODEL_CODE = ("na", "model families are implemented in alignax.models; no code is loaded "
                  "from a checkpoint")
_NO_DROPOUT = ("na", "alignax models have no dropout (LoRA's is `lora.dropout`)")
_NO_MOE = ("na", "no mixture-of-experts models yet")
_PIPELINE = ("na", "tokenisation runs in the data pipeline (grain workers)")
_STATIC = ("na", "XLA compiles one shape: rows are padded to the configured length")
_INIT = ("na", "models come from a TransformerConfig or `import_hf(path, dtype=..., "
         "param_dtype=...)`")
_OFFLOAD = ("key", "direct:model.remat | `remat=\"offload\"` moves saved activations to host")
_VLLM = ("na", "generation runs in alignax's jitted sampler on the training devices")
_LOGGING = ("na", "rollout logging: metrics.jsonl / TensorBoard carry the rollout statistics")
_GEN_KW = ("na", "the sampler's options are recipe keys (temperature, top_k, top_p, min_p, "
           "repetition_penalty, stop_tokens)")
_PG_SYNC = "policy_gradient:sync_ref"  # TR-DPO in the online recipe (OnlineState.ref)

DPO = {
    "model_init_kwargs": _INIT,
    "trust_remote_code": _NO_MODEL_CODE,
    "router_aux_loss_coef": _NO_MOE,
    "disable_dropout": _NO_DROPOUT,
    "dataset_num_proc": _PIPELINE,
    "max_length": ("key", "direct:model.max_len | pairs are tokenised to this length "
                   "(alignax.data.tokenize.tokenize_pair(max_length=))"),
    "truncation_mode": ("data", "`alignax.data.tokenize.tokenize_pair(truncation_mode=)`: "
                        "\"keep_start\" (TRL's default) / \"keep_end\" cut each side's prompt + "
                        "response to max_length as TRL's collator (ids equal); a prompt that fills "
                        "max_length is a DataError (TRL drops the pair); \"error\" (the default) "
                        "refuses over-long pairs; `data.truncation_mode` in examples/byom.py and "
                        "the :real configs"),
    "padding_free": ("key", "direct:packing.enabled | whole pairs packed into rows of "
                     "`packing.length` tokens, chosen and rejected as adjacent segments "
                     "(attention and positions per segment), per-pair log-probs summed per "
                     "segment (equal to the padded ones); `train.batch_size` counts packed "
                     "rows; not for TDPO or AOT"),
    "pad_to_multiple_of": _STATIC,
    "precompute_ref_log_probs": ("key", "direct:precompute_ref_logps"),
    "precompute_ref_batch_size": ("na", "the reference pass uses train.batch_size"),
    "loss_type": ("key", "direct:loss | a list is `loss` + `extra_losses`; TRL's \"sigmoid\" "
                  "is \"dpo\", \"ipo\" (token-averaged) is \"ipo_norm\", \"aot_unpaired\" is "
                  "\"aot_pair\", every other name is the same"),
    "loss_weights": ("key", "direct:extra_losses | [name, weight] pairs, with `loss_weight` "
                     "for the first loss"),
    "ld_alpha": ("key", "direct:ld_alpha"),
    "f_divergence_type": ("key", "direct:f_divergence"),
    "f_alpha_divergence_coef": ("key", "direct:f_alpha"),
    "label_smoothing": ("key", "direct:loss_kwargs.label_smoothing"),
    "beta": ("key", "direct:loss_kwargs.beta"),
    "use_weighting": ("key", "direct:use_weighting"),
    "discopop_tau": ("key", "direct:loss_kwargs.tau"),
    "activation_offloading": _OFFLOAD,
    "sync_ref_model": ("key", "direct:sync_ref | None: a fixed reference"),
    "ref_model_mixup_alpha": ("key", "direct:sync_ref | its `alpha` (sync_ref = {alpha, "
                              "steps})"),
    "ref_model_sync_steps": ("key", "direct:sync_ref | its `steps`"),
    "pad_token": ("na", "the tokenizer's pad token (`HFTokenizer(pad_token=)`); padding is "
                  "masked"),
}

KTO = {
    "model_init_kwargs": _INIT,
    "trust_remote_code": _NO_MODEL_CODE,
    "router_aux_loss_coef": _NO_MOE,
    "disable_dropout": _NO_DROPOUT,
    "dataset_num_proc": _PIPELINE,
    "max_length": ("key", "kto:model.max_len | examples are tokenised to this length "
                   "(alignax.data.unpaired.tokenize_unpaired(max_length=)); an over-long one is "
                   "a DataError (TRL truncates it), the KL rows are cut to it as TRL cuts them"),
    "pad_to_multiple_of": _STATIC,
    "precompute_ref_log_probs": ("key", "kto:precompute_ref_logps | with kl_pairs=\"dataset\" "
                                 "(TRL's KL pairs fixed in dataset order: rotation by one within "
                                 "blocks of kl_group_size, else the micro-batch); the reference's "
                                 "log-probs of every row and of its KL row are computed once, "
                                 "stored in the workdir and carried in the batch"),
    "precompute_ref_batch_size": ("na", "the reference pass runs in batches of train.batch_size "
                                  "(kto:precompute_ref_logps)"),
    "loss_type": ("key", "kto:loss_type | \"kto\" (alignax.losses.kto_loss, z0 from the "
                  "batch's mismatched pairs, rotated within `kl_group_size` rows: TRL's "
                  "per_device_train_batch_size) or \"apo_zero_unpaired\""),
    "beta": ("key", "kto:beta"),
    "desirable_weight": ("key", "kto:desirable_weight"),
    "undesirable_weight": ("key", "kto:undesirable_weight"),
    "activation_offloading": _OFFLOAD,
    "sync_ref_model": ("key", "kto:sync_ref | None: a fixed reference"),
    "ref_model_mixup_alpha": ("key", "kto:sync_ref | its `alpha` (sync_ref = {alpha, steps})"),
    "ref_model_sync_steps": ("key", "kto:sync_ref | its `steps`"),
}

REWARD = {
    "model_init_kwargs": _INIT,
    "trust_remote_code": _NO_MODEL_CODE,
    "chat_template_path": ("data", "`HFTokenizer.from_file(path, chat_template=...)` (a "
                           "template string, or `alignax.data.load_chat_template(folder)`); "
                           "tokenize_pair renders conversational pairs with it"),
    "disable_dropout": _NO_DROPOUT,
    "dataset_num_proc": _PIPELINE,
    "eos_token": ("na", "the tokenizer's eos token (`HFTokenizer(eos_token=)`)"),
    "max_length": ("key", "reward_model:model.max_len | TRL drops longer pairs; alignax: a "
                   "DataError naming the row, `skip_invalid=True` to drop them, or "
                   "tokenize_pair's truncation_mode"),
    "pad_to_multiple_of": _STATIC,
    "center_rewards_coefficient": ("key", "reward_model:loss_kwargs.center_coef | the "
                                   "auxiliary (r_c + r_r)^2 term of Eisenstein et al. 2023"),
    "activation_offloading": ("key", "reward_model:model.remat"),
    "pad_token": ("na", "the tokenizer's pad token; padding is masked"),
}

_GEN = {
    "num_generations": ("key", "policy_gradient:num_samples"),
    "num_generations_eval": ("na", "evaluation is the recipe's eval_fn"),
    "max_completion_length": ("key", "policy_gradient:max_new_tokens"),
    "ds3_gather_for_generation": _VLLM,
    "shuffle_dataset": ("na", "prompts are drawn by the recipe's prompt pool (seeded)"),
    "pad_to_multiple_of": _STATIC,
    "generation_batch_size": ("key", "policy_gradient:prompts_per_iteration | times "
                              "num_samples rollouts per iteration"),
    "steps_per_generation": ("key", "policy_gradient:minibatches"),
    "temperature": ("key", "policy_gradient:temperature"),
    "top_p": ("key", "policy_gradient:top_p"),
    "top_k": ("key", "policy_gradient:top_k"),
    "min_p": ("key", "policy_gradient:min_p | keeps tokens with p >= min_p * p_max after "
              "temperature, top-k and top-p (transformers' MinPLogitsWarper)"),
    "generation_kwargs": _GEN_KW,
    "chat_template_kwargs": ("data", "`alignax.data.tokenize.tokenize_prompt("
                             "chat_template_kwargs=)` (e.g. {\"enable_thinking\": False}); the "
                             "recipes take prompts as token ids"),
    "repetition_penalty": ("key", "policy_gradient:repetition_penalty | transformers' "
                           "RepetitionPenaltyLogitsProcessor on the prompt's and the generated "
                           "tokens, before temperature (the prompt's padding is not counted); "
                           "the rollout's log-probs stay the policy's own"),
    "cache_implementation": ("na", "the sampler's KV cache is alignax's own (static shape)"),
    "use_vllm": _VLLM, "vllm_mode": _VLLM, "vllm_model_impl": _VLLM,
    "vllm_enable_sleep_mode": _VLLM, "vllm_structured_outputs_regex": _VLLM,
    "vllm_server_base_url": _VLLM, "vllm_server_host": _VLLM, "vllm_server_port": _VLLM,
    "vllm_server_timeout": _VLLM, "vllm_group_port": _VLLM,
    "vllm_gpu_memory_utilization": _VLLM, "vllm_max_model_length": _VLLM,
    "vllm_tensor_parallel_size": _VLLM,
    "beta": ("key", "policy_gradient:kl_coef"),
    "num_iterations": ("key", "policy_gradient:epochs"),
    "epsilon": ("key", "policy_gradient:clip_low"),
    "epsilon_high": ("key", "policy_gradient:clip_high"),
    "reward_weights": ("key", "policy_gradient:objective_weights"),
    "mask_truncated_completions": ("key", "policy_gradient:mask_truncated_completions | a "
                                   "response without any of `stop_tokens` is truncated"),
    "sync_ref_model": ("key", f"{_PG_SYNC} | None: a fixed reference"),
    "ref_model_mixup_alpha": ("key", f"{_PG_SYNC} | its `alpha` (sync_ref = {{alpha, steps}})"),
    "ref_model_sync_steps": ("key", f"{_PG_SYNC} | its `steps` (optimizer updates)"),
    "log_completions": _LOGGING, "log_multimodal": _LOGGING,
    "num_completions_to_print": _LOGGING, "log_unique_prompts": _LOGGING,
    "use_transformers_continuous_batching": _VLLM,
    "transformers_continuous_batching_config": _VLLM,
    "use_transformers_paged": _VLLM,
    "model_init_kwargs": _INIT,
    "trust_remote_code": _NO_MODEL_CODE,
    "router_aux_loss_coef": _NO_MOE,
    "disable_dropout": _NO_DROPOUT,
}

GRPO = {
    **_GEN,
    "cast_lm_head_to_fp32": ("na", "the LM head computes its logits in float32 whatever the "
                             "model dtype"),
    "delta": ("key", "policy_gradient:delta"),
    "sapo_temperature_neg": ("key", "policy_gradient:sapo_temperature_neg | with loss "
                             "\"sapo\""),
    "sapo_temperature_pos": ("key", "policy_gradient:sapo_temperature_pos | with loss "
                             "\"sapo\""),
    "vespo_k_pos": ("key", "policy_gradient:vespo_k_pos | with loss \"vespo\""),
    "vespo_lambda_pos": ("key", "policy_gradient:vespo_lambda_pos | with loss \"vespo\""),
    "vespo_k_neg": ("key", "policy_gradient:vespo_k_neg | with loss \"vespo\""),
    "vespo_lambda_neg": ("key", "policy_gradient:vespo_lambda_neg | with loss \"vespo\""),
    "importance_sampling_level": ("key", "policy_gradient:loss | \"token\" is \"ppo_clip\", "
                                  "\"sequence\" is \"gspo\""),
    "multi_objective_aggregation": ("key", "policy_gradient:objective_aggregation"),
    "scale_rewards": ("key", "policy_gradient:advantage | \"group\" is \"grpo_unbiased\" "
                      "(Bessel std + 1e-4; \"grpo\" uses the population std + 1e-6), "
                      "\"batch\" is \"grpo_batch_std\", \"none\" is \"dr_grpo\""),
    "loss_type": ("key", "policy_gradient:aggregation | \"grpo\" is \"seq_mean_token_mean\", "
                  "\"bnpo\"/\"dapo\" are \"token_mean\", \"dr_grpo\" is "
                  "\"seq_mean_token_sum_norm\"; \"sapo\" is `loss` \"sapo\" with "
                  "\"seq_mean_token_mean\", \"vespo\" is `loss` \"vespo\" with "
                  "\"token_mean\""),
    "top_entropy_quantile": ("key", "policy_gradient:top_entropy_quantile"),
    "entropy_coef": ("key", "policy_gradient:entropy_coef | the bonus is aggregated like the "
                     "policy term (`aggregation`) over all response tokens; TRL's is the token "
                     "mean over the tokens the policy term keeps: the same with \"token_mean\" "
                     "and top_entropy_quantile 1"),
    "use_adaptive_entropy": ("key", "policy_gradient:adaptive_entropy | None: off; "
                             "{target, min, max, delta}: on, from `entropy_coef`, the "
                             "coefficient checkpointed with the controls"),
    "entropy_coef_min": ("key", "policy_gradient:adaptive_entropy | its `min`"),
    "entropy_coef_max": ("key", "policy_gradient:adaptive_entropy | its `max`"),
    "entropy_coef_delta": ("key", "policy_gradient:adaptive_entropy | its `delta`"),
    "entropy_target": ("key", "policy_gradient:adaptive_entropy | its `target`"),
    "max_tool_calling_iterations": ("fn", "`alignax.algorithms.tool_rollout."
                                    "tool_rollout_from_config(env_fn, tokenizer, "
                                    "max_tool_calls=)`, passed as `policy_gradient.train("
                                    "rollout_fn=)`: multi-turn rollouts, the environment's "
                                    "output appended and masked out of the loss and the KL; "
                                    "`max_new_tokens` = (max_tool_calls + 1) * turn_tokens + "
                                    "max_tool_calls * max_observation_tokens"),
    "vllm_importance_sampling_correction": _VLLM,
    "vllm_importance_sampling_mode": _VLLM,
    "vllm_importance_sampling_clip_max": _VLLM,
    "vllm_importance_sampling_clip_min": _VLLM,
    "vllm_importance_sampling_cap": _VLLM,
    "off_policy_mask_threshold": ("key", "policy_gradient:off_policy_mask_threshold | the "
                                  "behaviour log-probs are the sampler's own (TRL's "
                                  "old_per_token_logps without vLLM)"),
    "use_bias_correction_kl": ("key", "policy_gradient:kl_bias_correction | False by "
                               "default here, True in TRL"),
    "log_completions_hub_repo": _LOGGING,
}

RLOO = {
    **_GEN,
    "normalize_advantages": ("key", "policy_gradient:advantage | \"rloo\" is unnormalised; "
                             "batch normalisation is \"reinforce_pp\""),
    "reward_clip_range": ("key", "policy_gradient:reward_clip"),
}

CONFIGS = {"DPOConfig": DPO, "KTOConfig": KTO, "RewardConfig": REWARD, "GRPOConfig": GRPO,
           "RLOOConfig": RLOO}
KINDS = {"key": "alignax", "data": "alignax (data)", "fn": "alignax (function)",
         "na": "does not apply", "todo": "not yet"}


def render() -> str:
    lines = ["# TRL options in alignax", "",
             "Generated by `tools/trl_map.py`. Every field of TRL's configs beyond the plain "
             "`transformers.TrainingArguments` (optimizer, schedule, batch size, steps and "
             "logging map to each recipe's `optimizer` and `train` keys), with the alignax "
             "config key that computes the same thing (`recipe:key`), or why it does not apply, "
             "or what is not implemented yet.", ""]
    for name, table in CONFIGS.items():
        counts = {k: sum(1 for kind, _ in table.values() if kind == k) for k in KINDS}
        mapped = counts["key"] + counts["data"] + counts["fn"]
        lines += [f"## {name}", "",
                  f"{mapped} mapped ({counts['data']} in the "
                  f"data pipeline, {counts['fn']} as a function argument), {counts['na']} do not "
                  f"apply, "
                  f"{counts['todo']} not yet.", "",
                  "| TRL field | status | alignax |", "|---|---|---|"]
        for field in sorted(table):
            kind, text = table[field]
            text = text.replace("|", "—", 1) if kind == "key" else text
            if kind == "key":
                key, _, note = text.partition("—")
                text = f"`{key.strip()}`" + (f" — {note.strip()}" if note else "")
            lines.append(f"| `{field}` | {KINDS[kind]} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    path = os.path.join(HERE, "docs", "trl.md")
    with open(path, "w") as f:
        f.write(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
