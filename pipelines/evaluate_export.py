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
from kubetune.pipelines.kubernetes import use_registry_auth, use_secrets
from kubetune.pipelines.parameters import inputs_of, signature

Outputs = NamedTuple("Outputs", [("model", Model), ("loss_curve", Artifact), ("eval_report", HTML)])


@dsl.pipeline(name="kubetune-evaluate-export", description="Evaluate every checkpoint of a trained model, export the best.")
@signature("evaluate_export", Outputs)
def evaluate_export(p: dict) -> Outputs:
    """Import ``trained_model_uri``, evaluate each checkpoint on ``data_uri``, export the best."""
    trained = dsl.importer(artifact_uri=p["trained_model_uri"], artifact_class=Model, reimport=False).set_display_name(
        "import model"
    )
    data = prepare_data(**inputs_of("prepare_data", p), validation_ratio=0.0).set_display_name("prepare validation data")
    use_secrets(data, "prepare", p)
    held_out = data.outputs["train_data"]  # everything of data_uri, nothing held back from it
    evaluated = evaluate_model(
        trained_model=trained.output, validation_data=held_out, **inputs_of("evaluate_model", p)
    ).set_display_name("evaluate")
    use_secrets(evaluated, "evaluate", p)
    exported = (
        export_model(
            trained_model=trained.output,
            checkpoint=evaluated.outputs["best_checkpoint"],
            loss_curve=evaluated.outputs["loss_curve"],
            validation_data=held_out,
            **inputs_of("export_model", p),
        )
        .set_display_name("export")
        .set_caching_options(False)
    )
    use_secrets(exported, "export", p)
    use_registry_auth(exported, p)
    return Outputs(exported.outputs["exported_model"], evaluated.outputs["loss_curve"], evaluated.outputs["report"])
