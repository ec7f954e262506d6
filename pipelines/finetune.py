"""The ``finetune`` pipeline: validate kwargs → prepare data → train → evaluate → benchmark (when asked) →
promotion gate → export → register (optional); a model the gate refuses is neither exported nor registered, and
the ``model`` output says why.

Its defaults are the embedded default (a tiny generated model and the bundled sample data), so it runs
end to end on a laptop CPU with ``kubetune run-local``.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Model

from kubetune.components.benchmark.component import benchmark_model
from kubetune.components.evaluate.component import evaluate_model
from kubetune.components.export.component import export_model
from kubetune.components.gate.component import promotion_gate, refused_model
from kubetune.components.prepare.component import prepare_data
from kubetune.components.register.component import register_model
from kubetune.components.train.component import train_model, train_on_trainjob
from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.pipelines.kubernetes import on_gpus, use_registry_auth, use_secrets
from kubetune.pipelines.parameters import inputs_of, signature

WORKSPACE = "/workspace"  # where the workspace PVC is mounted, in the training step and the TrainJob's nodes
KUBECONFIG_DIR = "/var/run/kubetune/kubeconfig"  # the optional kubeconfig secret, for a launcher outside the cluster
Outputs = NamedTuple(
    "Outputs",
    [
        ("model", Model),  # the exported model, or (not promoted) a folder with only a README.md saying why
        ("kwargs", Artifact),
        ("loss_curve", Artifact),
        ("eval_report", HTML),
        ("eval_metrics", Metrics),
        ("decision", Markdown),  # the promotion gate's decision: each threshold, the value measured, the verdict
        ("benchmark_report", Markdown),  # base vs fine-tuned per benchmark task (says "not run" without benchmark_tasks)
        ("benchmark_metrics", Metrics),
        ("promoted", bool),  # the gate's verdict: a pipeline holding finetune branches on it (dsl.If) before using model
    ],
)


def finetune_dag(p: dict, launcher: str = "in_pod") -> Outputs:
    """The tasks of the finetune pipelines; ``p`` holds the pipeline's parameters by name, and each task takes
    the inputs they feed (``pipelines/parameters.py``) plus its upstream tasks' outputs.

    ``launcher``: ``in_pod`` trains in the training task's own pod (GPUs requested there); ``trainjob`` has
    that task submit a Kubeflow Trainer TrainJob across nodes and follow it (no GPU on the task itself).
    Checkpoints go to the PVC ``workspace_pvc`` where the pipeline has that parameter.
    """
    workspace_pvc = p.get("workspace_pvc")
    kwargs = validate_kwargs(**inputs_of("validate_kwargs", p)).set_display_name("validate kwargs")
    use_secrets(kwargs, "validate", p)  # the memory plan reads the model's config.json
    data = prepare_data(**inputs_of("prepare_data", p), kwargs_artifact=kwargs.outputs["kwargs_artifact"]).set_display_name(
        "prepare data"
    )
    use_secrets(data, "prepare", p)
    if launcher == "trainjob":
        trained = trainjob_task(p, kwargs, data)
    else:
        trained = train_model(
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            train_data=data.outputs["train_data"],
            validation_data=data.outputs["validation_data"],
            **inputs_of("train_model", p),
            **({"workspace_dir": WORKSPACE, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER} if workspace_pvc is not None else {}),
        ).set_display_name("train")
        if workspace_pvc is not None:  # checkpoints on a PVC: a retried or pre-empted training step resumes
            kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=WORKSPACE)
            trained.set_retry(num_retries=3, backoff_duration="60s")
        on_gpus(trained, p["gpus"], p["accelerator_type"], p["tolerations"], p["node_selector"])
        use_secrets(trained, "train", p)
    trained.set_caching_options(False)
    evaluated = evaluate_model(
        trained_model=trained.outputs["trained_model"],
        validation_data=data.outputs["validation_data"],
        **inputs_of("evaluate_model", p),
    ).set_display_name("evaluate")
    use_secrets(evaluated, "evaluate", p)
    benchmark = benchmark_model(
        trained_model=trained.outputs["trained_model"],
        checkpoint=evaluated.outputs["best_checkpoint"],
        validation_data=data.outputs["validation_data"],
        **inputs_of("benchmark_model", p),
    ).set_display_name("benchmark")
    use_secrets(benchmark, "evaluate", p)  # the base model may be on S3 or the hub, as for the evaluation
    results = benchmark.outputs["results"]
    gate = promotion_gate(loss_curve=evaluated.outputs["loss_curve"], benchmark_results=results, **inputs_of("promotion_gate", p))
    gate.set_display_name("promotion gate").set_caching_options(False)
    with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712 (a KFP condition, not a Python comparison)
        exported = export_and_register(p, kwargs, data, trained, evaluated)
    with dsl.Else(name="not-promoted"):
        refused = refused_model(decision=gate.outputs["decision"]).set_display_name("not promoted")
        refused.set_caching_options(False)
    return Outputs(
        dsl.OneOf(exported.outputs["exported_model"], refused.outputs["model"]),
        kwargs.outputs["kwargs_artifact"],
        evaluated.outputs["loss_curve"],
        evaluated.outputs["report"],
        evaluated.outputs["metrics"],
        gate.outputs["decision"],
        benchmark.outputs["report"],
        benchmark.outputs["metrics"],
        gate.outputs["Output"],  # the gate task is outside the dsl.If: its bool is the pipeline's output as it is
    )


def export_and_register(p: dict, kwargs, data, trained, evaluated):
    """The export task, and the registration when ``registry_server`` is set: what a promoted model gets."""
    exported = (
        export_model(
            trained_model=trained.outputs["trained_model"],
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            checkpoint=evaluated.outputs["best_checkpoint"],
            loss_curve=evaluated.outputs["loss_curve"],
            train_data=data.outputs["train_data"],
            validation_data=data.outputs["validation_data"],
            **inputs_of("export_model", p),
        )
        .set_display_name("export")
        .set_caching_options(False)
    )
    use_secrets(exported, "export", p)
    use_registry_auth(exported, p)  # an oci:// destination's registry credentials (registry_auth_secret)
    with dsl.If(p["registry_server"] != "", name="register-in-model-registry"):
        registered = register_model(
            exported_model=exported.outputs["exported_model"],
            loss_curve=evaluated.outputs["loss_curve"],
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            **inputs_of("register_model", p),
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ).set_display_name("register")
        registered.set_caching_options(False)
        use_secrets(registered, "register", p)
    return exported


def trainjob_task(p: dict, kwargs, data):
    """The training task with the ``trainjob`` launcher: CPU only, the workspace PVC, no secret values.

    It reaches the Kubernetes API with its pod's ServiceAccount (the Role in pipelines/manifests), or with the
    kubeconfig in the optional secret ``kubeconfig_secret``; the nodes get the secrets by name."""
    trained = train_on_trainjob(
        kwargs_artifact=kwargs.outputs["kwargs_artifact"],
        train_data=data.outputs["train_data"],
        validation_data=data.outputs["validation_data"],
        **inputs_of("train_on_trainjob", p),
        workspace_dir=WORKSPACE,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        kubeconfig=f"{KUBECONFIG_DIR}/config",
    ).set_display_name("train (TrainJob)")
    kubernetes.mount_pvc(trained, pvc_name=p["workspace_pvc"], mount_path=WORKSPACE)
    kubernetes.use_secret_as_volume(trained, secret_name=p["kubeconfig_secret"], mount_path=KUBECONFIG_DIR, optional=True)
    trained.set_retry(num_retries=3, backoff_duration="60s")  # a restarted launcher re-attaches to its TrainJob
    return trained


@dsl.pipeline(
    name="kubetune-finetune", description="Fine-tune an LLM: validate, prepare, train, evaluate, gate, export, register."
)
@signature("finetune", Outputs)
def finetune(p: dict) -> Outputs:
    """``training_kwargs`` is a Training Hub call's arguments as JSON; the rest says where things are and run.

    Secrets are named, never given: each ``*_secret`` is a Kubernetes secret whose keys become environment
    variables of the steps that need them (see pipelines/kubernetes.py); missing ones are skipped.
    """
    return finetune_dag(p)


@dsl.pipeline(
    name="kubetune-finetune-workspace",
    description="finetune, with checkpoints on a PVC: a retried or pre-empted training step resumes from its last one.",
)
@signature("finetune_workspace", Outputs)
def finetune_workspace(p: dict) -> Outputs:
    """``finetune`` with the training step's checkpoints on the PersistentVolumeClaim ``workspace_pvc``
    (mounted at /workspace, under the run's id); the step is retried up to 3 times and resumes where it stopped."""
    return finetune_dag(p)


@dsl.pipeline(
    name="kubetune-finetune-trainjob",
    description="finetune, with training as a multi-node Kubeflow Trainer TrainJob (nnodes x gpus), same kwargs artifact.",
)
@signature("finetune_trainjob", Outputs)
def finetune_trainjob(p: dict) -> Outputs:
    """``finetune`` whose training runs as a TrainJob of ``nnodes`` nodes with ``gpus`` GPUs (one process
    each) per node, on the ClusterTrainingRuntime ``trainjob_runtime``. ``workspace_pvc`` must be
    ReadWriteMany: the nodes read their inputs and write checkpoints there. ``kueue_queue``: a Kueue
    LocalQueue to wait in. ``queued_timeout_s``/``running_timeout_s``: 0 = no limit."""
    return finetune_dag(p, launcher="trainjob")
