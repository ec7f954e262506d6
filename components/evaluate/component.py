"""KFP wrapper of the validation-loss evaluation step (logic in ``core.py``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def evaluate_model(
    trained_model: Input[Model],
    validation_data: Input[Dataset],
    metrics: Output[Metrics],
    loss_curve: Output[Artifact],
) -> NamedTuple("EvalOutputs", [("best_checkpoint", str), ("best_loss", float)]):
    """Held-out loss of every checkpoint; returns the best checkpoint (relative to the trained model)."""
    import json
    from collections import namedtuple

    from kubetune.components.evaluate.core import as_dicts, best, evaluate

    points = evaluate(trained_model.path, validation_data.path)
    winner = best(points)
    final = points[-1]
    metrics.log_metric("final_validation_loss", final.loss)
    metrics.log_metric("best_validation_loss", winner.loss)
    metrics.log_metric("checkpoints_evaluated", len(points))
    with open(loss_curve.path, "w") as f:
        json.dump({"points": as_dicts(points), "best": winner.checkpoint}, f, indent=2)
    for p in points:
        print(f"{p.checkpoint}: validation loss {p.loss:.4f} (perplexity {p.perplexity:.2f}, {p.tokens} tokens)")
    return namedtuple("EvalOutputs", ["best_checkpoint", "best_loss"])(winner.checkpoint, winner.loss)
