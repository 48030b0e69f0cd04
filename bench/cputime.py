"""Wall time and CPU-seconds of a command and of every process it starts, orphans included.

    python bench/cputime.py CMD [ARGS ...]

Why: RUSAGE_CHILDREN counts only descendants that were waited for. A sweep's stages run in
processes forked by multiprocessing's forkserver, which nobody waits for (it exits when the sweep
does and is reparented), and Ray's daemons outlive their parents the same way; a plain
`/usr/bin/time` misses their CPU. This process makes itself a child subreaper (Linux
PR_SET_CHILD_SUBREAPER), so every orphan below it is reparented here and reaped, and its CPU
counts.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def run_counted(cmd: list[str], linger_s: float = 60.0, **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd` (subprocess.run keywords) -> (result, wall seconds until it returned, CPU-seconds
    of it and of all its descendants that exited within `linger_s` after it; a process still
    running then is named on stderr and its CPU is not counted)."""
    if ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, **kwargs)
    wall = time.perf_counter() - t0
    deadline = time.monotonic() + linger_s
    while True:                       # orphans reparented here: reap them as they exit
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                left = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid=,args="],
                                      capture_output=True, text=True).stdout.strip()
                print(f"cputime: still running {linger_s:.0f} s later, not counted:\n{left}", file=sys.stderr)
                break
            time.sleep(0.1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result, wall, cpu


if __name__ == "__main__":
    res, wall, cpu = run_counted(sys.argv[1:])
    print(f"{wall:.1f} s wall, {cpu:.1f} CPU-s (every descendant)", file=sys.stderr)
    sys.exit(res.returncode)
