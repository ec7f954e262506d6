"""KFP wrapper of the validation-loss evaluation step (logic in ``core.py``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def evaluate_model(
    trained_model: Input[Model],
    validation_data: Input[Dataset],
    metrics: Output[Metrics],
    loss_curve: Output[Artifact],
    report: Output[HTML],
    base_model_uri: str = "",
    patience: int = 2,
) -> NamedTuple("EvalOutputs", [("best_checkpoint", str), ("best_loss", float)]):
    """Held-out loss of every checkpoint; returns the best checkpoint (relative to the trained model).

    ``base_model_uri`` finds the base model of LoRA adapters when the training output does not hold it.
    """
    from collections import namedtuple

    from kubetune.errors import reported
    from kubetune.steps.evaluate import evaluate_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = evaluate_step(
            trained_model.path, validation_data.path, loss_curve.path, report.path, base_model_uri or None, patience
        )
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    loss_curve.metadata.update({"axis": result["axis"], "best": result["best"]["checkpoint"]})
    for p in result["points"]:
        print(f"{p['checkpoint']}: validation loss {p['loss']:.4f} (perplexity {p['perplexity']:.2f}, {p['tokens']} tokens)")
    best = result["best"]
    return namedtuple("EvalOutputs", ["best_checkpoint", "best_loss"])(best["checkpoint"], best["loss"])
