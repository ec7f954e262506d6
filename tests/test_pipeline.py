"""The finetune pipeline compiles with KFP's compiler and runs end to end with kfp.local on CPU."""

import json
import math
from pathlib import Path

import pytest
import yaml
from kfp import compiler
from kubetune.components.export.core import verify
from kubetune.pipelines.finetune import finetune
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.contract.secrets import looks_like_secret


def _walk(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)
    else:
        yield key, value


def test_pipeline_compiles_deterministically_with_gpu_only_for_training(tmp_path):
    compiler.Compiler().compile(finetune, str(tmp_path / "a.yaml"))
    compiler.Compiler().compile(finetune, str(tmp_path / "b.yaml"))
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    spec = yaml.safe_load((tmp_path / "a.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    gpu = [name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})]
    assert gpu == ["exec-train-model"]
    assert not [k for k, v in _walk(spec) if looks_like_secret(k, v)]
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors.values())


@pytest.mark.slow
def test_local_run_end_to_end(tmp_path):
    from kubetune.pipelines.local import run_local

    result = run_local(tmp_path)  # the embedded default: the exported model lands in the Model artifact
    losses = result["validation_loss"]
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses.values())
    assert losses[result["best_checkpoint"]] == min(losses.values())
    model = AutoModelForCausalLM.from_pretrained(result["exported_model"])  # merged: transformers alone loads it
    assert model.config.model_type == "llama" and AutoTokenizer.from_pretrained(result["exported_model"])
    assert verify(result["exported_model"]) == [] and "<svg" in Path(result["report"]).read_text()
    artifact = json.loads(Path(result["kwargs_artifact"]).read_text())
    assert artifact["algorithm"] == "lora_sft" and artifact["eval_steps"] == 24
    assert not [k for k, v in _walk(artifact) if looks_like_secret(k, v)]


@pytest.mark.slow
def test_local_run_exports_to_s3_and_registers_when_asked(tmp_path, s3, model_registry):
    """The same local pipeline, publishing to a bucket of the local moto S3 server (credentials from the env),
    then registering it in the Model Registry stand-in (no real registry can run here)."""
    from kubetune.pipelines.local import run_local

    s3.create_bucket(Bucket="models")
    registry = {"registry_server": model_registry.url, "registry_model_name": "tiny-chat", "registry_model_version": "1"}
    result = run_local(tmp_path, export_destination="s3://models/finetuned/tiny", export_checkpoint="final", **registry)
    assert verify("s3://models/finetuned/tiny") == []
    pointer = json.loads((Path(result["exported_model"]) / "location.json").read_text())
    assert pointer["uri"] == "s3://models/finetuned/tiny" and pointer["manifest"]["kind"] == "merged"
    card = s3.get_object(Bucket="models", Key="finetuned/tiny/README.md")["Body"].read().decode()
    assert "checkpoint `final`" in card and "best validation loss" in card
    (artifact,) = [r["body"] for r in model_registry.requests if r["method"] == "POST" and r["path"].endswith("/artifacts")]
    assert artifact["uri"] == "s3://models/finetuned/tiny"
    (version,) = model_registry.versions.values()
    assert version["name"] == "1" and "best_validation_loss" in version["customProperties"]
    assert version["customProperties"]["kfp_run_id"]["string_value"]  # the run's provenance
