"""`r360 data TASK --backtracks K ...`: build one task's datasets the way the paper's generators
did: train / val / test prompts and k-backtrack SFT traces as parquet in verl's schema.

    r360 data sudoku --backtracks 3 --sft_size 4000 --train_size 2000 --val_size 100 \\
        --test_size 200 --template_type qwen-instruct --trace_style paper --scale paper \\
        --seed 0 --local_dir data/sudoku-k3

writes DIR/{train,val,test,sft_problems,sft}.parquet (sft.parquet: the SFT problems with a
`response` column holding the trace; RL-only tasks get no sft.parquet); `--attempts N` also writes
DIR/pretrain.parquet, N attempts without search per problem (the SFT problems; an RL-only task's
train problems), what a scale=cpu base model is pretrained on. Generator settings come
from configs/task/TASK.yaml at --scale, each overridable with --param KEY=VALUE; sizes, template
and trace style default to the scale's values (configs/data/default.yaml, configs/scale/).
The same arguments give byte-identical files. Bad input fails in one line naming the flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .prompts import TEMPLATES

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPLITS = ("sft", "train", "val", "test")
SCALES = ("cpu", "paper")
STYLES = ("compact", "paper")


class _Usage(Exception):
    """A bad argument, reported in one line."""


def _one_line_error(parser: argparse.ArgumentParser):
    def error(message: str) -> NoReturn:
        print(f"{parser.prog}: {message}", file=sys.stderr)
        sys.exit(2)
    return error


def configure_data(parser: argparse.ArgumentParser) -> None:
    parser.error = _one_line_error(parser)       # type: ignore[method-assign]
    parser.add_argument("task", metavar="TASK", help="task name (configs/task/TASK.yaml)")
    parser.add_argument("--backtracks", type=int, default=None, metavar="K",
                        help="dead ends per SFT trace (default 0; not for RL-only tasks)")
    for split in SPLITS:
        parser.add_argument(f"--{split}_size", type=int, default=None, metavar="N",
                            help=f"{split} problems (default: the scale's data.{split}_size)")
    parser.add_argument("--template_type", default=None, metavar="|".join(TEMPLATES),
                        help="prompt template (default: compact at cpu, qwen-instruct at paper)")
    parser.add_argument("--trace_style", default=None, metavar="|".join(STYLES),
                        help="trace wording (default: compact at cpu, paper at paper)")
    parser.add_argument("--scale", default="cpu", metavar="|".join(SCALES),
                        help="generator settings and default sizes (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="problems and traces (default 0)")
    parser.add_argument("--local_dir", default=None, metavar="DIR",
                        help="output directory (default: data/TASK-kK)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override one generator setting (YAML value); repeatable")
    parser.add_argument("--attempts", type=int, default=None, metavar="N",
                        help="also write pretrain.parquet: N attempts without search per problem")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes that generate (default 1; the CPUs you give the job)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _defaults(scale: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / "data" / "default.yaml").read_text())
    scale_cfg = yaml.safe_load((CONFIGS / "scale" / f"{scale}.yaml").read_text()) or {}
    data.update(scale_cfg.get("data") or {})
    return data


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Every argument checked and completed; raises _Usage naming the flag."""
    from . import TaskError, TASKS, get_task, validate_point

    if args.task not in TASKS or not (CONFIGS / "task" / f"{args.task}.yaml").exists():
        raise _Usage(f"TASK: unknown task {args.task!r} (known: {', '.join(TASKS)})")
    if args.scale not in SCALES:
        raise _Usage(f"--scale: expected one of {', '.join(SCALES)}, got {args.scale!r}")
    tcfg = yaml.safe_load((CONFIGS / "task" / f"{args.task}.yaml").read_text())
    params = dict(tcfg["params"][args.scale] or {})
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _Usage(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _Usage(f"--param: {key}: not a YAML value: {value!r}") from None
    task = get_task(args.task)
    try:
        validate_point(args.task, None, params)
    except TaskError as e:
        raise _Usage(f"{'--param' if args.param else '--scale'}: {e}") from None
    k = args.backtracks
    if not task.backtrack_sft and k is not None:
        raise _Usage(f"--backtracks: task {args.task!r} is RL-only (no backtrack traces); leave it out")
    if task.backtrack_sft:
        k = 0 if k is None else k
        try:
            validate_point(args.task, k, params)
        except TaskError as e:
            raise _Usage(f"--backtracks: {e}") from None
    defaults = _defaults(args.scale)
    sizes = {}
    for split in SPLITS:
        n = getattr(args, f"{split}_size")
        n = defaults[f"{split}_size"] if n is None else n
        if n < 0:
            raise _Usage(f"--{split}_size: must be >= 0, got {n}")
        sizes[split] = n
    if not task.backtrack_sft and getattr(args, "sft_size") is None:
        sizes["sft"] = 0                  # RL-only: no SFT problems unless asked
    template = args.template_type or defaults["template"]
    if template not in TEMPLATES:
        raise _Usage(f"--template_type: expected one of {', '.join(TEMPLATES)}, got {template!r}")
    style = args.trace_style or defaults["trace_style"]
    if style not in STYLES:
        raise _Usage(f"--trace_style: expected one of {', '.join(STYLES)}, got {style!r}")
    if style == "compact" and template != "compact" and task.backtrack_sft:
        raise _Usage(f"--trace_style: compact traces need --template_type compact (got {template}); "
                     "the paper templates take paper traces")
    if args.attempts is not None:
        if args.attempts < 1:
            raise _Usage(f"--attempts: must be >= 1, got {args.attempts}")
        if style == "compact" and template != "compact":
            raise _Usage(f"--trace_style: compact attempts need --template_type compact (got {template})")
        if sizes[attempt_split(task.backtrack_sft)] == 0:
            raise _Usage(f"--attempts: the {attempt_split(task.backtrack_sft)} split is empty")
    if args.workers < 1:
        raise _Usage(f"--workers: must be >= 1, got {args.workers}")
    out = Path(args.local_dir or f"data/{args.task}" + (f"-k{k}" if task.backtrack_sft else ""))
    if out.exists() and not out.is_dir():
        raise _Usage(f"--local_dir: {out} exists and is not a directory")
    return {"task": args.task, "k": k, "params": params, "sizes": sizes, "template": template,
            "style": style, "seed": args.seed, "out": out, "backtrack_sft": task.backtrack_sft,
            "attempts": args.attempts}


def attempt_split(backtrack_sft: bool) -> str:
    """The problems a pretraining corpus is made of: the SFT problems, or the train problems of
    an RL-only task (its data stage draws no SFT problems)."""
    return "sft" if backtrack_sft else "train"


def cmd_data(args: argparse.Namespace) -> int:
    from . import TaskError, build_attempts, build_data, build_traces

    try:
        r = _resolve(args)
    except _Usage as e:
        print(f"r360 data: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    show = not args.quiet and sys.stderr.isatty()
    spec = {"kind": "data", "task": r["task"], "params": r["params"], "sizes": r["sizes"],
            "template": r["template"], "seed": r["seed"]}
    try:
        r["out"].mkdir(parents=True, exist_ok=True)
        summary = build_data(spec, r["out"], show_progress=show, workers=args.workers)
        traces = None
        if r["backtrack_sft"] and r["sizes"]["sft"] > 0:
            traces = build_traces({"kind": "traces", "task": r["task"], "data": str(r["out"]), "k": r["k"],
                                   "style": r["style"], "seed": r["seed"]}, r["out"], r["out"],
                                  show_progress=show, workers=args.workers)
        attempts = None
        if r["attempts"] is not None:
            attempts = build_attempts({"kind": "pretrain", "task": r["task"], "data": str(r["out"]),
                                       "split": attempt_split(r["backtrack_sft"]), "attempts": r["attempts"],
                                       "style": r["style"], "seed": r["seed"]}, r["out"], r["out"],
                                      show_progress=show, workers=args.workers)
    except TaskError as e:
        print(f"r360 data: {e}", file=sys.stderr)
        return 1
    counts = summary["counts"]
    print(f"{r['task']}: scale={args.scale} params={r['params']} seed={r['seed']} template={r['template']}")
    for split, name in (("train", "train"), ("val", "val"), ("test", "test"), ("sft", "sft_problems")):
        print(f"  {r['out'] / (name + '.parquet')}  {counts[split]} rows")
    if traces is not None:
        print(f"  {r['out'] / 'sft.parquet'}  {traces['rows']} traces, k={r['k']}, style={r['style']}, "
              f"mean {traces['mean_response_chars']:.0f} / max {traces['max_response_chars']} chars")
    if attempts is not None:
        print(f"  {r['out'] / 'pretrain.parquet'}  {attempts['rows']} attempts ({attempts['attempts']} per "
              f"{attempts['split']} problem), style={r['style']}, {attempts['correct_share']:.1%} right, "
              f"mean {attempts['mean_response_chars']:.0f} / max {attempts['max_response_chars']} chars")
    print(f"  {summary['drawn']} problems drawn, {summary['duplicates_dropped']} duplicates dropped, "
          f"{time.time() - t0:.2f} s")
    return 0
