"""Paired two-level bootstrap for the study's crossed design: every point of a sweep is scored
on the same test items, and every training seed is run for every point. A cell (one task x
variant x axes x eval role, under one decoding protocol) is a matrix Y[seed, item] of per-item
accuracy (the mean over samples when the protocol draws several).

A replicate resamples the seeds with replacement and the items with replacement. Every cell of
a `Group` (one task and protocol) uses the *same* draw, so a difference between two cells is
resampled paired on seeds and items: the item difficulty both sides share cancels in the
replicates as it does in the data.

The replicate is built on the two-way decomposition Y[s, i] = mu + a[s] + b[i] + e[s, i]:
    T* = mu + f_seed * sum_s W[s] a[s] / S  +  f_item * sum_i V[i] b[i] / N
with W the seed counts and V the item counts of the draw, a the seed effects (row means - mu),
b the item effects (column means - mu). The seed level carries the seed x item noise (a seed's
row mean averages it over the items), so the item level resamples only the item effects net of
that noise (f_item: the share of the column means' variance that is not noise, from a two-way
ANOVA without replication); otherwise the noise would be counted twice. f_seed scales the seed
level so that its own interval is as wide as a paired t-test's over the S seeds (Student t,
S-1 degrees of freedom): a percentile bootstrap over 5 values alone is over-confident (too
narrow by sqrt((S-1)/S), light-tailed, and z where t is due: 18% false positives).

The interval is the symmetric percentile interval, estimate -/+ the 95% quantile of
|replicate - estimate| (Hall 1988): with 5 seeds the replicates are skewed, and the
equal-tailed interval misses 0 half again as often as it should. With one seed there is no seed level and the
item level keeps the noise: the interval covers test-item sampling only.

`method="plain"` is the textbook crossed bootstrap instead (the mean of the resampled matrix,
sum_s sum_i W[s] V[i] Y[s, i] / (S N)): it counts the seed x item noise about three times (too
wide when items dominate) and under-covers when seeds dominate (18% false positives at 5 seeds
in tests/test_analysis.py); it is kept to show why. scipy.stats.bootstrap resamples one level
only, so the draw is numpy's; a replicate costs two matrix-vector products per cell.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
METHODS = ("corrected", "plain")


@dataclass(frozen=True)
class Estimate:
    """A mean or a difference with its percentile CI; `seeds` x `items` is what it rests on."""
    value: float
    lo: float
    hi: float
    seeds: int
    items: int

    @property
    def significant(self) -> bool:
        """True when the CI excludes 0 (both ends on the same side)."""
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @staticmethod
    def missing() -> "Estimate":
        return Estimate(math.nan, math.nan, math.nan, 0, 0)


@dataclass(frozen=True)
class Cell:
    """One cell's data: Y[s, i] for the seeds `seeds` (labels) and test items `items` (labels).
    NaN marks a (seed, item) that was not scored."""
    seeds: np.ndarray
    items: np.ndarray
    y: np.ndarray

    @staticmethod
    def of(y, seeds: Sequence | None = None, items: Sequence | None = None) -> "Cell":
        y = np.atleast_2d(np.asarray(y, dtype=float))
        s = np.arange(y.shape[0]) if seeds is None else np.asarray(seeds)
        i = np.arange(y.shape[1]) if items is None else np.asarray(items)
        return Cell(s, i, y)


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in parts)])


def resample_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) float32: how often each of n units is drawn in each replicate (n draws with
    replacement; every row sums to n). One unit is always drawn once."""
    if n == 1:
        return np.ones((n_boot, 1), dtype=np.float32)
    idx = rng.integers(0, n, size=(n_boot, n))
    idx += (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float32)


