"""Validate a spec (a Training Hub call as JSON) into the normalized kwargs artifact.

Everything is checked before any GPU is requested, and every problem is reported at once:
curated parameters (types, ranges, required), every backend kwarg against the backend's real fields
(with did-you-mean), backend rules, duplicated names, and secrets (references only).
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.backends import get_backend
from kubetune.contract.catalog import catalog
from kubetune.contract.params import ALGORITHM_PARAMS, PATH_PARAMS, REQUIRED
from kubetune.contract.secrets import KNOWN_SECRETS, SecretRef, find_secret_values
from kubetune.errors import KubetuneError, Problem

SCHEMA_VERSION = 1
RESERVED = ("schema_version", "algorithm", "backend", "backend_kwargs", "secrets")


class TrainingSpec(BaseModel):
    """The normalized kwargs artifact that travels from validation to the training step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    algorithm: str
    backend: str
    params: dict[str, Any] = Field(description="Curated parameters under Training Hub's names.")
    backend_kwargs: dict[str, Any] = Field(default_factory=dict, description="Checked backend fields.")
    secrets: dict[str, SecretRef] = Field(default_factory=dict, description="Secret references by env name.")
    notes: list[str] = Field(default_factory=list, description="Remarks from validation (not errors).")

    def to_document(self) -> dict[str, Any]:
        """The artifact's JSON: flat like a Training Hub call, backend kwargs kept apart and explicit."""
        return {
            "schema_version": self.schema_version,
            "algorithm": self.algorithm,
            "backend": self.backend,
            **dict(sorted(self.params.items())),
            "backend_kwargs": dict(sorted(self.backend_kwargs.items())),
            "secrets": {k: v.model_dump(exclude_none=True) for k, v in sorted(self.secrets.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_document(), indent=2) + "\n"

    def with_params(self, **values: Any) -> TrainingSpec:
        """A copy with some curated parameters set (the pipeline binds paths this way), re-validated."""
        document = {**self.to_document(), **{k: v for k, v in values.items() if v is not None}}
        return validate_spec(document, require_paths=True)


def key_lines(text: str) -> dict[str, int]:
    """First line on which each JSON key appears, to point errors at the file's lines."""
    lines: dict[str, int] = {}
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*:', text):
        lines.setdefault(match.group(1), text.count("\n", 0, match.start()) + 1)
    return lines


def load_spec(path: str | Path, require_paths: bool = True) -> TrainingSpec:
    """Read and validate a spec file; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KubetuneError([Problem(str(path), f"cannot be read: {e.strerror}")], "invalid spec") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise KubetuneError([Problem(f"{path}:{e.lineno}:{e.colno}", f"is not valid JSON: {e.msg}")], "invalid spec") from None
    return validate_spec(document, require_paths=require_paths, source=str(path), lines=key_lines(text))


def suggest(name: str, candidates: set[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"`{m}`" for m in matches) + "?" if matches else None


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    # `msg` never contains the input value, so a credential cannot leak through an error message.
    return [Problem(".".join(str(x) for x in e["loc"]) or "spec", e["msg"]) for e in error.errors(include_input=False)]


def validate_spec(
    document: Any,
    *,
    require_paths: bool = True,
    source: str | None = None,
    lines: dict[str, int] | None = None,
) -> TrainingSpec:
    """Validate a spec document and return the normalized artifact, or raise with every problem found.

    ``require_paths=False`` is for the pipeline's validation step, where model, data and output paths are
    bound later from the pipeline's artifacts.
    """
    problems: list[Problem] = []

    def where(key: str) -> str:
        root = key.split(".")[0].split("[")[0]
        if source and lines and root in lines:
            return f"{source}:{lines[root]}: `{key}`"
        return f"{source}: `{key}`" if source else f"`{key}`"

    def fail() -> KubetuneError:
        located = [Problem(where(p.where), p.message, p.hint) for p in problems]
        return KubetuneError(located, f"invalid spec{' ' + source if source else ''}")

    if not isinstance(document, dict):
        problems.append(Problem("spec", "must be a JSON object"))
        raise fail()

    version = document.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        problems.append(Problem("schema_version", f"must be an integer from 1 to {SCHEMA_VERSION} (this kubetune)"))

    algorithm = document.get("algorithm")
    if algorithm not in ALGORITHM_PARAMS:
        hint = suggest(str(algorithm), set(ALGORITHM_PARAMS)) if isinstance(algorithm, str) else None
        problems.append(Problem("algorithm", f"must be one of {', '.join(sorted(ALGORITHM_PARAMS))}", hint))
        raise fail()

    backend = get_backend(algorithm)
    names = (backend.name, *backend.aliases)
    backend_name = document.get("backend", backend.name)
    if backend_name not in names:
        problems.append(Problem("backend", f"{algorithm} runs on {' or '.join(names)}, not {backend_name!r}"))

    secrets: dict[str, SecretRef] = {}
    raw_secrets = document.get("secrets") or {}
    if not isinstance(raw_secrets, dict):
        problems.append(Problem("secrets", 'must be an object like {"HF_TOKEN": {"secret": "hf", "key": "token"}}'))
        raw_secrets = {}
    for env_name, ref in raw_secrets.items():
        if env_name not in KNOWN_SECRETS:
            problems.append(
                Problem(
                    f"secrets.{env_name}",
                    "is not a secret kubetune passes on",
                    suggest(env_name, set(KNOWN_SECRETS)) or "known: " + ", ".join(KNOWN_SECRETS),
                )
            )
            continue
        if not isinstance(ref, dict):
            problems.append(Problem(f"secrets.{env_name}", "must be a reference object, never the secret's value"))
            continue
        try:
            secrets[env_name] = SecretRef.model_validate(ref)
        except ValidationError as e:
            problems += [Problem(f"secrets.{env_name}.{p.where}", p.message) for p in _pydantic_problems(e)]

    problems += list(find_secret_values({k: v for k, v in document.items() if k != "secrets"}))

    model = ALGORITHM_PARAMS[algorithm]
    curated_names = set(model.model_fields)
    curated = {k: v for k, v in document.items() if k in curated_names and v is not None}
    kwargs = {k: v for k, v in document.items() if k not in curated_names and k not in RESERVED}
    nested = document.get("backend_kwargs") or {}
    if not isinstance(nested, dict):
        problems.append(Problem("backend_kwargs", "must be an object"))
        nested = {}
    for key, value in nested.items():
        if key in kwargs or key in curated_names:
            problems.append(Problem(f"backend_kwargs.{key}", "is also given at the top level; give it once"))
        kwargs[key] = value

    for field, curated_name in backend.renames.items():
        if field not in kwargs:
            continue
        if curated_name in curated:
            problems.append(
                Problem(
                    field, f"is {backend.name}'s name for `{curated_name}`, which is also given", f"use `{curated_name}` only"
                )
            )
        else:  # the backend's own spelling alone means the same thing: store it under the curated name
            curated[curated_name] = kwargs[field]
        del kwargs[field]

    fields = catalog(backend.catalog_name).fields
    for key, value in kwargs.items():
        if key in backend.managed:
            problems.append(Problem(key, f"cannot be set in a spec: {backend.managed[key]}"))
        elif key not in fields:
            problems.append(
                Problem(
                    key,
                    f"is not a parameter of {algorithm} nor a field of {backend.name}'s configuration",
                    suggest(key, set(fields) | curated_names),
                )
            )
        elif not fields[key].accepts(value):
            problems.append(Problem(key, f"must be {fields[key].describe()} ({fields[key].source})"))

    params: dict[str, Any] = {}
    try:
        params = model.model_validate(curated).model_dump(exclude_none=True)
    except ValidationError as e:
        problems += _pydantic_problems(e)

    required = REQUIRED[algorithm] + (PATH_PARAMS if require_paths else ())
    problems += [Problem(name, f"is required for {algorithm}") for name in required if name not in curated]
    if params.get("max_seq_len") and params.get("max_tokens_per_gpu") and params["max_seq_len"] > params["max_tokens_per_gpu"]:
        problems.append(Problem("max_seq_len", "must not exceed max_tokens_per_gpu (one sample must fit on a GPU)"))
    if params.get("is_pretraining") and params.get("block_size") is None and algorithm != "sft":
        problems.append(Problem("block_size", "is required when is_pretraining is true"))
    if not problems:
        problems += backend.check(params, kwargs, catalog(backend.catalog_name), pipeline=not require_paths)
    if problems:
        raise fail()
    return TrainingSpec(
        schema_version=SCHEMA_VERSION,
        algorithm=algorithm,
        backend=backend_name,
        params=params,
        backend_kwargs=kwargs,
        secrets=secrets,
        notes=backend.notes(params, kwargs),
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec: one variant per algorithm; extra keys are backend kwargs."""
    variants = []
    for algorithm, model in ALGORITHM_PARAMS.items():
        schema = model.model_json_schema()
        schema["properties"] = {
            "schema_version": {"const": SCHEMA_VERSION},
            "algorithm": {"const": algorithm},
            "backend": {"enum": [get_backend(algorithm).name, *get_backend(algorithm).aliases]},
            **schema["properties"],
            "backend_kwargs": {"type": "object", "description": f"Fields of {get_backend(algorithm).name}'s config."},
            "secrets": {"type": "object", "additionalProperties": SecretRef.model_json_schema()},
        }
        schema["required"] = ["algorithm"]
        schema["additionalProperties"] = {"description": "A backend kwarg, checked against the backend's fields."}
        variants.append(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"kubetune training spec v{SCHEMA_VERSION}",
        "oneOf": variants,
    }
