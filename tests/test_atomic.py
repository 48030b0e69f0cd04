"""reasoning360.atomic: a file appears whole or not at all, never a temp file left behind, and
the directory is made when missing (the writes a sweep records for thousands of stages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from reasoning360 import atomic


def _temps(d) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def test_write_makes_the_directory_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b" / "spec.json"
    atomic.write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    atomic.write_bytes(target, b"\x00\x01")                  # replaces, in an existing directory
    assert target.read_bytes() == b"\x00\x01"
    atomic.write_json(tmp_path / "s.json", {"b": 1, "a": [0.5]})
    assert (tmp_path / "s.json").read_text() == '{\n  "a": [\n    0.5\n  ],\n  "b": 1\n}\n'
    assert _temps(target.parent) == [] and _temps(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "DONE"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("")
    with pytest.raises(OSError):
        atomic.write_text(tmp_path / "dir", "a file cannot replace a non-empty directory")
    assert target.read_text() == "old"
    assert _temps(tmp_path) == []


def test_a_reader_never_sees_a_partial_file(tmp_path):
    """Another process reads the file while this one rewrites it 200 times: every read is one
    of the whole versions."""
    target = tmp_path / "big"
    versions = [b"a" * 1_000_000, b"b" * 1_500_000]
    atomic.write_bytes(target, versions[0])
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, os
        seen = set()
        while not os.path.exists({str(tmp_path / 'stop')!r}):
            with open({str(target)!r}, "rb") as fh:
                data = fh.read()
            seen.add((data[:1].decode(), len(data), data.count(data[:1]) == len(data)))
        print(json.dumps(sorted(seen)))
        """)], stdout=subprocess.PIPE, text=True)
    for i in range(200):
        atomic.write_bytes(target, versions[i % 2])
    (tmp_path / "stop").write_text("")
    out, _ = reader.communicate(timeout=60)
    seen = {tuple(x) for x in json.loads(out)}
    assert seen and seen <= {("a", 1_000_000, True), ("b", 1_500_000, True)}
    assert _temps(tmp_path) == [] and os.path.getsize(target) in (1_000_000, 1_500_000)
