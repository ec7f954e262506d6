"""Validate a spec (a Training Hub call as JSON) into the normalized kwargs artifact, ``TrainingSpec``.

Everything is checked before any GPU is requested, and every problem is reported at once:
curated parameters (types, ranges, required), every backend kwarg against the backend's real fields
(with did-you-mean) and ranges, backend rules, the backend's own configuration classes where installed,
duplicated names, and secrets (references only; a suspected credential is never echoed: every message
passes through ``_hide``). This module sits above ``kubetune.contract`` (the artifact and its catalogues) and
``kubetune.backends`` (each backend's own rules): the one place that joins them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubetune.backends import registry
from kubetune.contract.catalog import choice_problems, value_problems
from kubetune.contract.params import PATH_FIELDS, PATH_PARAMS
from kubetune.contract.rules import checkpoint_problems
from kubetune.contract.spec import (
    MAX_PROBLEMS,
    MAX_SUGGESTIONS,
    RESERVED,
    SCHEMA_VERSION,
    TrainingSpec,
    _hide,
    _json_values,
    pydantic_problems,
    read_document,
    suggest,
)
from kubetune.errors import KubetuneError, Problem
from kubetune.secrets import HINT, KNOWN_SECRETS, SecretRef, scan_spec, shown


def validate_spec(
    document: Any,
    *,
    require_paths: bool = True,
    source: str | None = None,
    lines: dict[str, int] | None = None,
) -> TrainingSpec:
    """Validate a spec document and return the normalized artifact, or raise with every problem found.

    Every entry point (``kubetune validate``, ``load_spec``, the pipeline's validation step, ``kubetune run``)
    comes here, so one document gets one verdict. ``require_paths=False`` is for the pipeline's validation
    step, where model, data and output paths are bound later from the pipeline's artifacts.
    """
    problems: list[Problem] = []
    hidden: set[str] = set()
    lines = lines or {}
    spelled: dict[str, str] = {}  # curated name -> the backend's own name, which the file may use

    def where(key: str) -> str:
        top = key.split(".")[0].split("[")[0]
        for candidate in (key, f"backend_kwargs.{key}", top, spelled.get(top, top), f"backend_kwargs.{spelled.get(top)}"):
            if source and candidate in lines:
                return f"{source}:{lines[candidate]}: `{key}`"
        return f"{source}: `{key}`" if source else f"`{key}`"

    repeated = list(getattr(lines, "repeated", []))  # already located (see ``Lines``)

    def fail() -> KubetuneError:
        shown_problems = problems[: max(0, MAX_PROBLEMS - len(repeated))]
        located = [_hide(p, hidden) for p in repeated[:MAX_PROBLEMS]]
        located += [_hide(Problem(where(p.where), p.message, p.hint), hidden) for p in shown_problems]
        if len(problems) + len(repeated) > MAX_PROBLEMS:
            more = len(problems) + len(repeated) - MAX_PROBLEMS
            located.append(Problem(source or "spec", f"... and {more} more problem(s)"))
        return KubetuneError(located, f"invalid spec{' ' + source if source else ''}")

    if not isinstance(document, dict):
        problems.append(Problem("spec", "must be a JSON object"))
        raise fail()
    document, problems = _json_values(document)
    suspects, hidden = scan_spec(document)
    problems += [Problem(s.where, s.reason + "; secrets are never accepted as values", HINT) for s in suspects]
    if problems:
        raise fail()

    version = document.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        problems.append(Problem("schema_version", f"must be an integer from 1 to {SCHEMA_VERSION} (this kubetune)"))

    algorithm = document.get("algorithm")
    if algorithm not in registry.BACKENDS:
        hint = suggest(algorithm, set(registry.BACKENDS)) if isinstance(algorithm, str) else None
        problems.append(Problem("algorithm", f"must be one of {', '.join(registry.algorithms())}", hint))
        raise fail()

    backend = registry.get_backend(algorithm)
    names = (backend.name, *backend.aliases)
    backend_name = document.get("backend", backend.name)
    if backend_name not in names:
        hint = suggest(backend_name, set(names)) if isinstance(backend_name, str) else None
        problems.append(Problem("backend", f"must be {' or '.join(names)} for {algorithm}", hint))

    secrets: dict[str, SecretRef] = {}
    raw_secrets = document.get("secrets") or {}
    if not isinstance(raw_secrets, dict):
        problems.append(Problem("secrets", 'must be an object like {"HF_TOKEN": {"secret": "hf", "key": "token"}}'))
        raw_secrets = {}
    for env_name, ref in raw_secrets.items():
        if env_name not in KNOWN_SECRETS:
            problems.append(
                Problem(
                    f"secrets.{shown(env_name)}",
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
            problems += pydantic_problems(e, f"secrets.{env_name}")

    model = backend.params_model
    curated_names = set(model.model_fields)
    curated = {k: v for k, v in document.items() if k in curated_names and v is not None}
    kwargs = {k: v for k, v in document.items() if k not in curated_names and k not in RESERVED}
    if kwargs.get("callbacks", True) is None:  # Training Hub's default: callbacks=None is left out
        del kwargs["callbacks"]
    nested = document.get("backend_kwargs") or {}
    if not isinstance(nested, dict):
        problems.append(Problem("backend_kwargs", "must be an object"))
        nested = {}
    for key, value in nested.items():
        if key in kwargs or key in curated_names:
            problems.append(Problem(f"backend_kwargs.{shown(key)}", "is also given at the top level; give it once"))
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

    fields = backend.catalog().fields
    unknown = 0
    for key, value in kwargs.items():
        if key in backend.managed:
            problems.append(Problem(key, f"cannot be set in a spec: {backend.managed[key]}"))
        elif key not in fields:
            unknown += 1
            hint = suggest(key, set(fields) | curated_names) if unknown <= MAX_SUGGESTIONS else None
            problems.append(
                Problem(shown(key), f"is not a parameter of {algorithm} nor a field of {backend.name}'s configuration", hint)
            )
        elif not fields[key].accepts(value):
            problems.append(Problem(key, f"must be {fields[key].describe()} ({fields[key].source})"))
        else:
            problems += value_problems(backend.catalog_name, key, value)
    to_backend = {curated_name: field for field, curated_name in backend.renames.items()}
    spelled.update(to_backend)
    for key, value in curated.items():  # a curated parameter reaches a backend field: its fixed lists hold too
        # (not nproc_per_node: its curated type is exact, and torchrun_kwargs hands "auto" and "2" on as "gpu" and 2)
        if key != "nproc_per_node" and to_backend.get(key, key) in fields:
            problems += choice_problems(backend.catalog_name, to_backend.get(key, key), value, key)

    for name in PATH_FIELDS:
        if isinstance(curated.get(name), str) and not curated[name].strip():
            problems.append(Problem(name, "is empty: give a path"))
    params: dict[str, Any] = {}
    try:
        params = model.model_validate(curated).model_dump(exclude_none=True)
    except ValidationError as e:
        problems += pydantic_problems(e)

    problems += checkpoint_problems(params, kwargs)
    required = backend.required_params + (PATH_PARAMS if require_paths else ())
    problems += [Problem(name, f"is required for {algorithm}") for name in required if name not in curated]
    if params.get("max_seq_len") and params.get("max_tokens_per_gpu") and params["max_seq_len"] > params["max_tokens_per_gpu"]:
        problems.append(Problem("max_seq_len", "must not exceed max_tokens_per_gpu (one sample must fit on a GPU)"))
    rank, nodes = curated.get("node_rank"), curated.get("nnodes", 1)
    if all(isinstance(n, int) and not isinstance(n, bool) for n in (rank, nodes)) and 0 < nodes <= rank:
        problems.append(Problem("node_rank", f"must be less than nnodes ({nodes}): ranks are 0..nnodes-1"))
    if not problems:
        problems += backend.check(params, kwargs, backend.catalog(), pipeline=not require_paths)
    if not problems:  # the backend's own configuration classes, where installed, have the last word
        problems += backend.config_problems(params, kwargs)
    if problems or repeated:
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


def load_spec(path: str | Path, require_paths: bool = True) -> TrainingSpec:
    """Read and validate a spec file; errors name the file and line."""
    document, lines = read_document(path)
    return validate_spec(document, require_paths=require_paths, source=str(path), lines=lines)


def bind(spec: TrainingSpec, **values: Any) -> TrainingSpec:
    """A copy of ``spec`` with some curated parameters set (``None`` leaves one as it is), validated again:
    the pipeline binds the model, data and output paths this way."""
    document = {**spec.to_document(), **{k: v for k, v in values.items() if v is not None}}
    return validate_spec(document, require_paths=True)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec: one variant per algorithm; extra keys are backend kwargs."""
    variants = []
    for algorithm, backend in registry.BACKENDS.items():
        schema = backend.params_model.model_json_schema()
        schema["properties"] = {
            "schema_version": {"const": SCHEMA_VERSION},
            "algorithm": {"const": algorithm},
            "backend": {"enum": [backend.name, *backend.aliases]},
            **schema["properties"],
            "backend_kwargs": {"type": "object", "description": f"Fields of {backend.name}'s config."},
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
