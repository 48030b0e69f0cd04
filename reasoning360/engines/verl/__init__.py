"""The verl engine: SFT, GRPO and eval stages run by verl 0.9.1 (FSDP or Megatron, vLLM rollouts).

On GPUs (engine.device cuda, or auto where a GPU is visible) verl runs as it ships. On a machine
without one (auto, or cpu) the FSDP engine runs on verl's CPU platform
(reasoning360.engines.verl.cpu, loaded through VERL_USE_EXTERNAL_MODULES / VERL_PLATFORM) with
vLLM's CPU build serving verl's own vLLM rollout: that is how the tests train the tiny model with
verl's real trainers. Megatron cannot run on a CPU (megatron-core asserts CUDA in its forward
pass): `engine=verl_megatron` is composed, mapped and dry-run in the tests, and trains on GPUs only.

The stage runner calls `run_sft(ctx)`, `run_grpo(ctx)`, `run_eval(ctx)` (same contract as the
local engine: outputs in ctx.stage_dir, the final model in `stage_dir/model`, metrics through
ctx.make_tracker, a JSON summary returned). `command_for(...)` gives the exact verl command
line of a stage (for sbatch rendering and dry runs). Importing this package imports neither
verl nor torch; verl runs in a child process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import overrides as O
from .launch import allocation, ppo_command, sft_command
from .metrics import latest_checkpoint_step

__all__ = ["needs_ray", "run_sft", "run_grpo", "run_eval", "command_for", "stage_command", "dry_run_commands"]


def needs_ray(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
    """GRPO and eval run verl's main_ppo, a Ray driver; SFT runs under torchrun."""
    return kind in ("rl", "eval")


# ---------------------------------------------------------------------------- commands

def _deps_from_store(spec: dict[str, Any], stage_dir: Path) -> dict[str, Path]:
    root = Path(stage_dir).parent
    deps: dict[str, Path] = {}
    if spec.get("data"):
        deps["data"] = root / spec["data"]
    if spec.get("traces"):
        deps["traces"] = root / spec["traces"]
    up = spec.get("init") or spec.get("checkpoint")
    if up:
        deps["init"] = root / up
    return deps


def _upstream_model(spec: dict[str, Any], deps: dict[str, Path] | None = None,
                    plan_specs: dict[str, dict] | None = None) -> dict[str, Any]:
    """Every sft / rl / eval spec carries the model config (how to load the checkpoint)."""
    return spec["model"]


def stage_command(spec: dict[str, Any], runtime: dict[str, Any] | None, stage_dir: Path,
                  deps: dict[str, Path], nnodes: int, gpus_per_node: int, *, rows: int | None = None,
                  model_cfg: dict[str, Any] | None = None, device: str = "cuda"
                  ) -> tuple[list[str], dict[str, str]]:
    """(command, env) of one verl stage. RL and eval join the job's Ray cluster through
    RAY_ADDRESS (set by the Ray bootstrap of a Slurm job); without it verl starts its own."""
    stage_dir = Path(stage_dir)
    vcfg = O.engine_settings(spec, runtime)
    log_file = str(stage_dir / O.LOG_DIR / "metrics.jsonl")
    ovr, _ = O.stage_overrides(spec, runtime, stage_dir=stage_dir, deps=deps, nnodes=nnodes,
                               gpus_per_node=gpus_per_node, rows=rows,
                               model_cfg=model_cfg or _upstream_model(spec, deps), log_file=log_file,
                               device=device)
    py = str(vcfg["python"])
    pythonpath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[3]),
                                             os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath}
    if device == "cpu":
        env.update(cpu_env(vcfg))
    if spec["kind"] == "sft":
        env["VERL_FILE_LOGGER_PATH"] = log_file
        cmd = sft_command(ovr, nnodes=nnodes, gpus_per_node=gpus_per_node, python=py,
                          port=int(vcfg["sft_port"]), env=env)
    else:
        if os.environ.get("RAY_ADDRESS"):
            env["RAY_ADDRESS"] = os.environ["RAY_ADDRESS"]
        if device == "cpu":      # every Ray worker of verl's job loads the CPU platform too
            ovr = ovr + [f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}={O.hydra_value(v)}"
                         for k, v in cpu_env(vcfg).items()]
        cmd = ppo_command(ovr, python=py, env=env)
    return cmd, env


