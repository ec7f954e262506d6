"""KFP wrapper of the export step (logic in ``core.py``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def export_model(
    trained_model: Input[Model],
    kwargs_artifact: Input[Artifact],
    checkpoint: str,
    exported_model: Output[Model],
    metrics: Output[Metrics],
    merge_adapter: bool = True,
    destination: str = "",
):
    """Export ``checkpoint`` (relative to the trained model) with a checksum manifest, atomically.

    The model always lands in ``exported_model``; with ``destination`` (a local or PVC path) it is
    published there too.
    """
    import os

    from kubetune.components.export.core import export_local

    source = os.path.join(trained_model.path, checkpoint)
    extra = {"kubetune-spec.json": kwargs_artifact.path}
    manifest = export_local(source, exported_model.path, merge=merge_adapter, extra_files=extra)
    if destination:
        export_local(source, destination, merge=merge_adapter, extra_files=extra)
        exported_model.metadata["published_to"] = destination
    exported_model.metadata.update({"kind": manifest["kind"], "checkpoint": checkpoint, "files": len(manifest["files"])})
    metrics.log_metric("bytes", sum(f["bytes"] for f in manifest["files"].values()))
    metrics.log_metric("files", len(manifest["files"]))
