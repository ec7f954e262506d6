"""Loss curves for the export and registration tests, written by the evaluation step's own writer."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from kubetune.steps.curve import LossPoint
from kubetune.steps.evaluate import curve


def write_loss_curve(path: Path, losses: dict[str, float]) -> Path:
    """``loss_curve.json`` for checkpoints with these validation losses (no backend metrics): the lowest is best."""
    points = [LossPoint(name, None, None, loss, math.exp(loss), 100) for name, loss in losses.items()]
    with tempfile.TemporaryDirectory() as no_metrics:
        path.write_text(curve(no_metrics, points).to_json())
    return path
