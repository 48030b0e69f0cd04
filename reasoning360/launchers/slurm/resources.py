"""What each job asks Slurm for, and whether the site can give it.

Resources are config data. `launcher.resources.<kind>` (configs/launcher/slurm.yaml) says
what a stage kind needs in site-independent terms (nodes, GPUs per node, or CPUs and memory
for CPU-only kinds, time); the site profile (`cluster`, configs/cluster/<site>.yaml) says how
a GPU is spelled and what comes with it (CPUs and memory per GPU), and may override any
field per kind under `cluster.resources.<kind>`. Precedence, per field:

    cluster.resources.<kind>.<field>  >  launcher.resources.<kind>.<field>  >  derived default

Derived defaults: cpus = gpus x cluster.cpus_per_gpu (else cluster.cpus_per_task);
mem_gb = gpus x cluster.mem_per_gpu_gb (else cluster.mem_gb); time_minutes =
cluster.time_minutes; partition = cluster.cpu_partition for GPU-less kinds, else
cluster.partition. `gpus: node` means all of cluster.gpus_per_node. `nodes` and `gpus` have
no derivation: a kind that sets neither is refused (0 means 0: `gpus: 0` is a CPU-only kind).

Every check that can fail does so before anything is submitted, in one line naming the key
the user should change (`check_profile` without Slurm, `check_against` with what
`scontrol show partition/node` reported). The values that reach a job file (partition,
constraint, ...) are checked for safety, and quoted, by reasoning360.launchers.slurm.sbatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasoning360.launchers.slurm.query import ClusterInfo

ANALYSIS = "analysis"      # the sweep's analysis job (results.csv, r360 report): not a stage kind
FIELDS = ("nodes", "gpus", "cpus", "mem_gb", "time_minutes", "partition", "constraint")
PROFILE_KEYS = {"name", "partition", "cpu_partition", "account", "qos", "gpus_per_node", "gres",
                "constraint", "cpus_per_gpu", "cpus_per_task", "mem_per_gpu_gb", "mem_gb",
                "time_minutes", "setup", "env", "container", "network_interface", "python",
                "resources", "exclusive", "additional_sbatch"}


class ResourceError(ValueError):
    """A bad site profile or a request the cluster cannot satisfy (one line, names the key)."""


@dataclass(frozen=True)
class Resources:
    kind: str
    partition: str
    nodes: int
    gpus: int                 # per node
    cpus: int                 # per node (one task per node)
    mem_gb: float | None      # per node; None = the partition's default
    time_minutes: int
    constraint: str | None = None
    source: tuple = field(default=(), compare=False, hash=False)   # (field, config key) pairs

    def key_of(self, name: str) -> str:
        return dict(self.source).get(name, f"launcher.resources.{self.kind}.{name}")

    @property
    def gpu_hours(self) -> float:
        return self.nodes * self.gpus * self.time_minutes / 60

    def shape(self) -> tuple:
        return (self.partition, self.nodes, self.gpus, self.cpus, self.mem_gb, self.time_minutes,
                self.constraint)

    def describe(self) -> str:
        mem = "" if self.mem_gb is None else f" {self.mem_gb:g}G"
        gpu = f" {self.gpus}gpu" if self.gpus else ""
        return f"{self.nodes}x[{self.cpus}cpu{gpu}{mem}] {self.time_minutes}min @{self.partition}"


def resource_keys() -> list[str]:
    """What `launcher.resources` / `cluster.resources` may size: every stage kind's resource
    class (reasoning360.stages) and the analysis job."""
    from reasoning360 import stages

    return sorted({k.resource_key for k in stages.kinds()} | {ANALYSIS})


def _int(v: Any, key: str, minimum: int = 0, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        raise ResourceError(f"{key}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _num(v: Any, key: str, allow_none: bool = True) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ResourceError(f"{key}: expected a positive number, got {v!r}")
    return float(v)


def check_profile(c: dict[str, Any]) -> None:
    """Static checks of the site profile's shape and numbers (no Slurm needed). The values that
    reach a job file are checked, and quoted, by reasoning360.launchers.slurm.sbatch."""
    cl = c["cluster"]
    unknown = sorted(set(cl) - PROFILE_KEYS)
    if unknown:
        raise ResourceError(f"cluster.{unknown[0]}: unknown site-profile key "
                            f"(known: {', '.join(sorted(PROFILE_KEYS))})")
    missing = sorted(PROFILE_KEYS - set(cl))
    if missing:
        raise ResourceError(f"cluster.{missing[0]}: missing from the site profile (cluster={cl.get('name')}); "
                            "every key of configs/cluster/local.yaml must be set (null where allowed)")
    if not isinstance(cl["partition"], str) or not cl["partition"]:
        raise ResourceError(f"cluster.partition: missing (cluster={cl['name']}); name the Slurm partition")
    _int(cl["gpus_per_node"], "cluster.gpus_per_node")
    for key in ("cpus_per_gpu", "cpus_per_task"):
        _int(cl[key], f"cluster.{key}", minimum=1, allow_none=True)
    for key in ("mem_per_gpu_gb", "mem_gb"):
        _num(cl[key], f"cluster.{key}")
    _int(cl["time_minutes"], "cluster.time_minutes", minimum=1)
    if not isinstance(cl["setup"], list):
        raise ResourceError("cluster.setup: expected a list of shell lines")
    if not isinstance(cl["env"], dict):
        raise ResourceError("cluster.env: expected a mapping NAME: value")
    cont = cl["container"]
    if cont is not None and not (isinstance(cont, dict) and set(cont) == {"flags"}
                                 and isinstance(cont["flags"], list)):
        raise ResourceError("cluster.container: expected null or {flags: [srun flags...]}")
    for where in ("launcher", "cluster"):
        res = c[where]["resources"]
        if not isinstance(res, dict):
            raise ResourceError(f"{where}.resources: expected a mapping kind -> resources")
        for kind, r in res.items():
            known = resource_keys()
            if kind not in known:
                raise ResourceError(f"{where}.resources.{kind}: unknown stage kind (known: {', '.join(known)})")
            if r is not None and not isinstance(r, dict):
                raise ResourceError(f"{where}.resources.{kind}: expected a mapping field -> value")
            for f in (r or {}):
                if f not in FIELDS:
                    raise ResourceError(f"{where}.resources.{kind}.{f}: unknown field (known: {', '.join(FIELDS)})")


def resolve(c: dict[str, Any], kind: str) -> Resources:
    """The resources of one stage kind (see the module docstring for precedence); a kind sized
    like another (its StageKind.resources, e.g. pretrain like sft) reads that one's entry."""
    from reasoning360 import stages

    if kind in stages.KINDS:
        kind = stages.get(kind).resource_key
    cl = c["cluster"]
    base = c["launcher"]["resources"].get(kind) or {}      # absent: the site must set nodes and gpus
    site = cl["resources"].get(kind) or {}
    src: dict[str, str] = {}

    def get(name: str) -> Any:
        if site.get(name) is not None:
            src[name] = f"cluster.resources.{kind}.{name}"
            return site[name]
        if base.get(name) is not None:
            src[name] = f"launcher.resources.{kind}.{name}"
            return base[name]
        src[name] = f"launcher.resources.{kind}.{name}"
        return None

    def need(name: str) -> Any:
        v = get(name)
        if v is None:
            raise ResourceError(f"{src[name]}: missing (set it in configs/launcher/slurm.yaml or the site profile)")
        return v

    gpn = cl["gpus_per_node"]
    gpus = need("gpus")
    if gpus == "node":
        gpus = gpn
    gpus = _int(gpus, src["gpus"])
    nodes = _int(need("nodes"), src["nodes"], minimum=1)
    cpus = get("cpus")
    if cpus is None:
        if gpus and cl["cpus_per_gpu"] is not None:
            cpus, src["cpus"] = gpus * int(cl["cpus_per_gpu"]), "cluster.cpus_per_gpu"
        else:
            cpus, src["cpus"] = cl["cpus_per_task"], "cluster.cpus_per_task"
            if cpus is None:
                raise ResourceError(f"cluster.cpus_per_task: needed for {kind} jobs (launcher.resources.{kind}.cpus "
                                    f"and cluster.cpus_per_gpu give none)")
    cpus = _int(cpus, src["cpus"], minimum=1)
    mem = get("mem_gb")
    if mem is None:
        if gpus and cl["mem_per_gpu_gb"] is not None:
            mem, src["mem_gb"] = gpus * float(cl["mem_per_gpu_gb"]), "cluster.mem_per_gpu_gb"
        elif cl["mem_gb"] is not None:
            mem, src["mem_gb"] = cl["mem_gb"], "cluster.mem_gb"
    mem = _num(mem, src["mem_gb"])
    time_min = get("time_minutes")
    if time_min is None:
        time_min, src["time_minutes"] = cl["time_minutes"], "cluster.time_minutes"
    time_min = _int(time_min, src["time_minutes"], minimum=1)
    part = get("partition")
    if part is None:
        if not gpus and cl["cpu_partition"] is not None:
            part, src["partition"] = cl["cpu_partition"], "cluster.cpu_partition"
        else:
            part, src["partition"] = cl["partition"], "cluster.partition"
    if not isinstance(part, str):
        raise ResourceError(f"{src['partition']}: expected a partition name, got {part!r}")
    constraint = get("constraint")
    if constraint is None and gpus:
        constraint = cl["constraint"]
        if constraint is not None:
            src["constraint"] = "cluster.constraint"
    if constraint is not None and not isinstance(constraint, str):
        raise ResourceError(f"{src['constraint']}: expected a constraint string, got {constraint!r}")
    if gpus > gpn:
        raise ResourceError(f"{src['gpus']}: {gpus} GPUs per node "
                            f"requested but cluster.gpus_per_node is {gpn} (cluster={cl['name']})")
    return Resources(kind, part, nodes, gpus, cpus, mem, time_min, constraint,
                     tuple(sorted(src.items())))


