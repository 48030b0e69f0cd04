"""docs/architecture.md says which files to touch to add a task, an engine, a launcher, a stage
kind and a rollout backend. Each test here adds a toy one exactly that way and runs it through
the normal path, so the doc's lists are checked, not claimed.

How: the tree (reasoning360/, configs/, sweep.py) is copied into tmp_path; the toy's files are
written there and its registry line inserted into the copy's registry, as a newcomer would edit
a checkout (registering at run time would not reach the stage processes the local pool and
Slurm start); the doc's list for that extension is read from docs/architecture.md, and the
files that differ between the copy and this checkout must be exactly those, the ones marked
"(one line)" differing by one added line. Then `python sweep.py ...` runs in the copy, in its
own process, with the real local engine on a tiny model.

Each toy records that it was called: the task's and kind's outputs are in their stages, the
engine notes itself in each summary, the launcher and the rollout backend append to a log.
~1.5-2 min on 2 cores (85 s on a quiet machine, 120 s under load).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from fixtures_smoke import REPO

DOC = REPO / "docs" / "architecture.md"
TREE = ("reasoning360", "analysis", "configs", "sweep.py")

# Tiny everywhere: a point end to end in seconds (the numbers are only to exercise the path).
TINY_DATA = ["data.sft_size=16", "data.train_size=8", "data.val_size=4", "data.test_size=8"]
TINY_PRETRAIN = ["pretrain.train.max_steps=1", "pretrain.train.batch_size=4", "pretrain.train.save_every=0"]
TINY_SFT = ["sft.max_steps=2", "sft.batch_size=4", "sft.save_every=0"]
TINY_RL = ["rl.steps=1", "rl.batch_size=2", "rl.mini_batch_size=2", "rl.micro_batch_size=4", "rl.val_every=0",
           "rl.save_every=0", "rl.rollout.n=2", "rl.rollout.max_new_tokens=8", "eval.max_new_tokens=8"]
K_POINT = ["+grid=smoke", "grid.backtracks=[0]", *TINY_DATA, *TINY_PRETRAIN, *TINY_SFT, *TINY_RL]
COLD_START = ["+grid=smoke", "grid.backtracks=[]", "grid.baselines=[cold_start]", *TINY_DATA, *TINY_PRETRAIN, *TINY_RL]


# --------------------------------------------------------------------------- the copy and the doc

def copy_tree(dst: Path) -> Path:
    for name in TREE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns(".*"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def doc_files(section: str, name: str) -> dict[str, bool]:
    """The files the doc lists under `### <section>` (numbered items starting with a path in
    backticks), `<name>` replaced: path -> whether the item says "(one line)"."""
    text = DOC.read_text()
    m = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^##)", text, re.M | re.S)
    assert m, f"docs/architecture.md has no section '### {section}'"
    items = re.findall(r"^\d+\. `([^`]+)`( \(one line\))?", m.group(1), re.M)
    assert items, f"no numbered file list under '### {section}'"
    return {path.replace("<name>", name): bool(one) for path, one in items}


def touched(copy: Path) -> dict[str, int | None]:
    """Files that differ between the copy and this checkout: path -> lines added (None when the
    file is new). __pycache__ and other run products are ignored."""
    out: dict[str, int | None] = {}
    for name in TREE:
        for f in [copy / name] if (copy / name).is_file() else (copy / name).rglob("*"):
            rel = f.relative_to(copy)
            if not f.is_file() or "__pycache__" in rel.parts:
                continue
            orig = REPO / rel
            if not orig.exists():
                out[str(rel)] = None
            elif orig.read_bytes() != f.read_bytes():
                diff = list(difflib.unified_diff(orig.read_text().splitlines(), f.read_text().splitlines(), n=0))
                added = [d for d in diff[2:] if d.startswith("+")]
                removed = [d for d in diff[2:] if d.startswith("-")]
                out[str(rel)] = len(added) if not removed else -len(removed)
    return out


def check_touched_as_documented(copy: Path, section: str, name: str) -> dict[str, bool]:
    listed = doc_files(section, name)
    got = touched(copy)
    assert set(got) == set(listed), f"touched {sorted(got)}, the doc lists {sorted(listed)}"
    for path, one_line in listed.items():
        if one_line:
            assert got[path] == 1, f"{path}: the doc says one line, the diff has {got[path]}"
    return listed


def write(copy: Path, rel: str, text: str) -> None:
    (copy / rel).parent.mkdir(parents=True, exist_ok=True)
    (copy / rel).write_text(textwrap.dedent(text).lstrip())


def add_registry_line(copy: Path, rel: str, registry: str, line: str) -> None:
    """Insert `line` as the last entry of the dict literal `registry = {` in file `rel`."""
    lines = (copy / rel).read_text().splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{registry}\b.*= \{{$", ln.rstrip()))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip() == "}")
    lines.insert(end, f"    {line}\n")
    (copy / rel).write_text("".join(lines))


def add_line_after(copy: Path, rel: str, after: str, line: str) -> None:
    text = (copy / rel).read_text()
    assert after + "\n" in text
    (copy / rel).write_text(text.replace(after + "\n", after + "\n" + line + "\n", 1))


def run(copy: Path, root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "R360_ROOT": str(root), "PYTHONPATH": str(copy), "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=timeout)


def sweep(copy: Path, root: Path, *overrides: str) -> Path:
    p = run(copy, root, "sweep.py", *overrides)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("sweep.name=")), "smoke")
    return root / "sweeps" / name


def status_rows(copy: Path, root: Path, sweep_dir: Path) -> list[dict]:
    p = run(copy, root, "-m", "reasoning360.cli", "status", str(sweep_dir), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)["rows"]


def summaries(root: Path, sweep_dir: Path) -> dict[str, dict]:
    """role -> summary.json of the sweep's (single) point, each stage DONE."""
    plan = json.loads((sweep_dir / "plan.json").read_text())
    (point,) = plan["points"]
    out = {}
    for role, sid in point["stages"].items():
        d = root / "store" / sid
        assert (d / "DONE").exists(), f"{role} {sid} not done"
        out[role] = json.loads((d / "summary.json").read_text())
    return out


