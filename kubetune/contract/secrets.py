"""Secrets travel by reference only: an environment variable or a Kubernetes secret, never a value."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kubetune.errors import Problem

# Environment variables the training step knows how to consume.
KNOWN_SECRETS = {
    "WANDB_API_KEY": "Weights & Biases",
    "HF_TOKEN": "Hugging Face hub",
    "AWS_ACCESS_KEY_ID": "S3",
    "AWS_SECRET_ACCESS_KEY": "S3",
    "AWS_SESSION_TOKEN": "S3",
    "MLFLOW_TRACKING_TOKEN": "MLflow",
    "MLFLOW_TRACKING_USERNAME": "MLflow",
    "MLFLOW_TRACKING_PASSWORD": "MLflow",
}

# The pipelines' secrets: kind -> {key in the Kubernetes secret: environment variable}; each secret's
# name is a pipeline parameter (``s3_secret``, ``hf_secret``, ...)
SECRET_KEYS = {
    "s3": {
        k: k
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
    },
    "hf": {"HF_TOKEN": "HF_TOKEN"},
    "tracking": {
        k: k for k in ("WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    },
    "registry": {"MODEL_REGISTRY_TOKEN": "MODEL_REGISTRY_TOKEN"},
}

_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class SecretRef(BaseModel):
    """Where the training pod finds a secret: ``{"env": "VAR"}`` or ``{"secret": "name", "key": "k"}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    env: str | None = Field(None, pattern=_ENV_NAME, description="Environment variable already set in the pod.")
    secret: str | None = Field(None, pattern=_K8S_NAME, max_length=253, description="Kubernetes Secret name.")
    key: str | None = Field(None, pattern=r"^[-._a-zA-Z0-9]+$", description="Key inside the Kubernetes Secret.")

    @model_validator(mode="after")
    def _one_kind(self) -> SecretRef:
        if (self.env is None) == (self.secret is None):
            raise ValueError('give exactly one of {"env": ...} or {"secret": ..., "key": ...}')
        if self.secret is not None and self.key is None:
            raise ValueError('a Kubernetes secret reference needs "key"')
        return self


# Keys whose value is a credential by name. `pad_token`/`eos_token` (TRL) are tokens of a vocabulary, not secrets.
_SECRET_KEY = re.compile(
    r"(api_?key|password|passwd|secret|credential|access_key|private_key|"
    r"(^|_)(hub|hf|auth|access|api|bearer|tracking|session|github|gh)_token$|^token$)",
    re.IGNORECASE,
)
# Values that look like a credential whatever their key.
_SECRET_VALUE = [
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"),  # OpenAI-style
    re.compile(r"\blocal-[0-9a-f]{40}\b"),  # W&B local server
    re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@"),  # URL with user:password@
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def looks_like_secret(key: str, value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    if _SECRET_KEY.search(key):
        return True
    if re.search(r"wandb|key", key, re.IGNORECASE) and re.fullmatch(r"[0-9a-f]{40}", value):
        return True  # W&B cloud API key shape (a bare 40-hex value elsewhere is usually a git revision)
    return any(p.search(value) for p in _SECRET_VALUE)


def find_secret_values(document: Any, path: str = "") -> Iterator[Problem]:
    """Yield a problem for every value in ``document`` that is or looks like a credential (value hidden)."""
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if looks_like_secret(str(key), value):
                yield Problem(
                    where,
                    "holds what looks like a credential (value not shown); secrets are never accepted as values",
                    'put a reference under "secrets" instead, e.g. '
                    '"secrets": {"HF_TOKEN": {"secret": "hf-token", "key": "token"}}',
                )
            else:
                yield from find_secret_values(value, where)
    elif isinstance(document, list):
        for i, item in enumerate(document):
            yield from find_secret_values(item, f"{path}[{i}]")
