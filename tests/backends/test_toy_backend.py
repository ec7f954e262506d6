"""Adding a backend is one module plus one registry entry: ``toy_sft`` (``tests/support/toy_backend.py``) goes
through the real steps, validate -> prepare -> train -> evaluate -> export, and run-local takes it, with nothing
else in kubetune changed for it."""

from __future__ import annotations

import json

import pytest

from kubetune.backends import registry
from kubetune.backends.training_record import RECORD_FILE
from kubetune.errors import KubetuneError
from kubetune.runs.local_options import check_options
from kubetune.steps.evaluate import evaluate_step
from kubetune.steps.export import export_step, verify
from kubetune.steps.prepare import prepare_step
from kubetune.steps.train import train
from kubetune.steps.validate import validate_to_artifact
from kubetune.validation import json_schema, validate_spec
from tests.support.toy_backend import ToyBackend


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, ToyBackend.algorithm, ToyBackend)  # the one registry entry


def test_toy_backend_validates_with_its_own_parameters(toy):
    with pytest.raises(KubetuneError) as refused:
        validate_spec({"algorithm": "toy_sft", "toy_step": 4, "learning_rate": 0.01}, require_paths=False)
    problems = {p.where: p for p in refused.value.problems}
    assert "did you mean `toy_steps`" in (problems["`toy_step`"].hint or ""), refused.value
    assert problems["`toy_steps`"].message == "is required for toy_sft"
    with pytest.raises(KubetuneError, match="save_every"):  # its own rule
        validate_spec({"algorithm": "toy_sft", "toy_steps": 2, "save_every": 3}, require_paths=False)
    with pytest.raises(KubetuneError, match="must be toy for toy_sft"):
        validate_spec({"algorithm": "toy_sft", "backend": "trl", "toy_steps": 2}, require_paths=False)
    variant = next(v for v in json_schema()["oneOf"] if v["properties"]["algorithm"] == {"const": "toy_sft"})
    assert "toy_steps" in variant["properties"]


def test_toy_backend_runs_validate_train_evaluate(toy, tiny_model, tmp_path):
    kwargs = tmp_path / "kwargs.json"
    spec = validate_to_artifact("toy_sft", {"toy_steps": 10, "save_every": 5, "learning_rate": 0.01}, kwargs)
    assert (spec.algorithm, spec.backend, spec.params["toy_steps"]) == ("toy_sft", "toy", 10)
    train_data, validation_data = tmp_path / "train", tmp_path / "validation"
    prepare_step(
        "kubetune://sample-chat", str(tiny_model), kwargs, train_out=train_data, validation_out=validation_data,
        validation_ratio=0.25, num_proc=1,
    )  # fmt: skip
    out = tmp_path / "trained"
    result = train(spec, str(tiny_model), train_data, out, validation_data)
    assert [c.name for c in result.checkpoints] == ["step-5", "step-10"]  # its own naming (step-10 sorts first as text)
    assert result.metrics["logged_train_steps"] == 10  # its metrics file, read back through read_metrics
    assert json.loads((out / RECORD_FILE).read_text()) == {"algorithm": "toy_sft", "backend": "toy"}
    curve = evaluate_step(out, validation_data, tmp_path / "curve.json", tmp_path / "report.html")
    assert [(p.checkpoint, p.step) for p in curve.points] == [("checkpoints/step-5", 5), ("checkpoints/step-10", 10)]
    # ^ found, ordered and placed by the recorded backend's checkpoint_position
    assert all(p.loss > 0 and p.tokens > 0 for p in curve.points)
    assert curve.backend.backend == "toy" and len(curve.backend.train) == 10  # read by the recorded backend
    assert json.loads((tmp_path / "curve.json").read_text())["metrics"]["checkpoints_evaluated"] == 2
    exported = export_step(
        out, curve.best.checkpoint, str(tmp_path / "exported"), spec_path=kwargs,
        curve_path=tmp_path / "curve.json", base_model_uri=str(tiny_model),
    )  # fmt: skip
    assert exported.checkpoint == curve.best.checkpoint and verify(tmp_path / "exported") == []
    assert "toy_sft" in (tmp_path / "exported" / "README.md").read_text()
    final = export_step(out, "", str(tmp_path / "final"), select="final", base_model_uri=str(tiny_model))
    assert final.checkpoint.endswith("step-10")  # the newest by the backend's naming, not by the folder name's text


def test_run_local_takes_a_registered_backend_with_its_kwargs(toy, tmp_path):
    kwargs = tmp_path / "toy.json"
    kwargs.write_text(json.dumps({"toy_steps": 2, "learning_rate": 0.01}))
    arguments = check_options("toy_sft", "best", None, kwargs, "", False)
    assert arguments["algorithm"] == "toy_sft" and arguments["training_kwargs"]["toy_steps"] == 2
    with pytest.raises(KubetuneError, match="--kwargs.*is needed for toy_sft: it has no embedded kwargs"):
        check_options("toy_sft", "best", None, None, "", False)


def test_run_local_refuses_an_algorithm_nobody_registered(tmp_path):
    with pytest.raises(KubetuneError, match="must be one of lora_sft, osft, sft, got 'toy_sft'"):
        check_options("toy_sft", "best", None, None, "", False)
