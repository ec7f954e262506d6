"""The promotion gate: the run's measurements against the thresholds of ``promotion_gate`` (``GateThresholds``).

``gate_step`` writes the decision as Markdown (each threshold, the value measured, pass or fail, the verdict) and
returns it; a refused model is not an error: the pipeline exports and registers only a promoted one, and writes
``write_refusal``'s visible stand-in (no weights, a README saying why) as its model otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune.contract.gate import GateThresholds, parse_gate
from kubetune.files import write_text_atomic
from kubetune.steps.curve import LossCurve, LossPoint

if TYPE_CHECKING:
    from kubetune.benchmark.results import BenchmarkResults


@dataclass(frozen=True)
class Check:
    """One threshold: its bound, the value measured, and why it failed (None: passed)."""

    threshold: str
    bound: str
    measured: str
    failure: str | None

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: every threshold checked, and the values measured (KFP metrics)."""

    checks: list[Check]
    values: dict[str, float]

    @property
    def promoted(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.failure for c in self.checks if c.failure]

    def metrics(self) -> dict[str, float]:
        return {"promoted": int(self.promoted), "thresholds_checked": len(self.checks), **self.values}

    def markdown(self) -> str:
        verdict = "promoted" if self.promoted else "NOT promoted"
        lines = [f"### Promotion gate: {verdict}", ""]
        if not self.checks:
            lines.append("No threshold set (`promotion_gate` is empty): every model is promoted.")
        else:
            lines += ["| threshold | bound | measured | result |", "|---|---|---|---|"]
            for c in self.checks:
                lines.append(f"| `{c.threshold}` | {c.bound} | {c.measured} | {'pass' if c.passed else '**fail**'} |")
        if self.reasons:
            lines += ["", "Not promoted: " + "; ".join(self.reasons) + ". Nothing was exported or registered."]
        return "\n".join(lines) + "\n"


def decide(
    thresholds: GateThresholds, curve: LossCurve, benchmark: BenchmarkResults | None, export_checkpoint: str = "best"
) -> Decision:
    """Check every threshold set against the checkpoint the export takes (``export_checkpoint``: best or final): its
    validation loss, overfitting before it (a non-finite loss up to it fails too), and the benchmark's delta and
    forgetting (None: no benchmark ran; a non-finite score fails both)."""
    chosen = curve.best if export_checkpoint == "best" else curve.points[-1]
    early = _overfits_before(curve, chosen)
    values: dict[str, float] = {"best_validation_loss": curve.best.loss, "overfitting_before_export": int(early)}
    if math.isfinite(chosen.loss):
        values["exported_validation_loss"] = chosen.loss
    ran = benchmark is not None and benchmark.ran
    if ran and benchmark.delta is not None:
        values["benchmark_delta"] = benchmark.delta
    if ran and benchmark.forgetting is not None:
        values["forgetting"] = benchmark.forgetting
    checks = []
    t = thresholds
    if t.max_validation_loss is not None:
        checks.append(_loss_check(chosen, t.max_validation_loss))
    if t.no_overfitting:
        checks.append(_overfitting_check(curve, chosen, early))
    unscored = benchmark.unscored if ran else []
    if t.min_benchmark_delta is not None:
        check = _benchmark_check("min_benchmark_delta", "benchmark delta", t.min_benchmark_delta, values, unscored, True)
        checks.append(check)
    if t.max_forgetting is not None:
        checks.append(_benchmark_check("max_forgetting", "forgetting", t.max_forgetting, values, unscored, False))
    return Decision(checks, values)


def _loss_check(chosen: LossPoint, bound: float) -> Check:
    """The exported checkpoint's validation loss is below ``bound`` (a non-finite loss never is)."""
    loss, where = chosen.loss, chosen.checkpoint
    if not math.isfinite(loss):
        failure = f"validation loss of {where} is {loss} (not a finite number)"
    else:
        failure = None if loss < bound else f"validation loss {_value(loss, bound)} of {where} is not below {_bound(bound)}"
    return Check("max_validation_loss", f"below {_bound(bound)}", f"{_value(loss, bound)} ({where})", failure)


