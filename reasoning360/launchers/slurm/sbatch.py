"""sbatch files, their submission and the requeue: our own short writer (no submitit).

One job is one file, written before it is submitted (`r360 render` writes the same files):

    #!/bin/bash
    #SBATCH --job-name=... --partition=... --nodes=N --ntasks-per-node=1 --cpus-per-task=C
    #SBATCH --mem=...M --gpus-per-node=G|--gres=... --constraint=... --time=MIN --array=IDS%N
    #SBATCH --signal=USR2@<launcher.signal_delay_s> --requeue --open-mode=append
    #SBATCH --output=<sweep>/slurm/logs/%A_%a_0_log.out  (+ account, qos, exclusive, additional_sbatch)
    <cluster.setup lines>; export <cluster.env>; export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
    srun --unbuffered --output <logs>/%A_%a_%t_log.out <container flags> PYTHON -u -m reasoning360.launchers.slurm.job ARRAY.json

It is submitted with `sbatch --parsable [--dependency=D --kill-on-invalid-dep=no] FILE` (job ids
exist only at submit time, so dependencies stay on the command line and the file never changes),
and a preempted task requeues itself with `scontrol requeue <job>_<task>`.

Every value that reaches a file or a shell is checked by `check` first (one line naming the key,
before anything is written or submitted), then quoted:
  * `#SBATCH` values: no control characters (a newline would end the comment line and start a
    command), at most 1,024 characters (Slurm's own limit), no backslash (Slurm's directive
    parser drops it even inside quotes), then shell-quoted (Slurm reads the quotes as the shell
    does). Option keys match `[A-Za-z_][A-Za-z0-9_-]*` and may not name, or abbreviate, an
    option the writer sets itself.
  * `cluster.env`: keys are shell names, values are exported literally (`$HOME` stays `$HOME`;
    write a `cluster.setup` line when you want the shell to expand something).
  * `cluster.setup`: the site's own shell, by design; one line per entry (no newline inside one).
  * `cluster.container.flags`: srun flags, one `-...` word per entry, quoted.
  * the interpreter (`cluster.python`, else `launcher.python`, else the submitting one): an
    absolute path; an existing executable file on the submitting machine unless a container
    is set (then it lives in the image and is not checked here); quoted.
  * paths (logs, array files): absolute, no control characters, no `%` or backslash (Slurm
    expands them in --output), quoted.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from reasoning360.launchers.slurm import query
from reasoning360.launchers.slurm.resources import ResourceError, Resources, check_profile

OPTION_MAX = 1024          # Slurm refuses longer strings ("parameter too long")
SHELL_MAX = 4096           # env values, setup lines, container flags, paths
OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
IFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")
BAD_CHARS = {"Cc", "Cf", "Zl", "Zp", "Cs"}      # control, format (bidi), line/paragraph separators
# options the writer sets from the resources and the launcher config; additional_sbatch may not
# set them, nor abbreviate them (sbatch accepts any unambiguous prefix of a long option)
MANAGED = ("job-name", "partition", "nodes", "ntasks-per-node", "cpus-per-task", "mem", "gres",
           "gpus-per-node", "constraint", "time", "array", "signal", "requeue", "no-requeue",
           "open-mode", "output", "error", "dependency", "parsable", "wrap", "account", "qos",
           "exclusive", "kill-on-invalid-dep", "chdir")
# real sbatch options that contradict the per-node request the writer makes
CONFLICTING = ("gpus", "ntasks", "mem-per-cpu", "mem-per-gpu", "cpus-per-gpu", "gpus-per-task", "ntasks-per-gpu")
OWNER = {"account": "cluster.account", "qos": "cluster.qos", "exclusive": "cluster.exclusive",
         "partition": "cluster.partition", "constraint": "cluster.constraint", "gres": "cluster.gres"}
JOB_MODULE = "reasoning360.launchers.slurm.job"
RAY_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Site:
    """The checked parts of the site profile and launcher config that every job file shares."""
    python: str
    signal_delay_s: int
    gres: str | None                            # template with {gpus}; None: --gpus-per-node
    options: tuple[tuple[str, str | None], ...]  # account, qos, exclusive, additional_sbatch
    setup: tuple[str, ...]                      # setup lines, then exports
    srun_flags: tuple[str, ...]


# --------------------------------------------------------------------------- checks


def _show(s: str, n: int = 40) -> str:
    r = repr(s)
    return r if len(r) <= n else r[: n - 4] + "...'"


def text(v: Any, key: str, *, limit: int = SHELL_MAX, option: bool = False) -> str:
    """A string (or number) safe to quote into a file: no control characters, not empty, at most
    `limit` characters; `option`: an #SBATCH value (no backslash)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        got = "null" if v is None else f"{type(v).__name__} {_show(str(v))}"
        raise ResourceError(f"{key}: expected a string, got {got}")
    s = str(v)
    if not s:
        raise ResourceError(f"{key}: empty string (use null to leave it unset)")
    for i, ch in enumerate(s):
        if unicodedata.category(ch) in BAD_CHARS:
            raise ResourceError(f"{key}: control or format character {ch!r} at position {i} (a newline "
                                f"would end the line and run what follows); got {_show(s)}")
    if len(s) > limit:
        raise ResourceError(f"{key}: {len(s)} characters, more than {limit}; got {_show(s)}")
    if option and "\\" in s:
        raise ResourceError(f"{key}: a backslash (Slurm's #SBATCH parser drops it); got {_show(s)}")
    return s


