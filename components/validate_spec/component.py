"""KFP wrapper of the kwargs validation step (logic in ``kubetune.steps.validate``): cheap, CPU-only, fails fast."""

import os

from kfp import dsl
from kfp.dsl import Artifact, Output

RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", "ghcr.io/kubetune/kubetune-runtime:0.1.0")


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def validate_kwargs(algorithm: str, training_kwargs: dict, kwargs_artifact: Output[Artifact]):
    """Check every kwarg against the backend's real fields and write the normalized kwargs artifact.

    Args:
        algorithm: One of the registered algorithms (``sft``, ``osft``, ``lora_sft`` built in).
        training_kwargs: The spec: a Training Hub call's arguments as JSON (model, data and output paths are bound
            by the pipeline).
        kwargs_artifact: JSON: ``schema_version``, ``algorithm``, ``backend``, curated parameters,
            ``backend_kwargs``, ``secrets`` (references only).
    """
    from kubetune.errors import reported
    from kubetune.steps.validate import validate_to_artifact

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        spec = validate_to_artifact(algorithm, training_kwargs, kwargs_artifact.path)
    kwargs_artifact.metadata.update({"algorithm": spec.algorithm, "backend": spec.backend, "schema_version": spec.schema_version})
    for note in spec.notes:
        print("note:", note)
    print(spec.to_json())