def _overfitting_check(curve: LossCurve, chosen: LossPoint, early: bool) -> Check:
    """No rise of the validation loss, and no non-finite loss, up to the exported checkpoint."""
    upto = [p.checkpoint for p in curve.points]
    upto = upto[: upto.index(chosen.checkpoint) + 1] if chosen.checkpoint in upto else upto
    broken = [p.checkpoint for p in curve.points if p.checkpoint in upto and not math.isfinite(p.loss)]
    over = curve.overfitting
    measured = f"rises after {over.checkpoint}" if over else "no rise"
    failure = f"validation loss rises after {over.checkpoint}, before {chosen.checkpoint}" if early and over else None
    if broken and not failure:
        measured = f"not finite at {broken[0]}"
        failure = f"validation loss is not finite at {broken[0]}, at or before {chosen.checkpoint}"
    return Check("no_overfitting", f"none before {chosen.checkpoint}", measured, failure)


def _overfits_before(curve: LossCurve, chosen: LossPoint) -> bool:
    """Whether the validation loss started rising (the curve's overfitting point) before ``chosen``."""
    order = [p.checkpoint for p in curve.points]
    over = curve.overfitting
    return over is not None and chosen.checkpoint in order and order.index(over.checkpoint) < order.index(chosen.checkpoint)


def _benchmark_check(
    threshold: str, what: str, bound: float, values: dict[str, float], unscored: list[str], at_least: bool
) -> Check:
    key = "benchmark_delta" if threshold == "min_benchmark_delta" else "forgetting"
    shown = f"at least {_bound(bound)}" if at_least else f"at most {_bound(bound)}"
    if unscored:
        measured = f"not finite ({', '.join(unscored)})"
        return Check(threshold, shown, measured, f"{what} is not measured: no finite score for {', '.join(unscored)}")
    if key not in values:
        return Check(threshold, shown, "not measured", f"{what} was not measured (the benchmark did not run)")
    value = values[key]
    ok = value >= bound if at_least else value <= bound
    return Check(threshold, shown, _value(value, bound), None if ok else f"{what} {_value(value, bound)} is not {shown}")


def _value(value: float, bound: float) -> str:
    """``value`` with 4 decimals, or as many as it takes to compare with ``bound`` as it does unrounded (never
    "forgetting 0.0001 is not at most 0.0001")."""
    for digits in range(4, 18):
        text = f"{value:.{digits}f}"
        if (float(text) < bound, float(text) > bound) == (value < bound, value > bound):
            return text
    return repr(value)


def _bound(bound: float) -> str:
    return f"{bound:.15g}"  # as given (JSON numbers are short), not rounded to 6 digits


def read_benchmark(path: str | Path | None) -> BenchmarkResults | None:
    """The benchmark step's results at ``path``; None when no path is given or no file is there."""
    if not path or not Path(path).is_file():
        return None
    from kubetune.benchmark.results import BenchmarkResults

    return BenchmarkResults.read(path)


def gate_step(
    promotion_gate: str,
    loss_curve_path: str | Path,
    benchmark_path: str | Path | None,
    decision_path: str | Path,
    export_checkpoint: str = "best",
) -> Decision:
    """Decide and write the decision's Markdown to ``decision_path``; a refusal is a decision, not an error."""
    thresholds = parse_gate(promotion_gate)
    decision = decide(thresholds, LossCurve.read(loss_curve_path), read_benchmark(benchmark_path), export_checkpoint)
    write_text_atomic(decision_path, decision.markdown())
    return decision


def write_refusal(folder: str | Path, reasons: list[str], decision_markdown: str) -> None:
    """The model output of a refused run: a folder with no weights and a README.md saying why."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = f"# Not promoted\n\nnot promoted: {'; '.join(reasons)}\n\nNo weights: nothing was exported or registered.\n\n"
    write_text_atomic(folder / "README.md", text + decision_markdown)
