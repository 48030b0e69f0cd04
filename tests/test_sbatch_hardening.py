"""Site profiles and command-line values cannot inject shell into the job files.

Every value that reaches an sbatch file or a shell is either refused in one line naming its key
(before anything is written), or quoted so that, when the rendered files run under bash, nothing
but the intended command runs. `srun` and `sbatch` are stubs here (scripts on PATH that record
their argv and environment): they stand in for Slurm's binaries only to show what bash hands them.
The same files against the real Slurm: tests/test_sbatch_slurm.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from reasoning360.launchers import run_sweep
from reasoning360.launchers.slurm import SlurmLauncher, query as slurm_query, resources, sbatch, submit
from reasoning360.launchers.base import LaunchError
from reasoning360.sweep import main
from reasoning360.sweep.store import Store

from compose import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
JOB = ["-u", "-m", "reasoning360.launchers.slurm.job"]


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    """The files are rendered as on a machine without Slurm (the real cluster's checks are
    tests/test_slurm_*.py's)."""
    monkeypatch.setattr(slurm_query, "available", lambda: False)


_BUILT: dict = {}


def build(tmp_path, *overrides):
    """(config, plan, store, sweep dir) of a one-point smoke sweep under tmp_path/root; composed once
    per set of overrides (Hydra takes ~0.3 s), copied for each test."""
    if overrides not in _BUILT:
        _BUILT[overrides] = main.build(compose_cfg("paths.root=/unused", "launcher=slurm", "+grid=smoke",
                                                   "grid.backtracks=[0]", "pretrain.train.max_steps=0",
                                                   *overrides))[:2]
    c, plan = _BUILT[overrides]
    c = copy.deepcopy(c)
    root = tmp_path / "root"
    c["paths"].update(root=str(root), store=str(root / "store"), sweeps=str(root / "sweeps"))
    return c, plan, Store(c["paths"]["store"]), Path(c["paths"]["sweeps"]) / c["sweep"]["name"]


def refusal(c, plan) -> str:
    with pytest.raises(LaunchError) as e:
        SlurmLauncher().validate(c, plan)
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg and len(msg) < 400, msg
    return msg


# --------------------------------------------------------------------------- refused, naming the key

CANARY = "/tmp/r360-canary-must-not-exist"
NL = "gpu\n#SBATCH --wrap=x\ntouch " + CANARY

REFUSED = [
    # (path into the config, value, key named by the error)
    (("cluster", "partition"), NL, "cluster.partition"),
    (("cluster", "partition"), "gpu\rx", "cluster.partition"),
    (("cluster", "partition"), "a" * 5000, "cluster.partition"),
    (("cluster", "partition"), "gpu\\x", "cluster.partition"),
    (("cluster", "partition"), "", "cluster.partition"),
    (("cluster", "cpu_partition"), "cpu\ntouch x", "cluster.cpu_partition"),
    (("cluster", "account"), "acct\n" + "touch x", "cluster.account"),
    (("cluster", "qos"), "q\x00", "cluster.qos"),
    (("cluster", "constraint"), "a100\u2028touch x", "cluster.constraint"),
    (("cluster", "constraint"), "a100\u202etxt", "cluster.constraint"),         # bidi override
    (("cluster", "gres"), "gpu:{gpus}\ntouch x", "cluster.gres"),
    (("cluster", "gres"), "gpu:{0}", "cluster.gres"),
    (("cluster", "gres"), "gpu:{gpus}:{x}", "cluster.gres"),
    (("cluster", "gres"), "gpu:{gpus.__class__}", "cluster.gres"),
    (("cluster", "gres"), "gpu:8", "cluster.gres"),
    (("cluster", "additional_sbatch"), {"comment": "x\ntouch y"}, "cluster.additional_sbatch.comment"),
    (("cluster", "additional_sbatch"), {"bad key": "x"}, "cluster.additional_sbatch.bad key"),
    (("cluster", "additional_sbatch"), {"a;touch x": "x"}, "cluster.additional_sbatch.a;touch x"),
    (("cluster", "additional_sbatch"), {"$(touch x)": True}, "cluster.additional_sbatch.$(touch x)"),
    (("cluster", "additional_sbatch"), {"-o": "x"}, "cluster.additional_sbatch.-o"),
    (("cluster", "additional_sbatch"), {"output": "/elsewhere"}, "cluster.additional_sbatch.output"),
    (("cluster", "additional_sbatch"), {"out": "/elsewhere"}, "cluster.additional_sbatch.out"),   # abbreviation
    (("cluster", "additional_sbatch"), {"sig": "USR1@1"}, "cluster.additional_sbatch.sig"),
    (("cluster", "additional_sbatch"), {"partition": "x"}, "cluster.additional_sbatch.partition"),
    (("cluster", "additional_sbatch"), {"mem_per_cpu": "2G"}, "cluster.additional_sbatch.mem_per_cpu"),
    (("cluster", "additional_sbatch"), {"gpus": 8}, "cluster.additional_sbatch.gpus"),
    (("cluster", "additional_sbatch"), {"comment": ["a", "b"]}, "cluster.additional_sbatch.comment"),
    (("cluster", "env"), {"A B": "x"}, "cluster.env.A B"),
    (("cluster", "env"), {"A;touch x": "x"}, "cluster.env.A;touch x"),
    (("cluster", "env"), {"1A": "x"}, "cluster.env.1A"),
    (("cluster", "env"), {"A-B": "x"}, "cluster.env.A-B"),
    (("cluster", "env"), {"A": "x\ntouch y"}, "cluster.env.A"),
    (("cluster", "env"), {"A": "x" * 100_000}, "cluster.env.A"),
    (("cluster", "env"), {"A": True}, "cluster.env.A"),
    (("cluster", "env"), {"A": None}, "cluster.env.A"),
    (("cluster", "setup"), ["ok", "echo a\ntouch x"], "cluster.setup[1]"),
    (("cluster", "container"), {"flags": ["--container-image=x\ntouch y"]}, "cluster.container.flags[0]"),
    (("cluster", "container"), {"flags": ["bash", "-c", "touch x"]}, "cluster.container.flags[0]"),
    (("cluster", "network_interface"), "ib0;touch x", "cluster.network_interface"),
    (("cluster", "network_interface"), "$(touch x)", "cluster.network_interface"),
    (("cluster", "python"), "python3", "cluster.python"),
    (("cluster", "python"), "/usr/bin/python\ntouch x", "cluster.python"),
    (("cluster", "python"), "/nonexistent/bin/python", "cluster.python"),
    (("cluster", "python"), "NOT_EXECUTABLE", "cluster.python"),                 # a file, mode 644
    (("launcher", "python"), "/nonexistent/python", "launcher.python"),
    (("cluster", "resources", "sft", "partition"), "p\ntouch x", "cluster.resources.sft.partition"),
    (("launcher", "resources", "rl", "constraint"), "x\ntouch y", "launcher.resources.rl.constraint"),
    (("sweep", "name"), "smoke\ntouch x", "sweep.name"),
    (("sweep", "name"), "smoke%j", "sweep.name"),
    (("sweep", "name"), "smoke\\x", "sweep.name"),
    (("sweep", "name"), "s" * 2000, "sweep.name"),
    (("paths", "sweeps"), "/tmp/r360 %x/sweeps", "paths.sweeps"),
    (("paths", "sweeps"), "/tmp/r360\n/sweeps", "paths.sweeps"),
    (("launcher", "signal_delay_s"), 0, "launcher.signal_delay_s"),
    (("launcher", "signal_delay_s"), 30, "launcher.signal_delay_s"),          # <= preempt_grace_s (60)
    (("launcher", "signal_delay_s"), 3600, "launcher.signal_delay_s"),        # >= 10-min analysis limit
    (("launcher", "signal_delay_s"), 70000, "launcher.signal_delay_s"),
    (("launcher", "signal_delay_s"), "90; touch x", "launcher.signal_delay_s"),
    (("launcher", "preempt_grace_s"), -1, "launcher.preempt_grace_s"),
    (("launcher", "max_requeue"), -1, "launcher.max_requeue"),
    (("launcher", "max_requeue"), 1.5, "launcher.max_requeue"),
    (("launcher", "ray_join_timeout_s"), 0, "launcher.ray_join_timeout_s"),
    (("launcher", "max_groups"), 0, "launcher.max_groups"),
    (("launcher", "max_array_size"), 0, "launcher.max_array_size"),
    (("launcher", "ray"), "sometimes", "launcher.ray"),
    (("launcher", "submit"), "yes", "launcher.submit"),
    (("sweep", "array_parallelism"), 0, "sweep.array_parallelism"),
    (("cluster", "exclusive"), "true; touch x", "cluster.exclusive"),
]


def _set(c, path, value):
    d = c
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


@pytest.mark.parametrize("path,value,key", REFUSED, ids=[f"{k}-{i}" for i, (_, _, k) in enumerate(REFUSED)])
def test_hostile_value_refused_naming_the_key(tmp_path, path, value, key):
    c, plan, *_ = build(tmp_path)
    if value == "NOT_EXECUTABLE":
        value = tmp_path / "python"
        value.write_text("#!/bin/sh\n")
        value.chmod(0o644)
        value = str(value)
    _set(c, path, value)
    msg = refusal(c, plan)
    assert msg.startswith(key + ":"), msg
    assert not (tmp_path / "root").exists()          # nothing written (the config's paths.root)
    assert not Path(CANARY).exists()


def test_cli_refuses_a_hostile_profile_before_writing(tmp_path):
    """A site profile file (cluster=<site>) with a newline in a value: one line naming the key,
    exit 2, nothing recorded."""
    site = tmp_path / "site" / "cluster"
    site.mkdir(parents=True)
    prof = (ROOT / "configs" / "cluster" / "local.yaml").read_text()
    prof = prof.replace("partition: debug", f"partition: {json.dumps(NL)}")
    (site / "hostile.yaml").write_text(prof)
    env = {**os.environ, "R360_ROOT": str(tmp_path / "root"), "COLUMNS": "300"}
    p = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "+grid=smoke", "launcher=slurm",
                        "launcher.submit=false", "cluster=hostile",
                        f"hydra.searchpath=[file://{tmp_path / 'site'}]"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 2, out
    assert out.splitlines() == [out] and out.startswith("error: cluster.partition: control or format character"), out
    assert not (tmp_path / "root").exists() and not Path(CANARY).exists()


# --------------------------------------------------------------------------- legal, quoted, run under bash

STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
rec = {{"prog": name, "argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in {keys!r}}}}}
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(rec) + "\\n")
if name == "sbatch":
    n = sum(1 for _ in open(os.environ["STUB_LOG"]))
    print(1000 + n)
"""


def _stubs(d: Path, keys: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for prog in ("srun", "sbatch"):
        f = d / prog
        f.write_text(STUB.format(python=sys.executable, keys=keys))
        f.chmod(0o755)
    return d


def _hostile_but_legal(tmp_path: Path, canary: Path) -> dict:
    """Values a user may legitimately write (quoted, they are harmless), each trying to run
    `touch CANARY` if it were pasted into the shell unquoted."""
    t = f"touch {canary}"
    weird_dir = tmp_path / "py dir $(touch CANARY) `touch CANARY` ;&& *?[a] 'q' \"d\" ü"
    weird_dir.mkdir()
    py = weird_dir / "python"
    py.write_text("#!/bin/sh\nexit 0\n")
    py.chmod(0o755)
    return {
        "partition": f"gpu;{t}&&`{t}`$({t})'\"*?[a]ü",
        "account": f"acct$({t})",
        "qos": f"q`{t}`",
        "constraint": f"a100&ib|$({t})",
        "gres": f"gpu:$({t}):{{gpus}}",
        "gpus_per_node": 1,
        "additional_sbatch": {"comment": f"$({t}); `{t}` && x || y > {canary}", "mail_user": "a@b.c",
                              "hold": True, "nice": 5, "begin": False},
        "env": {"A": f"$({t})", "B": f"`{t}`", "C": f"x'; {t}; '", "D": "$HOME/literal", "E": "日本語 ü",
                "F": "*", "G": 'a"b', "H": "x" * 4000},
        "setup": ["export FROM_SETUP='ran; ok'", "true && export SETUP2=yes"],
        "container": {"flags": [f"--container-image=$({t})", f"--container-mounts=/a:/b;{t}"]},
        "python": str(py),
        "network_interface": "ib0",
    }, t


HOSTILE_NAME = "sw $(touch CANARY) `x` ;&&*?[a] 'q' \"d\" ü"


def _render_hostile(tmp_path):
    canary = tmp_path / "CANARY"
    c, plan, store, _ = build(tmp_path)
    prof, t = _hostile_but_legal(tmp_path, canary)
    c["cluster"].update(prof)
    c["cluster"]["resources"]["sft"]["gpus"] = 1
    c["sweep"]["name"] = HOSTILE_NAME         # `touch CANARY` would create it in the cwd: tmp_path
    sweep_dir = Path(c["paths"]["sweeps"]) / c["sweep"]["name"]
    SlurmLauncher().validate(c, plan)
    main.record(c, plan, store, sweep_dir)
    assert submit.launch(c, plan, store, sweep_dir, Console(file=open(os.devnull, "w")), mode="render") == 0
    return c, sweep_dir, canary, prof


def test_hostile_but_legal_profile_runs_only_the_intended_command(tmp_path):
    c, sweep_dir, canary, prof = _render_hostile(tmp_path)
    out = sweep_dir / "slurm" / "render"
    logs = sweep_dir / "slurm" / "logs"
    files = sorted(out.glob("*.sbatch"))
    assert [f.name for f in files][:3] == ["00-data.sbatch", "01-traces.sbatch", "02-sft.sbatch"]
    keys = ["A", "B", "C", "D", "E", "F", "G", "H", "FROM_SETUP", "SETUP2", "HOME"]
    stubs = _stubs(tmp_path / "stubs", keys)
    log = tmp_path / "stub.jsonl"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(home)}
    n_body = len(prof["setup"]) + len(prof["env"]) + 2          # + the network export, OMP/PYTHONUNBUFFERED
    for f in files:
        text = f.read_text()
        # the only lines bash runs: setup, exports, srun (a newline injection would add lines)
        body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(body) == n_body + 1, (f.name, body)
        # the #SBATCH values come back exactly, unquoted as Slurm unquotes them (shell rules)
        opts = {}
        for ln in text.splitlines():
            if ln.startswith("#SBATCH --"):
                k, eq, v = ln[len("#SBATCH --"):].partition("=")
                opts[k] = shlex.split(v) if eq else None
        assert all(v is None or len(v) == 1 for v in opts.values()), opts
        opts = {k: v[0] if v else None for k, v in opts.items()}
        name = f.stem.split("-", 1)[-1]
        assert opts["job-name"] == f"r360-{c['sweep']['name']}-{name}"
        assert opts["account"] == prof["account"] and opts["qos"] == prof["qos"]
        assert opts["comment"] == prof["additional_sbatch"]["comment"] and opts["mail-user"] == "a@b.c"
        assert "hold" in opts and opts["hold"] is None and opts["nice"] == "5" and "begin" not in opts
        if name == "sft":
            assert opts["partition"] == prof["partition"] and opts["constraint"] == prof["constraint"]
            assert opts["gres"] == prof["gres"].replace("{gpus}", "1")
        subprocess.run(["bash", str(f)], cwd=tmp_path, env=env, check=True, timeout=60)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert not canary.exists()
    assert len(recs) == len(files) and {r["prog"] for r in recs} == {"srun"}
    for f, r in zip(files, recs):
        pattern = "%j" if f.name == "analysis.sbatch" else "%A_%a"
        afile = out / "arrays" / f"{f.stem}.json"
        assert afile.exists()
        assert r["argv"] == ["--unbuffered", "--output", f"{logs}/{pattern}_%t_log.out",
                             *prof["container"]["flags"], prof["python"], *JOB, str(afile)]
        assert {k: r["env"][k] for k in prof["env"]} == {k: str(v) for k, v in prof["env"].items()}
        assert r["env"]["FROM_SETUP"] == "ran; ok" and r["env"]["SETUP2"] == "yes"

    # submit.sh under a stub sbatch: the files in order, dependencies on the ids it printed
    log.unlink()
    p = subprocess.run(["bash", str(out / "submit.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert not canary.exists()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["prog"] for r in recs} == {"sbatch"}
    got = [r["argv"] for r in recs]
    assert [a[-1] for a in got] == [str(out / f.name) for f in files if f.name != "analysis.sbatch"] + \
        [str(out / "analysis.sbatch")]
    assert got[0] == ["--parsable", str(out / "00-data.sbatch")]
    assert got[1] == ["--parsable", "--dependency=aftercorr:1001", "--kill-on-invalid-dep=no",
                      str(out / "01-traces.sbatch")]
    for i, a in enumerate(got[1:], start=1):          # only ids printed before it
        dep = a[1].split("=", 1)[1]
        assert set(re.findall(r"\d+", dep)) <= {str(1001 + j) for j in range(i)} | {"0"}, dep
    ids = ":".join(str(1001 + i) for i in range(len(files) - 1))
    assert got[-1] == ["--parsable", f"--dependency=afterany:{ids}", "--kill-on-invalid-dep=no",
                       str(out / "analysis.sbatch")]
    assert logs.is_dir()


def test_env_values_are_literal(tmp_path):
    """Decision: cluster.env values are exported as literal strings (`$HOME/x` stays `$HOME/x`);
    what the shell should expand belongs in a cluster.setup line (shell by design)."""
    c, plan, store, sweep_dir = build(tmp_path)
    c["cluster"]["env"] = {"LIT": "$HOME/x"}
    c["cluster"]["setup"] = ['export EXPANDED="$HOME/x"']
    st = sbatch.site(c)
    text = sbatch.script(st, name="j", res=resources.resolve(c, "data"), array=None, log_dir=tmp_path,
                         argv=["x"])
    stubs = _stubs(tmp_path / "stubs", ["LIT", "EXPANDED"])
    log = tmp_path / "stub.jsonl"
    (tmp_path / "job.sh").write_text(text)
    subprocess.run(["bash", str(tmp_path / "job.sh")], check=True, timeout=30,
                   env={"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": "/home/u"})
    env = json.loads(log.read_text())["env"]
    assert env == {"LIT": "$HOME/x", "EXPANDED": "/home/u/x"}


def test_python_must_be_an_executable_unless_in_a_container(tmp_path):
    c, plan, *_ = build(tmp_path)
    c["cluster"]["python"] = "/opt/conda/bin/python-in-image"
    assert refusal(c, plan).startswith("cluster.python: ")
    c["cluster"]["container"] = {"flags": ["--container-image=/shared/r360.sqsh"]}
    SlurmLauncher().validate(c, plan)                    # lives in the image: not checked here
    c["cluster"]["python"] = "relative/python"
    assert refusal(c, plan).startswith("cluster.python: expected an absolute path")


def test_gres_template_is_replaced_not_formatted(tmp_path):
    c, plan, *_ = build(tmp_path, "cluster=generic_gpu")
    c["cluster"]["gres"] = "gpu:h100:{gpus}"
    st = sbatch.site(c)
    text = sbatch.script(st, name="j", res=resources.resolve(c, "sft"), array=None, log_dir=tmp_path, argv=["x"])
    assert "#SBATCH --gres=gpu:h100:8" in text


# --------------------------------------------------------------------------- absolute paths, strict knobs


def test_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    """paths.root relative (the default is `runs`): taken from the directory the user ran in; the
    rendered files name absolute paths, so submit.sh works from anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("R360_ROOT", raising=False)
    c, plan, store, sweep_dir = main.build(compose_cfg("launcher=slurm", "+grid=smoke", "paths.root=rel/runs"))
    assert not Path(c["paths"]["root"]).is_absolute()
    main.record(c, plan, store, sweep_dir)
    out = tmp_path / "rel" / "runs" / "sweeps" / "smoke" / "slurm" / "render"
    assert submit.launch(c, plan, store, sweep_dir, Console(file=open(os.devnull, "w")), mode="render") == 0
    logs = tmp_path / "rel" / "runs" / "sweeps" / "smoke" / "slurm" / "logs"
    for f in sorted(out.glob("*.sbatch")):
        text = f.read_text()
        assert f"--output={logs}/" in text
        srun = shlex.split(text.rstrip().splitlines()[-1])
        afile = Path(srun[-1])
        assert afile.is_absolute() and afile.exists(), afile
        doc = json.loads(afile.read_text())
        assert Path(doc["store"]) == tmp_path / "rel" / "runs" / "store"
        assert Path(doc["sweep_dir"]) == tmp_path / "rel" / "runs" / "sweeps" / "smoke"
    sh = (out / "submit.sh").read_text()
    assert f"mkdir -p {logs}" in sh and 'cd "' not in sh
    named = re.findall(r"(\S+\.sbatch)\)", sh)
    assert len(named) == len(list(out.glob("*.sbatch")))
    assert all(Path(t).is_absolute() and Path(t).exists() for t in named), named


def test_zero_means_zero_in_the_array_files(tmp_path):
    c, plan, store, sweep_dir = build(tmp_path, "launcher.max_requeue=0", "launcher.preempt_grace_s=0",
                                      "launcher.signal_delay_s=1")
    SlurmLauncher().validate(c, plan)
    main.record(c, plan, store, sweep_dir)
    assert submit.launch(c, plan, store, sweep_dir, Console(file=open(os.devnull, "w")), mode="render") == 0
    out = sweep_dir.resolve() / "slurm" / "render"
    doc = json.loads((out / "arrays" / "00-data.json").read_text())
    assert doc["max_requeue"] == 0 and doc["preempt_grace_s"] == 0.0
    assert "#SBATCH --signal=USR2@1\n" in (out / "00-data.sbatch").read_text()


def test_max_requeue_zero_never_requeues(tmp_path, monkeypatch):
    from reasoning360.launchers.slurm import job

    def must_not_run(ref):
        raise AssertionError(f"requeued {ref} although launcher.max_requeue=0")

    monkeypatch.setattr(sbatch, "requeue", must_not_run)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    store = Store(tmp_path / "store")
    sd = store.stage("s1")
    sd.path.mkdir(parents=True)
    sd.end_attempt(sd.begin_attempt(), "preempted")       # what the runner records, then the job body
    assert job._requeue({"max_requeue": 0}, store, "s1", restarts=0) == 1
    assert "launcher.max_requeue=0" in sd.failure()
    # not resumed: the stage is failed (r360 status, resubmit --failed), its attempt too
    assert sd.state().state == "failed" and "launcher.max_requeue=0" in sd.state().detail
    assert [a["status"] for a in sd.attempts()] == ["failed"]
    assert sbatch.job_ref({"SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "9"}) == "5_3"
    assert sbatch.job_ref({"SLURM_JOB_ID": "9"}) == "9"


def test_zero_grace_interrupts_at_once():
    """preempt_grace_s=0: USR2 interrupts the stage immediately (it resumes from its last
    periodic checkpoint); no step-boundary wait."""
    from reasoning360.launchers.slurm.job import Signals

    old = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)
    sig = Signals(0.0)
    sig.install()
    t0 = time.time()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR2)
            while time.time() - t0 < 5:
                time.sleep(0.01)
        assert sig.forced and time.time() - t0 < 1.0
    finally:
        signal.signal(signal.SIGUSR2, old[0])
        signal.signal(signal.SIGTERM, old[1])


@pytest.mark.parametrize("slurm", ["no client", "no controller"])
def test_dry_run_says_which_checks_were_skipped(tmp_path, capsys, monkeypatch, slurm):
    """Planning on a laptop: no Slurm client on PATH, or a client whose controller does not answer
    (a real scontrol pointed at a port nothing listens on)."""
    if slurm == "no client":
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    else:
        monkeypatch.undo()                       # the real query (this file's autouse fixture says "no Slurm")
        if not slurm_query.available():
            pytest.skip("no Slurm client installed here")
        conf = tmp_path / "slurm.conf"
        conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
        monkeypatch.setenv("SLURM_CONF", str(conf))
    rc = run_sweep(compose_cfg(f"paths.root={tmp_path}", "launcher=slurm", "+grid=smoke", "sweep.dry_run=true"))
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "dry run: nothing submitted" in out
    assert ("not checked (no Slurm controller answers here, these need scontrol): that each partition "
            "exists and is UP") in out
