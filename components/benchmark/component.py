"""KFP wrapper of the benchmark step: lm-eval on the base and the fine-tuned model (logic in ``kubetune.steps.benchmark``)."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def benchmark_model(
    trained_model: Input[Model],
    checkpoint: str,
    validation_data: Input[Dataset],
    results: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
    model_uri: str = "kubetune://tiny-llama",
    benchmark_tasks: str = "",
    benchmark_limit: int = 0,
    export_checkpoint: str = "best",
):
    """Benchmark scores of the base and the fine-tuned model with lm-evaluation-harness, chat template applied.

    Args:
        trained_model: A training output with HF checkpoints (full models or LoRA adapters).
        checkpoint: The checkpoint to score, relative to ``trained_model`` (the evaluate step's best_checkpoint).
        validation_data: The held-out chats (the prepare step's validation set): the ``held_out`` tasks are built
            from them (the last assistant turn is the reference answer, the conversation before it the prompt).
        results: JSON: per task the metric, its direction, base and fine-tuned scores and the delta; the mean delta
            and forgetting (``kubetune.benchmark.results.BenchmarkResults``).
        report: A Markdown table per task: base, fine-tuned, delta; forgetting and how lm-eval was run.
        metrics: ``<task>_base``, ``<task>_tuned``, ``<task>_delta`` per task, ``benchmark_delta``, ``forgetting``.
        model_uri: The base model that was fine-tuned (kubetune://tiny-llama, s3://, a local path or a hub id).
        benchmark_tasks: Empty: not run (the results say so). ``held_out``: the offline tasks built from
            ``validation_data``; other comma-separated names are lm-eval tasks (they may need the network).
        benchmark_limit: Documents per task, 0 for all.
        export_checkpoint: ``best`` scores ``checkpoint``, ``final`` the last one saved: the one the export takes.
    """
    from kubetune.errors import reported
    from kubetune.steps.benchmark import benchmark_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        outcome = benchmark_step(
            trained_model.path,
            checkpoint,
            validation_data.path,
            results.path,
            report.path,
            model_uri,
            benchmark_tasks,
            benchmark_limit,
            export_checkpoint,
        )
    for name, value in outcome.metrics().items():
        metrics.log_metric(name, value)
    results.metadata.update({"ran": outcome.ran, "tasks": [t.name for t in outcome.tasks]})
