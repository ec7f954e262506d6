"""The validate_kwargs component's own code (its KFP wrapper around ``kubetune.steps.validate``), run as KFP runs it."""

import json
import re

import pytest
from kfp.dsl import Artifact, Markdown, Metrics

from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.pipelines.parameters import EMBEDDED


def outputs(tmp_path) -> dict:
    """The component's output artifacts, at paths under ``tmp_path`` as KFP gives them."""
    made = {}
    for name, kind, suffix in (
        ("kwargs_artifact", Artifact, ".json"),
        ("memory_plan", Markdown, ".md"),
        ("memory_metrics", Metrics, ""),
    ):
        made[name] = kind(uri=str(tmp_path / name))
        made[name].path = str(tmp_path / f"{name}{suffix}")
    return made


def test_the_component_writes_the_kwargs_artifact_and_its_metadata(tmp_path, capsys):
    made = outputs(tmp_path)
    artifact = made["kwargs_artifact"]
    artifact.path = str(tmp_path / "kwargs.json")
    validate_kwargs.python_func(algorithm="lora_sft", training_kwargs=EMBEDDED["lora_sft"], **made)
    written = json.loads((tmp_path / "kwargs.json").read_text())
    assert written["algorithm"] == "lora_sft" and written["eval_steps"] == 18
    assert written["backend_kwargs"]["modules_to_save"] == ["lm_head", "embed_tokens"]  # a backend kwarg, kept as given
    keys = ("algorithm", "backend", "schema_version")
    assert artifact.metadata == {key: written[key] for key in keys} and written["backend"]
    out = capsys.readouterr().out  # the step's log: its notes, then the artifact
    assert json.loads(out[re.search(r"^\{", out, re.M).start() :]) == written


def test_a_wrong_kwarg_ends_the_step_with_exit_code_2_and_one_report(tmp_path, capsys):
    made = outputs(tmp_path)
    made["kwargs_artifact"].path = str(tmp_path / "kwargs.json")
    with pytest.raises(SystemExit) as stop:
        validate_kwargs.python_func(algorithm="lora_sft", training_kwargs={"num_epoch": 2}, **made)
    assert stop.value.code == 2 and "num_epoch" in capsys.readouterr().err
    assert not (tmp_path / "kwargs.json").exists()
