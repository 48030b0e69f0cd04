"""Our config -> verl's: the Hydra overrides for verl's SFT trainer and main_ppo (GRPO, eval).

The translation is a table (`TABLE`), not code scattered over the engine: each row names one of
our keys, the verl key it sets, the trainers and strategies it applies to, and how the value is
computed. `docs/verl_mapping.md` shows the same table, and the tests check it both ways: every
key of our rl/sft/model/eval config maps to a verl key or is listed in `LOCAL_ONLY` (no verl
counterpart) or `STAGE_SIDE` (done by the stage around verl), and every verl key here exists in
verl's composed config with a value of the type verl expects.

Every key is read strictly: a key missing from the stage's spec is a one-line error naming it
(nothing is defaulted here); null has the meaning our config documents for it, and a value verl
cannot honour is refused in one line (`MappingError`) before anything runs.

Nothing here imports verl: the sweeper plans and dry-runs verl stages on a machine without it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


REWARD_FILE = Path(__file__).resolve().parent / "reward.py"
REWARD_FN = "compute_score"
PROJECT = "reasoning360"
KEEP_CALLBACK = "reasoning360.engines.verl.keep.SnapshotOnSave"
KEEP_ENV = "R360_KEEP_STEPS"

# Directory layout of a verl stage (all inside the stage directory).
CKPT_DIR = "checkpoints"        # verl's trainer.default_local_dir: global_step_N/ + latest_checkpointed_iteration.txt
ROLLOUT_DIR = "rollouts"        # RL: verl's trainer.rollout_data_dir (<step>.jsonl), read by the metrics bridge
GEN_DIR = "generations"         # eval: verl's trainer.validation_data_dir, one per (step, protocol)
LOG_DIR = "verl_logs"           # verl's file logger (one jsonl per attempt) and stdout/stderr
SFT_FILE = "sft_messages.parquet"   # SFT: our traces as verl multi-turn `messages`
CMD_FILE = "verl_cmd.sh"

TRAINERS = ("sft", "rl", "eval")
STRATEGIES = ("fsdp", "megatron")

SKIP = object()     # a row whose value is SKIP emits nothing
_MISSING = object()


class MappingError(ValueError):
    """A value that verl cannot take (named by our key)."""


@dataclass(frozen=True)
class Row:
    ours: str                               # our dotted key ("eval.protocols.*.n": every protocol), or
                                            # "engine.verl.X", or "(stage)"
    verl: str                               # verl's dotted key (a "+" prefix adds a key to a free-form dict)
    trainers: tuple[str, ...]               # sft | rl | eval
    fn: Callable[["Src"], Any] | None = None    # value; default: our value at `ours` (null: not sent)
    strategies: tuple[str, ...] = STRATEGIES
    note: str = ""

    def applies(self, trainer: str, strategy: str) -> bool:
        return trainer in self.trainers and strategy in self.strategies


class Src:
    """What a row reads: our config sections, engine.verl, the stage's paths and topology."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    def value(self, dotted: str) -> Any:
        """Our value at `dotted` (None where the config sets null); a missing key is an error."""
        node: Any = self.cfg
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise MappingError(f"{dotted}: missing (the verl engine reads it; configs/ sets it)")
            node = node[part]
        return node

    def __getitem__(self, dotted: str) -> Any:
        """Our value at `dotted`, which must be set (not null)."""
        v = self.value(dotted)
        if v is None:
            raise MappingError(f"{dotted}: null, but the verl engine needs a value")
        return v


def _ours(key: str) -> Callable[[Src], Any]:
    def fn(s: Src) -> Any:
        v = s.value(key)
        return SKIP if v is None else v
    return fn


def _derived_prompt_len(s: Src, new_tokens_key: str) -> int:
    total, new = int(s["model.max_seq_len"]), int(s[new_tokens_key])
    if total - new < 64:
        raise MappingError(f"model.max_seq_len={total} leaves {total - new} prompt tokens after "
                           f"{new_tokens_key}={new}; verl needs data.max_prompt_length >= 64")
    return total - new


def _rl_prompt_len(s: Src) -> int:
    limit = s.value("rl.max_prompt_len")
    return int(limit) if limit is not None else _derived_prompt_len(s, "rl.rollout.max_new_tokens")


def _loss_agg(s: Src) -> str:
    mode = s["rl.loss_agg_mode"]
    if mode == "micro-token-mean":
        raise MappingError("rl.loss_agg_mode: micro-token-mean is the paper's older verl (a token mean per "
                           "micro-batch over a fixed count); verl 0.9.1 has no such mode: use the local engine "
                           "or token-mean")
    return mode


def _grad_clip(key: str) -> Callable[[Src], float]:
    def fn(s: Src) -> float:
        v = s.value(key)
        if v is None:
            raise MappingError(f"{key}: null (no clipping) — verl always clips the gradient norm; give a number")
        return float(v)
    return fn


def _clip(key: str) -> Callable[[Src], float]:
    """rl.clip_ratio_low / _high; null means rl.clip_ratio (verl's own 0.2 would win otherwise)."""
    def fn(s: Src) -> float:
        v = s.value(key)
        return float(s["rl.clip_ratio"] if v is None else v)
    return fn


