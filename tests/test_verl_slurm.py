"""engine=verl_fsdp through the real local Slurm cluster (tests/slurm_cluster.py).

verl cannot train without GPUs, so the verl command is swapped (R360_VERL_PYTHON, exported to the
jobs by cluster.env) for a CPU smoke that does what can be done here: it composes verl's own
trainer config from the exact command line the engine built (Hydra compose on
verl/trainer/config, validate_config for main_ppo), joins the job's Ray cluster at RAY_ADDRESS
like verl's driver does, and then writes what verl writes (metrics, checkpoints with a HF
export, rollout/validation dumps). Everything around it is real: sbatch arrays, the Ray
bootstrap in each job, the stage runner, the metrics bridge, model export, DONE, status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from slurm_cluster import cancel_sweep, r360, sweep_cmd, wait_for
from test_verl_engine import FAKE_VERL
from test_verl_support import HAVE_VERL, tiny_model

pytestmark = pytest.mark.slurm

SMOKE = textwrap.dedent(r'''
    import json, os, sys
    argv = sys.argv[1:]
    module = [argv[i + 1] for i, a in enumerate(argv) if a == "-m"][-1]
    ovr = argv[argv.index(module) + 1:]
    info = {"module": module, "ray_address": os.environ.get("RAY_ADDRESS"),
            "job": os.environ.get("SLURM_JOB_ID"), "verl_config": None, "ray_nodes": None}
    try:
        import verl
    except ImportError:
        verl = None
    if verl is not None:          # verl's own config loading, on our command line
        from hydra import compose, initialize_config_dir
        d = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
        name = "sft_trainer_engine" if module.endswith("sft_trainer") else "ppo_trainer"
        with initialize_config_dir(config_dir=d, version_base=None):
            cfg = compose(config_name=name, overrides=ovr)
        if name == "ppo_trainer":
            from verl.trainer.ppo.utils import need_critic, need_reference_policy
            from verl.utils.config import validate_config
            validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        info["verl_config"] = name
    if module.endswith("main_ppo") and info["ray_address"]:
        import ray                # what verl's driver does: join the job's cluster
        ray.init(address=info["ray_address"], logging_level="ERROR", log_to_driver=False)
        info["ray_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
        ray.shutdown()
    with open(os.environ["FAKE_VERL_CALLS"] + ".smoke", "a") as fh:
        fh.write(json.dumps(info) + "\n")
''')


def test_verl_sweep_runs_as_slurm_jobs(slurm_cluster, tmp_path):
    from reasoning360.sweep import sweepdir
    from reasoning360.launchers import status
    from reasoning360.tracking import read_metrics

    model = tiny_model(tmp_path / "model")
    script = tmp_path / "fake_verl.py"
    script.write_text(SMOKE + "\n" + FAKE_VERL)
    py = tmp_path / "fakepython"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    py.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    root = tmp_path / "root"
    args = ["+grid=smoke", "grid.backtracks=[1]", "engine=verl_fsdp", "engine.device=cuda", "launcher=slurm", "cluster=local",
            f"model.path={model}", "model.tokenizer=path", "pretrain.train.max_steps=0", "data.sft_size=24",
            "data.train_size=16",
            "data.val_size=4", "data.test_size=8", "sft.max_steps=4", "sft.save_every=2", "rl.steps=3",
            "rl.save_every=2", f"+cluster.env.R360_VERL_PYTHON={py}", f"+cluster.env.FAKE_VERL_CALLS={calls}"]
    p = sweep_cmd(root, *args)
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = root / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)

        def all_done():
            s = status.snapshot(sweep)
            if any(r.state == "failed" for r in s.rows):
                raise AssertionError(status.plain(s) + r360("logs", str(sweep), s.rows[0].point,
                                                            "--stage", next(r.role for r in s.rows
                                                                            if r.state == "failed")).stdout[-3000:])
            return s if s.counts == {"done": len(plan.stages)} else None

        wait_for(all_done, 420, 2, "the verl sweep's jobs")
        smoke = [json.loads(x) for x in (tmp_path / "calls.jsonl.smoke").read_text().splitlines()]
        assert {s["module"] for s in smoke} == {"verl.trainer.sft_trainer", "verl.trainer.main_ppo"}
        assert all(s["job"] for s in smoke)                      # inside Slurm jobs
        ppo = [s for s in smoke if s["module"] == "verl.trainer.main_ppo"]
        # GRPO, and a val-only run per (model, protocol) of each eval: sample and greedy
        assert len(ppo) == 1 + 2 * 2 and all(s["ray_address"] and s["ray_nodes"] == 1 for s in ppo)
        if HAVE_VERL:
            assert all(s["verl_config"] for s in smoke)
        for sid, st in plan.stages.items():
            sd = store.stage(sid).path
            if st.kind in ("sft", "rl"):
                assert (sd / "model" / "config.json").exists() and (sd / "verl_cmd.sh").exists()
                steps = [r["step"] for r in read_metrics(sd)]
                assert steps == (list(range(1, 5)) if st.kind == "sft" else [0, 1, 2, 3])   # rl: val at 0
                subprocess.run(["bash", "-n", str(sd / "verl_cmd.sh")], check=True)
            if st.kind == "eval":
                assert (sd / "items.parquet").exists() and store.stage(sid).summary()["n"] == 8
        rl = next(sid for sid, st in plan.stages.items() if st.kind == "rl")
        assert read_metrics(store.stage(rl).path)[-1]["accuracy"] == 0.5
        st = r360("status", str(sweep), "--plain")
        assert st.returncode == 0, st.stdout
        for sid, stg in plan.stages.items():
            att = store.stage(sid).attempts()
            print(f"{stg.kind:7s} {sid[:28]:28s} {[a['seconds'] for a in att]}")
    finally:
        cancel_sweep(sweep)


def test_render_for_paper_scale_verl(slurm_cluster, tmp_path):
    """`r360 render` for the paper study with engine=verl_fsdp: every sbatch passes bash -n and its
    job runs the Ray bootstrap (the array file says ray) and the stage whose verl command
    `command_for` gives."""
    from reasoning360.engines.verl import command_for
    from reasoning360.sweep import sweepdir

    model = tiny_model(tmp_path / "model")
    root = tmp_path / "root"
    args = ["+grid=backtrack", "scale=paper", "engine=verl_fsdp", "launcher=slurm", "cluster=local",
            f"model.path={model}", "launcher.ray=auto"]
    from compose import compose_cfg
    from reasoning360.sweep.main import build, record

    cfg = compose_cfg(*args, f"paths.root={root}")
    c, plan, store, sweep_dir = build(cfg)
    record(c, plan, store, sweep_dir)           # the sweep directory, nothing submitted
    sweepdir_path = sweep_dir
    rd = r360("render", str(sweepdir_path))
    assert rd.returncode == 0, rd.stdout + rd.stderr
    out = sweepdir_path / "slurm" / "render"
    for f in sorted(out.glob("*.sbatch")) + [out / "submit.sh"]:
        subprocess.run(["bash", "-n", str(f)], check=True)
    docs = {f.stem: json.loads(f.read_text()) for f in (out / "arrays").glob("*.json")}
    for name, doc in docs.items():
        if doc.get("kind") in ("sft", "rl", "eval"):
            # verl's GRPO and eval (main_ppo, a Ray driver) get the job's Ray cluster; SFT runs under torchrun
            assert doc["ray"] is (doc["kind"] in ("rl", "eval")), name
            for sid in doc["tasks"].values():
                rec = store.stage(sid).record()
                spec, runtime = rec["spec"], rec["runtime"]
                cmd = command_for(spec, runtime, store.stage(sid).path, 1, 4)
                assert any(m in cmd for m in ("verl.trainer.sft_trainer", "verl.trainer.main_ppo"))
    plan2, _, _ = sweepdir.load(sweepdir_path)
    # data + 4 trace sets, shared; per seed 4 SFT, 5 RL (k 0-3, cold start), 10 evals (before/after RL)
    assert len(plan2.stages) == len(plan.stages) == 5 + 19 * len(c["grid"]["seeds"])