def log_lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- a task

TASK = '''
"""toy_add: add two small numbers (a toy task for tests/test_extension_points.py).

A dead end states a wrong sum and ends its line with `^` (compact) or says
"Wait, that sum is wrong." (paper); the solution follows."""

from __future__ import annotations

import random
from typing import Any

from .answer import count_markers, extract_answer
from .base import Problem, Task, TaskError
from .prompts import authors_prompt, compact

PAPER_MARKER = "Wait, that sum is wrong."


class ToyAddTask(Task):
    name = "toy_add"
    PAPER_MARKERS = (PAPER_MARKER,)

    def validate_params(self, params: dict[str, Any]) -> None:
        if set(params) != {"max_value"} or not isinstance(params["max_value"], int) or params["max_value"] < 3:
            raise TaskError(f"toy_add: params are {{max_value: int >= 3}}, got {params!r}")

    def generate(self, size: int, seed: int, params: dict[str, Any]) -> list[Problem]:
        rng, top = random.Random(seed), params["max_value"]
        out = []
        for _ in range(size):
            a, b = rng.randint(0, top), rng.randint(0, top)
            out.append(Problem(f"{a}+{b}", str(a + b), {"a": a, "b": b}))
        return out

    def key(self, problem: Problem) -> str:
        return problem.question

    def prompt(self, problem: Problem, template: str):
        if template == "compact":
            return compact(problem.question + "\\n")
        return authors_prompt(template, f"What is {problem.question}?", sep=" ",
                              think="Think in <think> </think>, answer in <answer> </answer>.",
                              plain="Answer in <answer> </answer>.")

    def max_backtracks(self, problem: Problem) -> int:
        return 5

    def max_k(self, params: dict[str, Any]) -> int:
        return 5

    def trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        if k > self.max_backtracks(problem):
            raise TaskError(f"toy_add: k={k} exceeds 5 dead ends")
        a, b = problem.ground_truth["a"], problem.ground_truth["b"]
        wrong = rng.sample([a + b + d for d in (1, 2, 3, 4, 5)], k)
        if style == "compact":
            think = "".join(f"{a}+{b}={w}^\\n" for w in wrong) + f"{a}+{b}={a + b}"
            return f"<think>{think}</think>\\n<answer>{a + b}</answer>"
        think = "".join(f"{a} plus {b} is {w}. {PAPER_MARKER}\\n" for w in wrong) + f"{a} plus {b} is {a + b}."
        return f"<think>{think}</think>\\n\\n<answer>{a + b}</answer>"

    def attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        a, b = problem.ground_truth["a"], problem.ground_truth["b"]
        guess = a + b + rng.choice((0, 1, 2))
        if style == "compact":
            return f"<think>{a}+{b}={guess}</think>\\n<answer>{guess}</answer>"
        return f"<think>{a} plus {b} is {guess}.</think>\\n\\n<answer>{guess}</answer>"

    def score(self, completion: str, ground_truth: dict[str, Any], prefill: str = "") -> float:
        answer = extract_answer(completion, prefill)
        if answer is None:
            return 0.0
        return 1.0 if answer == str(ground_truth["a"] + ground_truth["b"]) else 0.1

    def count_backtracks(self, completion: str) -> int:
        return count_markers(completion, "^\\n") + count_markers(completion, PAPER_MARKER)
'''

