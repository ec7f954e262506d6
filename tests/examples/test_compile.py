"""Both examples compile with KFP's compiler, through the command their docstring gives."""

import subprocess
import sys

import yaml

from tests.examples.conftest import EXAMPLES


def compiled(name: str, tmp_path) -> dict:
    """``python examples/<name>.py`` in ``tmp_path``: the pipeline spec it writes there."""
    subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=tmp_path, check=True, capture_output=True)
    return next(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))


def test_compose_example_is_our_finetune_pipeline_then_the_users_step(tmp_path):
    tasks = compiled("compose_pipeline", tmp_path)["root"]["dag"]["tasks"]
    assert set(tasks) == {"kubetune-finetune", "my-exact-match-eval"}  # our whole pipeline is one task of theirs
    assert tasks["my-exact-match-eval"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "kubetune-finetune",
    }


def test_sweep_example_runs_finetune_per_variant_in_parallel_and_promotes_from_the_collected_models(tmp_path):
    spec = compiled("sweep_pipeline", tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"for-loop-1", "promote-best"}
    loop = tasks["for-loop-1"]
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--variants"}
    (inner,) = spec["components"]["comp-for-loop-1"]["dag"]["tasks"].values()  # one finetune run per variant
    assert inner["componentRef"]["name"] == "comp-kubetune-finetune"
    assert inner["inputs"]["parameters"]["training_kwargs"] == {"componentInputParameter": "pipelinechannel--variants-loop-item"}
    assert "export_destination" not in inner["inputs"]["parameters"]  # its default: the model stays in its artifact
    assert inner["inputs"]["parameters"]["promotion_gate"] == {"componentInputParameter": "pipelinechannel--promotion_gate"}
    models = tasks["promote-best"]["inputs"]["artifacts"]["models"]["taskOutputArtifact"]
    assert models == {"outputArtifactKey": "pipelinechannel--kubetune-finetune-model", "producerTask": "for-loop-1"}
    assert spec["components"]["comp-promote-best"]["inputDefinitions"]["artifacts"]["models"]["isArtifactList"] is True
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in parameters["destination"]  # required: a default path would be lost with the pod
    variants = parameters["variants"]["defaultValue"]
    assert len({v["learning_rate"] for v in variants}) == 2  # the embedded kwargs with two learning rates, nothing else varied
    assert [dict(v, learning_rate=0) for v in variants] == [dict(variants[0], learning_rate=0)] * 2
