"""Registering an exported model in the Kubeflow Model Registry, with its real location and provenance.

Uses the official client (PyPI ``model-registry``). The URI registered is where the model really is
(``s3://...``, ``pvc://claim/path``, ``oci://...``), never a path inside this step's container. A version
that already exists is an error unless ``overwrite`` is set; then its artifact URI and metadata are updated.
The token comes from ``MODEL_REGISTRY_TOKEN`` or the pod's ServiceAccount token, never from a parameter.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.steps.curve import LossCurve
from kubetune.steps.export import ExportedModel

REAL_SCHEMES = ("s3://", "pvc://", "oci://", "hf://", "https://", "gs://")
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class RegisterResult:
    """The ids the Model Registry gave, and whether an existing version was overwritten."""

    registered_model_id: str
    model_version_id: str
    model_artifact_id: str
    overwritten: bool

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


def _token() -> str | None:
    if os.environ.get("MODEL_REGISTRY_TOKEN"):
        return os.environ["MODEL_REGISTRY_TOKEN"]
    return SERVICE_ACCOUNT_TOKEN.read_text().strip() if SERVICE_ACCOUNT_TOKEN.is_file() else None


def _client(server: str, author: str):
    from model_registry import ModelRegistry

    url = urlsplit(server if "://" in server else f"https://{server}")
    port = url.port or (443 if url.scheme == "https" else 80)
    return ModelRegistry(
        server_address=f"{url.scheme}://{url.hostname}",
        port=port,
        author=author,
        is_secure=url.scheme == "https",
        user_token=_token(),
    )


def register(
    uri: str,
    name: str,
    version: str,
    server: str,
    metadata: dict[str, Any],
    author: str = "kubetune",
    overwrite: bool = False,
    model_format_name: str = "safetensors",
    model_format_version: str = "1",
    description: str | None = None,
) -> RegisterResult:
    """Register ``uri`` as ``name:version``; returns the ids the registry gave."""
    problems = []
    if not uri.startswith(REAL_SCHEMES):
        problems.append(
            Problem("registry_uri", f"{uri!r} is not a location the serving stack can read (use {', '.join(REAL_SCHEMES)})")
        )
    for field, value in (("registry_model_name", name), ("registry_model_version", version), ("registry_server", server)):
        if not value:
            problems.append(Problem(field, "is required to register a model"))
    if problems:
        raise KubetuneError(problems, "cannot register the model")
    from model_registry.exceptions import StoreError

    registry = _client(server, author)
    metadata = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}
    try:
        existing = registry.get_model_version(name, version)
    except StoreError:
        existing = None
    if existing is not None and not overwrite:
        raise KubetuneError(
            [
                Problem(
                    "registry_model_version",
                    f"{name}:{version} is already in the Model Registry",
                    "set registry_overwrite to replace its artifact",
                )
            ],
            "cannot register the model",
        )
    if existing is not None:
        artifact = registry.get_model_artifact(name, version)
        artifact.uri = uri
        artifact.model_format_name, artifact.model_format_version = model_format_name, model_format_version
        registry.update(artifact)
        existing.custom_properties = {**(existing.custom_properties or {}), **metadata}
        registry.update(existing)
        model = registry.get_registered_model(name)
        return RegisterResult(model.id, existing.id, artifact.id, overwritten=True)
    model = registry.register_model(
        name,
        uri,
        version=version,
        model_format_name=model_format_name,
        model_format_version=model_format_version,
        version_description=description,
        metadata=metadata,
    )
    version_ = registry.get_model_version(name, version)
    artifact = registry.get_model_artifact(name, version)
    return RegisterResult(model.id, version_.id, artifact.id, overwritten=False)


def register_step(
    location: ExportedModel,
    curve_path: str | Path | None,
    spec_path: str | Path | None,
    server: str,
    name: str,
    version: str,
    published_uri: str = "",
    overwrite: bool = False,
    provenance: dict[str, str] | None = None,
    **options: Any,
) -> RegisterResult:
    """The pipeline's registration step: the export's real URI, the run's provenance and the validation loss.

    ``location``: the exported model artifact's metadata (``ExportedModel.from_metadata``): its URI, kind and the base
    model the run trained (the model card's), which the spec's ``model_path`` names only when the pipeline did not
    bind another."""
    uri = published_uri or location.uri
    if uri and not uri.startswith(REAL_SCHEMES):
        raise KubetuneError(
            [
                Problem(
                    "registry_uri",
                    f"the model was exported to {uri!r}, a path in the pipeline's pods",
                    "give its pvc://claim/path",
                )
            ],
            "cannot register the model",
        )
    curve = LossCurve.read_if_present(curve_path)
    spec = TrainingSpec.read(spec_path) if spec_path and Path(spec_path).is_file() else None
    metadata = {
        **{f"kfp_{k}": v for k, v in (provenance or {}).items() if v},
        "algorithm": spec.algorithm if spec else None,
        "backend": spec.backend if spec else None,
        "base_model": location.base_model or (spec.model_path if spec else None),
        "best_validation_loss": curve.best.loss if curve else None,
        "best_checkpoint": curve.best.checkpoint if curve else None,
        "export_kind": location.kind,
        "oci_tag": location.tag,  # an OCI modelcar: the tag pushed (the URI registered pins its digest)
        "exported_by": "kubetune",
    }
    return register(
        uri, name, version, server, {k: v for k, v in metadata.items() if v is not None}, overwrite=overwrite, **options
    )