TASK_YAML = '''
# toy_add: add two numbers (tests/test_extension_points.py).
name: toy_add
backtrack_sft: true
k_values: [0, 1, 2]
params:
  cpu: {max_value: 20}
  paper: {max_value: 999}
'''


def test_a_task(tmp_path):
    copy = copy_tree(tmp_path / "tree")
    write(copy, "reasoning360/tasks/toy_add.py", TASK)
    add_registry_line(copy, "reasoning360/tasks/registry.py", "_SPECS",
                      '"toy_add": "reasoning360.tasks.toy_add:ToyAddTask",')
    write(copy, "configs/task/toy_add.yaml", TASK_YAML)
    add_line_after(copy, "configs/config.yaml", "  - task@tasks.gsm_symbolic: gsm_symbolic",
                   "  - task@tasks.toy_add: toy_add")
    check_touched_as_documented(copy, "Add a task", "toy_add")

    root = tmp_path / "root"
    sweep_dir = sweep(copy, root, *K_POINT, "grid.tasks=[toy_add]", "grid.backtracks=[1]", "sweep.name=toy_task")
    s = summaries(root, sweep_dir)
    assert set(s) == {"data", "base", "traces", "sft", "sft_eval", "rl", "rl_eval"}
    assert s["data"]["task"] == s["traces"]["task"] == "toy_add" and s["traces"]["k"] == 1
    plan = json.loads((sweep_dir / "plan.json").read_text())
    stage = lambda role: root / "store" / plan["points"][0]["stages"][role]
    traces = pd.read_parquet(stage("traces") / "sft.parquet")
    assert len(traces) == 16 and traces["response"].str.count(r"\^\n").eq(1).all()      # k=1: one dead end each
    items = pd.read_parquet(stage("rl_eval") / "items.parquet")
    assert items.groupby("protocol").size().to_dict() == {"greedy": 8, "sample": 8}     # 8 items x 2 protocols
    assert set(items["score"]) <= {0.0, 0.1, 1.0}                                # scored by toy_add's verifier
    assert (sweep_dir / "results.csv").exists()
    assert pd.read_csv(sweep_dir / "results.csv")["state"].tolist() == ["done"]


# --------------------------------------------------------------------------- an engine

ENGINE = '''
"""toy: the local engine, noting in each summary that it ran the stage (tests/test_extension_points.py)."""

from __future__ import annotations

from typing import Any

from . import local


def needs_ray(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
    return local.needs_ray(kind, spec, runtime)


def run_sft(ctx) -> dict[str, Any]:
    return {**local.run_sft(ctx), "toy_engine": "sft"}


def run_grpo(ctx) -> dict[str, Any]:
    return {**local.run_grpo(ctx), "toy_engine": "rl"}


def run_eval(ctx) -> dict[str, Any]:
    return {**local.run_eval(ctx), "toy_engine": "eval"}
'''

ENGINE_YAML = '''
# The toy engine (tests/test_extension_points.py): the local engine under another name.
name: toy
device: auto
threads: 0
'''


