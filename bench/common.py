"""What every benchmark suite shares: a figure measured beside its baseline.

A figure is never a bare number: machines here are shared and noisy, so each
is reported as the ratio to a baseline measured in the same run, with the
median, min and max of at least three repetitions of both.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Figure:
    suite: str
    name: str                  # what was measured, e.g. "reserve_now p50 (tcp)"
    unit: str                  # e.g. "us", "req/s"
    samples: list[float]       # one per repetition
    baseline: str              # what it is compared with
    baseline_samples: list[float]
    higher_is_better: bool
    target: float | None = None    # the ratio the issue asks for, if any
    limit: float | None = None     # an absolute ceiling on the median, in `unit`, if any
    note: str = ""
    params: dict = field(default_factory=dict)   # x-axis values for charts (e.g. {"evses": 200})
    # A second baseline from the same run, when one figure answers two questions
    # (rtt: the actor against the bare echo, what the design costs in total, and
    # against the I/O floor, what the actor adds); `second_target` is its ratio goal.
    second_baseline: str = ""
    second_baseline_samples: list[float] = field(default_factory=list)
    second_target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_samples)

    @property
    def ratio(self) -> float:
        """value / baseline: > 1 means more than the baseline."""
        base = self.baseline_median
        return self.median / base if base else float("inf")

    @property
    def second_baseline_median(self) -> float | None:
        return statistics.median(self.second_baseline_samples) if self.second_baseline_samples else None

    @property
    def second_ratio(self) -> float | None:
        """value / second baseline, if the figure has one."""
        base = self.second_baseline_median
        if base is None:
            return None
        return self.median / base if base else float("inf")

    def _within(self, ratio: float, target: float) -> bool:
        return ratio >= target if self.higher_is_better else ratio <= target

    @property
    def target_met(self) -> bool | None:
        if self.target is None and self.limit is None and self.second_target is None:
            return None
        met = True
        if self.target is not None:
            met = self._within(self.ratio, self.target)
        if self.second_target is not None and self.second_ratio is not None:
            met = met and self._within(self.second_ratio, self.second_target)
        if self.limit is not None:
            met = met and self.median <= self.limit
        return met

    def goal(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        parts = []
        if self.target is not None:
            parts.append(f"{sign} {self.target:g}x {self.baseline}")
        if self.second_target is not None:
            parts.append(f"{sign} {self.second_target:g}x {self.second_baseline}")
        if self.limit is not None:
            parts.append(f"<= {self.limit:g} {self.unit}")
        return " and ".join(parts)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(median=self.median, min=min(self.samples), max=max(self.samples),
                   baseline_median=self.baseline_median, ratio=self.ratio,
                   second_baseline_median=self.second_baseline_median,
                   second_ratio=self.second_ratio, target_met=self.target_met)
        return out


@dataclass
class Context:
    quick: bool
    progress: Callable[[str], None]

    def reps(self, full: int = 5) -> int:
        return 3 if self.quick else full


def print_progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def rotation(items: tuple | list, rep: int) -> list:
    """The order of `items` in repetition `rep`: each goes first, second, ... in turn,
    so the runs being compared are interleaved and drift on a noisy machine is shared."""
    shift = rep % len(items)
    return list(items[shift:]) + list(items[:shift])


def repeat(n: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def elapsed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
