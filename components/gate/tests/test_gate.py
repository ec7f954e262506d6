"""The promotion gate step and its components, on a recorded loss curve (tests/steps/loss_curve.json: the validation
loss bottoms out at samples_300, best 2.0, and rises twice after it) and benchmark results made here."""

import json
import math
from pathlib import Path

import pytest

from kubetune.benchmark.results import BenchmarkResults, TaskScore
from kubetune.contract.gate import GateThresholds, check_gate, parse_gate
from kubetune.errors import KubetuneError
from kubetune.steps.curve import LossCurve
from kubetune.steps.gate import decide, gate_step, read_benchmark, write_refusal

CURVE = Path(__file__).resolve().parents[3] / "tests" / "steps" / "loss_curve.json"


@pytest.fixture(scope="module")
def curve() -> LossCurve:
    return LossCurve.read(CURVE)


def benchmark(base: float, tuned: float, other: tuple[float, float] = (0.5, 0.5)) -> BenchmarkResults:
    """Two tasks: ``exact_match`` (base -> tuned) and ``held_out`` (``other``), both higher-is-better."""
    tasks = [
        TaskScore(name="exact_match", metric="exact_match", higher_is_better=True, base=base, tuned=tuned, documents=8),
        TaskScore(name="held_out", metric="acc", higher_is_better=True, base=other[0], tuned=other[1], documents=8),
    ]
    return BenchmarkResults(ran=True, tasks=tasks)


def test_no_threshold_promotes_and_says_so(curve):
    decision = decide(GateThresholds(), curve, None)
    assert decision.promoted and decision.checks == [] and decision.reasons == []
    assert decision.metrics() == {
        "promoted": 1,
        "thresholds_checked": 0,
        "best_validation_loss": 2.0,
        "overfitting_before_export": 0,
        "exported_validation_loss": 2.0,
    }
    assert "every model is promoted" in decision.markdown()


def test_max_validation_loss_passes_below_the_bound_and_fails_at_or_above_it(curve):
    assert decide(parse_gate('{"max_validation_loss": 2.01}'), curve, None).promoted
    refused = decide(parse_gate('{"max_validation_loss": 2.0}'), curve, None)  # "below": equal is refused
    assert not refused.promoted and refused.reasons == ["validation loss 2.0000 of hf_format/samples_300 is not below 2"]
    assert refused.metrics()["promoted"] == 0
    text = refused.markdown()
    assert (
        "### Promotion gate: NOT promoted" in text
        and "| `max_validation_loss` | below 2 | 2.0000 (hf_format/samples_300) | **fail** |" in text
    )
    assert (
        "Not promoted: validation loss 2.0000 of hf_format/samples_300 is not below 2. Nothing was exported or registered."
        in text
    )


def test_no_overfitting_fails_only_when_the_exported_checkpoint_comes_after_the_rise(curve):
    assert curve.overfitting.checkpoint == "hf_format/samples_300"
    thresholds = parse_gate('{"no_overfitting": true}')
    best = decide(thresholds, curve, None, "best")  # the best checkpoint is where the rise starts: before it, none
    assert best.promoted and best.metrics()["overfitting_before_export"] == 0
    final = decide(thresholds, curve, None, "final")
    assert not final.promoted and final.metrics()["overfitting_before_export"] == 1
    (reason,) = final.reasons
    assert reason == f"validation loss rises after hf_format/samples_300, before {curve.points[-1].checkpoint}"
    assert decide(GateThresholds(), curve, None, "final").promoted  # measured, but not a threshold unless asked


def test_benchmark_delta_and_forgetting(curve):
    gate = parse_gate('{"min_benchmark_delta": 0.1, "max_forgetting": 0.05}')
    better = decide(gate, curve, benchmark(0.2, 0.5))  # deltas 0.3 and 0: mean 0.15, nothing forgotten
    assert better.promoted and better.values["benchmark_delta"] == pytest.approx(0.15) and better.values["forgetting"] == 0
    forgot = decide(gate, curve, benchmark(0.2, 0.8, other=(0.6, 0.4)))  # deltas 0.6, -0.2: mean 0.2, forgetting 0.2
    assert not forgot.promoted and forgot.reasons == ["forgetting 0.2000 is not at most 0.05"]
    worse = decide(gate, curve, benchmark(0.5, 0.5))
    assert worse.reasons == ["benchmark delta 0.0000 is not at least 0.1"]
    for missing in (None, BenchmarkResults(ran=False)):  # a benchmark threshold with nothing measured is never met
        refused = decide(gate, curve, missing)
        assert not refused.promoted and len(refused.reasons) == 2 and "not measured" in refused.markdown()


