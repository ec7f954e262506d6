"""KFP wrappers of the training step (logic in ``core.py``), one per launcher: ``train_model`` trains in its
own pod (the only step that needs a GPU); ``train_on_trainjob`` runs it as a multi-node Kubeflow Trainer TrainJob."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubetune.runtime import RUNTIME_IMAGE, TRAINING_IMAGE


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
):
    """Train with the backend the kwargs artifact names; checkpoints and the final model go to ``trained_model``.

    ``workspace_dir`` (a mounted PVC): checkpoints are kept under ``workspace_dir/run_id``, so that a retried or
    pre-empted step resumes from the last one instead of starting over.
    """
    import os

    from kubetune.errors import reported
    from kubetune.steps.train import record, train

    workspace = os.path.join(workspace_dir, run_id or "run") if workspace_dir else None
    workspace = workspace or os.environ.get("KUBETUNE_LOCAL_WORKSPACE") or None  # set by `kubetune run-local`
    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = train(kwargs_artifact.path, model_uri, train_data.path, trained_model.path, validation_data.path, workspace)
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
    nproc_per_node: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    cpu_per_node: str = "",
    memory_per_node: str = "",
    image: str = TRAINING_IMAGE,
    runtime: str = "torch-distributed",
    queue: str = "",
    tolerations: list = [],  # noqa: B006 -- a component parameter's default, never mutated
    node_selector: dict = {},  # noqa: B006
    hf_secret: str = "",
    tracking_secret: str = "",
    queued_timeout_s: float = 86400.0,
    running_timeout_s: float = 0.0,
    kubeconfig: str = "",
    namespace: str = "",
):
    """The training step as a Kubeflow Trainer TrainJob (``nnodes`` x ``nproc_per_node`` GPUs); this step
    itself needs no GPU. Same inputs and outputs as ``train_model``; checkpoints pass through the workspace PVC.
    Secrets are passed by name and reach the nodes as secret references."""
    from kubetune.cluster.launch import launch
    from kubetune.cluster.trainjob import settings_from
    from kubetune.cluster.watch import KubeApi, Limits
    from kubetune.errors import reported
    from kubetune.steps.train import record

    with reported():
        settings = settings_from(
            nnodes=nnodes,
            nproc_per_node=nproc_per_node,
            accelerator_type=accelerator_type,
            cpu_per_node=cpu_per_node,
            memory_per_node=memory_per_node,
            image=image,
            runtime=runtime,
            workspace_pvc=workspace_pvc,
            workspace_dir=workspace_dir,
            queue=queue,
            tolerations=tolerations,
            node_selector=node_selector,
        )
        result = launch(
            kwargs_artifact.path,
            model_uri,
            train_data.path,
            validation_data.path,
            trained_model.path,
            settings,
            run_id,
            secret_names={"hf": hf_secret, "tracking": tracking_secret},
            api=KubeApi.connect(kubeconfig or None, namespace or None),
            limits=Limits(queued_s=queued_timeout_s, running_s=running_timeout_s),
        )
    record(result, trained_model, metrics)
