"""One loss timeline from every backend's own metrics files, plus the best checkpoint and the overfitting point.

Backends log in their own formats; each reader returns the full series, never only the first or last value:

- instructlab-training: ``training_params_and_metrics_global{rank}.jsonl`` (``avg_loss``, ``samples_seen``;
  ``val_loss`` rows when it validates);
- mini-trainer: ``training_metrics_{rank}.jsonl`` (``loss``, ``total_samples_accumulated``; a fresh
  ``val_loss`` where ``val_num_loss_counted_tokens`` is present, since every row repeats the last one), merged
  with ``kubetune_validation_{rank}.jsonl`` (every validation loss, written by the training step's callback);
- TRL: ``trainer_state.json`` saved at the end of training, else the newest ``checkpoint-N``'s (``log_history``
  with ``loss`` and ``eval_loss``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "train": [asdict(p) for p in self.train],
            "validation": [asdict(p) for p in self.validation],
        }


def _rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: the rest of the series still counts
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def read_instructlab(path: Path) -> BackendSeries:
    """instructlab-training appends to its file: a resumed run continues the steps, a run that started again
    from scratch in the same folder replaces the rows from its first step on."""
    series = BackendSeries("instructlab-training")
    for row in _rows(path):
        step = row.get("step")
        if _finite(row.get("avg_loss")):
            if isinstance(step, int) and series.train and (series.train[-1].step or 0) >= step:  # started again
                series.train = [p for p in series.train if p.step is None or p.step < step]
                series.validation = [p for p in series.validation if p.step is None or p.step < step]
            series.train.append(Point(float(row["avg_loss"]), step, row.get("samples_seen")))
        if _finite(row.get("val_loss")):
            series.validation = [p for p in series.validation if p.step is None or p.step != step]
            series.validation.append(Point(float(row["val_loss"]), step))
    for p in series.validation:
        p.samples = series.samples_at_step(p.step) if p.step is not None else None
    return series


def read_mini_trainer(path: Path) -> BackendSeries:
    """mini-trainer's ``training_metrics_{rank}.jsonl``, with the validation losses our callback wrote beside it
    (``kubetune_validation_{rank}.jsonl``: every trigger's, where mini-trainer's file holds only
    ``validation_frequency`` / ``min_samples_per_validation`` ones). One point per step: the newest row wins, and a
    run that started again from scratch in the same folder replaces the rows from its first step on."""
    train, fresh = [], []
    for row in _rows(path):
        step, samples = row.get("step"), row.get("total_samples_accumulated")
        if _finite(row.get("loss")):
            train.append(Point(float(row["loss"]), step, samples))
        if "val_num_loss_counted_tokens" in row and _finite(row.get("val_loss")):
            fresh.append(Point(float(row["val_loss"]), step, samples))
    logged = path.with_name(path.name.replace("training_metrics_", "kubetune_validation_", 1))
    ours = [
        Point(float(row["val_loss"]), row.get("step"), row.get("total_samples_accumulated"))
        for row in (_rows(logged) if logged.is_file() else [])
        if _finite(row.get("val_loss"))
    ]
    validation = {p.step: p for p in _latest_run(fresh)} | {p.step: p for p in _latest_run(ours)}
    ordered = sorted(validation.values(), key=lambda p: (p.step is None, p.step or 0))
    return BackendSeries("mini-trainer", _latest_run(train), ordered)


def _latest_run(points: list[Point]) -> list[Point]:
    """``points`` in file order, one per step: a step logged again (a duplicate, or a run that started over)
    drops what was logged at that step and after it."""
    kept: list[Point] = []
    for p in points:
        while p.step is not None and kept and kept[-1].step is not None and kept[-1].step >= p.step:
            kept.pop()
        kept.append(p)
    return kept


def read_trl(path: Path) -> BackendSeries:
    series = BackendSeries("trl")
    for entry in json.loads(path.read_text(encoding="utf-8")).get("log_history", []):
        if _finite(entry.get("loss")):
            series.train.append(Point(float(entry["loss"]), entry.get("step")))
        if _finite(entry.get("eval_loss")):
            series.validation.append(Point(float(entry["eval_loss"]), entry.get("step")))
    return series


def read_backend_metrics(output_dir: str | Path) -> BackendSeries:
    """The training run's own series (rank 0's files), from whichever backend wrote ``output_dir``."""
    root = Path(output_dir)
    for pattern, reader in (
        ("training_params_and_metrics_global0.jsonl", read_instructlab),
        ("training_metrics_0.jsonl", read_mini_trainer),
    ):
        found = sorted(root.rglob(pattern))
        if found:
            return reader(found[0])
    finished = sorted(root.rglob("trainer_state.json"), key=lambda p: len(p.parts))
    whole = finished[0] if finished and not finished[0].parent.name.startswith("checkpoint-") else None
    if whole and (series := _read_trl_or_none(whole)) is not None:  # saved at the end: the whole history
        return series
    states = [
        p
        for p in root.rglob("checkpoint-*/trainer_state.json")
        if p.parent.name.split("-")[-1].isdigit() and "incomplete" not in p.relative_to(root).parts
    ]
    for state in sorted(states, key=lambda p: int(p.parent.name.split("-")[-1]), reverse=True):
        if (series := _read_trl_or_none(state)) is not None:  # a damaged newest one: the one before it
            return series
    return BackendSeries()


def _read_trl_or_none(path: Path) -> BackendSeries | None:
    try:
        return read_trl(path)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, TypeError):
        return None


def train_loss_between(series: BackendSeries, start: float | None, end: float, axis: str) -> float | None:
    """Mean train loss logged in (start, end] on ``axis`` ("step" or "samples"): smooths per-step noise."""
    values = [p.loss for p in series.train if (x := getattr(p, axis)) is not None and (start is None or x > start) and x <= end]
    return sum(values) / len(values) if values else None


def overfitting_point(
    losses: list[float], xs: list[float | None], series: BackendSeries, axis: str, patience: int = 2
) -> int | None:
    """Index of the evaluation after which validation loss rose ``patience`` times in a row while train loss fell.

    Without a train-loss series, a rise of validation loss alone marks it.
    """
    for i in range(len(losses) - patience):
        window = losses[i : i + patience + 1]
        if not all(b > a for a, b in zip(window, window[1:], strict=False)):
            continue
        if None in xs[i : i + patience + 1] or not series.train:
            return i
        before = train_loss_between(series, xs[i - 1] if i else None, xs[i], axis)
        after = train_loss_between(series, xs[i + patience - 1], xs[i + patience], axis)
        if before is None or after is None or after < before:
            return i
    return None
