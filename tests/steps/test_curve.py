"""The loss curve file (``loss_curve.json``): written by the evaluation step, read by export, registration, run-local.

``loss_curve.json`` here was written by the evaluation step before the curve was typed: the typed curve writes the
same bytes and reads them back unchanged.
"""

import json
import math
from pathlib import Path

from kubetune.steps.curve import LossCurve, LossPoint
from kubetune.steps.evaluate import Skipped, curve

WRITTEN = Path(__file__).with_name("loss_curve.json")


def _instructlab_run(root: Path) -> Path:
    rows = [{"epoch": 0, "step": s, "avg_loss": 3.0 - 0.1 * s, "samples_seen": 25 * s} for s in range(1, 21)]
    rows += [{"val_loss": 4.5, "val_num_tokens": 90, "step": 8}]
    (root / "training_params_and_metrics_global0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_evaluation_writes_the_curve_file_as_before(tmp_path):
    losses = [(100, 2.5), (200, 2.1), (300, 2.0), (400, 2.2), (500, 2.4)]
    points = [LossPoint(f"hf_format/samples_{s}", None, s, loss, 2.7**loss, 90) for s, loss in losses]
    points.append(LossPoint("final", None, None, float("nan"), float("nan"), 0))  # placed at the run's end
    written = curve(_instructlab_run(tmp_path), points, 2, [Skipped("hf_format/samples_600", "truncated")])
    assert written.to_json() == WRITTEN.read_text()


def test_the_curve_file_reads_into_typed_fields_and_writes_back_byte_for_byte():
    read = LossCurve.read(WRITTEN)
    assert read.to_json() == WRITTEN.read_text()
    assert read.axis == "samples" and read.best.checkpoint == "hf_format/samples_300" and read.best.step == 12
    assert read.overfitting is not None and read.overfitting.checkpoint == "hf_format/samples_300"
    assert read.points[-1].checkpoint == "final" and read.points[-1].x == 500 and math.isnan(read.points[-1].loss)
    assert read.backend.backend == "instructlab-training" and len(read.backend.train) == 20
    assert [(v.step, v.samples, v.loss, v.x) for v in read.backend.validation] == [(8, 200, 4.5, 200)]
    assert read.skipped == ["skipped: hf_format/samples_600: truncated"]
    assert read.losses()["hf_format/samples_200"] == 2.1 and read.kfp_metrics() == read.metrics
    assert read.metrics["best_samples"] == 300 and isinstance(read.metrics["checkpoints_evaluated"], int)


def test_an_absent_optional_curve_is_none(tmp_path):
    assert LossCurve.read_if_present(None) is None and LossCurve.read_if_present(tmp_path / "loss_curve.json") is None
