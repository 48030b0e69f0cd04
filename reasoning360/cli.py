"""`r360 COMMAND ...`: act on sweeps and data. Each command lives beside what it acts on;
this file only maps names to modules, so `r360 --help` imports nothing heavy."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). The module defines configure_<name>(parser) and cmd_<name>(args) -> int.
COMMANDS = {
    "status": ("reasoning360.launchers.commands", "one table: every point x stage, state, step, reward, job"),
    "watch": ("reasoning360.launchers.commands", "the status table, refreshed live"),
    "logs": ("reasoning360.launchers.commands", "the tail of a stage's log and its traceback"),
    "cancel": ("reasoning360.launchers.commands", "cancel a sweep's queued and running jobs"),
    "resubmit": ("reasoning360.launchers.commands", "resubmit what is not DONE (--failed, --all-missing)"),
    "render": ("reasoning360.launchers.commands", "write the sbatch files the launcher would submit"),
    "report": ("analysis.report", "tables, figures and an HTML report of one or more sweeps"),
    "data": ("reasoning360.tasks.cli", "build one task's datasets the way the paper's generators did"),
    "distill": ("reasoning360.tasks.distill", "sample a teacher through an OpenAI-compatible endpoint"),
    "serve": ("reasoning360.serve", "start vLLM on a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="r360", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        print(f"r360 {name}: not available ({e})", file=sys.stderr)
        return 2
    cmd_parser = argparse.ArgumentParser(prog=f"r360 {name}", description=COMMANDS[name][1])
    getattr(module, f"configure_{name}")(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(getattr(module, f"cmd_{name}")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