@functools.lru_cache(maxsize=64)
def t_quantile(df: int, q: float) -> float:
    """Student t quantile (scipy.special: a tenth of scipy.stats' import time)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def level_scales(d: np.ndarray, seed_part: np.ndarray | None = None,
                 level: float = LEVEL) -> tuple[float, float]:
    """(f_seed, f_item) for a seeds x items matrix `d` and the unscaled seed level of its
    replicates (see the module docstring): f_seed makes the seed level's own interval as wide
    as the paired t-test's over the S seeds; f_item keeps the part of the item effects'
    variance that is not seed x item noise."""
    S, N = d.shape
    if S < 2:
        return 0.0, 1.0
    grand = d.mean()
    a = d.mean(axis=1) - grand
    t_half = t_quantile(S - 1, 0.5 + level / 2) * math.sqrt(float((a ** 2).sum()) / (S - 1) / S)
    f_seed = 0.0
    if t_half > 0.0 and seed_part is not None:
        q = _quantile(np.abs(seed_part), level)
        f_seed = t_half / q if q > 0.0 else 0.0
    if N < 2:
        return f_seed, 0.0
    b = d.mean(axis=0) - grand
    var_b = float((b ** 2).sum() / (N - 1))
    if var_b <= 0.0:
        return f_seed, 0.0
    ms_e = float(((d - grand - a[:, None] - b[None, :]) ** 2).sum() / ((S - 1) * (N - 1)))
    f_item = math.sqrt(N / (N - 1) * max(0.0, var_b - ms_e / S) / var_b)
    return f_seed, f_item


def _interval(value: float, reps: np.ndarray, level: float) -> tuple[float, float]:
    """The symmetric percentile interval: value -/+ the `level` quantile of |replicate - value|."""
    half = _quantile(np.abs(reps - value), level)
    return value - half, value + half


def _quantile(x: np.ndarray, q: float) -> float:
    """np.quantile(x, q) (linear interpolation) by partition: several times faster."""
    pos = q * (len(x) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(x) - 1)
    part = np.partition(x, (lo, hi))
    return float(part[lo] + (pos - lo) * (part[hi] - part[lo]))


class Group:
    """Cells that share test items and training seeds (one task, one protocol), resampled
    with one draw per (seed set, item set): `mean(c)` and `diff(a, b)` are then paired.

    A comparison uses the seeds and items both cells have (a failed seed drops out of the
    comparisons of its cell only); a draw is seeded by (seed, key, seed set, item set), so
    results do not depend on the order of the calls or on the other cells."""

    def __init__(self, cells: Mapping[Hashable, Cell], *, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0, key: str = "", method: str = "corrected",
                 bounds: tuple[float, float] = (0.0, 1.0)):
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {METHODS}")
        self.cells = dict(cells)
        self.n_boot, self.level, self.seed, self.key, self.method = n_boot, level, seed, key, method
        self.bounds = bounds      # where a mean can lie (accuracy: [0, 1]); intervals are cut to it
        self._draws: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._reps: dict[tuple, np.ndarray] = {}
        self._index = {c: ({s: j for j, s in enumerate(cell.seeds)}, {i: j for j, i in enumerate(cell.items)})
                       for c, cell in self.cells.items()}

    # ------------------------------------------------------------------ support
    def _support(self, names: Sequence[Hashable]) -> tuple[tuple, tuple]:
        """Seeds and items every named cell has, with no NaN among them."""
        seeds = None
        for c in names:
            s = set(self.cells[c].seeds.tolist())
            seeds = s if seeds is None else seeds & s
        seeds = tuple(sorted(seeds or ()))
        items = None
        for c in names:
            cell = self.cells[c]
            rows = [self._index[c][0][s] for s in seeds]
            ok = ~np.isnan(cell.y[rows]).any(axis=0) if rows else np.zeros(len(cell.items), bool)
            s = set(cell.items[ok].tolist())
            items = s if items is None else items & s
        return seeds, tuple(sorted(items or ()))

    def _sub(self, c: Hashable, seeds: tuple, items: tuple) -> np.ndarray:
        si, ii = self._index[c]
        return self.cells[c].y[np.ix_([si[s] for s in seeds], [ii[i] for i in items])]

    def _draw(self, seeds: tuple, items: tuple) -> tuple[np.ndarray, np.ndarray]:
        k = (seeds, items)
        if k not in self._draws:
            rng = _rng(self.seed, self.key, repr(seeds), repr(items))
            self._draws[k] = (resample_counts(rng, self.n_boot, len(seeds)),
                              resample_counts(rng, self.n_boot, len(items)))
        return self._draws[k]

    def _parts(self, c: Hashable, seeds: tuple, items: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(B,) seed level and (B,) item level of the replicates of cell c, before scaling.
        Both are linear in Y: a difference's parts are the differences of its cells' parts.
        Computed for every cell that covers (seeds, items) at once: one matrix product."""
        k = (c, seeds, items)
        if k not in self._reps:
            W, V = self._draw(seeds, items)
            batch = [c] + [o for o in self.cells if o != c and (o, seeds, items) not in self._reps
                           and self._covers(o, seeds, items)]
            ys = [self._sub(o, seeds, items) for o in batch]
            if self.method == "plain":
                for o, y in zip(batch, ys):
                    full = (W * (V @ y.astype(np.float32).T)).sum(axis=1, dtype=np.float64) / y.size - y.mean()
                    self._reps[(o, seeds, items)] = (np.zeros_like(full), full)
            else:
                a = np.stack([y.mean(axis=1) - y.mean() for y in ys], axis=1).astype(np.float32)
                b = np.stack([y.mean(axis=0) - y.mean() for y in ys], axis=1).astype(np.float32)
                seed_parts = (W @ a).astype(np.float64) / len(seeds)
                item_parts = (V @ b).astype(np.float64) / len(items)
                for j, o in enumerate(batch):
                    self._reps[(o, seeds, items)] = (seed_parts[:, j], item_parts[:, j])
        return self._reps[k]

    def _covers(self, c: Hashable, seeds: tuple, items: tuple) -> bool:
        si, ii = self._index[c]
        if not all(s in si for s in seeds) or not all(i in ii for i in items):
            return False
        return not np.isnan(self._sub(c, seeds, items)).any()

    def _estimate(self, d: np.ndarray, seed_part: np.ndarray, item_part: np.ndarray,
                  bounds: tuple[float, float]) -> Estimate:
        value = float(d.mean())
        if self.method == "plain":
            reps = value + item_part
        else:
            f_seed, f_item = level_scales(d, seed_part, self.level)
            reps = value + f_seed * seed_part + f_item * item_part
        lo, hi = _interval(value, reps, self.level)
        return Estimate(value, max(lo, bounds[0]), min(hi, bounds[1]), d.shape[0], d.shape[1])

    # ------------------------------------------------------------------ public
    def mean(self, c: Hashable) -> Estimate:
        """The cell's mean accuracy over seeds and items, with its two-level CI."""
        seeds, items = self._support([c])
        if not seeds or not items:
            return Estimate.missing()
        return self._estimate(self._sub(c, seeds, items), *self._parts(c, seeds, items), self.bounds)

    def diff(self, a: Hashable, b: Hashable) -> Estimate:
        """mean(a) - mean(b) on the seeds and items both have, paired: one draw for both."""
        if a not in self.cells or b not in self.cells:
            return Estimate.missing()
        seeds, items = self._support([a, b])
        if not seeds or not items:
            return Estimate.missing()
        d = self._sub(a, seeds, items) - self._sub(b, seeds, items)
        (seed_a, item_a), (seed_b, item_b) = self._parts(a, seeds, items), self._parts(b, seeds, items)
        width = self.bounds[1] - self.bounds[0]
        return self._estimate(d, seed_a - seed_b, item_a - item_b, (-width, width))

    def best(self, names: Sequence[Hashable]) -> "Best":
        """Which of `names` is best: the highest mean is declared best only when its paired
        CI against every other (the runner-up included) lies above 0."""
        names = [n for n in names if n in self.cells]
        means = {n: self.mean(n) for n in names}
        ranked = sorted((n for n in names if np.isfinite(means[n].value)), key=lambda n: -means[n].value)
        if len(ranked) < 2:
            return Best(ranked[0] if ranked else None, None, Estimate.missing(), {}, means, declared=False)
        top, runner = ranked[0], ranked[1]
        vs = {n: self.diff(top, n) for n in ranked[1:]}
        tied = means[top].value == means[runner].value
        declared = not tied and all(e.lo > 0 for e in vs.values())
        return Best(top, runner, vs[runner], vs, means, declared)


