"""The ``evaluate-export`` pipeline, for a model trained elsewhere: prepare held-out data → evaluate every
checkpoint → export the best one.

``trained_model_uri`` is a directory of checkpoints (or one model) that KFP can import: ``s3://...``,
``gs://...``, ``minio://...``, or a path its launcher can read.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Model

from kubetune.components.evaluate.component import evaluate_model
from kubetune.components.export.component import export_model
from kubetune.components.prepare.component import prepare_data
from kubetune.pipelines.kubernetes import use_secrets

Outputs = NamedTuple("Outputs", [("model", Model), ("loss_curve", Artifact), ("eval_report", HTML)])


@dsl.pipeline(name="kubetune-evaluate-export", description="Evaluate every checkpoint of a trained model, export the best.")
def evaluate_export(
    trained_model_uri: str,
    validation_data_uri: str,
    base_model_uri: str,
    max_seq_len: int = 4096,
    merge_adapter: bool = True,
    export_checkpoint: str = "best",
    export_destination: str = "",
    export_overwrite: bool = False,
    s3_secret: str = "kubetune-s3",
    hf_secret: str = "kubetune-hf",
) -> Outputs:
    secrets = {"s3": s3_secret, "hf": hf_secret}
    trained = dsl.importer(artifact_uri=trained_model_uri, artifact_class=Model, reimport=False).set_display_name("import model")
    data = prepare_data(
        data_uri=validation_data_uri, model_uri=base_model_uri, validation_ratio=0.0, max_seq_len=max_seq_len
    ).set_display_name("prepare validation data")
    use_secrets(data, "prepare", secrets)
    held_out = data.outputs["train_data"]  # everything of validation_data_uri, nothing held back from it
    evaluated = evaluate_model(
        trained_model=trained.output, validation_data=held_out, base_model_uri=base_model_uri
    ).set_display_name("evaluate")
    use_secrets(evaluated, "evaluate", secrets)
    exported = (
        export_model(
            trained_model=trained.output,
            checkpoint=evaluated.outputs["best_checkpoint"],
            loss_curve=evaluated.outputs["loss_curve"],
            validation_data=held_out,
            select=export_checkpoint,
            merge_adapter=merge_adapter,
            destination=export_destination,
            base_model_uri=base_model_uri,
            overwrite=export_overwrite,
        )
        .set_display_name("export")
        .set_caching_options(False)
    )
    use_secrets(exported, "export", secrets)
    return Outputs(exported.outputs["exported_model"], evaluated.outputs["loss_curve"], evaluated.outputs["report"])
