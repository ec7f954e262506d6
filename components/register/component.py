"""KFP wrapper of the optional Model Registry step (logic in ``core.py``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def register_model(
    exported_model: Input[Model],
    server: str,
    name: str,
    version: str,
    registration: Output[Artifact],
    loss_curve: Input[Artifact] = None,
    kwargs_artifact: Input[Artifact] = None,
    published_uri: str = "",
    overwrite: bool = False,
    model_format_name: str = "safetensors",
    model_format_version: str = "1",
    pipeline_run_id: str = "",
    pipeline_name: str = "",
):
    """Register the exported model's real location (S3 URI, or ``published_uri`` such as pvc://claim/path)."""
    import json

    from kubetune.errors import reported
    from kubetune.steps.register import register_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = register_step(
            dict(exported_model.metadata),
            loss_curve.path if loss_curve else None,
            kwargs_artifact.path if kwargs_artifact else None,
            server=server,
            name=name,
            version=version,
            published_uri=published_uri,
            overwrite=overwrite,
            provenance={"run_id": pipeline_run_id, "pipeline": pipeline_name},
            model_format_name=model_format_name,
            model_format_version=model_format_version,
        )
    registration.metadata.update(result.to_document())
    with open(registration.path, "w") as f:
        json.dump(result.to_document(), f, indent=2)
