"""s3:// model URIs (kubetune.runtime.resolve_model) over real HTTP: the moto server holds the tiny model."""

import json
import subprocess
import sys

import pytest

from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.errors import KubetuneError
from kubetune.runtime import resolve_model

MODEL_URI = "s3://models/granite-3b"  # the README's example name, holding the embedded tiny model


@pytest.fixture
def s3_model(s3, tiny_model):
    """The tiny model's files under ``s3://models/granite-3b/``."""
    s3.create_bucket(Bucket="models")
    for path in tiny_model.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "models", f"granite-3b/{path.relative_to(tiny_model)}")
    return MODEL_URI


def test_an_s3_model_is_downloaded_whole(s3_model, tiny_model, tmp_path):
    path = resolve_model(s3_model, tmp_path)
    assert path == str(tmp_path / "granite-3b")
    files = sorted(p.relative_to(path) for p in (tmp_path / "granite-3b").rglob("*"))
    assert files == sorted(p.relative_to(tiny_model) for p in tiny_model.rglob("*"))
    assert [p.name for p in tmp_path.iterdir()] == ["granite-3b"]  # no staging folder left beside it


def test_prepare_reads_the_tokenizer_of_an_s3_model(s3_model, tmp_path):
    from kubetune.steps.prepare import prepare_step

    out = tmp_path / "prepared"
    summary = prepare_step(
        str(SAMPLE_DATA), s3_model, None, train_out=out / "train", validation_out=out / "validation", num_proc=1
    )
    assert summary.train_samples > 0 and (out / "train").is_dir()


def test_evaluate_loads_the_base_weights_of_an_adapter_from_s3(s3_model, tiny_model, prepared_validation, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kubetune.steps.evaluate import evaluate_step

    adapter = tmp_path / "trained"
    lora = LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(adapter)
    config = adapter / "adapter_config.json"  # recorded in another pod: only the s3:// base can be loaded here
    config.write_text(json.dumps(json.loads(config.read_text()) | {"base_model_name_or_path": "/elsewhere/tiny-llama"}))

    result = evaluate_step(adapter, prepared_validation(8), tmp_path / "curve.json", tmp_path / "report.html", s3_model)
    assert len(result.points) == 1 and result.points[0].loss > 0


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://models/missing", "s3://models/missing: no such object or prefix"),
        ("s3://models/granite-3b/config.json", "s3://models/granite-3b/config.json: holds no config.json"),
        ("s3://nobucket/granite-3b", "s3://nobucket/granite-3b: the bucket does not exist"),
    ],
)
def test_a_missing_or_partial_s3_model_fails_in_one_line_and_leaves_nothing(s3_model, tmp_path, uri, message):
    with pytest.raises(KubetuneError) as raised:
        resolve_model(uri, tmp_path)
    assert message in str(raised.value).splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_names_the_uri_not_the_credentials(s3, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    with pytest.raises(KubetuneError) as raised:
        resolve_model(MODEL_URI, tmp_path)
    assert MODEL_URI in str(raised.value) and "very-secret-value" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_missing_s3_model_with_exit_2(s3, tmp_path):
    s3.create_bucket(Bucket="models")
    command = [sys.executable, "-m", "kubetune.cli", "prepare", str(SAMPLE_DATA), "--model", "s3://models/missing"]
    result = subprocess.run([*command, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "s3://models/missing: no such object or prefix" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_every_task_that_loads_the_model_gets_the_s3_secret(tmp_path):
    """A pipeline's model_uri may be s3://: each in-pod task given it has the S3 credentials (by reference)."""
    import yaml
    from kfp import compiler

    from kubetune.pipelines.finetune import finetune

    compiler.Compiler().compile(finetune, str(tmp_path / "finetune.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "finetune.yaml").read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]  # the gate's dsl.If too
    tasks = {name: task for dag in dags for name, task in dag["tasks"].items()}
    loading = [name for name, task in tasks.items() if "model_uri" in task.get("inputs", {}).get("parameters", {})]
    expected = ["benchmark-model", "evaluate-model", "export-model", "prepare-data", "train-model", "validate-kwargs"]
    assert sorted(loading) == expected
    for name in loading:
        names = {key["envVar"] for ref in executors[f"exec-{name}"]["secretAsEnv"] for key in ref["keyToEnv"]}
        assert "AWS_SECRET_ACCESS_KEY" in names, name