def _rollout_name(s: Src) -> str:
    backend = s["rollout.backend"]
    if backend == "builtin":
        return s["engine.verl.rollout_name"]       # verl has no built-in sampler: its default server
    return backend


def _val_before_train(s: Src) -> bool:
    """Greedy validation at step 0: rl.val_before_train, when validation runs at all (as the
    local engine: val_every 0 means never)."""
    return bool(s["rl.val_before_train"]) and int(s["rl.val_every"]) > 0


def _steps_of(kind: str) -> int:
    return {"sft": "sft.max_steps", "rl": "rl.steps"}[kind]


def kept_steps(s: Src, kind: str) -> list[int]:
    """Steps whose model the stage keeps as models/step_<N> (sft.export_steps, rl.eval_steps),
    below the last step (whose model is model/), as the local engine keeps them."""
    key = {"sft": "sft.export_steps", "rl": "rl.eval_steps"}[kind]
    total = int(s[_steps_of(kind)])
    return sorted({int(n) for n in s[key] if int(n) < total})


def _save_freq(kind: str) -> Callable[[Src], int]:
    """verl saves every trainer.save_freq steps and at the last one: save_every (0: only at the
    end), made a divisor of every kept step so that verl writes a checkpoint there."""
    def fn(s: Src) -> int:
        every, total = int(s[f"{kind}.save_every"]), int(s[_steps_of(kind)])
        base = every if every > 0 else total
        keep = kept_steps(s, kind)
        return math.gcd(base, *keep) if keep else base
    return fn


