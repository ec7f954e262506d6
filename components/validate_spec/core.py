"""Kwargs validation step: the user's spec becomes the normalized kwargs artifact, or the run stops here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune.contract import TrainingSpec, validate_spec
from kubetune.errors import KubetuneError, Problem


def restore_integers(value: Any) -> Any:
    """KFP carries a dict parameter as a protobuf Struct, where every number is a double (5 -> 5.0).

    Integral doubles are turned back into integers; fields that take floats accept integers too.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: restore_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_integers(v) for v in value]
    return value


def validate_to_artifact(algorithm: str, training_kwargs: dict[str, Any], output_path: str | Path) -> TrainingSpec:
    """Validate ``training_kwargs`` for ``algorithm`` and write the artifact (paths are bound at train time)."""
    document = restore_integers(dict(training_kwargs))
    if document.setdefault("algorithm", algorithm) != algorithm:
        raise KubetuneError(
            [Problem("algorithm", f"the kwargs say {document['algorithm']!r} but the pipeline runs {algorithm!r}")]
        )
    spec = validate_spec(document, require_paths=False)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(spec.to_json(), encoding="utf-8")
    tmp.replace(path)
    return spec
