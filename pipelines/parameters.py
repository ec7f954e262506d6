"""Every pipeline parameter, declared once: its type, default and meaning, the pipelines that take it, and the
components it feeds. The pipelines' signatures and their tasks' inputs are built from this table
(``signature``, ``inputs_of``): a parameter feeds the component input of its own name, so a name is the same from
the pipeline to the component to ``kubetune.cluster.trainjob.TrainJobSettings``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune.backends.registry import DEFAULT_ALGORITHM, algorithms
from kubetune.runtime import SAMPLE_DATA_URI, TINY_MODEL_URI, TRAINING_IMAGE
from kubetune.secrets import STEP_SECRETS

# The demo that learns, on two CPU cores in about half a minute (run-local: 31 s): the tiny model's weights are random, so its
# token embeddings and output head are trained beside the LoRA adapters (modules_to_save; a real model's are trained
# already: do not copy that to one). Validation loss 6.24 untrained (TRL's eval_on_start: step 0 of the report's
# curve), 3.66 at the first checkpoint, 1.71 at the last (-53%; test_finetune.py::test_local_run_exports_...).
EMBEDDED_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.01,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "lora_r": 8,
    "lora_alpha": 16,
    "modules_to_save": ["lm_head", "embed_tokens"],
    "sample_packing": False,  # one sample per row (Training Hub packs by default): 36 steps an epoch
    "gradient_checkpointing": False,  # nothing worth saving on a tiny model; about 15% less CPU time
    "save_steps": 18,
    "save_total_limit": 4,  # all four (TRL keeps 3): the early first one shows how far the loss fell
    "eval_steps": 18,
    "eval_on_start": True,
    "logging_steps": 8,
    "seed": 42,
}
# sft and osft on the same model and data (CPU mode on two cores): a checkpoint every 96 of the 288 training
# samples of an epoch, so the evaluation step has several to compare; osft also validates on our split each epoch.
# Their learning rates were measured on the tiny model: sft 4.62 -> 3.33 over its six checkpoints, osft 3.48 -> 1.74.
EMBEDDED_SFT_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.005,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "max_tokens_per_gpu": 2048,
    "save_samples": 96,
    "seed": 42,
}
EMBEDDED_OSFT_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.01,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "max_tokens_per_gpu": 2048,
    "unfreeze_rank_ratio": 0.5,
    "min_samples_per_checkpoint": 96,
    "validate_at_epoch": True,
    "seed": 42,
}
EMBEDDED = {"lora_sft": EMBEDDED_KWARGS, "sft": EMBEDDED_SFT_KWARGS, "osft": EMBEDDED_OSFT_KWARGS}  # one per algorithm

REQUIRED = inspect.Parameter.empty  # a parameter without a default
FINETUNE = ("finetune", "finetune_workspace", "finetune_trainjob")
ON_A_PVC = ("finetune_workspace", "finetune_trainjob")
TRAINJOB = ("finetune_trainjob",)
EVALUATE_EXPORT = ("evaluate_export",)
PIPELINES = (*FINETUNE, *EVALUATE_EXPORT)


def steps_needing(secret: str) -> str:
    """The steps a secret is mounted in (``kubetune.secrets.STEP_SECRETS``), for its parameter's description."""
    return ", ".join(step for step, kinds in STEP_SECRETS.items() if secret in kinds)


@dataclass(frozen=True)
class Parameter:
    """One pipeline parameter. ``feeds``: the components it is passed to, as their input of the same name; the
    parameters that set a task rather than feed it (GPUs, secrets, the PVC) say where in ``doc``."""

    name: str
    type: type
    default: Any
    doc: str
    pipelines: tuple[str, ...]
    feeds: tuple[str, ...] = ()


