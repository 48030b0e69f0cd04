"""The config contract, as a schema: every key of the composed config, its type, range and
choices (pydantic models; every field required (but a task's k_values, which RL-only tasks do not
have), so nothing is defaulted in Python: a key the YAML tree lacks is an error, and so is a key the schema does not know, `+sft.foo=1` included).

`check(c)` raises ConfigError with one line naming the first bad key, before anything is
written. Cross-field rules (mini_batch_size <= batch_size, a model directory that holds a
checkpoint, a usable root, ...) live in reasoning360.sweep.main.validate.

Names that select an implementation come from the registries, so adding one never edits this
file: `engine.name` from reasoning360.engines.ENGINES, `rollout.backend` from
reasoning360.rollout.registry.BACKENDS (read when a config is checked, so `register`ed names
count). A launcher's name is checked by the launcher registry (reasoning360.launchers, a layer
above this one) before anything is written, and its keys by its own `validate`; only the local
launcher's keys are checked here.

`SCOPES` says where each key goes: `spec` (hashed into the stage specs that use it), `runtime`
(how a stage runs, not what it produces: recorded beside the spec, unhashed), `launcher` (read
by the launcher: paths, sweep, launcher, cluster), `grid` (the expansion). The contract test
(tests/test_config_contract.py) perturbs every leaf and checks that it lands where its scope says.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      StrictBool, StrictInt, Tag, ValidationError, model_validator)

from ..engines import ENGINES
from ..rollout.registry import BACKENDS
from .grid import GridError


class ConfigError(GridError):
    """A bad config value, in one line naming the key."""


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


Num = Annotated[float, BeforeValidator(_no_bool)]
PosInt = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
PosNum = Annotated[Num, Field(gt=0)]
NonNegNum = Annotated[Num, Field(ge=0)]
Prob = Annotated[Num, Field(gt=0, le=1)]
Beta = Annotated[Num, Field(ge=0, lt=1)]
SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
Slug = Annotated[str, Field(pattern=SLUG)]
NonEmptyStr = Annotated[str, Field(min_length=1)]



def registered(registry: dict[str, Any], what: str) -> AfterValidator:
    """A name that must be a key of `registry` (looked up when the config is checked)."""
    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(f"unknown {what} (known: {', '.join(registry)})")
        return name
    return AfterValidator(check)


BASELINE_NAMES = Literal["cold_start", "short_cot_correct", "short_cot_incorrect", "long_cot_correct",
                         "long_cot_incorrect", "long_cot_wrong_format"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


# ----------------------------------------------------------------------------- the sweep

class Paths(Section):
    root: NonEmptyStr
    store: NonEmptyStr
    sweeps: NonEmptyStr


class Sweep(Section):
    name: Slug
    dry_run: StrictBool
    array_parallelism: PosInt
    fail_fast: StrictBool
    overwrite: StrictBool
    report: StrictBool


class Tracking(Section):
    wandb: StrictBool
    wandb_project: NonEmptyStr
    wandb_mode: Literal["offline", "online"]


class Grid(Section):
    name: NonEmptyStr
    tasks: Annotated[list[NonEmptyStr], Field(min_length=1)]
    backtracks: Union[Literal["task"], list[NonNegInt]]
    baselines: list[BASELINE_NAMES]
    rl_only_baselines: Optional[list[BASELINE_NAMES]]
    seeds: Annotated[list[StrictInt], Field(min_length=1)]
    axes: Optional[dict[str, Annotated[list[Any], Field(min_length=1)]]]


# ----------------------------------------------------------------------------- tasks

class Task(Section):
    name: NonEmptyStr
    backtrack_sft: StrictBool
    # the task's own k grid (grid.backtracks=task): a list, or scale -> list; RL-only tasks have none
    k_values: Union[list[NonNegInt], dict[str, list[NonNegInt]], None] = Field(default=None)
    params: dict[str, dict[str, Any]]      # per scale; the task itself checks its parameters

    @model_validator(mode="after")
    def _k_values_for_backtrack_tasks(self):
        if self.backtrack_sft and self.k_values is None:
            raise ValueError("k_values: missing (a task with backtrack SFT data lists its k grid)")
        if not self.backtrack_sft and self.k_values is not None:
            raise ValueError("k_values: an RL-only task (backtrack_sft: false) has no k grid")
        return self


# ----------------------------------------------------------------------------- stages

class Model(Section):
    path: Optional[NonEmptyStr]
    arch: Literal["llama", "qwen2", "from_path"]
    hidden_size: Optional[PosInt]
    num_layers: Optional[PosInt]
    num_heads: Optional[PosInt]
    num_kv_heads: Optional[PosInt]
    intermediate_size: Optional[PosInt]
    max_seq_len: PosInt
    tokenizer: Literal["char", "path"]
    dtype: Literal["float32", "bfloat16", "float16"]


class Data(Section):
    sft_size: PosInt
    train_size: PosInt
    val_size: PosInt
    test_size: PosInt
    trace_style: Literal["compact", "paper"]
    template: Literal["compact", "base", "qwen-instruct", "baseline"]
    seed: StrictInt


class SFT(Section):
    lr: PosNum
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)]
    batch_size: PosInt
    micro_batch_size: Optional[PosInt]
    max_steps: PosInt
    warmup_ratio: Annotated[Num, Field(ge=0, lt=1)]
    warmup_steps: Optional[NonNegInt]
    schedule: Literal["cosine", "linear", "constant"]
    weight_decay: NonNegNum
    grad_clip: Optional[PosNum]
    save_every: NonNegInt
    keep_checkpoints: PosInt
    log_every: PosInt
    max_len: PosInt
    truncation: Literal["drop", "right"]
    max_examples: Optional[PosInt]
    export_steps: list[PosInt]


class PretrainTrain(SFT):
    max_steps: NonNegInt                # 0: no pretrain stage


class Pretrain(Section):
    attempts: PosInt
    train: PretrainTrain


class Sampling(Section):
    n: PosInt
    temperature: PosNum
    top_p: Prob
    max_new_tokens: PosInt


class RL(Section):
    algorithm: Literal["grpo"]
    init_step: Optional[PosInt]
    lr: PosNum
    betas: Annotated[list[Beta], Field(min_length=2, max_length=2)]
    weight_decay: NonNegNum
    steps: PosInt
    batch_size: PosInt
    mini_batch_size: PosInt
    micro_batch_size: PosInt
    ppo_epochs: PosInt
    clip_ratio: PosNum
    clip_ratio_low: Optional[PosNum]
    clip_ratio_high: Optional[PosNum]
    clip_ratio_c: Annotated[Num, Field(gt=1)]
    kl_coef: NonNegNum
    kl_type: Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "full"]
    entropy_coef: NonNegNum
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm",
                           "micro-token-mean"]
    norm_adv_by_std: StrictBool
    grad_clip: Optional[PosNum]
    warmup_steps: NonNegInt
    save_every: NonNegInt
    keep_checkpoints: PosInt
    val_every: NonNegInt
    val_before_train: StrictBool
    val_size: NonNegInt
    eval_steps: list[PosInt]
    max_prompt_len: Optional[PosInt]
    recompute_old_logprobs: Union[Literal["auto"], StrictBool]
    rollout: Sampling


class Protocol(Section):
    temperature: NonNegNum
    top_p: Prob
    n: PosInt


class Eval(Section):
    split: Literal["test", "val"]
    protocols: Annotated[dict[Slug, Protocol], Field(min_length=1)]
    primary: NonEmptyStr
    max_new_tokens: PosInt
    batch_size: PosInt


class VLLMSettings(Section):
    inprocess: StrictBool
    dtype: Optional[Literal["float32", "bfloat16", "float16", "auto"]]
    max_model_len: Optional[PosInt]
    gpu_memory_utilization: Optional[Prob]
    max_num_seqs: Optional[PosInt]
    enforce_eager: Optional[StrictBool]
    kv_cache_gb: Optional[PosNum]


class Rollout(Section):
    backend: Annotated[str, registered(BACKENDS, "rollout backend")]
    workers: NonNegInt
    threads_per_worker: PosInt
    vllm: VLLMSettings


class Teacher(Section):
    sft_k: Optional[NonNegInt]
    path: Optional[NonEmptyStr]
    max_new_tokens: PosInt


class Distill(Section):
    backend: Literal["builtin", "vllm"]
    problems: Literal["sft", "train", "val", "test"]
    n: PosInt
    temperature: NonNegNum
    top_p: Prob
    rejection: StrictBool
    batch_size: PosInt
    concurrency: PosInt
    tensor_parallel_size: PosInt
    server_timeout_s: PosNum
    vllm_args: str
    teachers: dict[Literal["short_cot", "long_cot"], Teacher]


# ----------------------------------------------------------------------------- engines

class Engine(Section):
    """An engine whose section is just these keys: local, and any engine registered in
    reasoning360.engines.ENGINES without a block of its own."""
    name: Annotated[str, registered(ENGINES, "engine")]
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegInt                 # 0: every core the stage gets


class VerlSettings(Section):
    model_config = ConfigDict(extra="allow", frozen=True)   # verl's own block: keys checked by the verl engine
    overrides: list[str]
    sft_overrides: list[str]


VERL_ENGINES = ("verl_fsdp", "verl_megatron")


class VerlEngine(Section):
    name: Literal[VERL_ENGINES]
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegInt
    verl: VerlSettings


def _engine_shape(v: Any) -> str:
    return "verl" if _name(v) in VERL_ENGINES else "plain"


# ----------------------------------------------------------------------------- launchers

class LocalLauncher(Section):
    name: Literal["local"]
    workers: Union[Literal["auto"], PosInt]


class OtherLauncher(Section):
    """Any other launcher (slurm, or one registered in reasoning360.launchers.LAUNCHERS): its
    name is checked by that registry and its keys by its own `validate`, before anything is
    written."""
    model_config = ConfigDict(extra="allow", frozen=True)
    name: Slug


def _launcher_shape(v: Any) -> str:
    return "local" if _name(v) == "local" else "other"


def _name(v: Any) -> Any:
    return v.get("name") if isinstance(v, dict) else getattr(v, "name", None)


class Config(Section):
    grid: Grid
    tasks: dict[str, Task]
    scale_name: Literal["cpu", "paper"]
    paths: Paths
    sweep: Sweep
    tracking: Tracking
    model: Model
    engine: Annotated[Union[Annotated[Engine, Tag("plain")], Annotated[VerlEngine, Tag("verl")]],
                      Discriminator(_engine_shape)]
    launcher: Annotated[Union[Annotated[LocalLauncher, Tag("local")], Annotated[OtherLauncher, Tag("other")]],
                        Discriminator(_launcher_shape)]
    cluster: dict[str, Any]                  # the site profile: checked by the Slurm launcher
    data: Data
    pretrain: Pretrain
    sft: SFT
    rl: RL
    rollout: Rollout
    eval: Eval
    distill: Distill


# Where each key goes (longest dotted prefix wins; see the module docstring).
SCOPES: dict[str, str] = {
    "": "spec",
    "grid": "grid",
    "paths": "launcher", "sweep": "launcher", "launcher": "launcher", "cluster": "launcher",
    "tracking": "runtime",
    "engine.device": "runtime", "engine.threads": "runtime", "engine.verl": "runtime",
    "engine.verl.overrides": "spec", "engine.verl.sft_overrides": "spec",
    "rollout.workers": "runtime", "rollout.threads_per_worker": "runtime", "rollout.vllm": "runtime",
    "distill.concurrency": "runtime", "distill.tensor_parallel_size": "runtime",
    "distill.server_timeout_s": "runtime", "distill.vllm_args": "runtime",
}


def scope_of(key: str) -> str:
    parts = key.split(".")
    for i in range(len(parts), -1, -1):
        s = SCOPES.get(".".join(parts[:i]))
        if s is not None:
            return s
    return "spec"


def check(c: dict[str, Any]) -> None:
    """Validate the resolved config against the schema; ConfigError naming the first bad key."""
    try:
        Config.model_validate(c)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from None


def _one_line(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = [str(x) for x in err["loc"]]
    # discriminated unions put the tag in the path (engine.plain.device): drop it
    if len(loc) >= 2 and loc[0] in ("engine", "launcher") and loc[1] in ("plain", "verl", "local", "other"):
        loc = [loc[0]] + loc[2:]
    key = ".".join(loc) or "config"
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return f"{key}: missing (every key lives in configs/; add it to the YAML)"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (no stage reads it; check the spelling against configs/)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx") or {}
        return (f"{key}.{ctx.get('discriminator', 'name').strip(chr(39))}: unknown {key} "
                f"{ctx.get('tag', err.get('input'))!r} (known: {ctx.get('expected_tags', '')})")
    got = err.get("input")
    msg = re.sub(r"^Value error, ", "", msg)
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{key}: {msg}" if isinstance(got, dict) else f"{key}: {msg}, got {got!r}"
