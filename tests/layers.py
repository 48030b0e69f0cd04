"""The import graph of a package, read from its source (ast, nothing imported): circles between
modules, and imports from a lower layer up to a higher one.

The same logic as the team's /work/shared/tools/layers.py, kept in the project so that CI
checks it (tests/test_layers.py): every `import` / `from ... import` anywhere in a module
(function-level ones included) whose target is a module of the package is an edge.

    python tests/layers.py reasoning360        # from the repository root
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Low -> high. A module may import its own layer or lower ones only.
LAYER = {"atomic": 0, "cores": 0, "progress": 0, "tracking": 0, "tasks": 1,
         "engines": 2, "rollout": 2, "vllm": 2, "ray": 2,
         "sweep": 3, "stages": 3, "cluster": 4, "launchers": 4, "slurm": 4, "cli": 5, "serve": 5}


def modules(pkg: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `pkg` (named from pkg's parent)."""
    pkg = Path(pkg).resolve()
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        name = ".".join(f.relative_to(pkg.parent).with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = f
    return out


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `module` imports: absolute names, relative ones resolved,
    and `from X import Y` counted as X and X.Y when those are modules."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = module.split(".")
            if node.level:
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in names if t in known and t != module and not module.startswith(t + ".")}
    return out


def graph(pkg: Path) -> dict[str, set[str]]:
    mods = modules(pkg)
    return {m: imports(m, f, mods) for m, f in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in edges:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    return sorted((m, t) for m, ts in edges.items() for t in ts
                  if layer(m) is not None and layer(t) is not None and layer(t) > layer(m))


def main(argv: list[str]) -> int:
    edges = graph(Path(argv[0]))
    out, up = circles(edges), upward(edges)
    if out or up:
        print(f"import circles: {len(out)} {out[:2]}; upward imports: {len(up)} {up[:3]}")
        return 1
    print(f"{len(edges)} modules, no circle, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
