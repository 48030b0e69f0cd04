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
cluster.partition. `gpus: node` means all of cluster.gpus_per_node.

Every check that can fail does so before anything is submitted, in one line naming the key
the user should change (`check_profile` without Slurm, `check_against` with what
`scontrol show partition/node` reported).
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
    """Static checks of the site profile (no Slurm needed)."""
    cl = c.get("cluster") or {}
    unknown = sorted(set(cl) - PROFILE_KEYS)
    if unknown:
        raise ResourceError(f"cluster.{unknown[0]}: unknown site-profile key "
                            f"(known: {', '.join(sorted(PROFILE_KEYS))})")
    if not isinstance(cl.get("partition"), str) or not cl["partition"]:
        raise ResourceError(f"cluster.partition: missing (cluster={cl.get('name')}); name the Slurm partition")
    _int(cl.get("gpus_per_node", 0), "cluster.gpus_per_node")
    for key in ("cpus_per_gpu", "cpus_per_task"):
        _int(cl.get(key), f"cluster.{key}", minimum=1, allow_none=True)
    for key in ("mem_per_gpu_gb", "mem_gb"):
        _num(cl.get(key), f"cluster.{key}")
    _int(cl.get("time_minutes"), "cluster.time_minutes", minimum=1)
    if not isinstance(cl.get("setup") or [], list):
        raise ResourceError("cluster.setup: expected a list of shell lines")
    if not isinstance(cl.get("env") or {}, dict):
        raise ResourceError("cluster.env: expected a mapping NAME: value")
    cont = cl.get("container")
    if cont is not None and not (isinstance(cont, dict) and isinstance(cont.get("flags") or [], list)):
        raise ResourceError("cluster.container: expected null or {flags: [srun flags...]}")
    for where in ("launcher", "cluster"):
        res = (c.get(where) or {}).get("resources") or {}
        if not isinstance(res, dict):
            raise ResourceError(f"{where}.resources: expected a mapping kind -> resources")
        for kind, r in res.items():
            known = resource_keys()
            if kind not in known:
                raise ResourceError(f"{where}.resources.{kind}: unknown stage kind (known: {', '.join(known)})")
            for f in (r or {}):
                if f not in FIELDS:
                    raise ResourceError(f"{where}.resources.{kind}.{f}: unknown field (known: {', '.join(FIELDS)})")


def resolve(c: dict[str, Any], kind: str) -> Resources:
    """The resources of one stage kind (see the module docstring for precedence)."""
    cl = c["cluster"]
    base = ((c.get("launcher") or {}).get("resources") or {}).get(kind) or {}
    site = (cl.get("resources") or {}).get(kind) or {}
    src: dict[str, str] = {}

    def get(name: str) -> Any:
        if site.get(name) is not None:
            src[name] = f"cluster.resources.{kind}.{name}"
            return site[name]
        if base.get(name) is not None:
            src[name] = f"launcher.resources.{kind}.{name}"
            return base[name]
        return None

    gpn = int(cl.get("gpus_per_node") or 0)
    gpus = get("gpus")
    if gpus == "node":
        gpus = gpn
    gpus = _int(gpus or 0, src.get("gpus", f"launcher.resources.{kind}.gpus"))
    nodes = _int(get("nodes") or 1, src.get("nodes", f"launcher.resources.{kind}.nodes"), minimum=1)
    cpus = get("cpus")
    if cpus is None:
        if gpus and cl.get("cpus_per_gpu"):
            cpus, src["cpus"] = gpus * int(cl["cpus_per_gpu"]), "cluster.cpus_per_gpu"
        else:
            cpus, src["cpus"] = cl.get("cpus_per_task") or 1, "cluster.cpus_per_task"
    cpus = _int(cpus, src["cpus"], minimum=1)
    mem = get("mem_gb")
    if mem is None:
        if gpus and cl.get("mem_per_gpu_gb"):
            mem, src["mem_gb"] = gpus * float(cl["mem_per_gpu_gb"]), "cluster.mem_per_gpu_gb"
        elif cl.get("mem_gb") is not None:
            mem, src["mem_gb"] = cl["mem_gb"], "cluster.mem_gb"
    mem = _num(mem, src.get("mem_gb", f"launcher.resources.{kind}.mem_gb"))
    time_min = get("time_minutes")
    if time_min is None:
        time_min, src["time_minutes"] = cl.get("time_minutes") or 60, "cluster.time_minutes"
    time_min = _int(time_min, src["time_minutes"], minimum=1)
    part = get("partition")
    if part is None:
        if not gpus and cl.get("cpu_partition"):
            part, src["partition"] = cl["cpu_partition"], "cluster.cpu_partition"
        else:
            part, src["partition"] = cl["partition"], "cluster.partition"
    constraint = get("constraint")
    if constraint is None and gpus:
        constraint = cl.get("constraint")
        if constraint:
            src["constraint"] = "cluster.constraint"
    if gpus > gpn:
        raise ResourceError(f"{src.get('gpus', f'launcher.resources.{kind}.gpus')}: {gpus} GPUs per node "
                            f"requested but cluster.gpus_per_node is {gpn} (cluster={cl.get('name')})")
    return Resources(kind, str(part), nodes, gpus, cpus, mem, time_min, constraint,
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


def gres_flags(res: Resources, cluster: dict[str, Any]) -> dict[str, Any]:
    """The sbatch keys that ask for the GPUs: `--gres` when the profile spells it, else
    `--gpus-per-node`."""
    if not res.gpus:
        return {}
    tmpl = cluster.get("gres")
    if tmpl:
        return {"gres": str(tmpl).format(gpus=res.gpus)}
    return {"gpus_per_node": res.gpus}