def check_against(res: Resources, info: ClusterInfo) -> None:
    """Refuse a request the partition cannot satisfy, naming the key to change."""
    p = info.partitions.get(res.partition)
    if p is None:
        raise ResourceError(f"{res.key_of('partition')}: {res.partition!r} is not a partition of this "
                            f"cluster (known: {', '.join(sorted(info.partitions)) or 'none'})")
    if p.state.upper() not in ("UP",):
        raise ResourceError(f"{res.key_of('partition')}: partition {res.partition!r} is {p.state}")
    if p.max_time_min is not None and res.time_minutes > p.max_time_min:
        raise ResourceError(f"{res.key_of('time_minutes')}: {res.time_minutes} min exceeds the MaxTime "
                            f"of partition {res.partition!r} ({p.max_time_min} min)")
    nodes = info.partition_nodes(res.partition)
    if p.max_nodes is not None and res.nodes > p.max_nodes:
        raise ResourceError(f"{res.key_of('nodes')}: {res.nodes} nodes exceed MaxNodes={p.max_nodes} "
                            f"of partition {res.partition!r}")
    if res.nodes > len(nodes):
        raise ResourceError(f"{res.key_of('nodes')}: {res.nodes} nodes requested but partition "
                            f"{res.partition!r} has {len(nodes)}")
    if not nodes:
        return
    want_feats = _features(res.constraint)
    checks = [("cpus", res.cpus, lambda n: n.cpus, "CPUs"),
              ("gpus", res.gpus, lambda n: n.gpus, "GPUs"),
              ("mem_gb", (res.mem_gb or 0) * 1024, lambda n: n.mem_mb, "MB of memory")]
    for name, want, have, unit in checks:
        best = max(have(n) for n in nodes)
        if want > best:
            shown = f"{res.mem_gb:g} GB" if name == "mem_gb" else f"{want}"
            raise ResourceError(f"{res.key_of(name)}: {shown} per node requested but the nodes of "
                                f"partition {res.partition!r} have at most {best} {unit}")
    if want_feats and not any(want_feats <= n.features for n in nodes):
        raise ResourceError(f"{res.key_of('constraint')}: no node of partition {res.partition!r} has "
                            f"feature(s) {'&'.join(sorted(want_feats))}")
    fits = [n for n in nodes if n.cpus >= res.cpus and n.gpus >= res.gpus
            and n.mem_mb >= (res.mem_gb or 0) * 1024 and want_feats <= n.features]
    if len(fits) < res.nodes:
        raise ResourceError(f"launcher.resources.{res.kind}: {res.nodes} node(s) with {res.describe()} "
                            f"requested together but only {len(fits)} node(s) of partition "
                            f"{res.partition!r} have all of it")


def _features(constraint: str | None) -> set[str]:
    if not constraint:
        return set()
    if any(ch in constraint for ch in "|[]*"):
        return set()          # alternatives: leave it to Slurm
    return {f.strip() for f in constraint.split("&") if f.strip()}
