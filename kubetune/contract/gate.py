"""The promotion gate's thresholds: the pipeline parameter ``promotion_gate`` (a JSON object; "" = no threshold, the
model is always promoted), read once into ``GateThresholds`` by the validation step, the gate step and run-local."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.contract.spec import pydantic_problems, suggest
from kubetune.errors import KubetuneError, Problem
from kubetune.secrets import shown

FIELD = "promotion_gate"


class GateThresholds(BaseModel):
    """What a model must reach to be exported and registered; a threshold left out is not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    # a bound no model can meet is refused: a validation loss (cross-entropy) is never below 0, forgetting never under 0
    max_validation_loss: float | None = Field(None, gt=0)  # the exported checkpoint's validation loss must be below it
    no_overfitting: bool = False  # the validation loss must not rise (overfitting) before the exported checkpoint
    min_benchmark_delta: float | None = None  # the benchmark's mean delta to the base model must be at least this
    max_forgetting: float | None = Field(None, ge=0)  # the benchmark's forgetting (largest drop of a task) at most this

    @property
    def needs_benchmark(self) -> list[str]:
        """The thresholds set that only a benchmark run can measure."""
        return [name for name in ("min_benchmark_delta", "max_forgetting") if getattr(self, name) is not None]


def parse_gate(text: str, where: str = FIELD) -> GateThresholds:
    """``text`` as thresholds, or every mistake in one ``KubetuneError`` naming ``where`` and the field."""
    if not text.strip():
        return GateThresholds()
    try:
        document = json.loads(text, object_pairs_hook=_unique)
    except json.JSONDecodeError as e:
        raise KubetuneError([Problem(where, f"is not JSON ({e.msg} at character {e.pos})")], "invalid promotion gate") from None
    except _Duplicate as e:
        problem = Problem(f"{where}.{shown(e.key)}", "is given twice (JSON keeps only the last)", "give each threshold once")
        raise KubetuneError([problem], "invalid promotion gate") from None
    if not isinstance(document, dict):
        example = '{"max_validation_loss": 2.5}'
        raise KubetuneError([Problem(where, f"must be a JSON object of thresholds, e.g. {example}")], "invalid promotion gate")
    try:
        return GateThresholds.model_validate(document)
    except ValidationError as e:
        raise KubetuneError(_problems(e, where), "invalid promotion gate") from None


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are all different (``json.loads`` would keep the last of a repeated one)."""
    keys = [key for key, _ in pairs]
    if repeated := next((key for key in keys if keys.count(key) > 1), None):
        raise _Duplicate(repeated)
    return dict(pairs)


def check_gate(text: str, benchmark_tasks: str, where: str = FIELD) -> GateThresholds:
    """The thresholds, checked against the run: a benchmark threshold needs ``benchmark_tasks``."""
    thresholds = parse_gate(text, where)
    if (needs := thresholds.needs_benchmark) and not benchmark_tasks.strip():
        message = "is measured by the benchmark, but benchmark_tasks is empty (no benchmark runs)"
        hint = "set benchmark_tasks, e.g. held_out (run-local: --evaluate-benchmark), or leave the threshold out"
        raise KubetuneError([Problem(f"{where}.{name}", message, hint) for name in needs], "invalid promotion gate")
    return thresholds


def _problems(error: ValidationError, where: str) -> list[Problem]:
    fields = list(GateThresholds.model_fields)
    problems = []
    for problem, e in zip(pydantic_problems(error, where), error.errors(include_input=False), strict=True):
        if e["type"] == "extra_forbidden":  # a key that looks like a credential is shown <redacted>, with no did-you-mean
            hint = suggest(str(e["loc"][-1]), set(fields)) or f"the thresholds: {', '.join(fields)}"
            problem = Problem(f"{where}.{shown(e['loc'][-1])}", "is not a threshold", hint)
        elif e["type"] in ("greater_than", "greater_than_equal"):  # a bound no model can meet
            problem = Problem(problem.where, problem.message, "no model could pass: a loss or forgetting is never below 0")
        problems.append(problem)
    return problems
