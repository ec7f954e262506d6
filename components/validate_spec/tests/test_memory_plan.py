"""The validation step's memory plan, run as KFP runs the component: a spec that does not fit stops there (exit code 2,
one line with the numbers and a suggestion) before its artifact exists, so no later task can start; one that fits
leaves the plan as Markdown and Metrics. Real model shapes (tests/memory/configs), no weights."""

import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler
from kfp.dsl import Artifact, Markdown, Metrics

from kubetune.components.validate_spec.component import validate_kwargs
from kubetune.pipelines.parameters import EMBEDDED

CONFIGS = Path(__file__).resolve().parents[3] / "tests" / "memory" / "configs"
SFT_70B = {"max_seq_len": 4096, "max_tokens_per_gpu": 64000, "effective_batch_size": 128, "learning_rate": 1e-5}


def outputs(tmp_path: Path) -> dict:
    made = {"kwargs_artifact": Artifact, "memory_plan": Markdown, "memory_metrics": Metrics}
    for name, kind in made.items():
        made[name] = kind(uri=str(tmp_path / name))
        made[name].path = str(tmp_path / f"{name}.out")
    return made


def test_a_70b_sft_that_does_not_fit_8_gpus_of_80_gib_stops_the_step_with_the_numbers(tmp_path, capsys):
    made = outputs(tmp_path)
    model = str(CONFIGS / "llama-3.1-70b.json")
    with pytest.raises(SystemExit) as stop:
        validate_kwargs.python_func(
            algorithm="sft", training_kwargs=SFT_70B, model_uri=model, gpus=8, gpu_memory_gib=80.0, **made
        )
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert re.search(r"needs \d+\.\d GiB per GPU, has 80\.0 GiB", err) and "max_tokens_per_gpu to" in err
    assert not Path(made["kwargs_artifact"].path).exists()  # nothing for prepare or train to start from
    assert "Does not fit" in Path(made["memory_plan"].path).read_text()


def test_the_embedded_model_fits_a_small_mig_slice_and_its_plan_is_markdown_and_metrics(tmp_path):
    made = outputs(tmp_path)
    validate_kwargs.python_func(
        algorithm="lora_sft",
        training_kwargs=EMBEDDED["lora_sft"],
        model_uri="kubetune://tiny-llama",
        accelerator_type="nvidia.com/mig-1g.5gb",
        **made,
    )
    assert "Fits: needs" in Path(made["memory_plan"].path).read_text()
    metrics = made["memory_metrics"].metadata
    assert metrics["memory_gpu_gib"] == 4.9 and 0 < metrics["memory_total_gib"] < 1
    assert metrics["memory_activations_gib"] > 0 and Path(made["kwargs_artifact"].path).is_file()


def test_the_compiled_pipeline_plans_in_the_validation_task_that_prepare_and_train_wait_for(tmp_path):
    from kubetune.pipelines.finetune import finetune

    compiler.Compiler().compile(finetune, str(tmp_path / "p.yaml"))
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    component = spec["components"]["comp-validate-kwargs"]
    assert {"memory_plan", "memory_metrics"} <= set(component["outputDefinitions"]["artifacts"])
    tasks = spec["root"]["dag"]["tasks"]
    fed = tasks["validate-kwargs"]["inputs"]["parameters"]
    assert fed["gpu_memory_gib"]["componentInputParameter"] == "gpu_memory_gib"
    assert fed["model_uri"]["componentInputParameter"] == "model_uri"
    assert spec["root"]["inputDefinitions"]["parameters"]["gpu_memory_gib"]["defaultValue"] == 0.0
    for later in ("prepare-data", "train-model"):
        assert "validate-kwargs" in tasks[later]["dependentTasks"]


@pytest.mark.parametrize("model", ["https://alice:Sup3rPassw0rd@models.example.com/org/m", "s3://alice:Sup3rPassw0rd@models/m"])
def test_a_credential_in_model_uri_is_in_no_output_of_the_step(tmp_path, capsys, model):
    from kubetune.secrets import scan_text

    made = outputs(tmp_path)
    validate_kwargs.python_func(algorithm="lora_sft", training_kwargs=EMBEDDED["lora_sft"], model_uri=model, **made)
    printed = capsys.readouterr()
    markdown = Path(made["memory_plan"].path).read_text()
    assert "Skipped: " in markdown and "models" in markdown
    for text in (markdown, str(made["memory_metrics"].metadata), printed.out, printed.err):
        assert "Sup3rPassw0rd" not in text and not scan_text(text), text


@pytest.mark.parametrize("gib", [-1.0, float("nan"), float("inf")])
def test_a_gpu_memory_that_is_not_a_size_is_refused_naming_the_parameter(tmp_path, capsys, gib):
    made = outputs(tmp_path)
    with pytest.raises(SystemExit) as stop:
        validate_kwargs.python_func(
            algorithm="lora_sft",
            training_kwargs=EMBEDDED["lora_sft"],
            model_uri="kubetune://tiny-llama",
            gpu_memory_gib=gib,
            **made,
        )
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "gpu_memory_gib" in err, err
