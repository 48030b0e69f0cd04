"""Kill a build midway, as a SIGKILL between chunks would (tests of resumable builds)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after_chunks(p: subprocess.Popen, partial: Path, pattern: str, n: int, timeout: float = 120) -> None:
    """SIGKILL `p`'s process group once `n` finished chunks (`pattern` in `partial`) exist; fails
    if the build ends before that or no chunk comes within `timeout` seconds."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if len(list(partial.glob(pattern))) >= n:
                break
            assert p.poll() is None, "the build finished before it could be killed"
            time.sleep(0.02)
        else:
            raise AssertionError("no chunk was finished in time")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
