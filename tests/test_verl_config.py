"""Our overrides against verl's own trainer configs (Hydra compose on verl/trainer/config).

For every sft / rl / eval stage of `+grid=backtrack scale=paper` (FSDP and Megatron variants):
every key we set exists in verl's config, every value arrives with the type verl's default has,
`verl.utils.config.validate_config` passes, and verl's config dataclasses instantiate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_verl_support import needs_verl, paper_plan, small_data, tiny_model, verl_config_dir

pytestmark = needs_verl

VARIANTS = [
    ("verl_fsdp", ()),
    ("verl_megatron", ()),
    ("verl_fsdp", ("engine.verl.use_dynamic_bsz=false",)),
    ("verl_megatron", ("engine.verl.use_dynamic_bsz=false", "engine.verl.tensor_model_parallel_size=2",
                       "engine.verl.pipeline_model_parallel_size=2")),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("verl-model") / "tiny")


def _stage_overrides(c, plan, store, nnodes: int, gpus: int, device: str = "cuda"):
    """(stage, overrides, values) of every verl stage of the plan; an eval stage once per run
    (step x protocol)."""
    from reasoning360.engines.verl import _deps_from_store, eval_runs, planned_inputs
    from reasoning360.engines.verl import overrides as O

    for sid, st in plan.stages.items():
        if st.kind not in ("sft", "rl", "eval"):
            continue
        runtime = dict(st.runtime)
        runtime.setdefault("engine", c["engine"])      # the planner's runtime carries engine.verl
        deps = _deps_from_store(st.spec, store.root / sid)
        planned = planned_inputs(st.spec, store.root / sid, deps)
        runs = eval_runs(st.spec) if st.kind == "eval" else [(None, None)]
        for step, protocol in runs:
            ovr, values = O.stage_overrides(st.spec, runtime, stage_dir=store.root / sid, deps=deps,
                                            nnodes=nnodes, gpus_per_node=gpus, device=device,
                                            **{**planned, "step": step, "protocol": protocol})
            yield st, ovr, values


def _exists(cfg, dotted: str) -> bool:
    from omegaconf import DictConfig

    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or node._get_node(part) is None:   # `in` is False for ???
            return False
        node = node._get_node(part)
    return True


def _type_ok(default, value) -> bool:
    if default is None or default == "???":
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int) and isinstance(value, float):
        return True           # verl's YAML writes e.g. `temperature: 0` for a float field
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


class Composer:
    """verl's config for a trainer + overrides. The first call per (trainer, groups) is a full
    Hydra compose; later ones parse the overrides with Hydra's own parser and apply them to a
    copy of that composition the way Hydra does (ConfigLoaderImpl._apply_overrides_to_config),
    which is what compose does after the defaults list, at a fraction of the cost."""

    def __init__(self):
        self.base: dict = {}

    def __call__(self, trainer: str, overrides: list[str], full: bool = False):
        import copy

        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        name = "sft_trainer_engine" if trainer == "sft" else "ppo_trainer"
        groups = [o for o in overrides if o.split("=")[0] in ("engine", "optim", "model_engine")]
        rest = [o for o in overrides if o not in groups]
        key = (name, tuple(groups))
        if full or key not in self.base:
            cfg = compose(config_name=name, overrides=overrides)
            if key not in self.base:
                self.base[key] = compose(config_name=name, overrides=groups)
            return cfg
        cfg = copy.deepcopy(self.base[key])
        OmegaConf.set_struct(cfg, True)
        ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(rest), cfg)
        return cfg


@pytest.mark.parametrize("engine,extra", VARIANTS)
def test_paper_grid_overrides_compose_and_validate(engine, extra, model_dir, tmp_path):
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from reasoning360.engines.verl import overrides as O

    # two of the grid's seeds: every further seed composes the same overrides with another seed value
    c, plan, store = paper_plan(engine, model_dir, tmp_path, "grid.seeds=[0,1]", *extra)
    strategy = "megatron" if engine == "verl_megatron" else "fsdp"
    nnodes, gpus = 2, 4
    seen = {"sft": 0, "rl": 0, "eval": 0}
    composer = Composer()
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        for st, ovr, values in _stage_overrides(c, plan, store, nnodes, gpus):
            trainer = O.trainer_of(st.kind)
            first = seen[st.kind] == 0
            seen[st.kind] += 1
            if st.kind == "eval":           # one run per (model step, protocol): verl's val_kwargs
                assert values["actor_rollout_ref.rollout.val_kwargs.n"] in (1, 8)
                assert values["trainer.validation_data_dir"].startswith(str(store.root / st.id / "generations"))
            cfg = composer(trainer, ovr, full=first)
            base = composer.base[next(k for k in composer.base if k[0] == ("sft_trainer_engine" if trainer == "sft"
                                                                            else "ppo_trainer"))]
            for key, value in values.items():
                if not key.startswith("+"):   # "+": an addition to a free-form dict (ray runtime_env env_vars)
                    assert _exists(base, key), f"{st.id}: {key} is not a key of verl's {trainer} config"
                    default = OmegaConf.select(base, key, throw_on_missing=False)
                    default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
                    assert _type_ok(default, value), (f"{st.id}: {key}={value!r} ({type(value).__name__}) but "
                                                      f"verl's default is {default!r} ({type(default).__name__})")
                got = OmegaConf.select(cfg, key.lstrip("+"))          # every value arrives as we meant it
                got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
                assert got == value and (type(got) is type(value) or isinstance(value, float)), \
                    f"{st.id}: {key}: sent {value!r}, verl read {got!r}"
            assert OmegaConf.select(cfg, "trainer.nnodes") == nnodes
            assert OmegaConf.select(cfg, "trainer.n_gpus_per_node") == gpus
            if trainer == "sft":
                assert ("Mcore" in cfg.engine._target_) == (strategy == "megatron"), cfg.engine._target_
                if first:
                    omega_conf_to_dataclass(cfg.optim)
                    omega_conf_to_dataclass(cfg.engine)
                    omega_conf_to_dataclass(cfg.checkpoint)
                    cfg.model.path = str(model_dir)
                    omega_conf_to_dataclass(cfg.model)
            else:
                assert cfg.actor_rollout_ref.actor.strategy == strategy
                validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
                assert not need_critic(cfg)
                assert cfg.reward.reward_manager.name in REWARD_MANAGER   # (RewardConfig as a whole does
                assert Path(cfg.reward.custom_reward_function.path).is_file()  # not instantiate in verl 0.9.1)
                if first:
                    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
                    omega_conf_to_dataclass(cfg.algorithm)
                    cfg.actor_rollout_ref.model.path = str(model_dir)
                    omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    assert seen["sft"] == 4 * 2 and seen["rl"] == 5 * 2 and seen["eval"] >= 9 * 2 * 3, seen    # 2 seeds; 3 protocols at scale=paper


def test_paper_values_reach_verl(model_dir, tmp_path):
    """The paper's hyperparameters (DESIGN.md) land on the verl keys that implement them."""
    from hydra import compose, initialize_config_dir

    c, plan, store = paper_plan("verl_fsdp", model_dir, tmp_path)
    first_eval: dict[str, str] = {}
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        for st, ovr, _ in _stage_overrides(c, plan, store, 1, 4):
            if st.kind == "sft":
                cfg = compose(config_name="sft_trainer_engine", overrides=ovr)
                assert cfg.optim.lr == 1e-5 and cfg.data.train_batch_size == 256
                assert cfg.optim.lr_scheduler_type == "cosine" and cfg.optim.lr_warmup_steps_ratio == 0.1
                assert cfg.optim.weight_decay == 0.01 and list(cfg.optim.betas) == [0.9, 0.95]
                assert cfg.model.path == str(model_dir)
                assert cfg.data.train_files.endswith("sft_messages.parquet")
                # the paper: 6000 tokens cut on the right; a checkpoint every 20 steps (300 is one)
                assert cfg.data.max_length == 6000 and cfg.data.truncation == "right"
                assert cfg.trainer.save_freq == 20 and cfg.data.ignore_input_ids_mismatch is True
                assert cfg.model.custom_chat_template is not None
            elif st.kind == "rl":
                cfg = compose(config_name="ppo_trainer", overrides=ovr)
                a, r = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
                assert cfg.algorithm.adv_estimator == "grpo"
                assert a.optim.lr == 1e-6 and cfg.data.train_batch_size == 128 and r.n == 8
                assert r.temperature == 1.0 and cfg.data.max_response_length == 4096
                assert a.ppo_mini_batch_size == 64 and a.clip_ratio_low == a.clip_ratio_high == 0.2
                assert a.use_kl_loss is False and a.kl_loss_coef == 0.0 and a.optim.weight_decay == 0.01
                assert r.name == "vllm" and cfg.trainer.resume_mode == "auto"
                assert cfg.trainer.default_local_dir == str(store.root / st.id / "checkpoints")
                assert cfg.reward.custom_reward_function.path.endswith("engines/verl/reward.py")
                # the paper: prompts of at most 300 tokens, left-truncated (none dropped); no val at step 0;
                # checkpoints every 100 steps (the rl_eval steps 100, 200 are multiples)
                assert cfg.data.max_prompt_length == 300 and cfg.data.truncation == "left"
                assert cfg.data.filter_overlong_prompts is False and cfg.trainer.val_before_train is False
                assert cfg.trainer.save_freq == 100 and cfg.trainer.test_freq == 20
                assert r.val_kwargs.do_sample is False and r.val_kwargs.n == 1       # RL validation: greedy
                assert cfg.trainer.checkpoint_callback_class == "reasoning360.engines.verl.keep.SnapshotOnSave"
                assert cfg.actor_rollout_ref.model.custom_chat_template is not None
                if st.spec["init"]:
                    assert a.optim.lr == 1e-6
                    assert cfg.actor_rollout_ref.model.path == str(store.root / st.spec["init"] / "models"
                                                                   / "step_00000300")
                    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.R360_KEEP_STEPS == "100,200"
                else:       # cold start: the base model
                    assert cfg.actor_rollout_ref.model.path == str(model_dir)
            elif st.kind == "eval" and st.id == first_eval.setdefault("id", st.id):   # one stage's runs suffice
                cfg = compose(config_name="ppo_trainer", overrides=ovr)
                vk = cfg.actor_rollout_ref.rollout.val_kwargs
                assert cfg.trainer.val_only is True and cfg.data.filter_overlong_prompts is False
                assert (vk.temperature, vk.n, vk.do_sample) in ((1.0, 1, True), (0.0, 1, False), (1.0, 8, True))