def made_curve(losses: list[float]) -> LossCurve:
    """A curve of checkpoint-1.. with ``losses``; the best is the lowest finite one, no overfitting point."""
    points = [
        {"checkpoint": f"checkpoint-{i}", "step": i, "samples": None, "loss": x, "perplexity": 1.0, "tokens": 1, "x": i}
        for i, x in enumerate(losses, 1)
    ]
    best = min((p for p in points if math.isfinite(p["loss"])), key=lambda p: p["loss"])
    return LossCurve.model_validate(
        {"axis": "step", "patience": 2, "points": points, "best": best, "overfitting": None, "backend": {}}
    )


def test_the_thresholds_measure_the_exported_checkpoint_and_a_non_finite_loss_fails():
    rising = made_curve([1.0, 3.0, 5.0])
    gate = parse_gate('{"max_validation_loss": 2}')
    assert decide(gate, rising, None, "best").promoted
    final = decide(gate, rising, None, "final")
    assert final.reasons == ["validation loss 5.0000 of checkpoint-3 is not below 2"]
    assert final.values["exported_validation_loss"] == 5.0 and final.values["best_validation_loss"] == 1.0
    broken = made_curve([1.0, 1.5, math.nan])
    both = parse_gate('{"max_validation_loss": 2, "no_overfitting": true}')
    assert decide(both, broken, None, "best").promoted  # the NaN checkpoint comes after the exported one
    refused = decide(both, broken, None, "final")
    assert refused.reasons == [
        "validation loss of checkpoint-3 is nan (not a finite number)",
        "validation loss is not finite at checkpoint-3, at or before checkpoint-3",
    ]
    assert "exported_validation_loss" not in refused.metrics()  # KFP metrics hold numbers only


def test_a_reason_shows_enough_digits_to_be_true():
    gate = parse_gate('{"max_forgetting": 0.0001, "min_benchmark_delta": 0.1234567}')
    decision = decide(gate, made_curve([1.0]), benchmark(0.5, 0.74702, other=(0.5, 0.49988)))  # mean delta 0.12345
    assert decision.reasons == [
        "benchmark delta 0.12345 is not at least 0.1234567",
        "forgetting 0.00012 is not at most 0.0001",
    ]  # rounded to 4 decimals they read "0.1235 is not at least 0.123457" and "0.0001 is not at most 0.0001"


def test_a_non_finite_benchmark_score_fails_the_benchmark_thresholds_and_the_results_read_back(tmp_path):
    gate = parse_gate('{"min_benchmark_delta": -1, "max_forgetting": 1}')
    for bad in (math.inf, math.nan):
        results = benchmark(0.2, bad)
        assert results.unscored == ["exact_match"] and results.delta is None and results.forgetting is None
        results.write(tmp_path / "results.json")
        again = read_benchmark(tmp_path / "results.json")
        assert again.tasks[0].tuned == bad or math.isnan(again.tasks[0].tuned)
        assert "exact_match_tuned" not in again.metrics() and again.metrics()["held_out_delta"] == 0
        refused = decide(gate, made_curve([1.0]), again)
        assert refused.reasons == [
            "benchmark delta is not measured: no finite score for exact_match",
            "forgetting is not measured: no finite score for exact_match",
        ]
        assert "Not measured: exact_match scored no finite number." in again.markdown()


