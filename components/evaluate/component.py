"""KFP wrapper of the validation-loss evaluation step (logic in ``kubetune.steps.evaluate``)."""

import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def evaluate_model(
    trained_model: Input[Model],
    validation_data: Input[Dataset],
    metrics: Output[Metrics],
    loss_curve: Output[Artifact],
    report: Output[HTML],
    model_uri: str = "",
    patience: int = 2,
) -> NamedTuple("EvalOutputs", [("best_checkpoint", str), ("best_loss", float)]):
    """Held-out loss of every checkpoint; returns the best checkpoint (relative to the trained model).

    Args:
        trained_model: A training output with HF checkpoints (full models or LoRA adapters).
        validation_data: A prepared validation set (``data.jsonl`` with ``input_ids``/``labels``), or chat JSONL.
        metrics: Final and best validation loss, best step/samples, overfitting detected and its step/samples
            (-1: none), checkpoints evaluated.
        loss_curve: JSON: every point (ours), the backend's full train and validation series, best, overfitting,
            skipped checkpoints.
        report: Train-vs-validation chart (inline SVG) and a table; the KFP UI renders it.
        model_uri: The model that was fine-tuned: the base of LoRA adapters, when the adapters' recorded base path
            is not readable here.
        patience: Rises of validation loss in a row that mark overfitting.

    Returns:
        best_checkpoint: Path of the best checkpoint, relative to ``trained_model`` (the export step takes it).
        best_loss: Its validation loss.
    """
    from collections import namedtuple

    from kubetune.errors import reported
    from kubetune.steps.evaluate import evaluate_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = evaluate_step(
            trained_model.path, validation_data.path, loss_curve.path, report.path, model_uri or None, patience
        )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    loss_curve.metadata.update({"axis": result.axis, "best": result.best.checkpoint})
    for p in result.points:
        print(f"{p.checkpoint}: validation loss {p.loss:.4f} (perplexity {p.perplexity:.2f}, {p.tokens} tokens)")
    return namedtuple("EvalOutputs", ["best_checkpoint", "best_loss"])(result.best.checkpoint, result.best.loss)
