"""KFP wrapper of the kwargs validation step (logic in ``core.py``): cheap, CPU-only, fails fast."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def validate_kwargs(algorithm: str, training_kwargs: dict, kwargs_artifact: Output[Artifact]):
    """Check every kwarg against the backend's real fields and write the normalized kwargs artifact."""
    from kubetune.errors import reported
    from kubetune.steps.validate import validate_to_artifact

    with reported():  # a mistake in the input ends the step with its report, not a traceback
        spec = validate_to_artifact(algorithm, training_kwargs, kwargs_artifact.path)
    kwargs_artifact.metadata.update({"algorithm": spec.algorithm, "backend": spec.backend, "schema_version": spec.schema_version})
    for note in spec.notes:
        print("note:", note)
    print(spec.to_json())