P = Parameter
PARAMETERS = (
    # what is trained, on what
    P("model_uri", str, TINY_MODEL_URI, "Base model: a PVC path, a hub id, s3://..., or kubetune://tiny-llama.", FINETUNE,
      ("validate_kwargs", "prepare_data", "train_model", "train_on_trainjob", "evaluate_model", "benchmark_model",
       "export_model")),
    P("data_uri", str, SAMPLE_DATA_URI, "Training data (chat JSONL, Parquet, s3://, hf://, kubetune://sample-chat).",
      FINETUNE, ("prepare_data",)),
    P("algorithm", str, DEFAULT_ALGORITHM, f"The training algorithm: {', '.join(algorithms())}.", FINETUNE,
      ("validate_kwargs",)),
    P("training_kwargs", dict, EMBEDDED_KWARGS, "A Training Hub call's arguments as JSON (the spec).", FINETUNE,
      ("validate_kwargs",)),
    P("validation_uri", str, "", "A separate validation source; empty: split data_uri.", FINETUNE,
      ("prepare_data",)),
    P("validation_ratio", float, 0.1, "Share of data_uri held out for validation, in [0, 1).", FINETUNE,
      ("prepare_data",)),
    P("seed", int, 42, "Seed of the train/validation split.", FINETUNE, ("prepare_data",)),
    # the evaluate-export pipeline's inputs
    P("trained_model_uri", str, REQUIRED, "A directory of checkpoints (or one model) that KFP can import.",
      EVALUATE_EXPORT),
    P("data_uri", str, REQUIRED, "Held-out data, evaluated whole (nothing is split off).", EVALUATE_EXPORT,
      ("prepare_data",)),
    P("model_uri", str, REQUIRED, "The model that was fine-tuned: its tokenizer, and the base of LoRA adapters.",
      EVALUATE_EXPORT, ("prepare_data", "evaluate_model", "export_model")),
    P("max_seq_len", int, 4096, "Longest validation sample in tokens.", EVALUATE_EXPORT, ("prepare_data",)),
    # the benchmark (lm-eval on the base and the fine-tuned model, components/benchmark)
    P("benchmark_tasks", str, "", "Empty: no benchmark. held_out: offline tasks built from the validation chats; "
      "other comma-separated names are lm-eval tasks (they download their data).", FINETUNE,
      ("benchmark_model", "validate_kwargs")),
    P("benchmark_limit", int, 0, "Documents per benchmark task; 0: all.", FINETUNE, ("benchmark_model",)),
    # the promotion gate (export and registration run only for a promoted model)
    P("promotion_gate", str, "", 'Thresholds as a JSON object, e.g. {"max_validation_loss": 2.5, "no_overfitting": true}; '
      "also min_benchmark_delta, max_forgetting (need benchmark_tasks). Empty: always promoted.", FINETUNE,
      ("validate_kwargs", "promotion_gate")),
    # export
    P("merge_adapter", bool, True, "LoRA: merge the adapter into the base model, or export the adapter alone.",
      PIPELINES, ("export_model",)),
    P("export_checkpoint", str, "best", "best (lowest validation loss) or final.", PIPELINES,
      ("export_model", "benchmark_model", "promotion_gate")),
    P("export_destination", str, "", "Empty: the Model artifact; a local/PVC path, s3://bucket/prefix, or "
      "oci://registry/repository:tag (a modelcar for KServe).", PIPELINES, ("export_model",)),
    P("export_overwrite", bool, False, "Replace a destination that holds anything but a kubetune export.", PIPELINES,
      ("export_model",)),
    P("modelcar_base_image", str, "", "oci:// export: the modelcar's base image (empty: "
      "registry.access.redhat.com/ubi9/ubi-micro:latest), a registry reference or oci-layout:<dir>.", PIPELINES,
      ("export_model",)),
    # Model Registry (the register step runs only when registry_server is set)
    P("registry_server", str, "", "Model Registry address; empty: no registration.", FINETUNE,
      ("register_model",)),
    P("registry_model_name", str, "", "Registered model name.", FINETUNE, ("register_model",)),
    P("registry_model_version", str, "", "Registered version name.", FINETUNE, ("register_model",)),
    P("registry_uri", str, "", "The real URI of a local/PVC export, e.g. pvc://claim/path.", FINETUNE,
      ("register_model",)),
    P("registry_overwrite", bool, False, "Replace an existing registered version.", FINETUNE,
      ("register_model",)),
    # placement of the training (the in-pod training task's resources, or the TrainJob's nodes)
    P("gpus", int, 1, "GPUs of the training task, or of each TrainJob node (one process each).", FINETUNE,
      ("validate_kwargs", "train_on_trainjob")),
    P("accelerator_type", str, "nvidia.com/gpu", "Extended resource name of the GPUs.", FINETUNE,
      ("validate_kwargs", "train_on_trainjob")),
    P("gpu_memory_gib", float, 0.0, "Memory of one GPU in GiB, for the memory plan's verdict in the validation step; "
      "0: from accelerator_type (MIG) or node_selector's nvidia.com/gpu.product, else no verdict.", FINETUNE,
      ("validate_kwargs",)),
    P("tolerations", list, [], "Tolerations of the training pods.", FINETUNE, ("train_on_trainjob",)),
    P("node_selector", dict, {}, "Node selector of the training pods.", FINETUNE, ("validate_kwargs", "train_on_trainjob")),
    # secrets, by name (mounted as environment variables of the steps that need them; missing ones are skipped)
    P("s3_secret", str, "kubetune-s3", f"Secret with S3 credentials ({steps_needing('s3')}).", PIPELINES,
      ("train_on_trainjob",)),
    P("hf_secret", str, "kubetune-hf", f"Secret with the Hugging Face token ({steps_needing('hf')}).",
      PIPELINES, ("train_on_trainjob",)),
    P("tracking_secret", str, "kubetune-tracking", f"Secret with the trackers' credentials ({steps_needing('tracking')}).",
      FINETUNE, ("train_on_trainjob",)),
    P("registry_secret", str, "kubetune-registry", f"Secret with the Model Registry token ({steps_needing('registry')}).",
      FINETUNE),
    P("registry_auth_secret", str, "kubetune-oci-auth", "Secret of type kubernetes.io/dockerconfigjson with the "
      "container registry's credentials of an oci:// export (the export step's REGISTRY_AUTH_FILE; optional).", PIPELINES),
    # checkpoints mirrored to the spec's checkpoint_storage (s3://), and the SIGTERM save's time
    P("checkpoint_retention", int, 3, "checkpoint_storage (s3://): mirrored saves kept per folder, newest first; 0 = all.",
      FINETUNE, ("train_model", "train_on_trainjob")),
    P("termination_grace_s", int, 300, "TrainJob nodes' termination grace period: time for the SIGTERM save and its "
      "mirror (the in-pod task keeps the cluster's, KFP cannot set it).", TRAINJOB, ("train_on_trainjob",)),
    # checkpoints on a PVC
    P("workspace_pvc", str, "kubetune-workspace", "PVC of the training checkpoints (ReadWriteMany for a TrainJob).",
      ON_A_PVC, ("train_on_trainjob",)),
    # the TrainJob
    P("nnodes", int, 2, "Training nodes of the TrainJob.", TRAINJOB, ("validate_kwargs", "train_on_trainjob")),
    P("cpu_per_node", str, "", 'CPU request and limit per node, e.g. "32" (empty: none).', TRAINJOB,
      ("train_on_trainjob",)),
    P("memory_per_node", str, "", 'Memory request and limit per node, e.g. "512Gi" (empty: none).', TRAINJOB,
      ("train_on_trainjob",)),
    P("trainjob_runtime", str, "torch-distributed", "ClusterTrainingRuntime of the TrainJob.", TRAINJOB,
      ("train_on_trainjob",)),
    P("trainjob_image", str, TRAINING_IMAGE, "Image of the TrainJob's nodes.", TRAINJOB,
      ("train_on_trainjob",)),
    P("kueue_queue", str, "", "Kueue LocalQueue to wait in (empty: none).", TRAINJOB, ("train_on_trainjob",)),
    P("queued_timeout_s", float, 86400.0, "Longest wait for Kueue and nodes; 0 = no limit.", TRAINJOB,
      ("train_on_trainjob",)),
    P("running_timeout_s", float, 0.0, "Longest training; 0 = no limit.", TRAINJOB,
      ("train_on_trainjob",)),
    P("kubeconfig_secret", str, "kubetune-kubeconfig", "Optional secret with a kubeconfig, for a launcher outside "
      "the cluster (mounted on the TrainJob's launcher).", TRAINJOB),
)  # fmt: skip