def test_passthrough_overrides_win(model_dir, tmp_path):
    """engine.verl.overrides reach main_ppo last (they win); sft_overrides reach the SFT trainer."""
    from hydra import compose, initialize_config_dir

    c, plan, store = paper_plan("verl_fsdp", model_dir, tmp_path,
                                'engine.verl.overrides=["trainer.balance_batch=false","actor_rollout_ref.rollout.n=4"]',
                                'engine.verl.sft_overrides=["data.num_workers=2"]')
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        kinds = set()
        for st, ovr, _ in _stage_overrides(c, plan, store, 1, 4):
            if st.kind in kinds:
                continue
            kinds.add(st.kind)
            cfg = compose(config_name="sft_trainer_engine" if st.kind == "sft" else "ppo_trainer", overrides=ovr)
            if st.kind == "sft":
                assert cfg.data.num_workers == 2
            else:
                assert cfg.trainer.balance_batch is False
                assert cfg.actor_rollout_ref.rollout.n == 4
    assert kinds == {"sft", "rl", "eval"}


def test_sft_messages_load_in_verl_dataset(model_dir, tmp_path):
    """Our traces -> sft_messages.parquet -> verl's MultiTurnSFTDataset with the composed data config
    and our chat template: the loss mask covers exactly the assistant turn; sft.truncation drop vs
    right and sft.max_examples (the local engine's seeded subsample)."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from reasoning360.engines.local.data import read_rows, subsample
    from reasoning360.engines.verl.data import chat_template_for, turn_ids, write_sft_messages

    _, traces = small_data(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    template = chat_template_for(tok)
    out = tmp_path / "sft_messages.parquet"

    def spec(**sft):
        return {"seed": 0, "sft": {"max_len": 5120, "truncation": "drop", "max_examples": None, **sft}}

    counts = write_sft_messages(traces, out, tok, template, spec())
    assert counts == {"rows": 6, "too_long": 0, "dropped": 0}
    import pyarrow.parquet as pq

    lengths = sorted(sum(map(len, turn_ids(tok, template, r["messages"]))) for r in pq.read_table(out).to_pylist())
    cut = lengths[2]
    short = write_sft_messages(traces, tmp_path / "short.parquet", tok, template, spec(max_len=cut))
    n_long = sum(n > cut for n in lengths)
    assert short == {"rows": 6 - n_long, "too_long": n_long, "dropped": n_long}
    right = write_sft_messages(traces, tmp_path / "right.parquet", tok, template, spec(max_len=cut, truncation="right"))
    assert right == {"rows": 6, "too_long": n_long, "dropped": 0}          # verl cuts them instead
    sub = write_sft_messages(traces, tmp_path / "sub.parquet", tok, template, spec(max_examples=4))
    want = [r["response"] for r in subsample(read_rows(traces / "sft.parquet"), 4, 0)]
    assert sub["rows"] == 4 and [r["messages"][1]["content"] for r in pq.read_table(tmp_path / "sub.parquet")
                                 .to_pylist()] == want
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        cfg = compose(config_name="sft_trainer_engine",
                      overrides=[f"data.train_files={out}", "data.messages_key=messages", f"data.max_length={cut}",
                                 "data.truncation=right", "data.pad_mode=no_padding",
                                 "data.ignore_input_ids_mismatch=true"])
    tok.chat_template = template                  # what verl's HFModelConfig does with custom_chat_template
    ds = MultiTurnSFTDataset(parquet_files=str(tmp_path / "right.parquet"), tokenizer=tok, config=cfg.data)
    assert len(ds) == 6
    rows = pq.read_table(tmp_path / "right.parquet").to_pylist()
    for i in range(6):
        ids, mask = ds[i]["input_ids"].tolist(), ds[i]["loss_mask"].tolist()
        assert len(ids) == min(cut, sum(map(len, turn_ids(tok, template, rows[i]["messages"]))))   # cut on the right
        response = rows[i]["messages"][1]["content"]
        trained = tok.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=True)
        assert response.startswith(trained) and len(trained) > 0


def test_cpu_platform_overrides_compose_and_validate(model_dir, tmp_path):
    """engine.verl.cpu's overrides (the CPU platform's run) compose with verl's configs: FSDP2,
    fp32 compute, sdpa, no vLLM sleep mode; validate_config passes and the dataclasses build."""
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    c, plan, store = paper_plan("verl_fsdp", model_dir, tmp_path)
    done = set()
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        for st, ovr, _ in _stage_overrides(c, plan, store, 1, 1, device="cpu"):
            if st.kind not in ("sft", "rl") or st.kind in done:
                continue
            done.add(st.kind)
            if st.kind == "sft":
                cfg = compose(config_name="sft_trainer_engine", overrides=ovr)
                assert cfg.trainer.device == "cpu" and cfg.engine.strategy == "fsdp2"
                assert cfg.engine.mixed_precision.param_dtype == "fp32" and cfg.engine.use_torch_compile is False
                assert cfg.model.override_config.attn_implementation == "sdpa"
                omega_conf_to_dataclass(cfg.engine)
            else:
                cfg = compose(config_name="ppo_trainer", overrides=ovr)
                a, r = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
                assert cfg.trainer.device == "cpu" and a.strategy == "fsdp2"
                assert a.fsdp_config.mixed_precision.param_dtype == "fp32"
                assert r.enable_sleep_mode is False and r.free_cache_engine is False and r.enforce_eager is True
                assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
                validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
                omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert done == {"sft", "rl"}
