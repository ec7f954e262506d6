"""Validate a spec (a Training Hub call as JSON) into the normalized kwargs artifact.

Everything is checked before any GPU is requested, and every problem is reported at once:
curated parameters (types, ranges, required), every backend kwarg against the backend's real fields
(with did-you-mean) and ranges, backend rules, the backend's own configuration classes where installed,
duplicated names, and secrets (references only; a suspected credential is never echoed: every message
passes through ``_hide``). Files are read in bounded memory (``reading.py``: ``MAX_SPEC_BYTES``, ``MAX_DEPTH``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.backends import get_backend
from kubetune.contract.catalog import catalog, choice_problems, value_problems
from kubetune.contract.params import ALGORITHM_PARAMS, PATH_FIELDS, PATH_PARAMS, REQUIRED
from kubetune.contract.reading import MAX_DEPTH, MAX_ITEMS, MAX_SPEC_BYTES, Refused, layout, parse, read_text
from kubetune.contract.rules import checkpoint_problems
from kubetune.contract.secrets import HINT, KNOWN_SECRETS, SecretRef, redact, scan_spec, shown
from kubetune.errors import KubetuneError, Problem

SCHEMA_VERSION = 1
RESERVED = ("schema_version", "algorithm", "backend", "backend_kwargs", "secrets")
MAX_PROBLEMS = 50  # a report lists at most this many problems, then how many more there are
MAX_SUGGESTIONS = 20  # did-you-mean hints for the first unknown keys only (difflib is slow on thousands)
__all__ = [
    "MAX_DEPTH", "MAX_ITEMS", "MAX_SPEC_BYTES", "SCHEMA_VERSION", "TrainingSpec", "load_spec", "read_document", "validate_spec"
]  # fmt: skip


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


class Lines(dict):
    """The line of every key path of a spec file, and its repeated keys (each one problem, already located):
    a document whose only fault is a repeated key is still validated (JSON's last value counts), so that
    every problem is reported at once; ``validate_spec`` adds ``repeated`` to its verdict."""

    def __init__(self, lines: dict[str, int], repeated: list[Problem] | None = None):
        super().__init__(lines)
        self.repeated = repeated or []


_REPEATED = re.compile(r"(?s)(?P<source>.*):(?P<first>\d+) and :(?P<line>\d+): (?P<key>`.*`)")


def _repeated(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """``reading``'s duplicate-key problems (one per repetition) as one problem per key naming every line,
    and the other problems."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    others = []
    for p in problems:
        match = _REPEATED.fullmatch(p.where) if p.message.startswith("is given twice") else None
        if match is None:
            others.append(p)
            continue
        found = groups.setdefault((match["source"], match["first"], match["key"]), [match["first"]])
        found.append(match["line"])
    repeated = []
    for (source, _, key), found in groups.items():
        at = [f":{n}" for n in sorted(set(found), key=int)]
        places = at[0] if len(at) == 1 else ", ".join(at[:-1]) + " and " + at[-1]
        times = "twice" if len(found) == 2 else f"{len(found)} times"
        repeated.append(Problem(f"{source}{places}: {key}", f"is given {times} (JSON keeps only the last)"))
    return repeated, others


def read_document(path: str | Path) -> tuple[Any, Lines]:
    """A spec file parsed in bounded memory, with the line of every key path; raises with file:line.
    A document whose only fault is a repeated key comes back with it in ``Lines.repeated``."""
    path = Path(path)
    try:
        text = read_text(path)
        try:
            document, found = parse(text, str(path))
            return document, Lines(found.lines)
        except Refused as e:
            repeated, others = _repeated(e.problems)
            if others or not repeated:
                raise Refused(repeated + others) from None
            try:
                document = json.loads(text)  # ``parse`` read it: only repeated keys are wrong
            except ValueError:
                raise Refused(repeated) from None
            return document, Lines(layout(text, str(path)).lines, repeated)
    except Refused as e:
        raise KubetuneError([_hide(p, set()) for p in e.problems], f"invalid spec {path}") from None


def load_spec(path: str | Path, require_paths: bool = True) -> TrainingSpec:
    """Read and validate a spec file; errors name the file and line."""
    document, lines = read_document(path)
    return validate_spec(document, require_paths=require_paths, source=str(path), lines=lines)


def suggest(name: str, candidates: set[str]) -> str | None:
    if shown(name) != name:
        return None
    matches = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"`{m}`" for m in matches) + "?" if matches else None


