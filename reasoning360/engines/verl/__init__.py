"""The verl engine: SFT, GRPO and eval stages run by verl 0.9.1 (FSDP or Megatron, vLLM rollouts).

On GPUs (engine.device cuda, or auto where a GPU is visible) verl runs as it ships. On a machine
without one (auto, or cpu) the FSDP engine runs on verl's CPU platform
(reasoning360.engines.verl.cpu, loaded through VERL_USE_EXTERNAL_MODULES / VERL_PLATFORM) with
vLLM's CPU build serving verl's own vLLM rollout: that is how the tests train the tiny model with
verl's real trainers. Megatron cannot run on a CPU (megatron-core asserts CUDA in its forward
pass): `engine=verl_megatron` is composed, mapped and dry-run in the tests, and trains on GPUs only.

The stage runner calls `run_sft(ctx)`, `run_grpo(ctx)`, `run_eval(ctx)` (same contract as the
local engine: outputs in ctx.stage_dir, the final model in `stage_dir/model`, the models of
kept steps in `stage_dir/models/step_<N>` (sft.export_steps, rl.eval_steps), metrics through
ctx.make_tracker, a JSON summary returned; an eval stage's items.parquet and summary are the
local eval's, built by the same code). The pretrain stage trains through `run_sft` too.
`command_for(...)` gives the exact verl command line of a stage (for sbatch rendering and dry
runs). Importing this package imports neither verl nor torch; verl runs in a child process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import overrides as O
from .launch import allocation, ppo_command, sft_command
from .metrics import latest_checkpoint_step

__all__ = ["needs_ray", "driver_cpus", "run_sft", "run_grpo", "run_eval", "command_for", "stage_command", "dry_run_commands",
           "planned_inputs", "eval_runs"]


def needs_ray(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
    """GRPO and eval run verl's main_ppo, a Ray driver; SFT runs under torchrun."""
    return kind in ("rl", "eval")


def driver_cpus(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> int:
    """0: the stage's process and verl's driver only wait on verl's Ray actors (the trainer,
    the rollout servers), which need the head's CPUs too. On verl's CPU platform a verl device is
    one Ray CPU: a head that kept its CPU out of Ray would leave an N-node job N-1 workers' room
    for verl's N (trainer.nnodes) placement groups ("verl on CPU: 2 worker CPUs wanted, the Ray
    cluster has 1 free"), or, with CPUs to spare, let Ray pack them onto one node."""
    return 0


# ---------------------------------------------------------------------------- commands

def _deps_from_store(spec: dict[str, Any], stage_dir: Path) -> dict[str, Path]:
    """ctx.deps of a stage that has not run: its upstream stages beside it in the store."""
    root = Path(stage_dir).parent
    deps: dict[str, Path] = {}
    for field, role in (("data", "data"), ("traces", "traces"), ("init", "init"), ("checkpoint", "init")):
        if spec.get(field):             # which of these fields a spec has depends on its kind
            deps[role] = root / spec[field]
    return deps


def eval_runs(spec: dict[str, Any]) -> list[tuple[int | None, tuple[str, dict[str, Any]]]]:
    """An eval stage's verl runs, in order: (step of the spec's `steps`, (protocol, settings))."""
    return [(step, (name, proto)) for step in spec["steps"] for name, proto in spec["eval"]["protocols"].items()]


def stage_command(spec: dict[str, Any], runtime: dict[str, Any] | None, stage_dir: Path,
                  deps: dict[str, Path], nnodes: int, gpus_per_node: int, *, chat_template: str,
                  rows: int | None = None, device: str = "cuda", step: int | None = None,
                  protocol: tuple[str, dict[str, Any]] | None = None) -> tuple[list[str], dict[str, str]]:
    """(command, env) of one verl run (an eval stage: one per step and protocol). RL and eval
    join the job's Ray cluster through RAY_ADDRESS (set by the Ray bootstrap of a Slurm job);
    without it verl starts its own."""
    stage_dir = Path(stage_dir)
    vcfg = O.engine_settings(spec, runtime)
    log_file = str(stage_dir / O.LOG_DIR / "metrics.jsonl")
    ovr, _ = O.stage_overrides(spec, runtime, stage_dir=stage_dir, deps=deps, nnodes=nnodes,
                               gpus_per_node=gpus_per_node, chat_template=chat_template, rows=rows,
                               log_file=log_file, device=device, step=step, protocol=protocol)
    py = str(vcfg["python"])
    pythonpath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[3]),
                                             os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath}
    if device == "cpu":
        env.update(cpu_env(vcfg))
    if spec["kind"] == "sft":
        env["VERL_FILE_LOGGER_PATH"] = log_file
        # inside a multi-node job, the rendezvous port the Ray bootstrap reserved for it on the
        # head (R360_RDZV_PORT, from the job's port slot): two jobs sharing a node never collide
        port = os.environ.get("R360_RDZV_PORT") or vcfg["sft_port"]
        cmd = sft_command(ovr, nnodes=nnodes, gpus_per_node=gpus_per_node, python=py, port=int(port), env=env)
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


