"""The config contract (issue #11): every knob is in configs/, every override reaches the stage it
names or is refused, every bad value is one line naming the key before anything is written.

The CLI cases run `python sweep.py`'s own main() in this process (fast, and exactly what a user
types); each checks exit code 2, one line that names the key, and an untouched R360_ROOT.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compose import compose_cfg, fake_checkpoint, resolved
from reasoning360.sweep import main as sweep_main
from reasoning360.sweep.compose import compose
from reasoning360.sweep.contract import effect, leaves, observe, refuse_inert
from reasoning360.sweep.schema import ConfigError, scope_of

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sweep_entry", ROOT / "sweep.py")
sweep_entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_entry)


def run_cli(capsys, root: Path, *argv: str) -> tuple[int, str]:
    os.environ["R360_ROOT"] = str(root)
    try:
        rc = sweep_entry.main(list(argv))
    finally:
        os.environ.pop("R360_ROOT", None)
    out = capsys.readouterr()
    return rc, (out.out + out.err).strip()


BAD = [
    # (override(s), the key the one-line error must name)
    (["task=sudoku"], "grid.tasks"),
    (["task.params.cpu.max_value=50"], "tasks.<name>"),
    (["rl.batch_size=0"], "rl.batch_size"),
    (["sft.batch_size=-1"], "sft.batch_size"),
    (["rl.steps=-3"], "rl.steps"),
    (["rl.rollout.n=0"], "rl.rollout.n"),
    (["rl.rollout.temperature=-1"], "rl.rollout.temperature"),
    (["rl.rollout.top_p=2"], "rl.rollout.top_p"),
    (["rl.lr=abc"], "rl.lr"),
    (["sft.lr=-0.1"], "sft.lr"),
    (["rl.mini_batch_size=64"], "rl.mini_batch_size"),       # larger than the smoke grid's batch of 8
    (["rl.batch_size=12", "rl.mini_batch_size=8"], "rl.mini_batch_size"),
    (["data.trace_style=fancy"], "data.trace_style"),
    (["data.template=nope"], "data.template"),
    (["data.template=qwen-instruct"], "data.trace_style"),    # compact traces need the compact template
    (["model.hidden_size=0"], "model.hidden_size"),
    (["model.num_heads=3"], "model.num_heads"),
    (["grid.seeds=[]"], "grid.seeds"),
    (["grid.backtracks=[]"], "grid"),                         # zero points
    (["grid.tasks=countdown"], "grid.tasks"),                 # a grid node of the wrong type
    (["grid.tasks=[nosuchtask]"], "grid.tasks"),
    (["rl.algorithm=ppo"], "rl.algorithm"),
    (["+sft.foo=1"], "sft.foo"),
    (["sft.foo=1"], "sft.foo"),
    (["sweep.dir=/tmp/x"], "sweep.dir"),                      # never read: not a key any more
    (["launcher.workers=0"], "launcher.workers"),
    (["engine.threads=-1"], "engine.threads"),
    (["+grid=nope"], "grid=nope"),
    (["model=nope"], "model=nope"),
    (["rl.lr=[1"], "rl.lr"),
    (["paths.root=/proc/r360"], "paths.root"),
    (["sweep.name=../../etc"], "sweep.name"),
    (["sweep.name=/etc/r360"], "sweep.name"),
    (["sweep.name=''"], "sweep.name"),
    (["sweep.name='a b'"], "sweep.name"),
    (["sweep.name='a\nb'"], "sweep.name"),
    (["distill.temperature=0.5"], "distill.temperature"),     # no distilled baseline: would change nothing
    (["rollout.vllm.dtype=float32"], "rollout.vllm.dtype"),   # builtin backend
    (["tasks.sudoku.params.cpu.min_empty=8"], "tasks.sudoku.params.cpu.min_empty"),   # not in grid.tasks
    (["tasks.countdown.params.paper.max_value=50"], "tasks.countdown.params.paper.max_value"),  # scale=cpu
    (["sweep.array_parallelism=3"], "sweep.array_parallelism"),   # the local launcher has no arrays
    (["cluster.partition=gpu"], "cluster.partition"),
    (["-m"], "-m/--multirun"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_naming_the_key_and_writes_nothing(capsys, tmp_path, overrides, key):
    root = tmp_path / "root"
    rc, out = run_cli(capsys, root, "+grid=smoke", *overrides)
    assert rc == 2, out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert key in lines[0], out
    assert not root.exists(), "something was written before the error"


def test_a_bad_rerun_keeps_what_is_on_disk(capsys, tmp_path):
    root = tmp_path / "root"
    assert run_cli(capsys, root, "+grid=smoke", "sweep.dry_run=false", "launcher.workers=1",
                   "sweep.name=kept", "grid.backtracks=[0]", "rl.steps=1", "sft.max_steps=2",
                   "data.sft_size=40", "data.train_size=16", "data.val_size=4", "data.test_size=4")[0] == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".csv")}
    rc, out = run_cli(capsys, root, "+grid=smoke", "sweep.name=kept", "rl.lr=abc")
    assert rc == 2 and "rl.lr" in out
    assert {p: p.read_bytes() for p in before} == before


def test_read_only_root_is_refused(capsys, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only filesystem needs `mount` as root")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        rc, out = run_cli(capsys, ro / "runs", "+grid=smoke")
        assert rc == 2 and "paths.root" in out and "read-only" in out, out
    finally:
        subprocess.run(["umount", str(ro)])


def test_model_dir_without_a_checkpoint_is_refused(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out = run_cli(capsys, tmp_path / "root", "+grid=smoke", f"model.path={empty}", "model.tokenizer=path")
    assert rc == 2 and "model.path" in out and "config.json" in out, out
    no_tok = tmp_path / "notok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text("{}")
    rc, out = run_cli(capsys, tmp_path / "root", "+grid=smoke", f"model.path={no_tok}", "model.tokenizer=path")
    assert rc == 2 and "tokenizer" in out, out


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "grid" / "broken.yaml").write_text("# @package _global_\ngrid:\n  name: x\n  tasks: [countdown\n")
    with pytest.raises(ConfigError) as e:
        compose(["+grid=broken"], configs)
    assert "broken.yaml:" in str(e.value) and "YAML syntax error" in str(e.value) and "\n" not in str(e.value)


def test_task_overrides_reach_the_data_spec(tmp_path):
    """The bug of the issue: `task.*` overrides were read back from disk and lost."""
    c, plan, *_ = sweep_main.build(compose_cfg(f"paths.root={tmp_path}", "+grid=smoke",
                                               "tasks.countdown.params.cpu.max_value=50"))
    data = plan.stages[plan.points[0].stages["data"]]
    assert data.spec["params"]["max_value"] == 50
    # a multi-task grid takes each task's own override
    c, plan, *_ = sweep_main.build(compose_cfg(f"paths.root={tmp_path}", "+grid=smoke_all",
                                               "tasks.sudoku.params.cpu.max_empty=11"))
    by_task = {pp.point.task: plan.stages[pp.stages["data"]].spec["params"] for pp in plan.points}
    assert by_task["sudoku"]["max_empty"] == 11 and "max_empty" not in by_task["countdown"]
    # ... and so does an axis over a task key
    c, plan, *_ = sweep_main.build(compose_cfg(f"paths.root={tmp_path}", "+grid=smoke",
                                               "grid.axes={tasks.countdown.params.cpu.max_value:[30,40]}"))
    got = sorted({plan.stages[pp.stages["data"]].spec["params"]["max_value"] for pp in plan.points})
    assert got == [30, 40]


# ----------------------------------------------------------------------------- the leaf walk

WALKS = [
    ["+grid=backtrack"],
    ["+grid=backtrack", "scale=paper", "launcher=slurm", "MODEL"],
    ["+grid=backtrack_all"],
    ["+grid=backtrack_all", "scale=paper", "launcher=slurm", "MODEL"],
    ["+grid=baselines"],
    ["+grid=backtrack", "rollout.backend=vllm"],
]
# Keys no stage reads, on purpose: the grid's name is only the default of sweep.name.
DECLARED_INERT = {"grid.name": "the default of sweep.name (configs/config.yaml)"}


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    model = fake_checkpoint(tmp_path_factory.mktemp("m") / "Qwen2.5-3B-Instruct")
    out = []
    for ov in WALKS:
        ov = [f"model.path={model}" if o == "MODEL" else o for o in ov]
        c = resolved(*ov)
        sweep_main.validate(c)              # each walked config is a valid sweep
        base = observe(c)
        out.append((ov, c, {k: effect(c, k, base) for k, _ in leaves(c)}))
    return out


def test_every_leaf_lands_where_its_scope_says(walked):
    """spec-scope keys change a stage spec (hash), runtime-scope keys a stage runtime, grid keys
    the points; a key that lands elsewhere is a contract bug (e.g. a hashed knob in the runtime)."""
    wrong = []
    for ov, c, effects in walked:
        for key, e in effects.items():
            scope = scope_of(key)
            if e is None or scope == "launcher":
                continue
            ok = {"spec": {"spec", "points"}, "runtime": {"runtime"}, "grid": {"points", "spec"}}[scope]
            if e not in ok:
                wrong.append((" ".join(ov), key, scope, e))
    assert not wrong, wrong


def test_every_leaf_reaches_a_stage_or_a_declared_knob(walked):
    """Over the walked configs (the backtrack grid at both scales, every task, the baselines, the
    vLLM backend), every leaf of the composed config changes a stage spec, a stage runtime or the
    points, or is a launcher knob some launcher reads, or is declared inert with a reason."""
    from reasoning360.launchers import LAUNCHERS, get_launcher

    reads = [r for name in LAUNCHERS for r in get_launcher(name).reads]
    landed: set[str] = set()
    keys: set[str] = set()
    for _, c, effects in walked:
        keys |= set(effects)
        landed |= {k for k, e in effects.items() if e is not None}
    launcher_keys = {k for k in keys if scope_of(k) == "launcher"}
    unread = sorted(k for k in launcher_keys if not any(k == r or k.startswith(r + ".") for r in reads))
    assert not unread, f"launcher-scope keys no launcher reads: {unread}"
    nowhere = sorted(keys - landed - launcher_keys - set(DECLARED_INERT))
    assert not nowhere, f"keys that reach no stage spec, runtime or launcher: {nowhere}"


def test_an_override_of_an_inert_key_is_refused(walked):
    """For the backtrack grid at scale=cpu, an override of any key that lands nowhere in it is
    refused in one line (it would change nothing); one that lands is accepted."""
    from reasoning360.launchers import get_launcher

    ov, c, effects = walked[0]
    reads = get_launcher(c["launcher"]["name"]).reads
    inert = [k for k, e in effects.items() if e is None and scope_of(k) not in ("launcher", "grid")]
    assert inert and "distill.temperature" in inert
    for key in inert:
        with pytest.raises(ConfigError) as e:
            refuse_inert(c, [f"{key}=1"], reads)
        assert str(e.value).startswith(key + ":") and "\n" not in str(e.value)
    refuse_inert(c, ["rl.lr=1e-3", "tasks.countdown.params.cpu.max_value=50", "engine.threads=2"], reads)
