"""Benchmark results: per task the base and the fine-tuned score, the delta, forgetting; JSON, Metrics and Markdown.

``delta`` of a task is the fine-tuned score minus the base score in the better direction (positive: the fine-tuned
model is better, also for a lower-is-better metric such as perplexity). ``BenchmarkResults.delta`` is the plain mean
of the tasks' deltas, each in its task's own units (bits per byte, a fraction of documents, ...): not rescaled, so a
task with larger units weighs more; a relative delta is undefined where a base score is 0 (exact match often is).
``forgetting`` is the largest drop of any task, in the better direction and in that task's own units
(``max(0, -delta)`` over tasks): 0 when no task got worse. A task with a non-finite score (inf, NaN) is ``unscored``:
the mean delta and the forgetting are then None (not measured), never a mean of the other tasks. Non-finite scores
are written as the JSON strings "Infinity", "-Infinity", "NaN" and read back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from kubetune.files import write_text_atomic


class TaskScore(BaseModel):
    """One task's primary metric for the base and the fine-tuned model."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    name: str
    metric: str
    higher_is_better: bool
    base: float
    tuned: float
    documents: int = Field(description="documents scored per model")

    @computed_field
    @property
    def delta(self) -> float:
        """Fine-tuned minus base, in the better direction (positive: better)."""
        change = self.tuned - self.base
        return change if self.higher_is_better else -change


class BenchmarkResults(BaseModel):
    """What the benchmark step measured; ``ran`` is False when no task was asked for (then nothing else is set)."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    ran: bool
    tasks: list[TaskScore] = []
    run: dict[str, Any] = Field(default_factory=dict, description="how lm-eval was run: version, models, settings")

    @property
    def unscored(self) -> list[str]:
        """The tasks whose base or fine-tuned score is not a finite number."""
        return [t.name for t in self.tasks if not math.isfinite(t.delta)]

    @computed_field
    @property
    def delta(self) -> float | None:
        """The mean of the tasks' deltas (positive: better); None when nothing ran or a task is unscored."""
        if not self.tasks or self.unscored:
            return None
        return sum(t.delta for t in self.tasks) / len(self.tasks)

    @computed_field
    @property
    def forgetting(self) -> float | None:
        """The largest drop of any task in the better direction, 0 when none got worse; None when nothing ran or a
        task is unscored."""
        if not self.tasks or self.unscored:
            return None
        return max(0.0, *(-t.delta for t in self.tasks))

    @classmethod
    def read(cls, path: str | Path) -> BenchmarkResults:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def write(self, path: str | Path) -> None:
        write_text_atomic(path, self.model_dump_json(indent=2))

    def metrics(self) -> dict[str, float]:
        """Flat KFP metrics: ``<task>_base``, ``<task>_tuned``, ``<task>_delta``, ``benchmark_delta``, ``forgetting``."""
        out: dict[str, float] = {}
        for t in self.tasks:
            scores = {f"{t.name}_base": t.base, f"{t.name}_tuned": t.tuned, f"{t.name}_delta": t.delta}
            out.update({k: v for k, v in scores.items() if math.isfinite(v)})  # a non-finite one is left out
        if self.delta is not None:
            out["benchmark_delta"] = self.delta
        if self.forgetting is not None:
            out["forgetting"] = self.forgetting
        return out

    def markdown(self) -> str:
        """The report: a table per task (base, fine-tuned, delta), forgetting, and how lm-eval was run."""
        if not self.ran:
            return "# Benchmark\n\nNot run: `benchmark_tasks` is empty (give `held_out` or lm-eval task names).\n"
        lines = [
            "# Benchmark",
            "",
            "| task | metric | base | fine-tuned | delta |",
            "|---|---|---:|---:|---:|",
        ]
        for t in self.tasks:
            arrow = "↑" if t.higher_is_better else "↓"
            lines.append(f"| {t.name} | {t.metric} {arrow} | {t.base:.4g} | {t.tuned:.4g} | {t.delta + 0.0:+.4g} |")
        lines += [
            "",
            f"Mean delta: {_number(self.delta)} (positive: the fine-tuned model is better). "
            f"Forgetting: {_number(self.forgetting)} (the largest drop of any task, 0 when none got worse).",
            "",
            *([f"Not measured: {', '.join(self.unscored)} scored no finite number.", ""] if self.unscored else []),
            "How it was run: " + ", ".join(f"{k}={v}" for k, v in self.run.items()),
            "",
        ]
        return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value + 0.0:+.4g}"