def _pydantic_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    # `msg` never contains the input value (include_input=False), so a value cannot leak through it.
    problems = []
    for e in error.errors(include_input=False):
        where = prefix
        for part in e["loc"]:
            where = f"{where}[{part}]" if isinstance(part, int) else (f"{where}.{shown(part)}" if where else shown(part))
        problems.append(Problem(where or "spec", e["msg"]))
    return problems


def _hide(problem: Problem, hidden: set[str]) -> Problem:
    """The one gate every message of a spec error passes: suspected credentials become ``<redacted>``."""
    hint = redact(problem.hint, hidden) if problem.hint else None
    return Problem(redact(problem.where, hidden), redact(problem.message, hidden), hint)


def _json_values(document: Any) -> tuple[Any, list[Problem]]:
    """Check that ``document`` is JSON made of finite numbers, 64-bit integers and string keys, not deeper than
    ``MAX_DEPTH`` nor bigger than ``MAX_SPEC_BYTES`` (iteratively: no recursion on hostile input); return it
    with integral floats as integers (KFP carries every number as a double, JSON does not tell 2 from 2.0).
    The size counted is a lower bound of the document's JSON text, so any file under the limit passes."""
    problems: list[Problem] = []
    size = 0
    todo: list[tuple[str, Any, int]] = [("", document, 0)]
    while todo and len(problems) < MAX_PROBLEMS:
        where, value, depth = todo.pop()
        name = where or "spec"
        if depth > MAX_DEPTH:
            return document, [Problem(name, f"is nested deeper than {MAX_DEPTH} levels")]
        size += 1
        if isinstance(value, (dict, list)) and len(value) > MAX_ITEMS:
            kind = "keys" if isinstance(value, dict) else "items"
            return document, [Problem(name, f"has {len(value)} {kind}; a spec's objects and lists hold at most {MAX_ITEMS}")]
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    problems.append(Problem(name, "has a key that is not a string"))
                    continue
                size += len(k) + 3
                todo.append((f"{where}.{shown(k)}" if where else shown(k), v, depth + 1))
        elif isinstance(value, list):
            todo += [(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, str):
            size += len(value) + 1
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(name, "must be a finite number (not NaN or Infinity)"))
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            problems.append(Problem(name, "is out of range: integers must fit in 64 bits"))
        elif value is not None and not isinstance(value, (bool, int, float)):
            problems.append(Problem(name, f"is not a JSON value ({type(value).__name__})"))
        if size > MAX_SPEC_BYTES:
            return document, [Problem("spec", f"is larger than {MAX_SPEC_BYTES} bytes (1 MiB), the size limit of a spec")]
    return (document if problems else integral(document)), problems


def integral(value: Any) -> Any:
    """Integral floats as integers, as JSON and KFP's Structs mean them (depth is bounded by the caller)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


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
    if algorithm not in ALGORITHM_PARAMS:
        hint = suggest(algorithm, set(ALGORITHM_PARAMS)) if isinstance(algorithm, str) else None
        problems.append(Problem("algorithm", f"must be one of {', '.join(sorted(ALGORITHM_PARAMS))}", hint))
        raise fail()

    backend = get_backend(algorithm)
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
            problems += _pydantic_problems(e, f"secrets.{env_name}")

    model = ALGORITHM_PARAMS[algorithm]
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

    fields = catalog(backend.catalog_name).fields
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
        problems += _pydantic_problems(e)

    problems += checkpoint_problems(params, kwargs)
    required = REQUIRED[algorithm] + (PATH_PARAMS if require_paths else ())
    problems += [Problem(name, f"is required for {algorithm}") for name in required if name not in curated]
    if params.get("max_seq_len") and params.get("max_tokens_per_gpu") and params["max_seq_len"] > params["max_tokens_per_gpu"]:
        problems.append(Problem("max_seq_len", "must not exceed max_tokens_per_gpu (one sample must fit on a GPU)"))
    rank, nodes = curated.get("node_rank"), curated.get("nnodes", 1)
    if all(isinstance(n, int) and not isinstance(n, bool) for n in (rank, nodes)) and 0 < nodes <= rank:
        problems.append(Problem("node_rank", f"must be less than nnodes ({nodes}): ranks are 0..nnodes-1"))
    if params.get("is_pretraining") and params.get("block_size") is None and algorithm != "sft":
        problems.append(Problem("block_size", "is required when is_pretraining is true"))
    if not problems:
        problems += backend.check(params, kwargs, catalog(backend.catalog_name), pipeline=not require_paths)
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
