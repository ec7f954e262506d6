"""The ``finetune`` pipeline: validate kwargs → prepare data → train → evaluate → export → register (optional).

Its defaults are the embedded default (a tiny generated model and the bundled sample data), so it runs
end to end on a laptop CPU with ``kubetune run-local``.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Model
from kubetune.components.evaluate.component import evaluate_model
from kubetune.components.export.component import export_model
from kubetune.components.prepare.component import prepare_data
from kubetune.components.register.component import register_model
from kubetune.components.train.component import train_model
from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.pipelines.kubernetes import on_gpus, use_secrets

from kubetune.runtime import SAMPLE_DATA_URI, TINY_MODEL_URI

# Small enough for two CPU cores in about a minute, large enough for validation loss to fall.
EMBEDDED_KWARGS = {
    "num_epochs": 2,
    "learning_rate": 0.005,
    "effective_batch_size": 8,
    "max_seq_len": 256,
    "lora_r": 8,
    "lora_alpha": 16,
    "save_steps": 24,
    "eval_steps": 24,
    "logging_steps": 8,
    "seed": 42,
}

Outputs = NamedTuple(
    "Outputs",
    [("model", Model), ("kwargs", Artifact), ("loss_curve", Artifact), ("eval_report", HTML), ("eval_metrics", Metrics)],
)


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
    secrets = {"s3": s3_secret, "hf": hf_secret, "tracking": tracking_secret, "registry": registry_secret}
    kwargs = validate_kwargs(algorithm=algorithm, training_kwargs=training_kwargs).set_display_name("validate kwargs")
    data = prepare_data(
        data_uri=data_uri,
        model_uri=model_uri,
        kwargs_artifact=kwargs.outputs["kwargs_artifact"],
        validation_uri=validation_uri,
        validation_ratio=validation_ratio,
        seed=seed,
    ).set_display_name("prepare data")
    use_secrets(data, "prepare", secrets)
    trained = train_model(
        kwargs_artifact=kwargs.outputs["kwargs_artifact"],
        train_data=data.outputs["train_data"],
        validation_data=data.outputs["validation_data"],
        model_uri=model_uri,
    ).set_display_name("train")
    trained.set_caching_options(False)
    on_gpus(trained, gpus, accelerator_type, tolerations, node_selector)
    use_secrets(trained, "train", secrets)
    evaluated = evaluate_model(
        trained_model=trained.outputs["trained_model"],
        validation_data=data.outputs["validation_data"],
        base_model_uri=model_uri,
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
            select=export_checkpoint,
            merge_adapter=merge_adapter,
            destination=export_destination,
            base_model_uri=model_uri,
        )
        .set_display_name("export")
        .set_caching_options(False)
    )
    use_secrets(exported, "export", secrets)
    with dsl.If(registry_server != "", name="register-in-model-registry"):
        registered = register_model(
            exported_model=exported.outputs["exported_model"],
            loss_curve=evaluated.outputs["loss_curve"],
            kwargs_artifact=kwargs.outputs["kwargs_artifact"],
            server=registry_server,
            name=registry_model_name,
            version=registry_model_version,
            published_uri=registry_uri,
            overwrite=registry_overwrite,
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
