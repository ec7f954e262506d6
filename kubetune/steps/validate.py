"""Kwargs validation step: the user's spec becomes the normalized kwargs artifact, or the run stops here.

The step is ``validate_spec`` itself (the code ``kubetune validate`` runs), so a document gets one verdict
everywhere. KFP carries a dict parameter as a protobuf Struct, where every number is a double (5 -> 5.0);
``validate_spec`` reads an integral number as an integer whatever its spelling, as JSON does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic
from kubetune.secrets import scan_text
from kubetune.validation import validate_spec


def validate_to_artifact(algorithm: str, training_kwargs: dict[str, Any], output_path: str | Path) -> TrainingSpec:
    """Validate ``training_kwargs`` for ``algorithm`` and write the artifact (paths are bound at train time)."""
    if not isinstance(training_kwargs, dict):
        raise KubetuneError([Problem("training_kwargs", "must be a JSON object")], "invalid spec")
    document = dict(training_kwargs)
    if document.setdefault("algorithm", algorithm) != algorithm:
        raise KubetuneError(
            [Problem("algorithm", "the kwargs name another algorithm than the pipeline's `algorithm` parameter")], "invalid spec"
        )
    spec = validate_spec(document, require_paths=False)
    text = spec.to_json()
    shapes = scan_text(text)
    if shapes:  # validation refuses credentials; this guard keeps one from ever reaching the artifact
        raise KubetuneError([Problem("kwargs artifact", f"would hold what looks like a credential ({', '.join(shapes)})")])
    write_text_atomic(output_path, text)
    return spec
