"""KFP wrapper of the kwargs validation step (logic in ``kubetune.steps.validate``): cheap, CPU-only, fails fast."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Metrics, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def validate_kwargs(
    algorithm: str,
    training_kwargs: dict,
    kwargs_artifact: Output[Artifact],
    memory_plan: Output[Markdown],
    memory_metrics: Output[Metrics],
    model_uri: str = "",
    gpus: int = 1,
    nnodes: int = 1,
    gpu_memory_gib: float = 0.0,
    accelerator_type: str = "",
    node_selector: dict = {},  # noqa: B006 (KFP reads the default; the function never changes it)
    promotion_gate: str = "",
    benchmark_tasks: str = "",
):
    """Check every kwarg against the backend's real fields, plan the GPU memory of one training step, and write the
    normalized kwargs artifact; a spec whose plan exceeds the GPUs' memory stops here (exit code 2).

    Args:
        algorithm: One of the registered algorithms (``sft``, ``osft``, ``lora_sft`` built in).
        training_kwargs: The spec: a Training Hub call's arguments as JSON (model, data and output paths are bound
            by the pipeline).
        kwargs_artifact: JSON: ``schema_version``, ``algorithm``, ``backend``, curated parameters,
            ``backend_kwargs``, ``secrets`` (references only).
        memory_plan: The peak GPU memory per rank of one training step, part by part (traced or computed), and the
            verdict against the GPU's memory.
        memory_metrics: The plan's parts and total in GiB (``memory_total_gib``), and ``memory_gpu_gib`` when known.
        model_uri: The base model; only its config.json is read (empty: no plan).
        gpus: GPUs per node (one training process each).
        nnodes: Training nodes.
        gpu_memory_gib: Memory of one GPU in GiB; 0: derived from accelerator_type or the node selector's
            ``nvidia.com/gpu.product``, else no verdict.
        accelerator_type: The GPUs' extended resource name (a MIG profile names its memory).
        node_selector: The training pods' node selector.
        promotion_gate: The promotion gate's thresholds (JSON object), checked here so that a typo or a benchmark
            threshold without a benchmark stops the run before training.
        benchmark_tasks: The benchmark's tasks (empty: no benchmark runs); a name lm-eval does not know stops the
            run here, before training.
    """
    from kubetune.benchmark.harness import check as check_benchmark
    from kubetune.benchmark.tasks import parse_tasks
    from kubetune.contract.gate import check_gate
    from kubetune.errors import reported
    from kubetune.steps.validate import Placement, plan_to_markdown, validate_to_artifact

    placement = Placement(model_uri, gpus, nnodes, gpu_memory_gib, accelerator_type, node_selector)
    metrics = {}
    with reported():  # a mistake in the input, or a plan that does not fit, ends the step with its report
        check_gate(promotion_gate, benchmark_tasks)
        check_benchmark(parse_tasks(benchmark_tasks), 0)  # lm-eval's task index is read only for names beside held_out
        spec = validate_to_artifact(
            algorithm,
            training_kwargs,
            kwargs_artifact.path,
            lambda s: metrics.update(plan_to_markdown(s, placement, memory_plan.path)),
        )
    kwargs_artifact.metadata.update({"algorithm": spec.algorithm, "backend": spec.backend, "schema_version": spec.schema_version})
    for name, value in metrics.items():
        memory_metrics.log_metric(name, value)
    for note in spec.notes:
        print("note:", note)
    print(spec.to_json())
