"""The promotion gate's thresholds: the pipeline parameter ``promotion_gate`` (a JSON object; "" = no threshold, the
model is always promoted), read once into ``GateThresholds`` by the validation step, the gate step and run-local."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, ValidationError

from kubetune.contract.spec import pydantic_problems, suggest
from kubetune.errors import KubetuneError, Problem
from kubetune.secrets import shown

FIELD = "promotion_gate"


class GateThresholds(BaseModel):
    """What a model must reach to be exported and registered; a threshold left out is not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_validation_loss: float | None = None  # the best checkpoint's validation loss must be below it
    no_overfitting: bool = False  # the validation loss must not rise (overfitting) before the chosen checkpoint
    min_benchmark_delta: float | None = None  # the benchmark's mean delta to the base model must be at least this
    max_forgetting: float | None = None  # the benchmark's forgetting (largest drop of a task) must be at most this

    @property
    def needs_benchmark(self) -> list[str]:
        """The thresholds set that only a benchmark run can measure."""
        return [name for name in ("min_benchmark_delta", "max_forgetting") if getattr(self, name) is not None]


def parse_gate(text: str, where: str = FIELD) -> GateThresholds:
    """``text`` as thresholds, or every mistake in one ``KubetuneError`` naming ``where`` and the field."""
    if not text.strip():
        return GateThresholds()
    try:
        document = json.loads(text)
    except ValueError as e:
        raise KubetuneError([Problem(where, f"is not JSON ({e.msg} at character {e.pos})")], "invalid promotion gate") from None
    if not isinstance(document, dict):
        example = '{"max_validation_loss": 2.5}'
        raise KubetuneError([Problem(where, f"must be a JSON object of thresholds, e.g. {example}")], "invalid promotion gate")
    try:
        return GateThresholds.model_validate(document)
    except ValidationError as e:
        raise KubetuneError(_problems(e, where), "invalid promotion gate") from None


def check_gate(text: str, benchmark_tasks: str, where: str = FIELD) -> GateThresholds:
    """The thresholds, checked against the run: a benchmark threshold needs ``benchmark_tasks``."""
    thresholds = parse_gate(text, where)
    if (needs := thresholds.needs_benchmark) and not benchmark_tasks.strip():
        message = "is measured by the benchmark, but benchmark_tasks is empty (no benchmark runs)"
        hint = "set benchmark_tasks, e.g. held_out, or leave the threshold out"
        raise KubetuneError([Problem(f"{where}.{name}", message, hint) for name in needs], "invalid promotion gate")
    return thresholds


def _problems(error: ValidationError, where: str) -> list[Problem]:
    fields = list(GateThresholds.model_fields)
    problems = []
    for problem, e in zip(pydantic_problems(error, where), error.errors(include_input=False), strict=True):
        if e["type"] == "extra_forbidden":  # a key that looks like a credential is shown <redacted>, with no did-you-mean
            hint = suggest(str(e["loc"][-1]), set(fields)) or f"the thresholds: {', '.join(fields)}"
            problem = Problem(f"{where}.{shown(e['loc'][-1])}", "is not a threshold", hint)
        problems.append(problem)
    return problems