def cpu_env(vcfg: dict[str, Any]) -> dict[str, str]:
    """The environment of verl on its CPU platform: the platform module, vLLM's CPU KV cache,
    torch threads."""
    from .cpu import env as platform_env

    cpu = vcfg["cpu"]
    return {**platform_env(), "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": str(cpu["kv_cache_gb"]),
            "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(cpu["omp_threads"]),
            "TOKENIZERS_PARALLELISM": "false"}


def command_for(spec: dict[str, Any], runtime: dict[str, Any] | None, stage_dir: str | os.PathLike,
                nnodes: int, gpus_per_node: int) -> list[str]:
    """The verl command line of an sft / rl / eval stage, for an allocation of `nnodes` x
    `gpus_per_node` (used by sbatch rendering). Upstream stages are found beside `stage_dir`
    in the store. Environment variables it needs are set with a leading `env`."""
    stage_dir = Path(stage_dir)
    deps = _deps_from_store(spec, stage_dir)
    rows = None
    if spec["kind"] == "sft":
        from .data import count_rows
        rows = count_rows(stage_dir / O.SFT_FILE)
    elif spec["kind"] == "rl" and deps.get("data"):
        from .data import count_rows
        rows = count_rows(deps["data"] / "train.parquet")
    cmd, _ = stage_command(spec, runtime, stage_dir, deps, nnodes, gpus_per_node, rows=rows)
    return cmd


def dry_run_commands(plan, store_root: str | os.PathLike, nnodes: int | None = None,
                     gpus_per_node: int | None = None) -> dict[str, list[str]]:
    """stage id -> verl command for every verl stage of a plan (reasoning360.sweep.plan.Plan),
    without touching the disk (model configs of eval stages come from the plan)."""
    specs = {sid: st.spec for sid, st in plan.stages.items()}
    out = {}
    for sid, st in plan.stages.items():
        spec = st.spec
        if spec.get("kind") not in ("sft", "rl", "eval") or not str(spec.get("engine", "")).startswith("verl"):
            continue
        vcfg = O.engine_settings(spec, st.runtime)
        n = nnodes or int(vcfg["nnodes"])
        g = gpus_per_node or int(vcfg["n_gpus_per_node"])
        stage_dir = Path(store_root) / sid
        deps = _deps_from_store(spec, stage_dir)
        cmd, _ = stage_command(spec, st.runtime, stage_dir, deps, n, g,
                               model_cfg=_upstream_model(spec, deps, specs))
        out[sid] = cmd
    return out


# ---------------------------------------------------------------------------- stages

def _task_fns():
    from reasoning360.tasks import count_backtracks
    return count_backtracks


