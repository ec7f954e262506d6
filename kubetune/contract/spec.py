"""The kwargs artifact, ``TrainingSpec``: what validation writes and every step reads, as one typed object.

``TrainingSpec.read(path)`` is the artifact's one reader (a step never parses its JSON itself); ``to_json`` is its
one writer. Beside it, what validation (``kubetune.validation``) needs to read a user's spec file: bounded reading
with the line of every key (``read_document``, ``reading.py``: ``MAX_SPEC_BYTES``, ``MAX_DEPTH``), JSON values
checked, pydantic errors as problems, and ``_hide``, the gate every message passes so that a suspected
credential is never echoed.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.contract.reading import MAX_DEPTH, MAX_ITEMS, MAX_SPEC_BYTES, Refused, layout, parse, read_text
from kubetune.errors import KubetuneError, Problem
from kubetune.secrets import SecretRef, redact, shown

SCHEMA_VERSION = 1
RESERVED = ("schema_version", "algorithm", "backend", "backend_kwargs", "secrets")
MAX_PROBLEMS = 50  # a report lists at most this many problems, then how many more there are
MAX_SUGGESTIONS = 20  # did-you-mean hints for the first unknown keys only (difflib is slow on thousands)
__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_SPEC_BYTES", "SCHEMA_VERSION", "TrainingSpec", "read_document"]


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

    @classmethod
    def from_document(cls, document: Any, source: str = "kwargs artifact") -> TrainingSpec:
        """The artifact from its JSON (``to_document``'s shape), or a one-line error naming ``source``.
        Structure only: ``kubetune.validation.validate_spec`` is what checks a user's spec."""
        if not isinstance(document, dict) or not isinstance(document.get("algorithm"), str):
            raise _not_an_artifact(source, "it is not a JSON object with an `algorithm`")
        params = {k: v for k, v in document.items() if k not in RESERVED}
        try:
            return cls.model_validate({**{k: document[k] for k in RESERVED if k in document}, "params": params})
        except ValidationError as e:
            first = pydantic_problems(e)[0]
            raise _not_an_artifact(source, f"`{first.where}` {first.message.lower()}") from None

    @classmethod
    def read(cls, path: str | Path) -> TrainingSpec:
        """The kwargs artifact a validation step wrote to ``path``: the one reader of it in every step."""
        try:
            document, _ = parse(read_text(Path(path)), str(path))
        except Refused as e:  # unreadable, too big, not JSON: the reader's own first problem, file:line
            raise KubetuneError(e.problems[:1], "invalid kwargs artifact") from None
        return cls.from_document(document, str(path))

    @property
    def model_path(self) -> str | None:
        """The base model the spec names (the pipeline binds the model it trained from ``model_uri`` here)."""
        return self.params.get("model_path")

    def with_params(self, **values: Any) -> TrainingSpec:
        """A copy with some curated parameters set (``None`` leaves one as it is); a backend fills its own
        defaults this way. ``kubetune.validation.bind`` is the re-validating form, for values from outside."""
        return self.model_copy(update={"params": {**self.params, **{k: v for k, v in values.items() if v is not None}}})


def _not_an_artifact(source: str, why: str) -> KubetuneError:
    hint = "give the file that the pipeline's validation step wrote"
    return KubetuneError([Problem(source, f"is not a kubetune kwargs artifact: {why}", hint)], "invalid kwargs artifact")


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


def suggest(name: str, candidates: set[str]) -> str | None:
    if shown(name) != name:
        return None
    matches = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"`{m}`" for m in matches) + "?" if matches else None


def pydantic_problems(error: ValidationError, prefix: str = "", empty: str = "spec") -> list[Problem]:
    """The one conversion of a pydantic error into problems, each at its field (``empty``: the whole input's name).
    ``msg`` never contains the input value (include_input=False), so a value cannot leak through it."""
    problems = []
    for e in error.errors(include_input=False):
        where = prefix
        for part in e["loc"]:
            where = f"{where}[{part}]" if isinstance(part, int) else (f"{where}.{shown(part)}" if where else shown(part))
        problems.append(Problem(where or empty, e["msg"]))
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