@dataclass(frozen=True)
class Best:
    top: Hashable | None            # highest mean (declared best only if `declared`)
    runner_up: Hashable | None
    margin: Estimate                # top - runner-up, paired
    versus: dict                    # other -> top - other, paired
    means: dict
    declared: bool


# ---------------------------------------------------------------------------- one-off helpers

def mean_ci(y, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0, key: str = "",
            method: str = "corrected") -> Estimate:
    """Mean of Y (seeds x items) with the two-level CI."""
    return Group({0: Cell.of(y)}, n_boot=n_boot, level=level, seed=seed, key=key, method=method).mean(0)


def paired_diff(a, b, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0, key: str = "",
                method: str = "corrected") -> Estimate:
    """mean(a) - mean(b) for two seeds x items matrices on the same seeds and items, paired."""
    g = Group({0: Cell.of(a), 1: Cell.of(b)}, n_boot=n_boot, level=level, seed=seed, key=key, method=method)
    return g.diff(0, 1)


def unpaired_diff(a, b, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0, key: str = "",
                  method: str = "corrected") -> Estimate:
    """mean(a) - mean(b) with independent draws for the two sides: the CI the comparison would
    have if the two cells had been scored on different test items and unrelated seeds."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    reps = []
    for side, y in (("a", a), ("b", b)):
        g = Group({0: Cell.of(y)}, n_boot=n_boot, level=level, seed=seed, key=f"{key}/{side}", method=method)
        seed_part, item_part = g._parts(0, *g._support([0]))
        if method == "plain":
            reps.append(item_part)
        else:
            f_seed, f_item = level_scales(y, seed_part, level)
            reps.append(f_seed * seed_part + f_item * item_part)
    value = float(a.mean() - b.mean())
    lo, hi = _interval(value, value + reps[0] - reps[1], level)
    return Estimate(value, lo, hi, min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1]))