def parameters_of(pipeline: str) -> tuple[Parameter, ...]:
    return tuple(p for p in PARAMETERS if pipeline in p.pipelines)


def inputs_of(component: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The inputs of ``component`` that the pipeline's ``arguments`` feed (same names)."""
    return {p.name: arguments[p.name] for p in PARAMETERS if component in p.feeds and p.name in arguments}


def signature(pipeline: str, returns: Any) -> Callable[[Callable[[dict[str, Any]], Any]], Callable[..., Any]]:
    """Decorate ``body(arguments)`` into ``pipeline``'s function: its signature and docstring (an ``Args:`` section,
    which KFP turns into the inputs' descriptions) come from the table."""
    table = parameters_of(pipeline)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(p.name, kind, default=p.default, annotation=p.type) for p in table]
    params.sort(key=lambda p: p.default is not REQUIRED)  # required ones first, in table order
    sig = inspect.Signature(params, return_annotation=returns)

    def decorate(body: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
        def pipeline_function(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)  # KFP passes every parameter, by position
            bound.apply_defaults()
            return body(dict(bound.arguments))

        pipeline_function.__name__ = pipeline_function.__qualname__ = pipeline
        pipeline_function.__module__ = body.__module__
        pipeline_function.__signature__ = sig  # type: ignore[attr-defined]
        pipeline_function.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
        args = "\n".join(f"    {p.name}: {p.doc}" for p in table)
        pipeline_function.__doc__ = f"{inspect.cleandoc(body.__doc__ or '')}\n\nArgs:\n{args}\n"
        return pipeline_function

    return decorate
