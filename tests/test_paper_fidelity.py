"""docs/paper_fidelity.md cannot drift: every row's key has the value the row states in the
composed `+grid=backtrack_all scale=paper` sweep, and where a row's key maps one-to-one onto a
verl key, the generated verl command lines of that sweep (engine=verl_fsdp) carry that value."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import yaml

from compose import compose_cfg, fake_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper_fidelity.md"


def rows() -> list[dict[str, str]]:
    """The table rows: setting, authors' value, source, key, value, verdict."""
    out = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| setting") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 6, f"a fidelity row needs 6 cells: {line[:120]}"
        out.append(dict(zip(("setting", "theirs", "source", "key", "value", "verdict"), cells)))
    return out


def _code(cell: str) -> str | None:
    m = re.fullmatch(r"`([^`]+)`", cell)
    return m.group(1) if m else None


def _get(node, dotted: str):
    for part in dotted.split("."):
        node = node[part]
    return node


def _parse(text: str):
    """A Hydra override's value as data (PyYAML reads 1e-05 as a string; Hydra as a float)."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from reasoning360.sweep.main import build

    tmp = tmp_path_factory.mktemp("fidelity")
    model = fake_checkpoint(tmp / "Qwen2.5-3B-Instruct")
    teacher = fake_checkpoint(tmp / "QwQ-32B")
    cfg = compose_cfg("+grid=backtrack_all", "scale=paper", "engine=verl_fsdp", "launcher=slurm",
                      "cluster=generic_gpu", f"model.path={model}", f"distill.teachers.long_cot.path={teacher}",
                      f"paths.root={tmp / 'root'}")
    return build(cfg)


def test_the_table_has_every_section_and_no_unexplained_difference():
    rs = rows()
    assert len(rs) >= 60
    for r in rs:
        v = r["verdict"].lower()
        assert v.startswith(("same", "improvement", "ambiguous", "ours", "hardware")), r["setting"]
        assert r["source"], r["setting"]


def test_every_row_holds_in_the_composed_paper_sweep(sweep):
    c, plan, *_ = sweep
    checked = 0
    for r in rows():
        key, value = _code(r["key"]), _code(r["value"])
        if key is None:             # `-`: the row names the test that checks it
            assert re.search(r"tests/\S+\.py|engine tests|eval tests|prompt contract", r["value"]), r
            continue
        if value is None or value == "-":
            continue
        want = yaml.safe_load(value)
        if isinstance(want, str) and want.startswith("${") and want.endswith("}"):   # an interpolation
            want = _get(c, want[2:-1])
        if key.startswith("task/"):
            task, _, dotted = key[len("task/"):].partition(":")
            got = _get(c["tasks"][task], dotted)
        elif key.startswith("code:"):
            module, _, name = key[len("code:"):].rpartition(".")
            got = getattr(importlib.import_module(module), name)
            if isinstance(got, tuple):
                got = list(got)
        else:
            got = _get(c, key)
        assert _same(got, want) if not isinstance(want, (list, dict)) else got == want, (r["setting"], key, got, want)
        checked += 1
    assert checked >= 45


def test_the_paper_plan_runs_what_the_table_says(sweep):
    """The plan itself: RL starts from the SFT model kept at step 300, the before-RL eval
    evaluates that model, the after-RL eval the models at 100, 200 and 300, with the paper's
    protocol as the primary one."""
    c, plan, *_ = sweep
    pp = next(p for p in plan.points if p.point.task == "countdown" and p.point.k == 1)
    sft, rl = plan.stages[pp.stages["sft"]], plan.stages[pp.stages["rl"]]
    assert sft.spec["sft"]["export_steps"] == [300] and sft.spec["sft"]["max_steps"] == 1200
    assert rl.spec["init"] == sft.id and rl.spec["init_step"] == 300
    assert plan.stages[pp.stages["sft_eval"]].spec["steps"] == [300]
    ev = plan.stages[pp.stages["rl_eval"]].spec
    assert ev["steps"] == [100, 200, None] and ev["final_step"] == 300
    assert ev["eval"]["primary"] == "sample" and ev["eval"]["protocols"]["sample"]["temperature"] == 1.0
    assert "base" not in pp.stages                 # no pretrain stage at scale=paper: the base is model.path
    cold = next(p for p in plan.points if p.point.task == "countdown" and p.point.baseline == "cold_start")
    assert plan.stages[cold.stages["rl"]].spec["init"] is None


def test_the_verl_command_lines_carry_the_tables_values(sweep):
    """For each row whose key maps one-to-one onto a verl key (overrides.TABLE, no computed
    value), the verl command of a stage that reads it sets that key to the row's value."""
    from reasoning360.engines.verl import dry_run_commands
    from reasoning360.engines.verl import overrides as O

    c, plan, store, _ = sweep
    cmds = dry_run_commands(plan, store.root)
    by_kind: dict[str, dict[str, str]] = {}
    for sid, cmd in cmds.items():
        kind = plan.stages[sid].kind
        args = by_kind.setdefault(kind, {})
        for a in cmd:
            k, eq, v = a.partition("=")
            if eq and "." in k and not k.startswith("-"):
                args.setdefault(k.lstrip("+"), v)
    direct = {}
    for row in O.TABLE:
        if row.fn is None:
            direct.setdefault(row.ours, []).append(row)
    checked = 0
    for r in rows():
        key, value = _code(r["key"]), _code(r["value"])
        if key is None or value is None or key not in direct:
            continue
        want = yaml.safe_load(value)
        for row in direct[key]:
            kinds = {"sft": ["sft"], "rl": ["rl"], "eval": ["eval"]}
            for trainer in row.trainers:
                for kind in kinds[trainer]:
                    args = by_kind.get(kind, {})
                    if row.verl in args:
                        got = _parse(args[row.verl])
                        assert _same(got, want) or got == want, (r["setting"], kind, row.verl, got, want)
                        checked += 1
    assert checked >= 10, checked