def test_a_typo_a_wrong_type_and_a_non_object_are_refused_naming_the_field():
    cases = {
        '{"max_validation_los": 2}': "max_validation_los: is not a threshold (did you mean `max_validation_loss`?)",
        '{"no_overfitting": "yes"}': "promotion_gate.no_overfitting: Input should be a valid boolean",
        '{"max_validation_loss": 1e999}': "promotion_gate.max_validation_loss: Input should be a finite number",
        '{"max_validation_loss": -3}': "promotion_gate.max_validation_loss: Input should be greater than 0 (no model could pass",
        '{"max_forgetting": -0.5}': "promotion_gate.max_forgetting: Input should be greater than or equal to 0 (no model",
        '{"max_forgetting": 0.1, "max_forgetting": 9}': "promotion_gate.max_forgetting: is given twice (JSON keeps only",
        '["max_validation_loss"]': "promotion_gate: must be a JSON object of thresholds",
        "{max_validation_loss: 2}": "promotion_gate: is not JSON",
        '{"hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345": 1}': "promotion_gate.<redacted>: is not a threshold (the thresholds: "
        "max_validation_loss, no_overfitting, min_benchmark_delta, max_forgetting)",  # a credential is never echoed
    }
    for text, message in cases.items():
        with pytest.raises(KubetuneError) as e:
            parse_gate(text)
        assert message in e.value.report() and "AbCdEf" not in e.value.report(), text
    assert parse_gate("  ") == GateThresholds() and parse_gate('{"max_forgetting": 0}').max_forgetting == 0


def test_a_benchmark_threshold_without_benchmark_tasks_is_refused_early():
    with pytest.raises(KubetuneError) as e:
        check_gate('{"max_validation_loss": 3, "min_benchmark_delta": 0}', benchmark_tasks=" ")
    assert [p.where for p in e.value.problems] == ["promotion_gate.min_benchmark_delta"]
    assert "benchmark_tasks is empty" in e.value.report() and "(run-local: --evaluate-benchmark)" in e.value.report()
    assert check_gate('{"max_forgetting": 0.1}', benchmark_tasks="held_out").max_forgetting == 0.1


def test_the_components_write_the_decision_metrics_and_the_refusal(tmp_path):
    from kfp.dsl import Artifact, Markdown, Metrics, Model

    from kubetune.components.gate.component import promotion_gate, refused_model

    def artifact(cls, name):
        a = cls(name=name, uri=str(tmp_path / name))
        a.path = str(tmp_path / name)  # kfp.local sets it from the uri; here the local path is the uri
        return a

    results = tmp_path / "results.json"
    benchmark(0.2, 0.3).write(results)
    curve, bench = artifact(Artifact, "curve"), artifact(Artifact, "results")
    curve.path, bench.path = str(CURVE), str(results)
    decision, metrics, model = artifact(Markdown, "decision"), artifact(Metrics, "metrics"), artifact(Model, "model")
    gate = '{"max_validation_loss": 1.5, "min_benchmark_delta": 0.04}'
    assert promotion_gate.python_func(curve, decision, metrics, bench, gate, "best") is False
    measured = {
        "best_validation_loss": 2.0,
        "overfitting_before_export": 0,
        "exported_validation_loss": 2.0,
        "benchmark_delta": pytest.approx(0.05),
    }
    assert metrics.metadata == {"promoted": 0, "thresholds_checked": 2, **measured, "forgetting": 0}
    assert decision.metadata == {
        "promoted": False,
        "reasons": ["validation loss 2.0000 of hf_format/samples_300 is not below 1.5"],
    }
    refused_model.python_func(decision, model)
    assert [p.name for p in Path(model.path).iterdir()] == ["README.md"]  # no weights
    readme = (Path(model.path) / "README.md").read_text()
    assert readme.startswith("# Not promoted\n\nnot promoted: validation loss 2.0000 of hf_format/samples_300 is not below 1.5\n")
    assert model.metadata == {"promoted": False, "reasons": decision.metadata["reasons"]}
    assert promotion_gate.python_func(curve, decision, metrics, None, "", "best") is True  # no benchmark input


def test_gate_step_writes_the_markdown_and_the_refusal_holds_only_its_readme(tmp_path):
    decision = gate_step('{"max_validation_loss": 9}', CURVE, None, tmp_path / "decision.md")
    assert decision.promoted and (tmp_path / "decision.md").read_text() == decision.markdown()
    write_refusal(tmp_path / "model", ["x"], "table\n")
    assert json.dumps(sorted(p.name for p in (tmp_path / "model").iterdir())) == '["README.md"]'
