"""The verl engine's plumbing, without verl: the mapping table both ways, the docs, the metrics
bridge, the command lines, and a whole sweep point (data -> traces -> sft -> eval -> rl -> eval)
through the real stage runner with a stand-in for verl's processes (verl cannot train on CPU):
metrics.jsonl, checkpoints in the stage directory, model/ export, a crash and a resume, a
preemption and a resume, items.parquet."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_verl_support import ROOT, tiny_model

from compose import compose_cfg

# ------------------------------------------------------------------------- import safety


def test_importing_the_engine_imports_neither_verl_nor_torch():
    code = ("import sys, reasoning360.engines.verl, reasoning360.engines.verl.overrides, "
            "reasoning360.engines.verl.metrics, reasoning360.engines.verl.launch, reasoning360.sweep.main; "
            "bad = [m for m in ('verl', 'torch', 'vllm', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------------- the mapping table


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key == "eval.protocols":             # named by the user: every protocol has the same keys
            key = "eval.protocols.*"
            v = {f: None for proto in v.values() for f in proto}
        if isinstance(v, dict) and v:
            out += _leaves(v, key + ".")
        else:
            out.append(key)
    return out


def _our_keys() -> set[str]:
    from reasoning360.engines.verl import overrides as O
    from reasoning360.sweep.main import resolve

    keys: set[str] = set()
    for scale in ("cpu", "paper"):
        c = resolve(compose_cfg(f"scale={scale}", "model.path=/tmp"))
        for section in O.SECTIONS:
            if section == "seed":
                keys.add("seed")
            else:
                keys.update(_leaves(c[section], f"{section}."))
    return keys


def test_every_key_of_ours_maps_to_verl_or_is_local_only():
    from reasoning360.engines.verl import overrides as O

    mapped = O.mapped_keys()
    ours = _our_keys()
    assert {"eval.protocols.*.temperature", "eval.protocols.*.n", "rl.init_step", "sft.export_steps"} <= ours
    missing = sorted(k for k in ours if k not in mapped and k not in O.LOCAL_ONLY and k not in O.STAGE_SIDE)
    assert not missing, f"add these keys to overrides.TABLE, STAGE_SIDE or LOCAL_ONLY: {missing}"
    both = sorted(k for k in set(O.LOCAL_ONLY) | set(O.STAGE_SIDE) if k in mapped)
    assert not both, f"mapped and local-only / stage-side at once: {both}"
    assert not set(O.LOCAL_ONLY) & set(O.STAGE_SIDE)


def test_every_row_names_a_real_key_of_ours():
    import yaml

    from reasoning360.engines.verl import overrides as O

    ours = _our_keys()
    engine_keys = set(yaml.safe_load((ROOT / "configs/engine/verl_fsdp.yaml").read_text())["verl"])
    assert engine_keys == set(yaml.safe_load((ROOT / "configs/engine/verl_megatron.yaml").read_text())["verl"])
    assert engine_keys == set(O.ENGINE_KEYS)
    for row in O.TABLE:
        if row.ours.startswith("engine.verl."):
            assert row.ours.removeprefix("engine.verl.") in engine_keys, row
        elif row.ours != "(stage)":
            assert row.ours in ours, f"{row.ours} is not a key of our config"
        assert set(row.trainers) <= set(O.TRAINERS) and set(row.strategies) <= set(O.STRATEGIES)
    for key in (*O.LOCAL_ONLY, *O.STAGE_SIDE):
        assert key in ours, key


def test_docs_table_is_the_code_table():
    from reasoning360.engines.verl import overrides as O

    doc = (ROOT / "docs" / "verl_mapping.md").read_text()
    assert O.mapping_markdown() in doc, ("docs/verl_mapping.md is out of date: regenerate the tables with "
                                         "`python -m reasoning360.engines.verl.overrides`")


@pytest.mark.parametrize("value", [0, 7, -1, 1e-6, 1.0, 0.2, 3e-4, 1e10, True, False, None, "cosine",
                                   "token-mean", "/a/b-c/d.parquet", "1e-3", "true", "a b", "it's", "x=y",
                                   [0.9, 0.999], ["model", "hf_model"], [], "", "10", "100,200",
                                   "{% for message in messages %}{{ message['content'] }}{% endfor %}"])
def test_hydra_value_round_trips(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from reasoning360.engines.verl.overrides import hydra_value

    parsed = OverridesParser.create().parse_overrides([f"a.b={hydra_value(value)}"])[0].value()
    assert parsed == value and type(parsed) is type(value), (value, hydra_value(value), parsed)


# ------------------------------------------------------------------------- metrics

# One step of verl 0.9.1 main_ppo's logger (recorded key set; values made up).
VERL_RL_STEP = {
    "training/global_step": 3, "training/epoch": 0,
    "actor/entropy": 0.61, "actor/pg_loss": -0.012, "actor/pg_clipfrac": 0.03, "actor/ppo_kl": 0.0004,
    "actor/pg_clipfrac_lower": 0.0, "actor/entropy_loss": 0.6, "actor/loss": -0.012, "actor/grad_norm": 0.42,
    "actor/lr": 1e-6, "actor/kl_loss": 0.001, "actor/kl_coef": 0.001, "perf/mfu/actor": 0.31,
    "critic/score/mean": 0.325, "critic/score/max": 1.0, "critic/score/min": 0.0,
    "critic/rewards/mean": 0.325, "critic/advantages/mean": 0.0, "critic/returns/mean": 0.0,
    "response_length/mean": 812.5, "response_length/max": 4096, "response_length/min": 40,
    "response_length/clip_ratio": 0.05, "prompt_length/mean": 210.0,
    "timing_s/gen": 41.2, "timing_s/update_actor": 20.3, "timing_s/step": 70.1, "timing_s/reward": 0.4,
    "perf/throughput": 1234.5, "perf/total_num_tokens": 800000, "training/num_turns/mean": 1.0,
    "val-core/countdown/acc/mean@1": 0.4, "val-aux/countdown/format_ok/mean@1": 0.9,
}
VERL_SFT_STEP = {"train/loss": 0.83, "train/lr": 1e-5, "train/grad_norm": 2.1, "train/mfu": 0.4,
                 "train/global_tokens": 300000, "train/total_tokens(B)": 0.0003}


def test_map_metrics_uses_the_local_engine_names():
    from reasoning360.engines.verl.metrics import map_metrics

    rl = map_metrics(VERL_RL_STEP, "rl")
    assert rl["reward_mean"] == 0.325 and rl["response_length_mean"] == 812.5 and rl["truncated_rate"] == 0.05
    assert rl["pg_loss"] == -0.012 and rl["pg_clipfrac"] == 0.03 and rl["ppo_kl"] == 0.0004
    assert rl["entropy"] == 0.61 and rl["kl"] == 0.001 and rl["grad_norm"] == 0.42 and rl["lr"] == 1e-6
    assert rl["step_s"] == 70.1 and rl["rollout_s"] == 41.2 and rl["train_s"] == 20.3
    assert rl["val/accuracy"] == 0.4 and rl["val/format_rate"] == 0.9
    assert rl["verl/perf/throughput"] == 1234.5            # everything else kept under verl/
    assert all(f"verl/{k}" in rl for k in VERL_RL_STEP)
    sft = map_metrics(VERL_SFT_STEP, "sft")
    assert sft["loss"] == 0.83 and sft["lr"] == 1e-5 and sft["grad_norm"] == 2.1
    assert map_metrics({"x": float("nan"), "y": "text", "z": [1, 2]}, "rl") == {"verl/z": 1.5}


def test_mapped_names_are_the_local_engines():
    """Same meaning, same name: every local name we map to is one the local GRPO/SFT logs."""
    import re

    from reasoning360.engines.verl.metrics import MAP_RL, MAP_SFT

    grpo_src = (ROOT / "reasoning360/engines/local/grpo.py").read_text()
    losses_src = (ROOT / "reasoning360/engines/local/losses.py").read_text()
    sft_src = (ROOT / "reasoning360/engines/local/sft.py").read_text()
    for name in set(MAP_RL.values()) | {"reward_std", "accuracy", "format_rate", "backtracks_mean"}:
        assert re.search(rf'"{re.escape(name)}"', grpo_src + losses_src), name
    for name in MAP_SFT.values():
        if not name.startswith("val/"):
            assert re.search(rf"\b{name}=", sft_src), name


def test_rollout_stats_match_the_local_definitions():
    from reasoning360.engines.verl.metrics import rollout_stats

    rows = [{"score": s, "output": "x"} for s in (1.0, 0.1, 0.0, 1.0)]
    st = rollout_stats(rows, "countdown", lambda ds, t: 2)
    assert st["accuracy"] == 0.5 and st["format_rate"] == 0.75 and st["backtracks_mean"] == 2
    import statistics

    assert abs(st["reward_std"] - statistics.stdev([1.0, 0.1, 0.0, 1.0])) < 1e-12


def test_bridge_tails_verl_logs_into_metrics_jsonl(tmp_path):
    from reasoning360.engines.verl.metrics import Bridge
    from reasoning360.tracking import Tracker, read_metrics

    log, dumps = tmp_path / "verl.jsonl", tmp_path / "rollouts"
    dumps.mkdir()
    tracker = Tracker(tmp_path)
    bridge = Bridge(tracker, log, "rl", rollout_dir=dumps, data_source="countdown", wait_polls=2)
    with open(log, "wb") as fh:
        for step in (1, 2):
            fh.write(json.dumps({"step": step, "data": VERL_RL_STEP}).encode() + b"\n")
        fh.write(b'{"step": 3, "da')                       # a torn line: not read yet
    (dumps / "1.jsonl").write_text("".join(json.dumps({"score": s}) + "\n" for s in (1.0, 0.0)))
    assert bridge.poll() == 0          # dump 1 seen once: waits until its size is stable
    assert bridge.poll() == 1          # step 1 with its dump; step 2 waits for its dump
    assert not (dumps / "1.jsonl").exists()                # read, then dropped (keep_rollout_dumps: false)
    assert bridge.poll() == 0          # step 2 still waits for its dump (wait_polls=2)
    assert bridge.poll() == 1          # ... then is logged without dump stats
    bridge.close()
    tracker.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["accuracy"] == 0.5 and rows[0]["reward_std"] > 0 and "accuracy" not in rows[1]
    assert rows[0]["reward_mean"] == 0.325
    assert (tmp_path / "metrics.parquet").exists()


# ------------------------------------------------------------------------- command lines


def _paper_stage(tmp_path, kind: str, *extra: str):
    from test_verl_support import paper_plan

    model = tiny_model(tmp_path / "model")
    c, plan, store = paper_plan("verl_fsdp", model, tmp_path / "root", *extra)
    st = next(s for s in plan.stages.values() if s.kind == kind and (kind != "rl" or s.spec["init"]))
    return c, plan, store, st


def test_command_for_sft_multinode_uses_torchrun_on_every_node(tmp_path, monkeypatch):
    from reasoning360.engines.verl import command_for

    monkeypatch.setenv("MASTER_ADDR", "node-a")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    c, _, store, st = _paper_stage(tmp_path, "sft")
    cmd = command_for(st.spec, {**st.runtime, "engine": c["engine"]}, store.root / st.id, 2, 8)
    assert cmd[0] == "env" and any(a.startswith("VERL_FILE_LOGGER_PATH=") for a in cmd)
    i = cmd.index("srun")
    assert cmd[i:i + 6] == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                            "--kill-on-bad-exit=1"]
    assert "torch.distributed.run" in cmd and "--nproc_per_node=8" in cmd and "--nnodes=2" in cmd
    assert "--rdzv_endpoint=node-a:29500" in cmd and "--rdzv_id=4242" in cmd
    assert cmd[cmd.index("verl.trainer.sft_trainer") - 1] == "-m"
    assert "trainer.nnodes=2" in cmd and "trainer.n_gpus_per_node=8" in cmd
    single = command_for(st.spec, st.runtime, store.root / st.id, 1, 4)
    assert "srun" not in single and "--standalone" in single


def test_command_for_rl_joins_the_jobs_ray_cluster(tmp_path, monkeypatch):
    from reasoning360.engines.verl import command_for

    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    c, _, store, st = _paper_stage(tmp_path, "rl")
    cmd = command_for(st.spec, st.runtime, store.root / st.id, 1, 4)
    assert "RAY_ADDRESS=10.1.2.3:6379" in cmd and cmd[cmd.index("verl.trainer.main_ppo") - 1] == "-m"
    assert f"trainer.default_local_dir={store.root / st.id / 'checkpoints'}" in cmd
    assert "trainer.resume_mode=auto" in cmd
    # RL starts from the SFT model kept at rl.init_step (scale=paper: step 300), not its final one
    assert st.spec["init_step"] == 300
    assert f"actor_rollout_ref.model.path={store.root / st.spec['init'] / 'models' / 'step_00000300'}" in cmd
    assert "trainer.device=cuda" in cmd and not any("VERL_PLATFORM" in a for a in cmd)   # sbatch: the GPU command


def test_engine_verl_is_read_strictly_from_the_config(tmp_path):
    """No Python defaults: a missing engine.verl key is a one-line error naming it."""
    from reasoning360.engines.verl import overrides as O

    c, _, store, st = _paper_stage(tmp_path, "rl")
    runtime = {**st.runtime, "engine": {**c["engine"], "verl": dict(c["engine"]["verl"])}}
    assert O.engine_settings(st.spec, runtime)["keep_rollout_dumps"] is False
    del runtime["engine"]["verl"]["keep_rollout_dumps"]
    with pytest.raises(O.MappingError, match=r"^engine\.verl\.keep_rollout_dumps: missing"):
        O.engine_settings(st.spec, runtime)
    runtime["engine"]["verl"] = {**c["engine"]["verl"], "max_ckpt_to_keep": 2}      # a key that is not ours
    with pytest.raises(O.MappingError, match=r"^engine\.verl\.max_ckpt_to_keep: unknown key"):
        O.engine_settings(st.spec, runtime)
    runtime["engine"]["verl"] = {**c["engine"]["verl"], "cpu": {**c["engine"]["verl"]["cpu"]}}
    del runtime["engine"]["verl"]["cpu"]["kv_cache_gb"]
    with pytest.raises(O.MappingError, match=r"^engine\.verl\.cpu\.kv_cache_gb: missing"):
        O.engine_settings(st.spec, runtime)
    with pytest.raises(O.MappingError, match=r"^engine\.verl: missing"):
        O.engine_settings(st.spec, {"device": "auto"})


def test_cpu_commands_load_the_cpu_platform_in_every_verl_process(tmp_path):
    from reasoning360.engines.verl import stage_command, _deps_from_store

    c, _, store, st = _paper_stage(tmp_path, "rl")
    stage_dir = store.root / st.id
    cmd, env = stage_command(st.spec, st.runtime, stage_dir, _deps_from_store(st.spec, stage_dir), 1, 1,
                             chat_template="{{ x }}", device="cpu")
    assert env["VERL_USE_EXTERNAL_MODULES"] == "reasoning360.engines.verl.cpu" and env["VERL_PLATFORM"] == "cpu"
    assert "trainer.device=cpu" in cmd and "actor_rollout_ref.actor.strategy=fsdp2" in cmd
    assert "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM=cpu" in cmd     # Ray workers too
    assert cmd.index("actor_rollout_ref.actor.strategy=fsdp2") < len(cmd) - len(c["engine"]["verl"]["overrides"])


def test_megatron_refuses_the_cpu_platform(tmp_path):
    from reasoning360.engines.verl import placement
    from reasoning360.engines.verl import overrides as O

    model = tiny_model(tmp_path / "model")
    from test_verl_support import paper_plan

    c, plan, _ = paper_plan("verl_megatron", model, tmp_path / "root")
    st = next(s for s in plan.stages.values() if s.kind == "rl")
    vcfg = O.engine_settings(st.spec, st.runtime)
    with pytest.raises(O.MappingError, match="megatron-core cannot run on a CPU"):
        placement(vcfg, "cpu")
    assert placement(vcfg, "cuda") == (1, 4)


def test_verl_cmd_script_is_valid_bash(tmp_path):
    from reasoning360.engines.verl import command_for
    from reasoning360.engines.verl.launch import write_script

    c, _, store, st = _paper_stage(tmp_path, "rl", 'engine.verl.overrides=["trainer.balance_batch=false"]')
    cmd = command_for(st.spec, {**st.runtime, "engine": c["engine"]}, store.root / st.id, 1, 4)
    assert cmd[-1] == "trainer.balance_batch=false"
    script = tmp_path / "verl_cmd.sh"
    write_script(script, cmd, note="test")
    subprocess.run(["bash", "-n", str(script)], check=True)
    # the script's words are exactly the command (shell-parsed back)
    out = subprocess.run(["bash", "-c", f"set -- ; source <(sed -e 's/^set -euo pipefail//' -e 's/^env /printf \"%s\\\\n\" env /' {script})"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == cmd


def test_dry_run_commands_cover_every_verl_stage(tmp_path):
    from reasoning360.engines.verl import dry_run_commands

    model = tiny_model(tmp_path / "model")
    from test_verl_support import paper_plan

    c, plan, store = paper_plan("verl_megatron", model, tmp_path / "root")
    cmds = dry_run_commands(plan, store.root)
    kinds = [plan.stages[s].kind for s in cmds]
    seeds = len(c["grid"]["seeds"])                               # the study trains every point with each seed
    assert kinds.count("sft") == 4 * seeds and kinds.count("rl") == 5 * seeds and kinds.count("eval") >= 9 * seeds
    sft = next(cmds[s] for s in cmds if plan.stages[s].kind == "sft")
    assert "engine=megatron" in sft and "optim=megatron" in sft and "optim.lr_decay_style=cosine" in sft
    rl = next(cmds[s] for s in cmds if plan.stages[s].kind == "rl")
    assert "model_engine=megatron" in rl
    assert "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2" in rl


# ------------------------------------------------------------------------- a whole point, verl stand-in

FAKE_VERL = textwrap.dedent(r'''
    """Stands in for verl's trainers: reads the same overrides, writes what verl writes
    (file-logger metrics, rollout / validation dumps, global_step_N checkpoints with a
    HuggingFace export, latest_checkpointed_iteration.txt), resumes like resume_mode=auto."""
    import json, os, shutil, signal, sys, time
    import yaml

    argv = sys.argv[1:]
    module = [argv[i + 1] for i, a in enumerate(argv) if a == "-m"][-1]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    ov = {}
    for o in OverridesParser.create().parse_overrides(argv[argv.index(module) + 1:]):   # as verl's Hydra reads them
        ov[o.key_or_group.lstrip("+")] = o.value()
    with open(os.environ["FAKE_VERL_CALLS"], "a") as fh:
        fh.write(json.dumps({"module": module, "argv": argv}) + "\n")
    kind = "sft" if module.endswith("sft_trainer") else ("eval" if ov.get("trainer.val_only") else "rl")
    prefix = "ray_kwargs.ray_init.runtime_env.env_vars."
    os.environ.update({k[len(prefix):]: str(v) for k, v in ov.items() if k.startswith(prefix)})   # as Ray would
    log_path = os.environ.get("VERL_FILE_LOGGER_PATH") or ov["ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "wb", buffering=0)             # verl's FileLogger truncates too
    def emit(step, data):
        log.write(json.dumps({"step": step, "data": data}).encode() + b"\n")
    import pyarrow.parquet as pq
    if kind == "eval":
        rows = pq.read_table(ov["data.val_files"]).to_pylist()
        out = os.path.join(ov["trainer.validation_data_dir"], "0.jsonl")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        lines = []
        for i, r in enumerate(rows):      # n answers per row; verl sorts its dump by uid
            for j in range(int(ov["actor_rollout_ref.rollout.val_kwargs.n"])):
                ans = r["extra_info"]["answer"] if i % 2 == 0 else "1+1"
                lines.append({"input": "p", "output": f"<think>t</think>\n<answer>{ans}</answer>",
                              "gts": r["reward_model"]["ground_truth"], "score": 0.0, "step": 0,
                              "uid": f"u{(7 * i) % 97:03d}-{i}_{j}_0"})
        with open(out, "w") as fh:
            for line in sorted(lines, key=lambda x: x["uid"]):
                fh.write(json.dumps(line) + "\n")
        emit(0, {"val-core/countdown/acc/mean@1": 0.5})
        sys.exit(0)
    ckpt = ov["trainer.default_local_dir"]
    total, save = int(ov["trainer.total_training_steps"]), int(ov["trainer.save_freq"])
    start = 0
    tracker = os.path.join(ckpt, "latest_checkpointed_iteration.txt")
    if ov["trainer.resume_mode"] == "auto" and os.path.exists(tracker):
        start = int(open(tracker).read())
    model = ov["model.path"] if kind == "sft" else ov["actor_rollout_ref.model.path"]
    fail_at = int(os.environ.get("FAKE_VERL_FAIL_AT", "0"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    if kind == "rl" and ov.get("trainer.val_before_train") and start == 0:
        emit(0, {"val-core/countdown/acc/mean@1": 0.25, "val-aux/countdown/format_ok/mean@1": 1.0})
    for step in range(start + 1, total + 1):
        if kind == "sft":
            emit(step, {"train/loss": 1.0 / step, "train/lr": 1e-5, "train/grad_norm": 1.0})
        else:
            d = ov["trainer.rollout_data_dir"]
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"{step}.jsonl"), "w") as fh:
                for s in (1.0, 0.1, 0.0, 1.0):
                    fh.write(json.dumps({"score": s, "output": "<answer>1</answer>", "step": step}) + "\n")
            emit(step, {"critic/score/mean": 0.525, "actor/pg_loss": 0.1, "actor/entropy": 0.5,
                        "response_length/mean": 20.0, "actor/lr": 1e-6})
        if step % save == 0 or step == total:
            g = os.path.join(ckpt, f"global_step_{step}")
            hf = os.path.join(g, "huggingface" if kind == "sft" else "actor/huggingface")
            shutil.copytree(model, hf, dirs_exist_ok=True)
            with open(tracker + ".tmp", "w") as fh:
                fh.write(str(step))
            os.replace(tracker + ".tmp", tracker)
            if ov.get("trainer.checkpoint_callback_class"):       # verl's hook, in the driver
                import importlib
                mod, _, name = ov["trainer.checkpoint_callback_class"].rpartition(".")
                getattr(importlib.import_module(mod), name)(config=None).on_save(
                    trainer=None, global_step=step, checkpoint_dir=g)
            keep = ov["trainer.max_ckpt_to_keep" if kind == "sft" else "trainer.max_actor_ckpt_to_keep"]
            saved = sorted(int(d.split("_")[-1]) for d in os.listdir(ckpt) if d.startswith("global_step_"))
            for old in saved[:-keep]:                                # verl prunes as it saves
                shutil.rmtree(os.path.join(ckpt, f"global_step_{old}"))
        if step == fail_at:
            sys.exit(3)
        time.sleep(0.05)
        if stop:
            sys.exit(143)
''')


@pytest.fixture
def fake_verl(tmp_path, monkeypatch):
    script = tmp_path / "fake_verl.py"
    script.write_text(FAKE_VERL)
    py = tmp_path / "fakepython"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    py.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_VERL_CALLS", str(calls))
    return py, calls


def test_a_sweep_point_runs_end_to_end_with_resume(tmp_path, fake_verl, monkeypatch):
    from reasoning360.engines.context import PreemptFlag, Preempted
    from reasoning360.sweep.main import build, record
    from reasoning360.sweep.runner import run_stage
    from reasoning360.tracking import read_metrics

    py, calls = fake_verl
    model = tiny_model(tmp_path / "model")
    cfg = compose_cfg("+grid=smoke", "engine=verl_fsdp", "engine.device=cuda", "launcher=slurm", f"model.path={model}",
                      "model.tokenizer=path", "pretrain.train.max_steps=0", f"paths.root={tmp_path / 'root'}",
                      f"engine.verl.python={py}", "grid.backtracks=[1]", "sft.max_steps=6", "sft.save_every=2",
                      "sft.keep_checkpoints=3", "sft.export_steps=[4]", "rl.init_step=4", "rl.steps=5",
                      "rl.save_every=2", "rl.eval_steps=[1,3]", "rl.keep_checkpoints=1",
                      "+eval.protocols.pass={temperature:1.0,top_p:1.0,n:3}",
                      "data.sft_size=24", "data.train_size=16", "data.test_size=8")
    c, plan, store, sweep_dir = build(cfg)
    record(c, plan, store, sweep_dir)
    for s in plan.stages.values():      # what the planner records once engine.verl reaches the runtime
        if "engine" not in s.runtime:
            store.stage(s.id).write_record(s.spec, {**s.runtime, "engine": c["engine"]})
    ids = plan.points[0].stages
    for role in ("data", "traces"):
        run_stage(store, ids[role], show_progress=False)

    sft = run_stage(store, ids["sft"], show_progress=False)
    sft_dir = store.stage(ids["sft"]).path
    assert (sft_dir / "model" / "config.json").exists() and (sft_dir / "model" / "tokenizer.json").exists()
    assert (sft_dir / "models" / "step_00000004" / "config.json").exists()      # sft.export_steps
    assert not (sft_dir / "kept_checkpoints").exists() or not any((sft_dir / "kept_checkpoints").iterdir())
    assert sft["steps"] == 6 and sft["examples"] == 24
    assert [r["step"] for r in read_metrics(sft_dir)] == [1, 2, 3, 4, 5, 6]
    assert read_metrics(sft_dir)[-1]["loss"] == pytest.approx(1 / 6)
    assert (sft_dir / "verl_cmd.sh").exists() and (sft_dir / "sft_messages.parquet").exists()
    subprocess.run(["bash", "-n", str(sft_dir / "verl_cmd.sh")], check=True)

    ev = run_stage(store, ids["sft_eval"], show_progress=False)
    assert ev["n"] == 8 and ev["accuracy"] == 0.5 and ev["format_rate"] == 1.0 and ev["primary"] == "sample"
    assert set(ev["by_step"]) == {"4"} and set(ev["by_step"]["4"]) == {"sample", "greedy", "pass"}
    assert ev["by_step"]["4"]["pass"]["samples"] == 3 and ev["by_step"]["4"]["pass"]["pass@2"] == 0.5
    import pandas as pd

    items = pd.read_parquet(store.stage(ids["sft_eval"]).path / "items.parquet")
    assert len(items) == 8 * (1 + 1 + 3) and set(items["step"]) == {4}
    assert (items.groupby("protocol").size().to_dict() == {"sample": 8, "greedy": 8, "pass": 24})
    assert sorted(items[items.protocol == "pass"]["sample"].unique()) == [0, 1, 2]
    calls_eval = [json.loads(x) for x in calls.read_text().splitlines() if "trainer.val_only=true" in x]
    assert len(calls_eval) == 3 and all(f"actor_rollout_ref.model.path={sft_dir / 'models' / 'step_00000004'}"
                                        in c["argv"] for c in calls_eval)   # the model RL starts from

    # RL: crash at step 3 (after the step-2 checkpoint), then rerun: resumes at 2
    rl_dir = store.stage(ids["rl"]).path
    monkeypatch.setenv("FAKE_VERL_FAIL_AT", "3")
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_stage(store, ids["rl"], show_progress=False)
    assert [r["step"] for r in read_metrics(rl_dir)] == [0, 1, 2, 3]
    monkeypatch.delenv("FAKE_VERL_FAIL_AT")
    # preemption: the runner's flag stops verl; the stage is not DONE and resumes later
    flag = PreemptFlag()
    flag.request()
    with pytest.raises(Preempted):
        run_stage(store, ids["rl"], show_progress=False, preempt=flag)
    assert not store.stage(ids["rl"]).is_done()
    rl = run_stage(store, ids["rl"], show_progress=False)
    rows = read_metrics(rl_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]   # no step twice after two restarts
    assert rows[0] == {**rows[0], "val/accuracy": 0.25, "val/format_rate": 1.0}   # val before training
    assert rl["val_accuracy_start"] == 0.25
    assert all(r["accuracy"] == 0.5 and r["format_rate"] == 0.75 for r in rows[1:])
    assert rows[-1]["reward_mean"] == 0.525 and "reward_std" in rows[-1]
    assert rl["steps"] == 5 and (rl_dir / "model" / "config.json").exists()
    assert (rl_dir / "checkpoints" / "global_step_5").is_dir()        # the newest (keep_checkpoints 1)
    run = [json.loads(x) for x in calls.read_text().splitlines() if "main_ppo" in x and "val_only" not in x]
    assert "trainer.resume_mode=auto" in run[-1]["argv"]
    assert "trainer.save_freq=1" in run[-1]["argv"]      # gcd(rl.save_every 2, rl.eval_steps 1, 3)
    assert f"actor_rollout_ref.model.path={sft_dir / 'models' / 'step_00000004'}" in run[-1]["argv"]
    # rl.eval_steps: verl pruned global_step_1 / _3 (keep 1) after its hook set them aside
    assert not (rl_dir / "checkpoints" / "global_step_1").exists()
    for step in (1, 3):
        assert (rl_dir / "models" / f"step_{step:08d}" / "config.json").exists()

    ev2 = run_stage(store, ids["rl_eval"], show_progress=False)
    assert ev2["accuracy"] == 0.5 and set(ev2["by_step"]) == {"1", "3", "5"}
    assert read_metrics(store.stage(ids["rl_eval"]).path)[0]["eval/accuracy"] == 0.5
    script = (store.stage(ids["rl_eval"]).path / "verl_cmd.sh").read_text()
    assert script.count("verl.trainer.main_ppo") == 9        # 3 models x 3 protocols


def test_run_process_stops_what_the_verl_process_left_behind(tmp_path):
    """A verl driver that started its own Ray leaves processes in other sessions (Ray's daemons and
    workers); run_process stops every process carrying its run marker once the driver has ended."""
    import time

    from reasoning360.engines.verl.launch import run_process

    pidfile = tmp_path / "orphan.pid"
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
            f"start_new_session=True); open({str(pidfile)!r}, 'w').write(str(p.pid))")
    t0 = time.time()
    assert run_process([sys.executable, "-c", code], log_path=tmp_path / "log", echo=False, poll_s=0.1) == 0
    pid = int(pidfile.read_text())
    state = ""
    try:
        state = open(f"/proc/{pid}/stat").read().split()[2]
    except FileNotFoundError:
        pass
    assert state in ("", "Z"), f"orphan {pid} still running ({state})"
    assert time.time() - t0 < 8


def test_verl_processes_survive_slurms_usr2(tmp_path):
    """Slurm sends USR2 to every process of the job step; verl (and what it starts) must outlive
    it, so the stage can stop verl itself after the step-boundary checkpoint."""
    import signal
    import threading
    import time

    from reasoning360.engines.verl.launch import run_process

    pidfile = tmp_path / "pid"
    code = (f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(1.5); print('alive')")

    def usr2():
        while not pidfile.exists() or not pidfile.read_text():
            time.sleep(0.05)
        os.killpg(int(pidfile.read_text()), signal.SIGUSR2)
    import os

    threading.Thread(target=usr2, daemon=True).start()
    assert run_process([sys.executable, "-c", code], log_path=tmp_path / "log", echo=False, poll_s=0.1) == 0
    assert "alive" in (tmp_path / "log").read_text()


# ------------------------------------------------------------------------- kept models (keep.py)


def _fake_checkpoint(step_dir, actor: bool):
    """The files of one verl FSDP checkpoint (RL: under actor/), with a full HF export so the
    merge needs no verl."""
    d = step_dir / "actor" if actor else step_dir
    (d / "huggingface").mkdir(parents=True)
    for name in ("model_world_size_1_rank_0.pt", "optim_world_size_1_rank_0.pt", "extra_state_world_size_1_rank_0.pt",
                 "fsdp_config.json", "huggingface/config.json", "huggingface/model.safetensors"):
        (d / name).write_text(name)
    (step_dir / ("data.pt" if actor else "data_0.pt")).write_text("dataloader")


def test_kept_steps_are_set_aside_by_verls_hook_and_merged(tmp_path, monkeypatch):
    from reasoning360.engines.verl.keep import Keeper, KeepError, SnapshotOnSave

    stage, ckpt = tmp_path / "rl-x", tmp_path / "rl-x" / "checkpoints"
    monkeypatch.setenv("R360_KEEP_STEPS", "2,4")
    hook = SnapshotOnSave(config=None)
    for step in (1, 2, 3):                        # verl saves, calls its hook, prunes the older one (keep 1)
        _fake_checkpoint(ckpt / f"global_step_{step}", actor=True)
        hook.on_save(trainer=None, global_step=step, checkpoint_dir=str(ckpt / f"global_step_{step}"))
        (ckpt / "latest_checkpointed_iteration.txt").write_text(str(step))
        if step > 1:
            import shutil

            shutil.rmtree(ckpt / f"global_step_{step - 1}")
    snap = stage / "kept_checkpoints" / "global_step_2"
    assert sorted(p.name for p in snap.iterdir()) == ["fsdp_config.json", "huggingface", "model_world_size_1_rank_0.pt"]
    assert not (stage / "kept_checkpoints" / "global_step_1").exists()       # not a kept step
    kept = Keeper(stage, ckpt, [2], python="python", backend="fsdp", keys="rl.eval_steps").finish()
    assert kept == [stage / "models" / "step_00000002"] and (kept[0] / "model.safetensors").exists()
    assert not (stage / "kept_checkpoints").exists()                        # merged, then dropped
    # SFT (no hook): the polling loop sets a checkpoint aside while it exists; one pruned unseen is an error
    sft, sckpt = tmp_path / "sft-x", tmp_path / "sft-x" / "checkpoints"
    keeper = Keeper(sft, sckpt, [2, 4], python="python", backend="fsdp", keys="sft.export_steps")
    _fake_checkpoint(sckpt / "global_step_2", actor=False)
    keeper.poll()                                 # not yet in latest_checkpointed_iteration.txt: still being written
    assert not (sft / "kept_checkpoints").exists()
    (sckpt / "latest_checkpointed_iteration.txt").write_text("2")
    keeper.poll()
    assert (sft / "kept_checkpoints" / "global_step_2" / "model_world_size_1_rank_0.pt").exists()
    assert not (sft / "kept_checkpoints" / "global_step_2" / "data_0.pt").exists()
    with pytest.raises(KeepError, match=r"^sft\.export_steps: verl pruned its checkpoint of step 4"):
        keeper.finish()


def test_strict_reads_save_freq_and_refusals(tmp_path):
    """A key missing from a spec is a one-line error naming it; kept steps make save_freq a divisor;
    what verl cannot do is refused in one line before anything runs."""
    from reasoning360.engines.verl import _deps_from_store
    from reasoning360.engines.verl import overrides as O

    c, plan, store, rl = _paper_stage(tmp_path, "rl")
    sft = next(s for s in plan.stages.values() if s.kind == "sft")

    def values(st, **changes):
        spec = {**st.spec, **{k: v for k, v in changes.items() if k in ("init_step",)}}
        sect = st.kind
        spec[sect] = {**st.spec[sect], **{k: v for k, v in changes.items() if k != "init_step"}}
        for k, v in changes.items():
            if v is KeyError:
                del spec[sect][k]
        d = store.root / st.id
        return O.stage_overrides(spec, st.runtime, stage_dir=d, deps=_deps_from_store(spec, d), nnodes=1,
                                 gpus_per_node=4, chat_template="{{ x }}")[1]

    assert values(rl)["trainer.save_freq"] == 100 and values(sft)["trainer.save_freq"] == 20    # the paper's
    assert values(rl, save_every=30)["trainer.save_freq"] == 10          # gcd(30, eval steps 100, 200)
    assert values(sft, save_every=0, export_steps=[300])["trainer.save_freq"] == 300     # 0: at the end (+ kept)
    assert values(rl, max_prompt_len=None)["data.max_prompt_length"] == 16384 - 4096
    assert values(rl, val_every=0)["trainer.val_before_train"] is False
    for st, key, value, msg in ((rl, "loss_agg_mode", "micro-token-mean", r"^rl\.loss_agg_mode: micro-token-mean"),
                                (sft, "schedule", "linear", r"^sft\.schedule='linear': verl's FSDP optimizer"),
                                (sft, "grad_clip", None, r"^sft\.grad_clip: null \(no clipping\)"),
                                (rl, "weight_decay", KeyError, r"^rl\.weight_decay: missing"),
                                (sft, "betas", KeyError, r"^sft\.betas: missing"),
                                (rl, "clip_ratio_low", KeyError, r"^rl\.clip_ratio_low: missing")):
        with pytest.raises(O.MappingError, match=msg):
            values(st, **{key: value})