def _train(ctx, kind: str, total_steps: int, rows: int | None, model_cfg: dict | None) -> dict[str, Any]:
    """Run verl's trainer for an sft/rl stage until total_steps (resuming), bridging metrics."""
    from .data import export_model
    from .launch import VerlFailed, log_tail, run_process, write_script
    from .metrics import Bridge
    from ..context import Preempted

    stage = Path(ctx.stage_dir)
    vcfg = O.engine_settings(ctx.spec, ctx.runtime)
    device = O.stage_device(ctx.runtime, probe=True)
    nnodes, gpus = placement(vcfg, device)
    _initial_model(ctx, model_cfg)
    cmd, env = stage_command(ctx.spec, ctx.runtime, stage, ctx.deps, nnodes, gpus, rows=rows,
                             model_cfg=model_cfg, device=device)
    write_script(stage / O.CMD_FILE, cmd, note=f"verl {kind} stage {stage.name}: {nnodes} node(s) x {gpus} GPU(s)")
    ckpt_dir = stage / O.CKPT_DIR
    resume = latest_checkpoint_step(ckpt_dir)
    tracker = ctx.make_tracker(resume)
    t0 = time.time()
    code = 0
    if resume < total_steps:
        log_file = stage / O.LOG_DIR / "metrics.jsonl"
        log_file.unlink(missing_ok=True)     # verl truncates it anyway; the bridge starts at 0
        bridge = Bridge(tracker, log_file, kind,
                        rollout_dir=stage / O.ROLLOUT_DIR if kind == "rl" else None,
                        data_source=ctx.spec.get("task"), resume_step=resume,
                        keep_dumps=bool(vcfg.get("keep_rollout_dumps")),
                        count_backtracks=_task_fns() if kind == "rl" else None)
        attempt = len(list((stage / O.LOG_DIR).glob(f"{kind}-*.log"))) + 1
        log_path = stage / O.LOG_DIR / f"{kind}-{attempt:03d}.log"
        code = run_process(cmd, log_path=log_path, poll=bridge.poll, cwd=stage,
                           should_stop=lambda: bool(ctx.preempt.requested), echo=ctx.show_progress)
        bridge.close()
        if code is None:
            tracker.close(finished=False)
            raise Preempted(f"verl {kind} stopped on request at step {bridge.last_step}; "
                            f"resumes from checkpoint {latest_checkpoint_step(ckpt_dir)}")
        if code != 0:
            tracker.close(finished=False)
            raise VerlFailed(f"verl {kind} exited with {code}; see {log_path}\n{log_tail(log_path)}")
    last = latest_checkpoint_step(ckpt_dir)
    if last < total_steps:
        tracker.close(finished=False)
        raise VerlFailed(f"verl {kind} finished without a checkpoint at step {total_steps} "
                         f"(newest: {last}) in {ckpt_dir}")
    model = export_model(ckpt_dir, stage, last, python=str(vcfg["python"]), backend=vcfg["strategy"])
    tracker.close(finished=True)
    return {"steps": total_steps, "resumed_from": resume, "model": str(model), "nnodes": nnodes,
            "gpus_per_node": gpus, "device": device, "strategy": vcfg["strategy"],
            "verl_wall_s": round(time.time() - t0, 1)}


def placement(vcfg: dict[str, Any], device: str) -> tuple[int, int]:
    """(nodes, verl devices per node): the allocation's GPUs, or on the CPU platform
    engine.verl.cpu.workers FSDP ranks per node (one Ray CPU each)."""
    nnodes, gpus = allocation(vcfg)
    if device == "cpu" and vcfg["strategy"] == "megatron":
        raise O.MappingError("engine.device: cpu: megatron-core cannot run on a CPU (its forward pass asserts "
                             "CUDA); use engine=verl_fsdp here, verl_megatron on GPUs")
    return (nnodes, int(vcfg["cpu"]["workers"])) if device == "cpu" else (nnodes, gpus)


def eval_engine(vcfg: dict[str, Any], device: str) -> str:
    """Who answers an eval stage: `verl` (main_ppo val-only, vLLM) or `local` (the project's
    eval, reasoning360.engines.local, on the stage's HF model): engine.verl.eval_engine, or on
    the CPU platform engine.verl.cpu.eval_engine (a val-only main_ppo costs minutes of start-up
    on a CPU for seconds of greedy decoding)."""
    value = vcfg["cpu"]["eval_engine"] if device == "cpu" else vcfg["eval_engine"]
    if value not in ("verl", "local"):
        where = "engine.verl.cpu.eval_engine" if device == "cpu" else "engine.verl.eval_engine"
        raise O.MappingError(f"{where}: {value!r} (known: verl, local)")
    return value


def _initial_model(ctx, model_cfg: dict[str, Any] | None) -> None:
    """A stage that starts from no upstream model and no model.path writes the from-scratch
    model into its own directory first (verl needs an HF directory)."""
    model = model_cfg or ctx.spec.get("model") or {}
    if ctx.deps.get("init") is None and not model.get("path"):
        from .init_model import write_initial_model

        write_initial_model(model, int(ctx.spec["seed"]), Path(ctx.stage_dir))