def _epochs(steps_key: str, batch_key: str) -> Callable[[Src], int]:
    """verl stops at total_epochs even before total_training_steps: give it enough epochs."""
    def fn(s: Src) -> int:
        steps, rows = int(s[steps_key]), s.value("stage.rows")
        batch = int(s[batch_key])
        if not rows or rows < batch:
            return max(steps, 1)
        return max(1, math.ceil(steps / (rows // batch)))
    return fn


def _sched(s: Src) -> str:
    sched = s["sft.schedule"]
    if sched not in ("cosine", "constant") and s["engine.verl.strategy"] == "fsdp":
        raise MappingError(f"sft.schedule={sched!r}: verl's FSDP optimizer knows cosine | constant")
    return sched


def _sft_truncation(s: Src) -> str:
    mode = s["sft.truncation"]
    if mode not in ("drop", "right"):
        raise MappingError(f"sft.truncation: {mode!r} (known: drop, right)")
    return "right" if mode == "right" else "error"


def _split_file(s: Src) -> str:
    return str(Path(s["stage.data"]) / f"{s['eval.split']}.parquet")


def _protocol(key: str) -> Callable[[Src], Any]:
    return lambda s: s[f"stage.protocol.{key}"]


# Sharded checkpoints only: the stage's model/ (and models/step_<N>/) are made from them by
# verl's model merger (data.merge_checkpoint), instead of a full HF copy in every checkpoint.
SAVE_CONTENTS = ["model", "optimizer", "extra"]

ALL = ("sft", "rl", "eval")
RL = ("rl",)
PPO = ("rl", "eval")
SFT = ("sft",)
EVAL = ("eval",)

TABLE: tuple[Row, ...] = (
    # ---------------------------------------------------------------- our keys: SFT
    Row("sft.lr", "optim.lr", SFT),
    Row("sft.batch_size", "data.train_batch_size", SFT, note="sequences per optimiser step, all GPUs"),
    Row("sft.max_steps", "trainer.total_training_steps", SFT),
    Row("sft.warmup_ratio", "optim.lr_warmup_steps_ratio", SFT),
    Row("sft.schedule", "optim.lr_scheduler_type", SFT, _sched, ("fsdp",), note="linear is refused (FSDP: cosine | constant)"),
    Row("sft.schedule", "optim.lr_decay_style", SFT, _sched, ("megatron",)),
    Row("sft.warmup_steps", "optim.lr_warmup_steps", SFT, note="only when set (null: warmup_ratio)"),
    Row("sft.weight_decay", "optim.weight_decay", SFT),
    Row("sft.betas", "optim.betas", SFT, lambda s: [float(b) for b in s["sft.betas"]], note="AdamW betas"),
    Row("sft.grad_clip", "optim.clip_grad", SFT, _grad_clip("sft.grad_clip"), note="null (no clipping) is refused"),
    Row("sft.save_every", "trainer.save_freq", SFT, _save_freq("sft"),
        note="0: only at the end; a divisor of every kept step (gcd with sft.export_steps)"),
    Row("sft.export_steps", "trainer.save_freq", SFT, _save_freq("sft"),
        note="verl saves there; the stage keeps each such checkpoint before verl prunes it and merges it "
             "into models/step_<N>/ (reasoning360.engines.verl.keep)"),
    Row("sft.max_len", "data.max_length", SFT, note="tokens per example, as verl's dataset renders them"),
    Row("sft.truncation", "data.truncation", SFT, _sft_truncation,
        note="right: verl cuts the end (nothing dropped but an example whose prompt fills max_len); drop: the "
             "stage drops longer examples (counted) and verl refuses any that would remain (error)"),
    Row("sft.keep_checkpoints", "trainer.max_ckpt_to_keep", SFT),
    Row("model.path", "model.path", SFT, lambda s: s["stage.init_model"],
        note="the init stage's model/ (pretrain), else model.path, else the from-scratch init_model/"),
    Row("seed", "trainer.seed", SFT),
    # ---------------------------------------------------------------- our keys: GRPO
    Row("rl.algorithm", "algorithm.adv_estimator", RL),
    Row("rl.init_step", "actor_rollout_ref.model.path", RL, lambda s: s["stage.init_model"],
        note="the SFT stage's models/step_<N>/ (null: its model/)"),
    Row("rl.lr", "actor_rollout_ref.actor.optim.lr", RL),
    Row("rl.steps", "trainer.total_training_steps", RL),
    Row("rl.batch_size", "data.train_batch_size", RL, note="prompts per step"),
    Row("rl.mini_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size", RL, note="prompts per optimiser step"),
    Row("rl.ppo_epochs", "actor_rollout_ref.actor.ppo_epochs", RL),
    Row("rl.clip_ratio", "actor_rollout_ref.actor.clip_ratio", RL),
    Row("rl.clip_ratio_low", "actor_rollout_ref.actor.clip_ratio_low", RL, _clip("rl.clip_ratio_low"),
        note="null: rl.clip_ratio (verl's own default, 0.2, would win over clip_ratio)"),
    Row("rl.clip_ratio_high", "actor_rollout_ref.actor.clip_ratio_high", RL, _clip("rl.clip_ratio_high"),
        note="null: rl.clip_ratio"),
    Row("rl.clip_ratio_c", "actor_rollout_ref.actor.clip_ratio_c", RL, note="dual clip"),
    Row("rl.kl_coef", "actor_rollout_ref.actor.kl_loss_coef", RL),
    Row("rl.kl_coef", "actor_rollout_ref.actor.use_kl_loss", RL, lambda s: float(s["rl.kl_coef"]) > 0,
        note="KL loss (and the reference model) only when kl_coef > 0"),
    Row("rl.kl_type", "actor_rollout_ref.actor.kl_loss_type", RL),
    Row("rl.entropy_coef", "actor_rollout_ref.actor.entropy_coeff", RL),
    Row("rl.loss_agg_mode", "actor_rollout_ref.actor.loss_agg_mode", RL, _loss_agg,
        note="micro-token-mean (the paper's older verl) is refused"),
    Row("rl.norm_adv_by_std", "algorithm.norm_adv_by_std_in_grpo", RL),
    Row("rl.grad_clip", "actor_rollout_ref.actor.optim.clip_grad", RL, _grad_clip("rl.grad_clip"),
        note="null (no clipping) is refused"),
    Row("rl.warmup_steps", "actor_rollout_ref.actor.optim.lr_warmup_steps", RL),
    Row("rl.weight_decay", "actor_rollout_ref.actor.optim.weight_decay", RL, lambda s: float(s["rl.weight_decay"])),
    Row("rl.betas", "actor_rollout_ref.actor.optim.betas", RL, lambda s: [float(b) for b in s["rl.betas"]]),
    Row("rl.save_every", "trainer.save_freq", RL, _save_freq("rl"),
        note="0: only at the end; a divisor of every kept step (gcd with rl.eval_steps)"),
    Row("rl.eval_steps", "trainer.save_freq", RL, _save_freq("rl"),
        note="verl saves there; its checkpoint callback (trainer.checkpoint_callback_class) keeps each such "
             "checkpoint, merged into models/step_<N>/ for the rl_eval stage"),
    Row("rl.keep_checkpoints", "trainer.max_actor_ckpt_to_keep", RL),
    Row("rl.val_every", "trainer.test_freq", RL, note="greedy accuracy on val.parquet every N steps (0: never)"),
    Row("rl.val_before_train", "trainer.val_before_train", RL, _val_before_train,
        note="and at step 0, when rl.val_every > 0 (as the local engine)"),
    Row("rl.val_size", "data.val_max_samples", RL, lambda s: int(s["rl.val_size"]) or -1, note="0: all (-1)"),
    Row("rl.rollout.n", "actor_rollout_ref.rollout.n", RL),
    Row("rl.rollout.temperature", "actor_rollout_ref.rollout.temperature", RL),
    Row("rl.rollout.top_p", "actor_rollout_ref.rollout.top_p", RL),
    Row("rl.rollout.max_new_tokens", "data.max_response_length", RL),
    Row("rl.max_prompt_len", "data.max_prompt_length", RL, _rl_prompt_len,
        note="longer prompts keep their last tokens; null: model.max_seq_len - rl.rollout.max_new_tokens"),
    Row("rl.max_prompt_len", "data.truncation", RL, lambda s: "error" if s.value("rl.max_prompt_len") is None else "left"),
    Row("rl.max_prompt_len", "data.filter_overlong_prompts", RL, lambda s: s.value("rl.max_prompt_len") is None,
        note="set: every prompt is kept (left-truncated); null: prompts over the derived budget are dropped"),
    Row("model.max_seq_len", "data.max_prompt_length", RL, _rl_prompt_len,
        note="the prompt budget when rl.max_prompt_len is null"),
    Row("model.path", "actor_rollout_ref.model.path", PPO, lambda s: s["stage.init_model"],
        note="the upstream stage's model (RL: rl.init_step; eval: each of the spec's steps), else model.path"),
    Row("model.dtype", "actor_rollout_ref.rollout.dtype", PPO,
        note="rollout precision; training uses verl's mixed precision (fp32 master weights)"),
    Row("seed", "data.seed", RL),
    Row("seed", "actor_rollout_ref.rollout.seed", PPO, note="eval: the base model's seed, else 0 (as the local eval)"),
    Row("seed", "actor_rollout_ref.actor.data_loader_seed", RL),
    Row("rollout.backend", "actor_rollout_ref.rollout.name", PPO, _rollout_name,
        note="builtin -> engine.verl.rollout_name (vllm): verl samples only through a server"),
    # ---------------------------------------------------------------- our keys: eval (one val-only run per step x protocol)
    Row("eval.split", "data.val_files", EVAL, _split_file),
    Row("eval.protocols.*.temperature", "actor_rollout_ref.rollout.val_kwargs.temperature", EVAL,
        lambda s: float(s["stage.protocol.temperature"])),
    Row("eval.protocols.*.temperature", "actor_rollout_ref.rollout.val_kwargs.do_sample", EVAL,
        lambda s: float(s["stage.protocol.temperature"]) > 0, note="greedy at temperature 0"),
    Row("eval.protocols.*.top_p", "actor_rollout_ref.rollout.val_kwargs.top_p", EVAL,
        lambda s: float(s["stage.protocol.top_p"])),
    Row("eval.protocols.*.n", "actor_rollout_ref.rollout.val_kwargs.n", EVAL, _protocol("n"),
        note="samples per item (pass@k)"),
    Row("eval.max_new_tokens", "data.max_response_length", EVAL),
    Row("eval.batch_size", "data.val_batch_size", EVAL),
    Row("model.max_seq_len", "data.max_prompt_length", EVAL, lambda s: _derived_prompt_len(s, "eval.max_new_tokens"),
        note="model.max_seq_len - eval.max_new_tokens"),
    # ---------------------------------------------------------------- engine.verl.*: resources
    Row("engine.verl.nnodes", "trainer.nnodes", ALL, lambda s: s["topo.nnodes"],
        note="the allocation's node count at run time"),
    Row("engine.verl.n_gpus_per_node", "trainer.n_gpus_per_node", ALL, lambda s: s["topo.gpus"],
        note="the allocation's GPUs per node at run time"),
    Row("engine.verl.rollout_tp", "actor_rollout_ref.rollout.tensor_model_parallel_size", PPO),
    Row("engine.verl.gpu_memory_utilization", "actor_rollout_ref.rollout.gpu_memory_utilization", PPO),
    Row("engine.verl.tensor_model_parallel_size", "actor_rollout_ref.actor.megatron.tensor_model_parallel_size",
        PPO, strategies=("megatron",)),
    Row("engine.verl.pipeline_model_parallel_size",
        "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size", PPO, strategies=("megatron",)),
    Row("engine.verl.tensor_model_parallel_size", "engine.tensor_model_parallel_size", SFT,
        strategies=("megatron",)),
    Row("engine.verl.pipeline_model_parallel_size", "engine.pipeline_model_parallel_size", SFT,
        strategies=("megatron",)),
    Row("engine.verl.use_dynamic_bsz", "actor_rollout_ref.actor.use_dynamic_bsz", PPO),
    Row("engine.verl.use_dynamic_bsz", "data.use_dynamic_bsz", SFT),
    Row("engine.verl.max_token_len_per_gpu", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", PPO),
    Row("engine.verl.max_token_len_per_gpu", "data.max_token_len_per_gpu", SFT,
        lambda s: max(int(s["engine.verl.max_token_len_per_gpu"]), int(s["sft.max_len"]))),
    Row("engine.verl.micro_batch_size_per_gpu", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", PPO),
    Row("engine.verl.micro_batch_size_per_gpu", "data.micro_batch_size_per_gpu", SFT),
    Row("engine.verl.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", PPO),
    Row("engine.verl.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", RL),
    Row("engine.verl.dataloader_workers", "data.dataloader_num_workers", PPO),
    Row("engine.verl.dataloader_workers", "data.num_workers", SFT),
    # ---------------------------------------------------------------- the stage: prompts, paths, logging, resume
    Row("(stage)", "model.custom_chat_template", SFT, lambda s: s["stage.chat_template"],
        note="the stored prompt verbatim (+ BOS where the tokenizer adds one), the response + EOS: the local "
             "engine's ids (reasoning360.engines.verl.data.chat_template_for)"),
    Row("(stage)", "actor_rollout_ref.model.custom_chat_template", PPO, lambda s: s["stage.chat_template"],
        note="the agent loop's prompt ids = the local engine's tokenizer(prompt text)"),
    Row("(stage)", "data.ignore_input_ids_mismatch", SFT, lambda s: True,
        note="verl tokenizes turn by turn, as the local engine (prompt ids + response ids); a BPE may merge "
             "across the turn boundary when the whole text is tokenized at once"),
    Row("(stage)", "data.train_files", SFT, lambda s: s["stage.sft_file"]),
    Row("(stage)", "data.val_files", SFT, lambda s: None),
    Row("(stage)", "data.messages_key", SFT, lambda s: "messages"),
    Row("(stage)", "data.train_files", RL, lambda s: str(Path(s["stage.data"]) / "train.parquet")),
    Row("(stage)", "data.val_files", RL, lambda s: str(Path(s["stage.data"]) / "val.parquet")),
    Row("(stage)", "data.train_files", EVAL, _split_file, note="unused by a val-only run, but loaded"),
    Row("(stage)", "data.filter_overlong_prompts", EVAL, lambda s: False,
        note="every test item is answered (a longer prompt keeps its end), as in the local eval"),
    Row("(stage)", "data.truncation", EVAL, lambda s: "left"),
    Row("(stage)", "data.shuffle", RL, lambda s: True),
    Row("(stage)", "trainer.default_local_dir", ALL, lambda s: str(Path(s["stage.dir"]) / CKPT_DIR),
        note="checkpoints live in the stage directory"),
    Row("(stage)", "trainer.resume_mode", ALL, lambda s: "disable" if s["stage.kind"] == "eval" else "auto",
        note="a requeued job resumes from the newest checkpoint"),
    Row("(stage)", "trainer.total_epochs", SFT, _epochs("sft.max_steps", "sft.batch_size")),
    Row("(stage)", "trainer.total_epochs", RL, _epochs("rl.steps", "rl.batch_size")),
    Row("(stage)", "trainer.test_freq", SFT, lambda s: -1),
    Row("(stage)", "trainer.logger", ALL, lambda s: ["console", "file"],
        note="verl's file logger feeds the stage's metrics.jsonl (metrics bridge)"),
    Row("(stage)", "trainer.project_name", ALL, lambda s: PROJECT),
    Row("(stage)", "trainer.experiment_name", ALL, lambda s: s["stage.name"]),
    Row("(stage)", "trainer.device", ALL, lambda s: s["stage.device"],
        note="cuda, or cpu on verl's CPU platform (reasoning360.engines.verl.cpu; tests, GPU-less machines)"),
    Row("(stage)", "checkpoint.save_contents", SFT, lambda s: list(SAVE_CONTENTS)),
    Row("(stage)", "actor_rollout_ref.actor.checkpoint.save_contents", RL, lambda s: list(SAVE_CONTENTS)),
    Row("(stage)", "trainer.checkpoint_callback_class", RL, lambda s: KEEP_CALLBACK,
        note="on each save verl calls it (driver side): a kept step's checkpoint is hard-linked aside at once"),
    Row("(stage)", f"+ray_kwargs.ray_init.runtime_env.env_vars.{KEEP_ENV}", RL,
        lambda s: ",".join(str(n) for n in kept_steps(s, "rl")), note="the steps that callback keeps (comma-separated)"),
    Row("(stage)", "trainer.rollout_data_dir", RL, lambda s: str(Path(s["stage.dir"]) / ROLLOUT_DIR),
        note="per-step rollouts: reward_std, accuracy, format_rate, backtracks for metrics.jsonl"),
    Row("(stage)", "actor_rollout_ref.rollout.val_kwargs.temperature", RL, lambda s: 0.0,
        note="RL validation is greedy, one sample (as the local engine)"),
    Row("(stage)", "actor_rollout_ref.rollout.val_kwargs.do_sample", RL, lambda s: False),
    Row("(stage)", "actor_rollout_ref.rollout.val_kwargs.top_p", RL, lambda s: 1.0),
    Row("(stage)", "actor_rollout_ref.rollout.val_kwargs.n", RL, lambda s: 1),
    Row("(stage)", "trainer.validation_data_dir", EVAL, lambda s: s["stage.gen_dir"],
        note="generations/step_<N>/<protocol>/"),
    Row("(stage)", "trainer.val_before_train", EVAL, lambda s: True),
    Row("(stage)", "trainer.val_only", EVAL, lambda s: True),
    Row("(stage)", "algorithm.adv_estimator", EVAL, lambda s: "grpo", note="no critic for a val-only run"),
    Row("(stage)", "algorithm.use_kl_in_reward", PPO, lambda s: False),
    Row("(stage)", "data.train_batch_size", EVAL, lambda s: int(s["topo.nnodes"]) * int(s["topo.gpus"]),
        note="a val-only run never trains; the smallest batch verl accepts"),
    Row("(stage)", "actor_rollout_ref.actor.ppo_mini_batch_size", EVAL,
        lambda s: int(s["topo.nnodes"]) * int(s["topo.gpus"])),
    Row("(stage)", "reward.custom_reward_function.path", PPO, lambda s: str(REWARD_FILE),
        note="reasoning360.tasks.score, the local engine's verifiers"),
    Row("(stage)", "reward.custom_reward_function.name", PPO, lambda s: REWARD_FN),
    Row("(stage)", "reward.reward_manager.name", PPO, lambda s: "naive"),
    Row("(stage)", "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH", PPO,
        lambda s: s["stage.log_file"], note="the TaskRunner actor writes metrics here"),
    Row("(stage)", "+ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH", PPO,
        lambda s: s["stage.pythonpath"], note="Ray workers import reasoning360 (the reward function)"),
)

# Group overrides (Hydra defaults-list choices) per strategy.
GROUPS: dict[tuple[str, str], list[str]] = {
    ("sft", "fsdp"): [], ("sft", "megatron"): ["engine=megatron", "optim=megatron"],
    ("rl", "fsdp"): [], ("rl", "megatron"): ["model_engine=megatron"],
    ("eval", "fsdp"): [], ("eval", "megatron"): ["model_engine=megatron"],
}

# Keys of our config with no verl counterpart, and why.
LOCAL_ONLY: dict[str, str] = {
    "model.arch": "the local engine builds this architecture from scratch; verl loads model.path",
    "model.hidden_size": "from-scratch architecture (local engine)",
    "model.num_layers": "from-scratch architecture (local engine)",
    "model.num_kv_heads": "from-scratch architecture (local engine)",
    "model.num_heads": "from-scratch architecture (local engine)",
    "model.intermediate_size": "from-scratch architecture (local engine)",
    "model.tokenizer": "verl always uses the checkpoint's own tokenizer (= tokenizer: path)",
    "rollout.workers": "Ray rollout actors of the local engine; verl sizes its vLLM servers itself",
    "rollout.threads_per_worker": "torch threads in each Ray rollout actor of the local engine",
    "rollout.vllm.inprocess": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.dtype": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.max_model_len": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.gpu_memory_utilization": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.max_num_seqs": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.enforce_eager": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rollout.vllm.kv_cache_gb": "the local engine's own vLLM engine (verl sizes its vLLM from engine.verl)",
    "rl.micro_batch_size": "prompts per forward pass (local); verl: engine.verl.micro_batch_size_per_gpu",
    "sft.micro_batch_size": "examples per forward pass (local); verl: engine.verl.micro_batch_size_per_gpu",
    "sft.log_every": "verl logs every step",
    "rl.recompute_old_logprobs": "verl always recomputes old log-probs with the actor (= true)",
}

# Keys of our config the verl engine's stage code implements around verl (no verl key), and how.
STAGE_SIDE: dict[str, str] = {
    "sft.max_examples": "the stage writes sft_messages.parquet from the local engine's seeded subsample "
                        "(reasoning360.engines.local.data.subsample)",
    "eval.primary": "the eval stage's summary reports this protocol at the last step, as the local eval "
                    "(reasoning360.engines.eval_items.stage_summary)",
}

# Where our config's engine-relevant sections live (the data stage is engine-independent).
SECTIONS = ("model", "sft", "rl", "eval", "seed", "rollout")

# ---------------------------------------------------------------------------- engine config

# engine.verl keys every stage reads (configs/engine/verl_*.yaml sets each one; none is defaulted here).
ENGINE_KEYS = ("strategy", "nnodes", "n_gpus_per_node", "rollout_name", "rollout_tp", "gpu_memory_utilization",
               "tensor_model_parallel_size", "pipeline_model_parallel_size", "use_dynamic_bsz",
               "max_token_len_per_gpu", "micro_batch_size_per_gpu", "log_prob_micro_batch_size_per_gpu",
               "keep_rollout_dumps", "dataloader_workers", "sft_port",
               "python", "eval_engine", "overrides", "sft_overrides", "cpu")
CPU_KEYS = ("workers", "kv_cache_gb", "omp_threads", "eval_engine", "overrides", "sft_overrides")
DEVICES = ("auto", "cpu", "cuda")


def engine_settings(spec: dict[str, Any], runtime: dict[str, Any] | None) -> dict[str, Any]:
    """engine.verl of this stage: the composed config's block (runtime['engine']['verl'], from
    configs/engine/verl_*.yaml) < spec['engine_verl'] (hashed pass-through overrides). Every key
    must be there: a missing one is a one-line error naming it."""
    rt = (runtime or {}).get("engine")
    if not isinstance(rt, dict) or not isinstance(rt.get("verl"), dict):
        raise MappingError("engine.verl: missing from the stage's runtime (compose engine=verl_fsdp or "
                           "engine=verl_megatron; configs/engine/verl_*.yaml)")
    out = {**rt["verl"], **(spec.get("engine_verl") or {})}
    for key in ENGINE_KEYS:
        if key not in out:
            raise MappingError(f"engine.verl.{key}: missing (configs/engine/{spec['engine']}.yaml sets it)")
    for key in CPU_KEYS:
        if not isinstance(out["cpu"], dict) or key not in out["cpu"]:
            raise MappingError(f"engine.verl.cpu.{key}: missing (configs/engine/{spec['engine']}.yaml sets it)")
    for block, known, where in ((out, ENGINE_KEYS, "engine.verl"), (out["cpu"], CPU_KEYS, "engine.verl.cpu")):
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise MappingError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(known)}); any other verl "
                               "key goes in engine.verl.overrides / sft_overrides")
    if os.environ.get("R360_VERL_PYTHON"):      # a site's verl interpreter (e.g. via cluster.env)
        out["python"] = os.environ["R360_VERL_PYTHON"]
    if out["strategy"] not in STRATEGIES:
        raise MappingError(f"engine.verl.strategy: {out['strategy']!r} (known: {', '.join(STRATEGIES)})")
    for key in ("overrides", "sft_overrides"):
        for block, where in ((out, "engine.verl"), (out["cpu"], "engine.verl.cpu")):
            if not isinstance(block[key], list):
                raise MappingError(f"{where}.{key}: expected a list of 'key=value' strings, got {block[key]!r}")
    return out


def stage_device(runtime: dict[str, Any] | None, *, probe: bool) -> str:
    """cuda or cpu: engine.device, with `auto` = cuda where torch sees a GPU. Without `probe`
    (planning, sbatch rendering on a login node) `auto` means the GPU cluster's cuda."""
    rt = runtime or {}
    if "device" not in rt:
        raise MappingError("engine.device: missing from the stage's runtime")
    want = str(rt["device"]).lower()
    if want not in DEVICES:
        raise MappingError(f"engine.device: {want!r} (known: {', '.join(DEVICES)})")
    if want != "auto":
        return want
    if not probe:
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trainer_of(kind: str) -> str:
    return {"sft": "sft", "rl": "rl", "eval": "eval"}[kind]


# ---------------------------------------------------------------------------- building

def build(src_cfg: dict[str, Any], trainer: str, strategy: str) -> dict[str, Any]:
    """verl key -> python value for one trainer, from the table (later rows win on a key)."""
    src = Src(src_cfg)
    out: dict[str, Any] = {}
    for row in TABLE:
        if not row.applies(trainer, strategy):
            continue
        value = (row.fn or _ours(row.ours))(src)
        if value is SKIP:
            continue
        out[row.verl] = value
    return out



_SAFE = re.compile(r"^[A-Za-z0-9_./:@-]+$")
_NUMBERISH = re.compile(r"^[+-]?(\d|\.\d|inf|nan)", re.I)


def hydra_value(v: Any) -> str:
    """A python value as Hydra's override grammar reads it back (same value, same type)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise MappingError(f"not a finite number: {v}")
        r = repr(v)
        return r if ("." in r or "e" in r) else r + ".0"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if _SAFE.match(s) and not _NUMBERISH.match(s) and s.lower() not in ("true", "false", "null", "none"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(values: dict[str, Any], groups: list[str], extra: list[str]) -> list[str]:
    """Hydra command-line overrides: group choices, then our keys, then the user's passthrough
    (engine.verl.overrides: last, so they win)."""
    return list(groups) + [f"{k}={hydra_value(v)}" for k, v in values.items()] + [str(x) for x in extra]


def start_model(spec: dict[str, Any], deps: dict[str, Path], stage_dir: Path, step: int | None = None) -> Path:
    """The HF directory a stage starts from: the upstream stage's model (RL: the one kept at
    rl.init_step, else its model/; eval: the one of `step`, a step of the spec's `steps`; SFT
    and the pretrain stage's SFT: model/ of its init stage), else model.path, else the
    from-scratch model the stage writes into its own init_model/ (init_model.py)."""
    from ..context import model_dir
    from .init_model import DIR as INIT_DIR

    model = spec["model"]
    init = deps.get("init")
    if init is not None:
        at = spec["init_step"] if spec["kind"] == "rl" else step if spec["kind"] == "eval" else None
        return model_dir(init, at)
    if model["path"] is not None:
        if model["tokenizer"] != "path":
            raise MappingError(f"model.tokenizer={model['tokenizer']!r}: verl uses the checkpoint's own "
                               "tokenizer; use a model config with tokenizer: path")
        return Path(model["path"]).expanduser()
    if model["arch"] == "from_path":
        raise MappingError("model.path: the verl engine loads a local HF checkpoint; set model.path "
                           "(scale=paper model.path=/path/to/Qwen2.5-3B-Instruct)")
    return Path(stage_dir) / INIT_DIR


def source_config(spec: dict[str, Any], runtime: dict[str, Any] | None, *, stage_dir: Path,
                  deps: dict[str, Path], nnodes: int, gpus_per_node: int, chat_template: str,
                  rows: int | None = None, device: str = "cuda", step: int | None = None,
                  protocol: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything a row may read, for one stage (eval: one run, the model of `step` answering
    under `protocol` = (name, {temperature, top_p, n}))."""
    from ..eval_items import step_label

    kind = spec["kind"]
    vcfg = engine_settings(spec, runtime)
    stage_dir = Path(stage_dir)
    cfg: dict[str, Any] = {
        "model": spec["model"], "engine": {"verl": vcfg},
        "topo": {"nnodes": int(nnodes), "gpus": int(gpus_per_node)},
        "stage": {
            "kind": kind, "dir": str(stage_dir), "name": _stage_name(spec, runtime, stage_dir),
            "data": str(deps["data"]) if "data" in deps else None,
            "init_model": str(start_model(spec, deps, stage_dir, step)), "rows": rows,
            "chat_template": chat_template,
            "sft_file": str(stage_dir / SFT_FILE),
            "log_file": str(stage_dir / LOG_DIR / "metrics.jsonl"),
            "pythonpath": str(Path(__file__).resolve().parents[3]),
            "device": device,
        },
    }
    if kind == "sft":
        cfg.update(sft=spec["sft"], seed=spec["seed"])
    elif kind == "rl":
        cfg.update(rl={**spec["rl"], "init_step": spec["init_step"]}, seed=spec["seed"],
                   rollout={"backend": spec["rollout_backend"]})
    elif kind == "eval":
        if protocol is None:
            raise MappingError("eval: a verl eval run answers under one protocol (eval.protocols)")
        name, proto = protocol
        # the base model answers with its own seed; a checkpoint with 0 (as the local eval)
        cfg.update(eval=spec["eval"], seed=spec["seed"] if spec["checkpoint"] is None else 0,
                   rollout={"backend": spec["rollout_backend"]})
        cfg["stage"]["protocol"] = {"name": name, **{k: proto[k] for k in ("temperature", "top_p", "n")}}
        cfg["stage"]["gen_dir"] = str(gen_dir(stage_dir, step_label(spec, step), name))
    else:
        raise MappingError(f"kind: {kind!r} is not a verl stage (sft, rl, eval)")
    return cfg


def gen_dir(stage_dir: Path, at: int, protocol: str) -> Path:
    """Where verl's val-only run of (the model of step `at`, `protocol`) dumps its generations."""
    return Path(stage_dir) / GEN_DIR / f"step_{int(at):08d}" / protocol


def _stage_name(spec: dict, runtime: dict | None, stage_dir: Path) -> str:
    return stage_dir.name          # the stage id: unique, and names the kind and task


def stage_overrides(spec: dict[str, Any], runtime: dict[str, Any] | None, *, stage_dir: Path,
                    deps: dict[str, Path], nnodes: int, gpus_per_node: int, chat_template: str,
                    rows: int | None = None, log_file: str | None = None, device: str = "cuda",
                    step: int | None = None, protocol: tuple[str, dict[str, Any]] | None = None
                    ) -> tuple[list[str], dict[str, Any]]:
    """(Hydra overrides, verl key -> value) for one sft / rl / eval stage (eval: one run, see
    source_config). On the cpu device, engine.verl.cpu's overrides come after ours and before
    the user's pass-through."""
    trainer = trainer_of(spec["kind"])
    vcfg = engine_settings(spec, runtime)
    src = source_config(spec, runtime, stage_dir=stage_dir, deps=deps, nnodes=nnodes,
                        gpus_per_node=gpus_per_node, chat_template=chat_template, rows=rows, device=device,
                        step=step, protocol=protocol)
    if log_file:
        src["stage"]["log_file"] = log_file
    values = build(src, trainer, vcfg["strategy"])
    key = "sft_overrides" if trainer == "sft" else "overrides"
    extra = (list(vcfg["cpu"][key]) if device == "cpu" else []) + list(vcfg[key])
    return to_overrides(values, GROUPS[(trainer, vcfg["strategy"])], extra), values


def mapped_keys(trainer: str | None = None) -> dict[str, list[str]]:
    """our key -> verl keys it sets (for the docs and the tests)."""
    out: dict[str, list[str]] = {}
    for row in TABLE:
        if trainer is None or trainer in row.trainers:
            out.setdefault(row.ours, [])
            if row.verl not in out[row.ours]:
                out[row.ours].append(row.verl)
    return out


# ---------------------------------------------------------------------------- docs

def mapping_markdown() -> str:
    """The tables of docs/verl_mapping.md (generated; a test keeps the doc and the code equal)."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    def strat(row: Row) -> str:
        return "both" if set(row.strategies) == set(STRATEGIES) else "/".join(row.strategies)

    out = ["### Our keys and engine.verl keys -> verl keys", "",
           "| our key | verl key | trainers | strategy | note |", "| --- | --- | --- | --- | --- |"]
    for row in TABLE:
        if row.ours != "(stage)":
            out.append(f"| `{row.ours}` | `{row.verl}` | {', '.join(row.trainers)} | {strat(row)} | {cell(row.note)} |")
    out += ["", "### Set by the stage (paths, logging, resume; not user keys)", "",
            "| verl key | trainers | strategy | note |", "| --- | --- | --- | --- |"]
    for row in TABLE:
        if row.ours == "(stage)":
            out.append(f"| `{row.verl}` | {', '.join(row.trainers)} | {strat(row)} | {cell(row.note)} |")
    out += ["", "### Group choices per strategy", "", "| trainer | strategy | Hydra group overrides |",
            "| --- | --- | --- |"]
    for (trainer, strategy), groups in GROUPS.items():
        out.append(f"| {trainer} | {strategy} | {' '.join(f'`{g}`' for g in groups) or '(defaults)'} |")
    out += ["", "### Done by the stage around verl (no verl key)", "", "| our key | how |", "| --- | --- |"]
    for key, how in STAGE_SIDE.items():
        out.append(f"| `{key}` | {cell(how)} |")
    out += ["", "### Local-only keys (no verl counterpart)", "", "| our key | why |", "| --- | --- |"]
    for key, why in LOCAL_ONLY.items():
        out.append(f"| `{key}` | {cell(why)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(mapping_markdown(), end="")
