"""KFP wrappers of the promotion gate (logic in ``kubetune.steps.gate``): the decision, and a refused run's model."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def promotion_gate(
    loss_curve: Input[Artifact],
    decision: Output[Markdown],
    metrics: Output[Metrics],
    benchmark_results: Input[Artifact] = None,
    promotion_gate: str = "",
    export_checkpoint: str = "best",
) -> bool:
    """Check the run's measurements against the promotion thresholds; returns whether the model is promoted.

    A refusal is a decision, not a failure: the step succeeds and returns False (the pipeline's ``dsl.If``).

    Args:
        loss_curve: The evaluation step's loss curve (best validation loss, overfitting point).
        decision: Each threshold, its bound, the value measured, pass or fail, and the verdict with its reasons;
            its metadata holds ``promoted`` and ``reasons``.
        metrics: ``promoted`` (1 or 0), ``thresholds_checked`` and the values measured: ``best_validation_loss``,
            ``exported_validation_loss`` (when finite), ``overfitting_before_export`` (1 or 0), ``benchmark_delta``
            and ``forgetting`` when a benchmark ran and every task scored a finite number.
        benchmark_results: The benchmark step's results (``kubetune.benchmark.results.BenchmarkResults``); optional.
        promotion_gate: JSON object of thresholds; empty: none, always promoted. ``max_validation_loss`` (the exported
            checkpoint's validation loss must be below it), ``no_overfitting`` (true: the validation loss must not
            rise, nor be non-finite, before the exported checkpoint), ``min_benchmark_delta`` (the benchmark's mean
            delta to the base model must be at least this), ``max_forgetting`` (its forgetting must be at most this);
            a non-finite loss or benchmark score fails the thresholds that measure it.
        export_checkpoint: The checkpoint the export takes (best or final): the one the thresholds measure.

    Returns:
        Output: True when the model is promoted (the pipeline exports and registers it), False when refused.
    """
    from kubetune.errors import reported
    from kubetune.steps.gate import gate_step

    with reported():  # a mistake in the thresholds ends the step with its report, not a traceback
        benchmark = benchmark_results.path if benchmark_results else None
        result = gate_step(promotion_gate, loss_curve.path, benchmark, decision.path, export_checkpoint)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    decision.metadata.update({"promoted": result.promoted, "reasons": result.reasons})
    print(f"promotion gate: {'promoted' if result.promoted else 'not promoted: ' + '; '.join(result.reasons)}")
    return result.promoted


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def refused_model(decision: Input[Markdown], model: Output[Model]):
    """The model output of a run the promotion gate refused: no weights, a README.md saying why.

    Its metadata holds ``promoted: False`` and the reasons: a refused run ends visibly, never with a model that
    looks exported.

    Args:
        decision: The promotion gate's decision (its metadata holds the reasons).
        model: A folder holding only README.md ("not promoted: <reasons>" and the decision's table).
    """
    from pathlib import Path

    from kubetune.steps.gate import write_refusal

    reasons = list(decision.metadata.get("reasons") or [])
    write_refusal(model.path, reasons, Path(decision.path).read_text())
    model.metadata.update({"promoted": False, "reasons": reasons})
    print(f"not promoted: {'; '.join(reasons)}; nothing was exported")