def test_an_engine(tmp_path):
    copy = copy_tree(tmp_path / "tree")
    write(copy, "reasoning360/engines/toy.py", ENGINE)
    add_registry_line(copy, "reasoning360/engines/__init__.py", "ENGINES", '"toy": "reasoning360.engines.toy",')
    write(copy, "configs/engine/toy.yaml", ENGINE_YAML)
    check_touched_as_documented(copy, "Add an engine", "toy")

    root = tmp_path / "root"
    bad = run(copy, root, "sweep.py", *K_POINT, "engine.name=toyy")      # the schema knows it from the registry
    assert bad.returncode == 2 and "engine.name: unknown engine (known: local, verl_fsdp, verl_megatron, toy)" in bad.stdout
    sweep_dir = sweep(copy, root, *K_POINT, "engine=toy", "sweep.name=toy_engine")
    s = summaries(root, sweep_dir)
    assert {r: s[r].get("toy_engine") for r in s} == {"data": None, "base": "sft", "traces": None, "sft": "sft",
                                                       "sft_eval": "eval", "rl": "rl", "rl_eval": "eval"}
    plan = json.loads((sweep_dir / "plan.json").read_text())
    spec = json.loads((root / "store" / plan["points"][0]["stages"]["rl"] / "spec.json").read_text())["spec"]
    assert spec["engine"] == "toy"


# --------------------------------------------------------------------------- a launcher

LAUNCHER = '''
"""launcher=inline: every stage in this process, one after another (tests/test_extension_points.py).
Each call is appended to LOG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning360.sweep import results
from reasoning360.sweep.plan import Plan
from reasoning360.sweep.runner import run_stage
from reasoning360.sweep.store import Store

from .base import LaunchError, Launcher

LOG = "@LOG@"


def note(**row: Any) -> None:
    with open(LOG, "a") as fh:
        fh.write(json.dumps(row) + "\\n")


class InlineLauncher(Launcher):
    name = "inline"
    reads = ("launcher.name", "paths", "sweep.name", "sweep.dry_run", "sweep.overwrite")

    def validate(self, c: dict[str, Any], plan: Plan) -> None:
        note(call="validate", stages=len(plan.stages))
        if c["engine"]["device"] == "cuda":
            raise LaunchError("engine.device: launcher=inline runs on this machine's CPU")

    def launch(self, c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
        note(call="launch", dry_run=c["sweep"]["dry_run"])
        if c["sweep"]["dry_run"]:
            return 0
        for sid in plan.stages:            # dependency order
            run_stage(store, sid, show_progress=False)
            note(call="ran", stage=sid)
        results.write(results.rows(plan, store), Path(sweep_dir))
        return 0

    def cancel(self, sweep_dir: Path, console: Console) -> int:
        note(call="cancel", sweep=str(sweep_dir))
        console.print("nothing to cancel: launcher=inline runs in the foreground")
        return 0
'''


def test_a_launcher(tmp_path):
    copy = copy_tree(tmp_path / "tree")
    log = tmp_path / "launcher.jsonl"
    write(copy, "reasoning360/launchers/inline.py", LAUNCHER.replace("@LOG@", str(log)))
    add_registry_line(copy, "reasoning360/launchers/__init__.py", "LAUNCHERS",
                      '"inline": "reasoning360.launchers.inline:InlineLauncher",')
    write(copy, "configs/launcher/inline.yaml", "# Every stage in the sweep's own process, one after another.\nname: inline\n")
    check_touched_as_documented(copy, "Add a launcher", "inline")

    root = tmp_path / "root"
    refused = run(copy, root, "sweep.py", *COLD_START, "launcher=inline", "engine.device=cuda")
    assert refused.returncode == 2 and "engine.device: launcher=inline" in refused.stdout
    assert not (root / "store").exists()                                   # refused before anything is written
    sweep_dir = sweep(copy, root, *COLD_START, "launcher=inline", "sweep.name=toy_launcher")
    calls = log_lines(log)
    assert [c["call"] for c in calls] == ["validate", "validate", "launch"] + ["ran"] * 5
    assert set(summaries(root, sweep_dir)) == {"data", "base", "sft_eval", "rl", "rl_eval"}       # all DONE
    assert pd.read_csv(sweep_dir / "results.csv")["state"].tolist() == ["done"]
    assert {r["state"] for r in status_rows(copy, root, sweep_dir)} == {"done"}
    p = run(copy, root, "-m", "reasoning360.cli", "cancel", str(sweep_dir))     # by the sweep's own launcher
    assert p.returncode == 0 and "launcher=inline runs in the foreground" in p.stdout
    assert log_lines(log)[-1] == {"call": "cancel", "sweep": str(sweep_dir)}


# --------------------------------------------------------------------------- a stage kind

