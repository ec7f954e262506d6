"""Both examples compile with KFP's compiler, through the command their docstring gives."""

import subprocess
import sys

import pytest
import yaml

from tests.examples.conftest import EXAMPLES


def compiled(name: str, tmp_path) -> dict:
    """``python examples/<name>.py`` in ``tmp_path``: the pipeline spec it writes there."""
    subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=tmp_path, check=True, capture_output=True)
    return next(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))


def test_compose_example_is_our_finetune_pipeline_then_the_users_step_only_when_promoted(tmp_path):
    spec = compiled("compose_pipeline", tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"kubetune-finetune", "condition-1"}  # our whole pipeline is one task of theirs
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--kubetune-finetune-promoted'] == true"
    finetune = spec["components"]["comp-kubetune-finetune"]  # finetune's `promoted`: the gate's verdict, as it is
    assert finetune["outputDefinitions"]["parameters"] == {"promoted": {"parameterType": "BOOLEAN"}}
    assert finetune["dag"]["outputs"]["parameters"]["promoted"]["valueFromParameter"]["producerSubtask"] == "promotion-gate"
    users = spec["components"]["comp-condition-1"]["dag"]["tasks"]["my-exact-match-eval"]
    assert users["inputs"]["artifacts"]["model"] == {"componentInputArtifact": "pipelinechannel--kubetune-finetune-model"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[dict, dict]:
    """The sweep example compiled once: its pipeline spec and its platform spec (kfp-kubernetes settings)."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = compiled("sweep_pipeline", folder)
    _, platform = yaml.safe_load_all((folder / "sweep_pipeline.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]


def test_sweep_example_runs_finetune_per_variant_in_parallel_and_promotes_from_the_collected_models(sweep):
    spec, _ = sweep
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


def test_sweep_on_a_cluster_mounts_the_s3_secret_and_passes_benchmarks_to_each_variant(sweep):
    spec, platform = sweep
    mounted = platform["deploymentSpec"]["executors"]["exec-promote-best"]["secretAsEnv"]
    by_name = {m["secretNameParameter"]["componentInputParameter"]: m for m in mounted}
    assert set(by_name) == {"s3_secret", "hf_secret"}  # the sweep's own parameters, as finetune's export step gets them
    s3_variables = {k["envVar"] for k in by_name["s3_secret"]["keyToEnv"]}
    assert s3_variables >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    assert all(m["optional"] for m in mounted)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    finetune = spec["components"]["comp-kubetune-finetune"]["inputDefinitions"]["parameters"]
    passed = ("model_uri", "benchmark_tasks", "benchmark_limit", "s3_secret", "hf_secret", "tracking_secret")
    defaults = {name: parameters[name]["defaultValue"] for name in passed}
    assert defaults == {name: finetune[name]["defaultValue"] for name in passed}  # finetune's defaults, the same names
    (inner,) = spec["components"]["comp-for-loop-1"]["dag"]["tasks"].values()
    for name in passed:  # each variant's finetune gets the sweep's value, so benchmark thresholds in promotion_gate work
        assert inner["inputs"]["parameters"][name] == {"componentInputParameter": f"pipelinechannel--{name}"}
