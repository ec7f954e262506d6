"""One loss timeline from the training run's own metrics files, plus the best checkpoint and the overfitting point.

Backends log in their own formats; each backend reads its own files (``Backend.read_metrics``) into one
``BackendSeries``, the full series, never only the first or last value.
"""

from __future__ import annotations

from pathlib import Path

from kubetune.backends.base import Backend
from kubetune.backends.metrics import BackendSeries
from kubetune.backends.registry import BACKENDS
from kubetune.backends.training_record import trained_by


def read_backend_metrics(output_dir: str | Path, backend: Backend | None = None) -> BackendSeries:
    """The training run's own series (rank 0's files), read by ``backend``, else by the backend that trained
    ``output_dir`` (its record, ``kubetune-training.json``); an empty series where it logged none.

    Only a folder without the record (a model kubetune did not train: the evaluate_export pipeline evaluates an
    imported one) is asked of every registered backend in registry order, the first that finds its files wins."""
    backend = backend or trained_by(output_dir)
    for candidate in [backend] if backend else [cls() for cls in BACKENDS.values()]:
        if (series := candidate.read_metrics(Path(output_dir))) is not None:
            return series
    return BackendSeries()


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