KIND = '''
"""The `score` stage: after the RL eval, a summary of its items (tests/test_extension_points.py)."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind


def spec(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any]:
    return {"kind": "score", "task": c["task"]["name"], "eval": ids["rl_eval"]}


def run(ctx) -> dict[str, Any]:
    import pandas as pd

    items = pd.read_parquet(ctx.deps["eval"] / "items.parquet")
    return {"items": len(items), "mean_score": float(items["score"].mean()),
            "correct": int((items["score"] == 1.0).sum())}


KIND = StageKind(name="score", inputs={"eval": "eval"}, run="reasoning360.stages.score:run", resources="data",
                 roles=(Role("score", ("rl_eval",), spec),))
'''


def test_a_stage_kind(tmp_path):
    copy = copy_tree(tmp_path / "tree")
    write(copy, "reasoning360/stages/score.py", KIND)
    add_registry_line(copy, "reasoning360/stages/__init__.py", "KINDS", '"score": "reasoning360.stages.score",')
    check_touched_as_documented(copy, "Add a stage kind", "score")

    root = tmp_path / "root"
    slurm = run(copy, root, "sweep.py", *COLD_START, "launcher=slurm", "sweep.dry_run=true", "sweep.name=toy_kind")
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    arrays = {cells[0]: cells for cells in ([c.strip() for c in ln.split("│")[1:-1]] for ln in slurm.stdout.splitlines())
              if len(cells) == 6}                                       # the dry run's arrays table
    assert "aftercorr rl_eval" in arrays["score"][4]                     # an array of its own, after rl_eval
    assert arrays["score"][3] == arrays["data"][3]                       # sized by launcher.resources.data
    sweep_dir = sweep(copy, root, *COLD_START, "sweep.name=toy_kind")
    s = summaries(root, sweep_dir)
    assert set(s) == {"data", "base", "sft_eval", "rl", "rl_eval", "score"}
    items = pd.read_parquet(root / "store" / json.loads((sweep_dir / "plan.json").read_text())
                            ["points"][0]["stages"]["rl_eval"] / "items.parquet")
    assert s["score"]["items"] == len(items) == 16                             # 8 items x 2 protocols
    assert s["score"]["mean_score"] == pytest.approx(items["score"].mean())
    rows = status_rows(copy, root, sweep_dir)                                # r360 status shows it
    assert [(r["role"], r["kind"], r["state"]) for r in rows if r["role"] == "score"] == [("score", "score", "done")]
    assert [r["role"] for r in rows] == ["data", "base", "sft_eval", "rl", "rl_eval", "score"]     # pipeline order


# --------------------------------------------------------------------------- a rollout backend

BACKEND = '''
"""rollout.backend=toy: the builtin sampler, noting each generate call in LOG (tests/test_extension_points.py)."""

from __future__ import annotations

import json
import os

from .base import RolloutOutput, SamplingParams
from .builtin import BuiltinRollout

LOG = "@LOG@"


class ToyRollout(BuiltinRollout):
    def generate(self, prompt_ids, sampling: SamplingParams) -> RolloutOutput:
        out = super().generate(prompt_ids, sampling)
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "prompts": len(prompt_ids), "n": sampling.n,
                                 "completions": sum(map(len, out.completions))}) + "\\n")
        return out
'''


def test_a_rollout_backend(tmp_path):
    copy = copy_tree(tmp_path / "tree")
    log = tmp_path / "rollout.jsonl"
    write(copy, "reasoning360/rollout/toy.py", BACKEND.replace("@LOG@", str(log)))
    add_registry_line(copy, "reasoning360/rollout/registry.py", "BACKENDS", '"toy": "reasoning360.rollout.toy:ToyRollout",')
    check_touched_as_documented(copy, "Add a rollout backend", "toy")

    root = tmp_path / "root"
    sweep_dir = sweep(copy, root, *COLD_START, "rollout.backend=toy", "sweep.name=toy_backend")
    s = summaries(root, sweep_dir)
    assert set(s) == {"data", "base", "sft_eval", "rl", "rl_eval"}
    calls = log_lines(log)
    assert calls == [{"pid": calls[0]["pid"], "prompts": 2, "n": 2, "completions": 4}]   # GRPO's one step: 2 prompts x n=2
    assert calls[0]["pid"] != os.getpid()                       # in the rl stage's own process
    plan = json.loads((sweep_dir / "plan.json").read_text())
    spec = json.loads((root / "store" / plan["points"][0]["stages"]["rl"] / "spec.json").read_text())["spec"]
    assert spec["rollout_backend"] == "toy"