def planned_inputs(spec: dict[str, Any], stage_dir: Path, deps: dict[str, Path]) -> dict[str, Any]:
    """What a stage's command needs besides the config, for a stage that has not necessarily run:
    rows counted where the inputs exist, the chat template of the tokenizer it will start from
    (data.planned_chat_template), an eval stage's first step and protocol."""
    from .data import count_rows, planned_chat_template

    rows = None
    if spec["kind"] == "sft":
        rows = count_rows(Path(stage_dir) / O.SFT_FILE)
    elif spec["kind"] == "rl":
        rows = count_rows(deps["data"] / "train.parquet")
    step, protocol = eval_runs(spec)[0] if spec["kind"] == "eval" else (None, None)
    template = planned_chat_template(spec["model"], O.start_model(spec, deps, stage_dir, step))
    return {"rows": rows, "chat_template": template, "step": step, "protocol": protocol}


def planned_command(spec: dict[str, Any], runtime: dict[str, Any] | None, stage_dir: Path,
                    deps: dict[str, Path], nnodes: int, gpus_per_node: int) -> list[str]:
    """The (first) verl command of a stage, for plans and sbatch rendering (planned_inputs)."""
    cmd, _ = stage_command(spec, runtime, stage_dir, deps, nnodes, gpus_per_node,
                           **planned_inputs(spec, stage_dir, deps))
    return cmd


def command_for(spec: dict[str, Any], runtime: dict[str, Any] | None, stage_dir: str | os.PathLike,
                nnodes: int, gpus_per_node: int) -> list[str]:
    """The verl command line of an sft / rl / eval stage (eval: its first run), for an
    allocation of `nnodes` x `gpus_per_node` (used by sbatch rendering). Upstream stages are
    found beside `stage_dir` in the store. Environment variables it needs are set with a
    leading `env`."""
    stage_dir = Path(stage_dir)
    return planned_command(spec, runtime, stage_dir, _deps_from_store(spec, stage_dir), nnodes, gpus_per_node)


def dry_run_commands(plan, store_root: str | os.PathLike, nnodes: int | None = None,
                     gpus_per_node: int | None = None) -> dict[str, list[str]]:
    """stage id -> verl command for every verl stage of a plan (reasoning360.sweep.plan.Plan),
    without touching the disk."""
    out = {}
    for sid, st in plan.stages.items():
        spec = st.spec
        if spec["kind"] not in ("sft", "rl", "eval") or not str(spec["engine"]).startswith("verl"):
            continue
        vcfg = O.engine_settings(spec, st.runtime)
        n = nnodes or int(vcfg["nnodes"])
        g = gpus_per_node or int(vcfg["n_gpus_per_node"])
        stage_dir = Path(store_root) / sid
        out[sid] = planned_command(spec, st.runtime, stage_dir, _deps_from_store(spec, stage_dir), n, g)
    return out


# ---------------------------------------------------------------------------- stages

def _task_fns():
    from reasoning360.tasks import count_backtracks
    return count_backtracks


