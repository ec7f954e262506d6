"""KFP wrapper of the optional Model Registry step (logic in ``kubetune.steps.register``)."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


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
    """Register the exported model's real location (S3 URI, or ``published_uri`` such as pvc://claim/path).

    Args:
        exported_model: The export step's output; its ``metadata["uri"]`` is registered.
        server: Registry address, e.g. ``https://model-registry.kubeflow.svc:8443``.
        name: Registered model.
        version: Registered version; an existing version is an error unless ``overwrite``.
        registration: Registered model, version and artifact ids.
        loss_curve: Best validation loss and checkpoint: version metadata.
        kwargs_artifact: Algorithm, backend, base model: version metadata.
        published_uri: The real URI when the export went to a local/PVC path, e.g. ``pvc://models-pvc/chat/v3``.
        overwrite: Replace an existing version.
        model_format_name: Model format registered with the artifact.
        model_format_version: Its version.
        pipeline_run_id: Provenance (the pipeline passes KFP's placeholder).
        pipeline_name: Provenance (the pipeline passes KFP's placeholder).
    """
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
