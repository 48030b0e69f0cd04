"""Progress for long loops: a rich bar on a terminal, a line every ~10% in a log file."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


class _LogProgress:
    def __init__(self, description: str, total: int, start: int):
        self.description, self.total, self.n = description, max(total, 1), start
        self._next, self._t0 = 0.0, time.time()

    def advance(self, n: int = 1, **fields) -> None:
        self.n += n
        frac = self.n / self.total
        if frac >= self._next or self.n >= self.total:
            extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            print(f"[{self.description}] {self.n}/{self.total} {time.time() - self._t0:.0f}s {extra}", flush=True)
            self._next = frac + 0.1


class _RichProgress:
    def __init__(self, progress, task_id):
        self._p, self._id = progress, task_id

    def advance(self, n: int = 1, **fields) -> None:
        info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._p.update(self._id, advance=n, info=info)


@contextmanager
def progress_bar(description: str, total: int, start: int = 0, enabled: bool = True) -> Iterator:
    """Yield an object with `.advance(n, **fields)`; fields show beside the bar."""
    if not enabled:
        yield _Null()
        return
    if not sys.stdout.isatty():
        yield _LogProgress(description, total, start)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False) as p:
        yield _RichProgress(p, p.add_task(description, total=total, completed=start, info=""))


class _Null:
    def advance(self, n: int = 1, **fields) -> None:
        pass
