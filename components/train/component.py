"""KFP wrappers of the training step (logic in ``kubetune.steps.train``), one per launcher: ``train_model`` trains
in its own pod (the only step that needs a GPU); ``train_on_trainjob`` runs it as a multi-node Kubeflow Trainer
TrainJob (``kubetune.cluster``). Each TrainJob setting keeps one name from the pipeline parameter to
``kubetune.cluster.trainjob.TrainJobSettings``."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")
TRAINING_IMAGE = os.environ.get("KUBETUNE_TRAINING_IMAGE", "ghcr.io/kubetune/kubetune-cuda:0.1.0")


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def train_model(
    kwargs_artifact: Input[Artifact],
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    model_uri: str,
    trained_model: Output[Model],
    metrics: Output[Metrics],
    workspace_dir: str = "",
    run_id: str = "",
    checkpoint_retention: int = 3,
):
    """Train with the backend the kwargs artifact names; checkpoints and the final model go to ``trained_model``.

    Args:
        kwargs_artifact: From ``validate_kwargs``.
        train_data: From ``prepare_data``: tokenized once, read as it is by every backend.
        validation_data: From ``prepare_data``, like ``train_data``.
        model_uri: PVC path, hub id or ``s3://bucket/prefix`` of the base model, or ``kubetune://tiny-llama`` (generated
            offline).
        trained_model: ``checkpoints/checkpoint-N`` and ``final`` (TRL), or ``hf_format/samples_N``
            (instructlab-training, mini-trainer), with the backend's own metrics files as they are.
        metrics: Final train loss (from the backend's metrics files, the same way for every backend), logged
            steps, samples; the run's throughput: ``train_seconds`` (first step to last), ``train_tokens_per_second``,
            ``train_samples_per_second``.
        workspace_dir: A mounted PVC: checkpoints are kept under ``workspace_dir/run_id`` and survive the pod, so
            that a retried or pre-empted step resumes from the last one instead of starting over.
        run_id: The run's folder under ``workspace_dir`` (the pipeline passes KFP's run id).
        checkpoint_retention: With the spec's ``checkpoint_storage`` (``s3://bucket/prefix``, where every complete
            save is mirrored and a fresh pod restores the newest): saves kept there per folder; 0 = all.
    """
    import os

    from kubetune.contract import TrainingSpec
    from kubetune.errors import reported
    from kubetune.steps.train import record, train

    workspace = os.path.join(workspace_dir, run_id or "run") if workspace_dir else None
    workspace = workspace or os.environ.get("KUBETUNE_LOCAL_WORKSPACE") or None  # set by `kubetune run-local`
    with reported():  # a mistake in the input ends the step with its report, not a traceback
        spec = TrainingSpec.read(kwargs_artifact.path)  # the artifact, read once
        result = train(
            spec, model_uri, train_data.path, trained_model.path, validation_data.path, workspace, retention=checkpoint_retention
        )
    record(result, trained_model, metrics)


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def train_on_trainjob(
    kwargs_artifact: Input[Artifact],
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    model_uri: str,
    trained_model: Output[Model],
    metrics: Output[Metrics],
    workspace_pvc: str,
    workspace_dir: str,
    run_id: str,
    nnodes: int = 2,
    gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    cpu_per_node: str = "",
    memory_per_node: str = "",
    trainjob_image: str = TRAINING_IMAGE,
    trainjob_runtime: str = "torch-distributed",
    kueue_queue: str = "",
    tolerations: list = [],  # noqa: B006 -- a component parameter's default, never mutated
    node_selector: dict = {},  # noqa: B006
    s3_secret: str = "",
    hf_secret: str = "",
    tracking_secret: str = "",
    queued_timeout_s: float = 86400.0,
    running_timeout_s: float = 0.0,
    kubeconfig: str = "",
    namespace: str = "",
    checkpoint_retention: int = 3,
    termination_grace_s: int = 300,
):
    """The training step as a Kubeflow Trainer TrainJob (``nnodes`` x ``gpus`` GPUs); this step itself needs no GPU.

    Same inputs and outputs as ``train_model``; checkpoints pass through the workspace PVC. Secrets are passed by
    name and reach the nodes as secret references.

    Args:
        kwargs_artifact: As for ``train_model``.
        train_data: As for ``train_model``.
        validation_data: As for ``train_model``.
        model_uri: PVC path or hub id of the base model, or ``kubetune://tiny-llama``; not s3:// (the launcher
            resolves it and holds no S3 credential).
        trained_model: As for ``train_model``: node 0's checkpoints published from the workspace.
        metrics: As for ``train_model``.
        workspace_pvc: A ReadWriteMany PVC, mounted here and on every node.
        workspace_dir: Where the PVC is mounted; the run works in ``workspace_dir/run_id``.
        run_id: The run's folder on the PVC, and the TrainJob's name (a restarted step re-attaches to it).
        nnodes: Training nodes (pods).
        gpus: GPUs per node, one training process each.
        accelerator_type: Extended resource name of the GPUs.
        cpu_per_node: CPU request and limit per node, e.g. "32" (empty: none).
        memory_per_node: Memory request and limit per node, e.g. "512Gi" (empty: none).
        trainjob_image: The nodes' image, with kubetune and the training backends installed.
        trainjob_runtime: The ClusterTrainingRuntime to run on.
        kueue_queue: A Kueue LocalQueue: the job is submitted suspended, labelled for it.
        tolerations: Tolerations of the nodes.
        node_selector: Node selector of the nodes.
        s3_secret: Secret name; the nodes get its keys as ``secretKeyRef`` env vars (the spec's own ``secrets``
            references too).
        hf_secret: Secret name, as ``s3_secret``.
        tracking_secret: Secret name, as ``s3_secret``.
        queued_timeout_s: Limit for waiting (Kueue, nodes); 0 = none.
        running_timeout_s: Limit for training; 0 = none.
        kubeconfig: A kubeconfig file if it exists, else the pod's ServiceAccount.
        namespace: The TrainJob's namespace; empty: the run's.
        checkpoint_retention: As for ``train_model``; node 0 mirrors (it has the S3 secret, the launcher none).
        termination_grace_s: The nodes' termination grace period: time for the SIGTERM save and its mirror.
    """
    from kubetune.cluster.launch import launch
    from kubetune.cluster.trainjob import settings_from
    from kubetune.cluster.watch import KubeApi, Limits
    from kubetune.contract import TrainingSpec
    from kubetune.errors import reported
    from kubetune.steps.train import record

    with reported():
        settings = settings_from(
            nnodes=nnodes,
            gpus=gpus,
            accelerator_type=accelerator_type,
            cpu_per_node=cpu_per_node,
            memory_per_node=memory_per_node,
            trainjob_image=trainjob_image,
            trainjob_runtime=trainjob_runtime,
            workspace_pvc=workspace_pvc,
            workspace_dir=workspace_dir,
            kueue_queue=kueue_queue,
            tolerations=tolerations,
            node_selector=node_selector,
            checkpoint_retention=checkpoint_retention,
            termination_grace_s=termination_grace_s,
        )
        result = launch(
            TrainingSpec.read(kwargs_artifact.path),
            model_uri,
            train_data.path,
            validation_data.path,
            trained_model.path,
            settings,
            run_id,
            secret_names={"s3": s3_secret, "hf": hf_secret, "tracking": tracking_secret},
            api=KubeApi.connect(kubeconfig or None, namespace or None),
            limits=Limits(queued_timeout_s=queued_timeout_s, running_timeout_s=running_timeout_s),
        )
    record(result, trained_model, metrics)
