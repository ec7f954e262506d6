"""The loss series a backend logged, in one backend-neutral shape (each backend reads its own files into it)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Point:
    loss: float
    step: int | None = None
    samples: int | None = None


@dataclass
class BackendSeries:
    backend: str | None = None
    train: list[Point] = field(default_factory=list)
    validation: list[Point] = field(default_factory=list)

    def step_at_samples(self, samples: int) -> int | None:
        """The first logged step at which ``samples`` samples had been seen."""
        return next((p.step for p in self.train if p.samples is not None and p.samples >= samples), None)

    def samples_at_step(self, step: int) -> int | None:
        return next((p.samples for p in self.train if p.step == step), None)


def metrics_file(output_dir: Path, name: str) -> Path | None:
    """The first file called ``name`` anywhere under ``output_dir`` (path order), or None."""
    return next(iter(sorted(Path(output_dir).rglob(name))), None)


def json_rows(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines metrics file; a line cut by a kill mid-write is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the rest of the series still counts
        if isinstance(row, dict):
            rows.append(row)
    return rows


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def latest_run(points: list[Point]) -> list[Point]:
    """``points`` in file order, one per step: a step logged again (a duplicate, or a run that started over)
    drops what was logged at that step and after it."""
    kept: list[Point] = []
    for p in points:
        while p.step is not None and kept and kept[-1].step is not None and kept[-1].step >= p.step:
            kept.pop()
        kept.append(p)
    return kept
