"""The ``finetune`` pipeline: validate kwargs → prepare data → train → evaluate → export → register (optional).

Its defaults are the embedded default (a tiny generated model and the bundled sample data), so it runs
end to end on a laptop CPU with ``kubetune run-local``.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Metrics, Model

from kubetune.components.evaluate.component import evaluate_model
from kubetune.components.export.component import export_model
from kubetune.components.prepare.component import prepare_data
from kubetune.components.register.component import register_model
from kubetune.components.train.component import train_model, train_on_trainjob
from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.pipelines.kubernetes import on_gpus, use_secrets
from kubetune.runtime import SAMPLE_DATA_URI, TINY_MODEL_URI, TRAINING_IMAGE

# Small enough for two CPU cores in about a minute, large enough for validation loss to fall.
EMBEDDED_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.005,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "lora_r": 8,
    "lora_alpha": 16,
    "sample_packing": False,  # one sample per row (Training Hub packs by default): 36 steps an epoch
    "save_steps": 24,
    "eval_steps": 24,
    "logging_steps": 8,
    "seed": 42,
}
# sft and osft on the same model and data (CPU mode on two cores): a checkpoint every 96 of the 288 training
# samples of an epoch, so the evaluation step has several to compare; osft also validates on our split each epoch.
EMBEDDED_SFT_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.002,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "max_tokens_per_gpu": 2048,
    "save_samples": 96,
    "seed": 42,
}
EMBEDDED_OSFT_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.002,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "max_tokens_per_gpu": 2048,
    "unfreeze_rank_ratio": 0.5,
    "min_samples_per_checkpoint": 96,
    "validate_at_epoch": True,
    "seed": 42,
}
EMBEDDED = {"lora_sft": EMBEDDED_KWARGS, "sft": EMBEDDED_SFT_KWARGS, "osft": EMBEDDED_OSFT_KWARGS}

WORKSPACE = "/workspace"  # where the workspace PVC is mounted, in the training step and the TrainJob's nodes
KUBECONFIG_DIR = "/var/run/kubetune/kubeconfig"  # the optional kubeconfig secret, for a launcher outside the cluster
Outputs = NamedTuple(
    "Outputs",
    [("model", Model), ("kwargs", Artifact), ("loss_curve", Artifact), ("eval_report", HTML), ("eval_metrics", Metrics)],
)


def finetune_dag(p: dict, workspace_pvc=None, launcher: str = "in_pod") -> Outputs:
    """The tasks of the finetune pipelines; ``p`` holds the pipeline's parameters by name.

    ``launcher``: ``in_pod`` trains in the training task's own pod (GPUs requested there); ``trainjob`` has
    that task submit a Kubeflow Trainer TrainJob across nodes and follow it (no GPU on the task itself).
    """
    secrets = {"s3": p["s3_secret"], "hf": p["hf_secret"], "tracking": p["tracking_secret"], "registry": p["registry_secret"]}
    kwargs = validate_kwargs(algorithm=p["algorithm"], training_kwargs=p["training_kwargs"]).set_display_name("validate kwargs")
    data = prepare_data(
        data_uri=p["data_uri"],
        model_uri=p["model_uri"],
        kwargs_artifact=kwargs.outputs["kwargs_artifact"],
        validation_uri=p["validation_uri"],
        validation_ratio=p["validation_ratio"],
        seed=p["seed"],
    ).set_display_name("prepare data")
    use_secrets(data, "prepare", secrets)
    if launcher == "trainjob":
        trained = trainjob_task(p, kwargs, data)
    else:
        trained = train_model(
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            train_data=data.outputs["train_data"],
            validation_data=data.outputs["validation_data"],
            model_uri=p["model_uri"],
            **({"workspace_dir": WORKSPACE, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER} if workspace_pvc is not None else {}),
        ).set_display_name("train")
        if workspace_pvc is not None:  # checkpoints on a PVC: a retried or pre-empted training step resumes
            kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=WORKSPACE)
            trained.set_retry(num_retries=3, backoff_duration="60s")
        on_gpus(trained, p["gpus"], p["accelerator_type"], p["tolerations"], p["node_selector"])
        use_secrets(trained, "train", secrets)
    trained.set_caching_options(False)
    evaluated = evaluate_model(
        trained_model=trained.outputs["trained_model"],
        validation_data=data.outputs["validation_data"],
        base_model_uri=p["model_uri"],
    ).set_display_name("evaluate")
    use_secrets(evaluated, "evaluate", secrets)
    exported = (
        export_model(
            trained_model=trained.outputs["trained_model"],
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            checkpoint=evaluated.outputs["best_checkpoint"],
            loss_curve=evaluated.outputs["loss_curve"],
            train_data=data.outputs["train_data"],
            validation_data=data.outputs["validation_data"],
            select=p["export_checkpoint"],
            merge_adapter=p["merge_adapter"],
            destination=p["export_destination"],
            base_model_uri=p["model_uri"],
            overwrite=p["export_overwrite"],
        )
        .set_display_name("export")
        .set_caching_options(False)
    )
    use_secrets(exported, "export", secrets)
    with dsl.If(p["registry_server"] != "", name="register-in-model-registry"):
        registered = register_model(
            exported_model=exported.outputs["exported_model"],
            loss_curve=evaluated.outputs["loss_curve"],
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            server=p["registry_server"],
            name=p["registry_model_name"],
            version=p["registry_model_version"],
            published_uri=p["registry_uri"],
            overwrite=p["registry_overwrite"],
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ).set_display_name("register")
        registered.set_caching_options(False)
        use_secrets(registered, "register", secrets)
    return Outputs(
        exported.outputs["exported_model"],
        kwargs.outputs["kwargs_artifact"],
        evaluated.outputs["loss_curve"],
        evaluated.outputs["report"],
        evaluated.outputs["metrics"],
    )


def trainjob_task(p: dict, kwargs, data):
    """The training task with the ``trainjob`` launcher: CPU only, the workspace PVC, no secret values.

    It reaches the Kubernetes API with its pod's ServiceAccount (the Role in pipelines/manifests), or with the
    kubeconfig in the optional secret ``kubeconfig_secret``; the nodes get the secrets by name."""
    trained = train_on_trainjob(
        kwargs_artifact=kwargs.outputs["kwargs_artifact"],
        train_data=data.outputs["train_data"],
        validation_data=data.outputs["validation_data"],
        model_uri=p["model_uri"],
        workspace_pvc=p["workspace_pvc"],
        workspace_dir=WORKSPACE,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        nnodes=p["nnodes"],
        nproc_per_node=p["gpus"],
        accelerator_type=p["accelerator_type"],
        cpu_per_node=p["cpu_per_node"],
        memory_per_node=p["memory_per_node"],
        image=p["trainjob_image"],
        runtime=p["trainjob_runtime"],
        queue=p["kueue_queue"],
        tolerations=p["tolerations"],
        node_selector=p["node_selector"],
        hf_secret=p["hf_secret"],
        tracking_secret=p["tracking_secret"],
        queued_timeout_s=p["queued_timeout_s"],
        running_timeout_s=p["running_timeout_s"],
        kubeconfig=f"{KUBECONFIG_DIR}/config",
    ).set_display_name("train (TrainJob)")
    kubernetes.mount_pvc(trained, pvc_name=p["workspace_pvc"], mount_path=WORKSPACE)
    kubernetes.use_secret_as_volume(trained, secret_name=p["kubeconfig_secret"], mount_path=KUBECONFIG_DIR, optional=True)
    trained.set_retry(num_retries=3, backoff_duration="60s")  # a restarted launcher re-attaches to its TrainJob
    return trained


@dsl.pipeline(name="kubetune-finetune", description="Fine-tune an LLM: validate, prepare, train, evaluate, export, register.")
def finetune(
    model_uri: str = TINY_MODEL_URI,
    data_uri: str = SAMPLE_DATA_URI,
    algorithm: str = "lora_sft",
    training_kwargs: dict = EMBEDDED_KWARGS,
    validation_uri: str = "",
    validation_ratio: float = 0.1,
    seed: int = 42,
    merge_adapter: bool = True,
    export_checkpoint: str = "best",
    export_destination: str = "",
    export_overwrite: bool = False,
    registry_server: str = "",
    registry_model_name: str = "",
    registry_model_version: str = "",
    registry_uri: str = "",
    registry_overwrite: bool = False,
    gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    tolerations: list = [],  # noqa: B006 -- a pipeline parameter's default, never mutated
    node_selector: dict = {},  # noqa: B006
    s3_secret: str = "kubetune-s3",
    hf_secret: str = "kubetune-hf",
    tracking_secret: str = "kubetune-tracking",
    registry_secret: str = "kubetune-registry",
) -> Outputs:
    """``training_kwargs`` is a Training Hub call's arguments as JSON; the rest says where things are and run.

    Secrets are named, never given: each ``*_secret`` is a Kubernetes secret whose keys become environment
    variables of the steps that need them (see pipelines/kubernetes.py); missing ones are skipped.
    """
    return finetune_dag(locals())


@dsl.pipeline(
    name="kubetune-finetune-workspace",
    description="finetune, with checkpoints on a PVC: a retried or pre-empted training step resumes from its last one.",
)
def finetune_workspace(
    model_uri: str = TINY_MODEL_URI,
    data_uri: str = SAMPLE_DATA_URI,
    algorithm: str = "lora_sft",
    training_kwargs: dict = EMBEDDED_KWARGS,
    validation_uri: str = "",
    validation_ratio: float = 0.1,
    seed: int = 42,
    merge_adapter: bool = True,
    export_checkpoint: str = "best",
    export_destination: str = "",
    export_overwrite: bool = False,
    registry_server: str = "",
    registry_model_name: str = "",
    registry_model_version: str = "",
    registry_uri: str = "",
    registry_overwrite: bool = False,
    gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    tolerations: list = [],  # noqa: B006 -- a pipeline parameter's default, never mutated
    node_selector: dict = {},  # noqa: B006
    s3_secret: str = "kubetune-s3",
    hf_secret: str = "kubetune-hf",
    tracking_secret: str = "kubetune-tracking",
    registry_secret: str = "kubetune-registry",
    workspace_pvc: str = "kubetune-workspace",
) -> Outputs:
    """``finetune`` with the training step's checkpoints on the PersistentVolumeClaim ``workspace_pvc``
    (mounted at /workspace, under the run's id); the step is retried up to 3 times and resumes where it stopped."""
    return finetune_dag(locals(), workspace_pvc)


@dsl.pipeline(
    name="kubetune-finetune-trainjob",
    description="finetune, with training as a multi-node Kubeflow Trainer TrainJob (nnodes x gpus), same kwargs artifact.",
)
def finetune_trainjob(
    model_uri: str = TINY_MODEL_URI,
    data_uri: str = SAMPLE_DATA_URI,
    algorithm: str = "lora_sft",
    training_kwargs: dict = EMBEDDED_KWARGS,
    validation_uri: str = "",
    validation_ratio: float = 0.1,
    seed: int = 42,
    merge_adapter: bool = True,
    export_checkpoint: str = "best",
    export_destination: str = "",
    export_overwrite: bool = False,
    registry_server: str = "",
    registry_model_name: str = "",
    registry_model_version: str = "",
    registry_uri: str = "",
    registry_overwrite: bool = False,
    gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    tolerations: list = [],  # noqa: B006 -- a pipeline parameter's default, never mutated
    node_selector: dict = {},  # noqa: B006
    s3_secret: str = "kubetune-s3",
    hf_secret: str = "kubetune-hf",
    tracking_secret: str = "kubetune-tracking",
    registry_secret: str = "kubetune-registry",
    workspace_pvc: str = "kubetune-workspace",
    nnodes: int = 2,
    cpu_per_node: str = "",
    memory_per_node: str = "",
    trainjob_runtime: str = "torch-distributed",
    trainjob_image: str = TRAINING_IMAGE,
    kueue_queue: str = "",
    queued_timeout_s: float = 86400.0,
    running_timeout_s: float = 0.0,
    kubeconfig_secret: str = "kubetune-kubeconfig",
) -> Outputs:
    """``finetune`` whose training runs as a TrainJob of ``nnodes`` nodes with ``gpus`` GPUs (one process
    each) per node, on the ClusterTrainingRuntime ``trainjob_runtime``. ``workspace_pvc`` must be
    ReadWriteMany: the nodes read their inputs and write checkpoints there. ``kueue_queue``: a Kueue
    LocalQueue to wait in. ``queued_timeout_s``/``running_timeout_s``: 0 = no limit."""
    return finetune_dag(locals(), workspace_pvc, launcher="trainjob")