def run_sft(ctx) -> dict[str, Any]:
    from .data import load_tokenizer, write_sft_messages

    from .init_model import DIR as INIT_DIR

    spec = ctx.spec
    sft = spec["sft"]
    _initial_model(ctx, spec["model"])
    model_path = spec["model"]["path"]
    start = Path(model_path).expanduser() if model_path else Path(ctx.stage_dir) / INIT_DIR
    out = Path(ctx.stage_dir) / O.SFT_FILE
    tok = load_tokenizer(start)
    counts = write_sft_messages(ctx.deps["traces"], out, tok, int(sft["max_len"]), ctx.spec)
    summary = _train(ctx, "sft", int(sft["max_steps"]), counts["rows"], spec.get("model"))
    return {**summary, "examples": counts["rows"], "dropped_too_long": counts["dropped_too_long"]}


def run_grpo(ctx) -> dict[str, Any]:
    from .data import count_rows

    spec = ctx.spec
    rows = count_rows(Path(ctx.deps["data"]) / "train.parquet")
    summary = _train(ctx, "rl", int(spec["rl"]["steps"]), rows, spec.get("model"))
    from ...tracking import read_metrics

    rows = read_metrics(ctx.stage_dir)
    vals = [r for r in rows if "val/accuracy" in r]
    if vals and vals[0]["step"] == 0:
        summary["val_accuracy_start"] = vals[0]["val/accuracy"]
    if vals and vals[-1]["step"] == int(spec["rl"]["steps"]):
        summary["val_accuracy_end"] = vals[-1]["val/accuracy"]
    tail = [r for r in rows if "reward_mean" in r][-5:]
    for key in ("reward_mean", "accuracy"):
        vals = [r[key] for r in tail if key in r]
        if vals:
            summary[f"{key}_last5"] = sum(vals) / len(vals)
    return summary


def run_eval(ctx) -> dict[str, Any]:
    """Greedy generation on the held-out split with verl's val-only mode (vLLM), then scored by
    reasoning360.tasks exactly as the local engine's eval: items.parquet + summary."""
    from ..eval_items import write_items
    from .data import eval_items, load_tokenizer, read_generations
    from .launch import VerlFailed, log_tail, run_process, write_script
    from ..context import Preempted
    from ..local.data import read_rows

    spec = ctx.spec
    stage = Path(ctx.stage_dir)
    vcfg = O.engine_settings(spec, ctx.runtime)
    device = O.stage_device(ctx.runtime, probe=True)
    if eval_engine(vcfg, device) == "local":      # the project's eval on the exported HF model
        from ..local import run_eval as local_eval

        return {**local_eval(ctx), "eval_engine": "local"}
    nnodes, gpus = placement(vcfg, device)
    model_cfg = _upstream_model(spec, ctx.deps)
    _initial_model(ctx, model_cfg)
    cmd, env = stage_command(spec, ctx.runtime, stage, ctx.deps, nnodes, gpus, model_cfg=model_cfg,
                             device=device)
    write_script(stage / O.CMD_FILE, cmd, note=f"verl eval stage {stage.name}: {nnodes} node(s) x {gpus} GPU(s)")
    gen_dir = stage / O.GEN_DIR
    t0 = time.time()
    if not any(gen_dir.glob("*.jsonl")):
        log_path = stage / O.LOG_DIR / f"eval-{int(time.time())}.log"
        code = run_process(cmd, log_path=log_path, cwd=stage, should_stop=lambda: bool(ctx.preempt.requested),
                           echo=ctx.show_progress)
        if code is None:
            raise Preempted("verl eval stopped on request")
        if code != 0:
            raise VerlFailed(f"verl eval exited with {code}; see {log_path}\n{log_tail(log_path)}")
    split = (spec.get("eval") or {}).get("split", "test")
    rows = read_rows(Path(ctx.deps["data"]) / f"{split}.parquet")
    model_dir = Path(ctx.deps["init"]) / "model" if ctx.deps.get("init") else Path((model_cfg or {})["path"])
    try:
        tok = load_tokenizer(model_dir)
    except Exception:
        tok = None
    items, summary = eval_items(rows, read_generations(gen_dir), tok)
    write_items(stage / "items.parquet", items)
    summary.update({"seconds": time.time() - t0, "split": split, "nnodes": nnodes, "gpus_per_node": gpus})
    tracker = ctx.make_tracker(0)
    tracker.log(0, **{f"eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    tracker.close(finished=True)
    return summary