def option_key(k: Any, key: str) -> str:
    """An additional_sbatch key as an sbatch long option (`mail_user` -> `mail-user`)."""
    if not isinstance(k, str) or not OPTION_KEY.match(k):
        raise ResourceError(f"{key}: not an sbatch option name (expected [A-Za-z_][A-Za-z0-9_-]*); "
                            f"got {_show(str(k))}")
    opt = k.replace("_", "-")
    if opt in CONFLICTING:
        raise ResourceError(f"{key}: --{opt} contradicts the per-node request the launcher makes (set "
                            f"nodes, gpus, cpus, mem_gb under launcher.resources / cluster.resources)")
    hit = next((m for m in MANAGED if m.startswith(opt)), None)
    if hit is not None:
        where = OWNER.get(hit, "the launcher (resources, launcher.*)")
        what = f"--{opt}" if hit == opt else f"--{opt} abbreviates --{hit}, which"
        raise ResourceError(f"{key}: {what} is set by {where}; not here")
    return opt


def _number(v: Any, key: str, *, minimum: float, maximum: float | None = None, integer: bool = False,
            strict_min: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (not integer or int(v) == v)
    if ok:
        ok = v > minimum if strict_min else v >= minimum
        ok = ok and (maximum is None or v <= maximum)
    if not ok:
        what = "an integer" if integer else "a number"
        rng = f"{'>' if strict_min else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise ResourceError(f"{key}: expected {what} {rng}, got {v!r}")
    return v


def python_path(c: dict[str, Any]) -> str:
    """The interpreter the jobs run: cluster.python, else launcher.python, else this one."""
    cl, la = c["cluster"], c["launcher"]
    if cl["python"] is not None:
        key, py = "cluster.python", cl["python"]
    elif la["python"] is not None:
        key, py = "launcher.python", la["python"]
    else:
        key, py = "launcher.python", sys.executable      # null: the interpreter submitting
    py = text(py, key)
    if not os.path.isabs(py):
        raise ResourceError(f"{key}: expected an absolute path to the interpreter on the compute nodes, "
                            f"got {_show(py)}")
    if cl["container"] is None and not (os.path.isfile(py) and os.access(py, os.X_OK)):
        raise ResourceError(f"{key}: {_show(py)} is not an executable file on this machine (checked where "
                            f"you submit; with cluster.container set it is not checked: it lives in the image)")
    return py


def check_launcher(c: dict[str, Any]) -> None:
    """launcher.* and sweep.* knobs of the Slurm launcher, strictly: 0 means 0."""
    la = c["launcher"]
    _number(la["preempt_grace_s"], "launcher.preempt_grace_s", minimum=0)
    if la["signal_delay_s"] == 0 and not isinstance(la["signal_delay_s"], bool):
        raise ResourceError("launcher.signal_delay_s: 0 would send USR2 at the time limit itself, with the kill: "
                            "no time to checkpoint; use 1..65535 s, more than launcher.preempt_grace_s")
    _number(la["signal_delay_s"], "launcher.signal_delay_s", minimum=0, maximum=65535, integer=True,
            strict_min=True)
    if la["signal_delay_s"] <= la["preempt_grace_s"]:
        raise ResourceError(f"launcher.signal_delay_s: {la['signal_delay_s']} s must exceed "
                            f"launcher.preempt_grace_s ({la['preempt_grace_s']} s): the time limit would "
                            "kill a stage before its grace period to checkpoint is over")
    _number(la["max_requeue"], "launcher.max_requeue", minimum=0, integer=True)
    _number(la["ray_join_timeout_s"], "launcher.ray_join_timeout_s", minimum=0, strict_min=True)
    _number(la["max_groups"], "launcher.max_groups", minimum=1, integer=True)
    if la["max_array_size"] is not None:
        _number(la["max_array_size"], "launcher.max_array_size", minimum=1, integer=True)
    if la["ray"] not in RAY_MODES:
        raise ResourceError(f"launcher.ray: expected one of {', '.join(RAY_MODES)}, got {la['ray']!r}")
    if not isinstance(la["submit"], bool):
        raise ResourceError(f"launcher.submit: expected true or false, got {la['submit']!r}")
    _number(c["sweep"]["array_parallelism"], "sweep.array_parallelism", minimum=1, integer=True)


def site(c: dict[str, Any]) -> Site:
    """Check every site-profile and launcher value that reaches a job file; the Site to write."""
    check_profile(c)
    check_launcher(c)
    cl = c["cluster"]
    text(cl["name"], "cluster.name", limit=200)
    for k in ("partition", "cpu_partition", "account", "qos", "constraint"):
        if cl[k] is not None:
            text(cl[k], f"cluster.{k}", limit=OPTION_MAX, option=True)
    gres = None
    if cl["gres"] is not None:
        gres = text(cl["gres"], "cluster.gres", limit=OPTION_MAX, option=True)
        rest = gres.replace("{gpus}", "")
        if "{gpus}" not in gres or "{" in rest or "}" in rest:
            raise ResourceError(f"cluster.gres: a template with exactly the placeholder {{gpus}} (the GPUs per "
                                f"node of each job), e.g. 'gpu:a100:{{gpus}}'; got {_show(gres)}")
    opts: list[tuple[str, str | None]] = []
    for k in ("account", "qos"):
        if cl[k] is not None:
            opts.append((k, str(cl[k])))
    if not isinstance(cl["exclusive"], bool):
        raise ResourceError(f"cluster.exclusive: expected true or false, got {cl['exclusive']!r}")
    if cl["exclusive"]:
        opts.append(("exclusive", None))
    extra = cl["additional_sbatch"]
    if not isinstance(extra, dict):
        raise ResourceError("cluster.additional_sbatch: expected a mapping option -> value")
    for k, v in extra.items():
        key = f"cluster.additional_sbatch.{k}"
        opt = option_key(k, key)
        if v is True:
            opts.append((opt, None))
        elif v is not False and v is not None:
            opts.append((opt, text(v, key, limit=OPTION_MAX, option=True)))
    setup = []
    for i, line in enumerate(cl["setup"]):
        setup.append(text(line, f"cluster.setup[{i}]"))
    exports = []
    for k, v in cl["env"].items():
        key = f"cluster.env.{k}"
        if not isinstance(k, str) or not SHELL_NAME.match(k):
            raise ResourceError(f"{key}: not a shell variable name (expected [A-Za-z_][A-Za-z0-9_]*)")
        if isinstance(v, bool):
            raise ResourceError(f"{key}: a boolean; write the string the job should see (\"1\", \"true\")")
        exports.append(f"export {k}={shlex.quote(text(v, key))}")
    iface = cl["network_interface"]
    if iface is not None:
        if not isinstance(iface, str) or not IFACE.match(iface):
            raise ResourceError(f"cluster.network_interface: not an interface name (e.g. ib0); got {_show(str(iface))}")
        exports.append(f"export GLOO_SOCKET_IFNAME={iface} NCCL_SOCKET_IFNAME={iface} R360_NET_IFACE={iface}")
    exports.append("export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1")
    flags = []
    cont = cl["container"]
    if cont is not None:
        for i, f in enumerate(cont["flags"]):
            key = f"cluster.container.flags[{i}]"
            f = text(f, key)
            if not f.startswith("-"):
                raise ResourceError(f"{key}: an srun flag starts with '-' (one flag per entry, "
                                    f"e.g. --container-image=/shared/r360.sqsh); got {_show(f)}")
            flags.append(f)
    return Site(python_path(c), int(c["launcher"]["signal_delay_s"]), gres, tuple(opts),
                tuple(setup + exports), tuple(flags))


def check_paths(c: dict[str, Any], sweep_dir: Path) -> None:
    """The sweep directory (logs, array files) and the job name, as they will appear in the files."""
    name = text(c["sweep"]["name"], "sweep.name", limit=OPTION_MAX - 64, option=True)
    where = str(Path(sweep_dir).resolve())
    for ch in ("%", "\\"):
        if ch in where:
            key = "sweep.name" if ch in name else "paths.sweeps"
            raise ResourceError(f"{key}: {ch!r} in the sweep directory {_show(where, 80)} (Slurm expands it "
                                "in --output)")
    text(where, "paths.sweeps", limit=OPTION_MAX - 64, option=True)


def check(c: dict[str, Any], sweep_dir: Path, res: Mapping[str, Resources]) -> Site:
    """Everything the job files of this sweep will contain; raises ResourceError naming the key."""
    st = site(c)
    check_paths(c, sweep_dir)
    for kind, r in res.items():
        text(r.partition, r.key_of("partition"), limit=OPTION_MAX, option=True)
        if r.constraint is not None:
            text(r.constraint, r.key_of("constraint"), limit=OPTION_MAX, option=True)
        if r.time_minutes * 60 <= st.signal_delay_s:
            raise ResourceError(f"launcher.signal_delay_s: {st.signal_delay_s} s is not shorter than the "
                                f"{r.time_minutes}-minute time limit of {kind} jobs ({r.key_of('time_minutes')})")
    return st


# --------------------------------------------------------------------------- the file


def job_name(c: dict[str, Any], array_name: str) -> str:
    return f"r360-{c['sweep']['name']}-{array_name}"


def job_argv(st: Site, array_file: Path) -> list[str]:
    return [st.python, "-u", "-m", JOB_MODULE, str(array_file)]


def _flag(k: str, v: Any) -> str:
    return f"#SBATCH --{k}" if v is None else f"#SBATCH --{k}={shlex.quote(str(v))}"


def script(st: Site, *, name: str, res: Resources, array: str | None, log_dir: Path,
           argv: list[str]) -> str:
    """The text of one job file (values already checked by `check`)."""
    pattern = "%A_%a" if array is not None else "%j"
    opts: list[tuple[str, Any]] = [("job-name", name), ("partition", res.partition), ("nodes", res.nodes),
                                   ("ntasks-per-node", 1), ("cpus-per-task", res.cpus)]
    if res.mem_gb is not None:
        opts.append(("mem", f"{int(round(res.mem_gb * 1024))}M"))
    if res.gpus:
        opts.append(("gres", st.gres.replace("{gpus}", str(res.gpus))) if st.gres else ("gpus-per-node", res.gpus))
    if res.constraint:
        opts.append(("constraint", res.constraint))
    opts.append(("time", res.time_minutes))
    if array is not None:
        opts.append(("array", array))
    opts += [("signal", f"USR2@{st.signal_delay_s}"), ("requeue", None), ("open-mode", "append"),
             ("output", f"{log_dir}/{pattern}_0_log.out")]
    opts += list(st.options)
    srun = ["srun", "--unbuffered", "--output", f"{log_dir}/{pattern}_%t_log.out", *st.srun_flags, *argv]
    lines = ["#!/bin/bash", "# a reasoning360 job (launchers/slurm/sbatch.py): submit it with sbatch; "
             "dependencies go on the sbatch command line",
             *(_flag(k, v) for k, v in opts), "", *st.setup, "", shlex.join(srun), ""]
    return "\n".join(lines)


def log_path(folder: Path, job_id: str, task: int | None, rank: int = 0) -> Path:
    """Where a task's output goes (stdout and stderr together; rank 0 shares it with the batch shell)."""
    jid = job_id if task is None else f"{job_id}_{task}"
    return Path(folder) / f"{jid}_{rank}_log.out"


# --------------------------------------------------------------------------- sbatch, scontrol

_DEP = re.compile(r"[A-Za-z0-9_:,${}]*\Z")


def submit_argv(path: Path, dependency: str = "") -> list[str]:
    dep = [f"--dependency={dependency}", "--kill-on-invalid-dep=no"] if dependency else []
    return ["sbatch", "--parsable", *dep, str(path)]


def shell_command(path: Path, dependency: str = "") -> str:
    """submit_argv for a shell script in which earlier job ids are variables (`${J_data}`)."""
    if not _DEP.match(dependency):
        raise ValueError(f"unexpected dependency text {dependency!r}")
    return " ".join(f'--dependency="{dependency}"' if a.startswith("--dependency=") else shlex.quote(a)
                    for a in submit_argv(path, dependency))


def submit(path: Path, dependency: str = "") -> str:
    """Submit one job file; its job id."""
    out = query.run(submit_argv(path, dependency)).strip()
    jid = out.split(";")[0]
    if not jid.isdigit():
        raise query.SlurmError(f"sbatch --parsable answered {out[-200:]!r}, not a job id")
    return jid


def job_ref(environ: Mapping[str, str]) -> str:
    """This task's id for scontrol: `<array job>_<task>` in an array, else the job id."""
    if environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ["SLURM_JOB_ID"]


def requeue(ref: str) -> None:
    """Put the task back in the queue (it keeps its id; SLURM_RESTART_COUNT counts the requeues)."""
    query.run(["scontrol", "requeue", ref], timeout=60)


def read_flags(script_text: str) -> dict[str, str | None]:
    """The #SBATCH options of a file ({option: value or None}), unquoted as Slurm unquotes them."""
    out: dict[str, str | None] = {}
    for line in script_text.splitlines():
        if line.startswith("#SBATCH "):
            k, eq, v = line[len("#SBATCH "):].partition("=")
            out[k.lstrip("-")] = shlex.split(v)[0] if eq else None
    return out