def _train(ctx, kind: str, total_steps: int, rows: int | None, *, keep: list[int], keep_keys: str,
           chat_template: str) -> dict[str, Any]:
    """Run verl's trainer for an sft/rl stage until total_steps (resuming), bridging metrics and
    keeping the models of the `keep` steps (models/step_<N>)."""
    from .data import export_model
    from .keep import Keeper
    from .launch import VerlFailed, log_tail, run_process, write_script
    from .metrics import Bridge
    from ..context import Preempted

    stage = Path(ctx.stage_dir)
    vcfg = O.engine_settings(ctx.spec, ctx.runtime)
    device = O.stage_device(ctx.runtime, probe=True)
    nnodes, gpus = placement(vcfg, device)
    cmd, env = stage_command(ctx.spec, ctx.runtime, stage, ctx.deps, nnodes, gpus, chat_template=chat_template,
                             rows=rows, device=device)
    write_script(stage / O.CMD_FILE, cmd, note=f"verl {kind} stage {stage.name}: {nnodes} node(s) x {gpus} GPU(s)")
    ckpt_dir = stage / O.CKPT_DIR
    keeper = Keeper(stage, ckpt_dir, keep, python=str(vcfg["python"]), backend=vcfg["strategy"], keys=keep_keys)
    keeper.poll()                             # a resumed run: what an earlier attempt left
    resume = latest_checkpoint_step(ckpt_dir)
    tracker = ctx.make_tracker(resume)
    t0 = time.time()
    code = 0
    if resume < total_steps:
        log_file = stage / O.LOG_DIR / "metrics.jsonl"
        log_file.unlink(missing_ok=True)     # verl truncates it anyway; the bridge starts at 0
        bridge = Bridge(tracker, log_file, kind,
                        rollout_dir=stage / O.ROLLOUT_DIR if kind == "rl" else None,
                        data_source=ctx.spec["task"], resume_step=resume,
                        keep_dumps=bool(vcfg["keep_rollout_dumps"]),
                        count_backtracks=_task_fns() if kind == "rl" else None)

        def poll() -> None:
            bridge.poll()
            keeper.poll()

        attempt = len(list((stage / O.LOG_DIR).glob(f"{kind}-*.log"))) + 1
        log_path = stage / O.LOG_DIR / f"{kind}-{attempt:03d}.log"
        code = run_process(cmd, log_path=log_path, poll=poll, poll_s=1.0, cwd=stage,
                           should_stop=lambda: bool(ctx.preempt.requested), echo=ctx.show_progress)
        bridge.close()
        keeper.poll()
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
    kept = keeper.finish()
    tracker.close(finished=True)
    return {"steps": total_steps, "resumed_from": resume, "model": str(model),
            "kept_models": [str(p) for p in kept], "nnodes": nnodes,
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
    eval, reasoning360.engines.local, on the stage's HF models): engine.verl.eval_engine, or on
    the CPU platform engine.verl.cpu.eval_engine (a val-only main_ppo costs minutes of start-up
    on a CPU for seconds of decoding)."""
    value = vcfg["cpu"]["eval_engine"] if device == "cpu" else vcfg["eval_engine"]
    if value not in ("verl", "local"):
        where = "engine.verl.cpu.eval_engine" if device == "cpu" else "engine.verl.eval_engine"
        raise O.MappingError(f"{where}: {value!r} (known: verl, local)")
    return value


def _initial_model(ctx) -> None:
    """A stage that starts from no upstream model and no model.path writes the from-scratch
    model into its own directory first (verl needs an HF directory)."""
    spec = ctx.spec
    if ctx.deps.get("init") is None and spec["model"]["path"] is None:
        from .init_model import write_initial_model

        write_initial_model(spec["model"], int(spec["seed"]), Path(ctx.stage_dir))


def _start(ctx, step: int | None = None, key: str = "model.path"):
    """(the HF directory the stage starts from, its tokenizer, the chat template verl renders
    prompts with: data.chat_template_for)."""
    from .data import chat_template_for, load_tokenizer

    start = O.start_model(ctx.spec, ctx.deps, Path(ctx.stage_dir), step)
    if not (start / "config.json").exists():
        raise FileNotFoundError(f"{key}: {start} has no model (an upstream step it was not asked to keep?)")
    tok = load_tokenizer(start)
    return start, tok, chat_template_for(tok)


def kept(spec: dict[str, Any]) -> list[int]:
    """The steps whose model an sft / rl stage keeps (sft.export_steps, rl.eval_steps below the last)."""
    if spec["kind"] == "rl":
        steps, total = spec["rl"]["eval_steps"], spec["rl"]["steps"]
    else:
        steps, total = spec["sft"]["export_steps"], spec["sft"]["max_steps"]
    return sorted({int(n) for n in steps if int(n) < int(total)})


def run_sft(ctx) -> dict[str, Any]:
    """verl's SFT trainer on the traces (or a distill split, or the pretrain corpus: the
    pretrain stage calls this with its own spec as an sft spec)."""
    from .data import write_sft_messages

    spec = ctx.spec
    sft = spec["sft"]
    _initial_model(ctx)
    _, tok, template = _start(ctx)
    counts = write_sft_messages(ctx.deps["traces"], Path(ctx.stage_dir) / O.SFT_FILE, tok, template, spec)
    summary = _train(ctx, "sft", int(sft["max_steps"]), counts["rows"], keep=kept(spec),
                     keep_keys="sft.export_steps", chat_template=template)
    return {**summary, "examples": counts["rows"], "too_long": counts["too_long"], "dropped": counts["dropped"],
            "truncation": sft["truncation"]}


def run_grpo(ctx) -> dict[str, Any]:
    from .data import count_rows

    spec = ctx.spec
    _initial_model(ctx)
    _, _, template = _start(ctx, key="rl.init_step" if spec["init_step"] is not None else "model.path")
    rows = count_rows(Path(ctx.deps["data"]) / "train.parquet")
    summary = _train(ctx, "rl", int(spec["rl"]["steps"]), rows, keep=kept(spec), keep_keys="rl.eval_steps",
                     chat_template=template)
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
    """Every model of the spec's `steps` answers the held-out split under every protocol of
    eval.protocols: on the CPU platform (engine.verl.cpu.eval_engine: local) the local eval
    itself; else one val-only main_ppo run per (step, protocol) (vLLM; verl's val_kwargs:
    temperature, top_p, n), its generations scored by reasoning360.tasks into the local eval's
    items.parquet and summary (engines.eval_items)."""
    from ..eval_items import stage_summary, step_label, summarize, summary_metrics, write_items
    from ..local.data import read_rows, split_path
    from .data import eval_items, read_generations
    from .launch import VerlFailed, log_tail, run_process, write_script
    from ..context import Preempted

    spec = ctx.spec
    cfg = spec["eval"]
    stage = Path(ctx.stage_dir)
    vcfg = O.engine_settings(spec, ctx.runtime)
    device = O.stage_device(ctx.runtime, probe=True)
    if eval_engine(vcfg, device) == "local":      # the project's eval on the stage's HF models
        from ..local import run_eval as local_eval

        return local_eval(ctx)
    nnodes, gpus = placement(vcfg, device)
    _initial_model(ctx)
    rows = read_rows(split_path(ctx.deps["data"], cfg["split"]))
    t0 = time.time()
    runs = []
    for step, protocol in eval_runs(spec):
        _, tok, template = _start(ctx, step, key="steps (the upstream stage's sft.export_steps / rl.eval_steps)")
        cmd, _ = stage_command(spec, ctx.runtime, stage, ctx.deps, nnodes, gpus, chat_template=template,
                               device=device, step=step, protocol=protocol)
        runs.append((step, protocol, tok, cmd))
    write_script(stage / O.CMD_FILE, [r[3] for r in runs],
                 note=f"verl eval stage {stage.name}: {len(runs)} run(s), {nnodes} node(s) x {gpus} GPU(s)")
    items: list[dict] = []
    by_step: dict[str, dict[str, Any]] = {}
    for step, (name, proto), tok, cmd in runs:
        at = step_label(spec, step)
        gen = O.gen_dir(stage, at, name)
        if not any(gen.glob("*.jsonl")):
            log_path = stage / O.LOG_DIR / f"eval-step{at}-{name}-{int(time.time())}.log"
            code = run_process(cmd, log_path=log_path, cwd=stage, should_stop=lambda: bool(ctx.preempt.requested),
                               echo=ctx.show_progress)
            if code is None:
                raise Preempted(f"verl eval stopped on request (step {at}, protocol {name})")
            if code != 0:
                raise VerlFailed(f"verl eval exited with {code}; see {log_path}\n{log_tail(log_path)}")
        got = eval_items(rows, read_generations(gen), tok, int(proto["n"]))
        items += [{**it, "step": at, "protocol": name} for it in got]
        by_step.setdefault(str(at), {})[name] = summarize(got, int(proto["n"]))
    write_items(stage / "items.parquet", items)
    out = stage_summary(spec, by_step, time.time() - t0)
    tracker = ctx.make_tracker(0)
    tracker.log(0, **summary_metrics(spec, out))
    tracker.close(finished=True)
    return out
