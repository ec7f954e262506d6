"""KFP wrapper of the export step (logic in ``kubetune.steps.export``, S3 publishing in ``kubetune.steps.publish``)."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def export_model(
    trained_model: Input[Model],
    checkpoint: str,
    exported_model: Output[Model],
    metrics: Output[Metrics],
    kwargs_artifact: Input[Artifact] = None,
    loss_curve: Input[Artifact] = None,
    train_data: Input[Dataset] = None,
    validation_data: Input[Dataset] = None,
    export_checkpoint: str = "best",
    merge_adapter: bool = True,
    export_destination: str = "",
    model_uri: str = "",
    export_overwrite: bool = False,
    modelcar_base_image: str = "",
):
    """Export a checkpoint with a model card and a checksum manifest written last.

    Args:
        trained_model: Training output.
        checkpoint: Relative path, e.g. the evaluation step's ``best_checkpoint``.
        exported_model: The model, or (with a destination) its model card and ``location.json``;
            ``metadata["uri"]`` is where it is (an OCI modelcar: ``oci://registry/repository@sha256:...``,
            with the tag pushed in ``metadata["tag"]``).
        metrics: bytes, files, skipped_files, seconds, mb_per_s.
        kwargs_artifact: Exported as ``kubetune-spec.json``, and facts for the model card.
        loss_curve: Exported as ``loss_curve.json``, and facts for the model card.
        train_data: Facts for the model card.
        validation_data: Facts for the model card.
        export_checkpoint: ``best`` exports ``checkpoint`` (the evaluation step's best one), ``final`` the last one saved.
        merge_adapter: LoRA: merge into the base model (``merge_and_unload``, loadable by ``transformers`` alone)
            or export the adapter alone.
        export_destination: Empty keeps the model in this artifact; a local/PVC path or ``s3://bucket/prefix`` publishes
            it there (S3 credentials come from the environment), and this artifact then holds the model card and
            a pointer (``metadata["uri"]``). ``oci://registry/repository:tag`` pushes a modelcar for KServe (the
            files under ``/models`` on ``modelcar_base_image``, built with olot and pushed with skopeo, no container
            engine); credentials come only from the registry auth file (``REGISTRY_AUTH_FILE``, the pipeline's
            ``registry_auth_secret``), never from the reference.
        model_uri: The model that was fine-tuned: the base of an adapter whose recorded base path is another pod's.
        export_overwrite: A destination holding anything but a kubetune export (files kubetune did not write) is refused
            before a byte moves unless this is true; then it ends up holding exactly the new export (see below).
            OCI: a tag holding an image kubetune did not push is moved only when this is true.
        modelcar_base_image: The base image of an ``oci://`` export: a registry reference (empty:
            ``registry.access.redhat.com/ubi9/ubi-micro:latest``; KServe's modelcar container runs its shell) or
            ``oci-layout:<dir>``.
    """
    from kubetune.errors import reported
    from kubetune.steps.export import export_step

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        result = export_step(
            trained_model=trained_model.path,
            checkpoint=checkpoint,
            select=export_checkpoint,
            destination=export_destination or exported_model.path,
            pointer_dir=exported_model.path if export_destination else None,
            merge=merge_adapter,
            spec_path=kwargs_artifact.path if kwargs_artifact else None,
            curve_path=loss_curve.path if loss_curve else None,
            train_metadata=train_data.metadata if train_data else None,
            validation_metadata=validation_data.metadata if validation_data else None,
            base_model_uri=model_uri or None,
            overwrite=export_overwrite or not export_destination,  # this step's own output artifact is ours to fill
            modelcar_base_image=modelcar_base_image,
        )
    exported_model.metadata.update(result.metadata())
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
