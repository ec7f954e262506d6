"""The loss curve: what the evaluation step writes (``loss_curve.json``) and the export, registration, report and
run-local read, parsed once into ``LossCurve``.

Every checkpoint's validation loss (ours) on one axis with the backend's own train and validation series, the best
checkpoint, the overfitting point, the damaged checkpoints left out and the flat KFP metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


@dataclass
class LossPoint:
    """One checkpoint's held-out loss; ``checkpoint`` is relative to the training output."""

    checkpoint: str
    step: int | None
    samples: int | None
    loss: float
    perplexity: float
    tokens: int


@dataclass
class CurvePoint(LossPoint):
    x: int | None = None  # its place on the curve's axis


@dataclass
class SeriesPoint:
    """One loss the backend logged, placed on the curve's axis."""

    loss: float
    step: int | None = None
    samples: int | None = None
    x: int | None = None


@dataclass
class BackendLosses:
    backend: str | None = None  # None: no backend's metrics were found
    train: list[SeriesPoint] = field(default_factory=list)
    validation: list[SeriesPoint] = field(default_factory=list)


class LossCurve(BaseModel):
    """The evaluation's loss curve; ``to_json`` writes it as the evaluation step always has (``read`` reads it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    axis: Literal["samples", "step"]
    patience: int
    points: list[CurvePoint]
    best: LossPoint
    overfitting: LossPoint | None
    backend: BackendLosses
    skipped: list[str] = []  # "skipped: <checkpoint>: <reason>"
    metrics: dict[str, int | float] = {}  # flat KFP metrics (``kfp_metrics``)

    @classmethod
    def read(cls, path: str | Path) -> LossCurve:
        return cls.model_validate(json.loads(Path(path).read_text()))

    @classmethod
    def read_if_present(cls, path: str | Path | None) -> LossCurve | None:
        """The curve at ``path``; None when no path is given or no file is there (an optional step input)."""
        return cls.read(path) if path and Path(path).is_file() else None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)

    def at(self, point: LossPoint) -> int | None:
        """Where ``point`` lies on this curve's axis."""
        return getattr(point, self.axis)

    def losses(self) -> dict[str, float]:
        """Validation loss by checkpoint, in training order."""
        return {p.checkpoint: p.loss for p in self.points}

    def kfp_metrics(self) -> dict[str, int | float]:
        """The curve as flat KFP metrics (numbers only; -1 where there is none)."""
        over = self.overfitting
        out: dict[str, int | float] = {
            "checkpoints_evaluated": len(self.points),
            "final_validation_loss": self.points[-1].loss,
            "best_validation_loss": self.best.loss,
            "overfitting_detected": int(over is not None),
            "checkpoints_skipped": len(self.skipped),
        }
        for key in ("step", "samples"):
            value = getattr(self.best, key)
            out[f"best_{key}"] = value if value is not None else -1
            value = getattr(over, key) if over else None
            out[f"overfitting_{key}"] = value if value is not None else -1
        return out
