"""KFP wrapper of the optional Model Registry step (logic in ``kubetune.steps.register``)."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def register_model(
    exported_model: Input[Model],
    registry_server: str,
    registry_model_name: str,
    registry_model_version: str,
    registration: Output[Artifact],
    loss_curve: Input[Artifact] = None,
    kwargs_artifact: Input[Artifact] = None,
    registry_uri: str = "",
    registry_overwrite: bool = False,
    model_format_name: str = "safetensors",
    model_format_version: str = "1",
    pipeline_run_id: str = "",
    pipeline_name: str = "",
):
    """Register the exported model's real location (S3 URI, or ``registry_uri`` such as pvc://claim/path).

    Args:
        exported_model: The export step's output; its ``metadata["uri"]`` is registered.
        registry_server: Registry address, e.g. ``https://model-registry.kubeflow.svc:8443``.
        registry_model_name: Registered model.
        registry_model_version: Registered version; an existing version is an error unless ``registry_overwrite``.
        registration: Registered model, version and artifact ids.
        loss_curve: Best validation loss and checkpoint: version metadata.
        kwargs_artifact: Algorithm, backend, base model: version metadata.
        registry_uri: The real URI when the export went to a local/PVC path, e.g. ``pvc://models-pvc/chat/v3``.
        registry_overwrite: Replace an existing version.
        model_format_name: Model format registered with the artifact.
        model_format_version: Its version.
        pipeline_run_id: Provenance (the pipeline passes KFP's placeholder).
        pipeline_name: Provenance (the pipeline passes KFP's placeholder).
    """
    import json

    from kubetune.errors import reported
    from kubetune.steps.export import ExportedModel
    from kubetune.steps.register import register_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = register_step(
            ExportedModel.from_metadata(exported_model.metadata),
            loss_curve.path if loss_curve else None,
            kwargs_artifact.path if kwargs_artifact else None,
            server=registry_server,
            name=registry_model_name,
            version=registry_model_version,
            published_uri=registry_uri,
            overwrite=registry_overwrite,
            provenance={"run_id": pipeline_run_id, "pipeline": pipeline_name},
            model_format_name=model_format_name,
            model_format_version=model_format_version,
        )
    registration.metadata.update(result.to_document())
    with open(registration.path, "w") as f:
        json.dump(result.to_document(), f, indent=2)
