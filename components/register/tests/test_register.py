"""Registration with the official Model Registry client, against a recording stand-in of its REST API.

No Model Registry server can run here (it needs Kubernetes and a database); ``model_registry`` is the
fixture in conftest.py that answers the client's calls and records them (tests/support/standins.py).
"""

import json

import pytest

from kubetune.errors import KubetuneError
from kubetune.steps.export import ExportedModel
from kubetune.steps.register import register, register_step
from tests.support.curves import write_loss_curve


def _bodies(standin, method, suffix):
    return [r["body"] for r in standin.requests if r["method"] == method and r["path"].endswith(suffix)]


def test_registers_the_real_uri_with_provenance_and_validation_loss(tmp_path, model_registry, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN", "token-from-a-secret")
    curve = write_loss_curve(tmp_path / "curve.json", {"checkpoints/checkpoint-36": 5.9, "checkpoints/checkpoint-72": 5.8878})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"algorithm": "lora_sft", "backend": "unsloth", "model_path": "kubetune://tiny-llama"}))
    location = ExportedModel(uri="s3://models/chat/v1", kind="merged")
    ids = register_step(
        location, curve, spec, model_registry.url, "chat", "v1", provenance={"run_id": "run-123", "pipeline": "finetune"}
    )

    (version,) = _bodies(model_registry, "POST", "/model_versions")
    (artifact,) = _bodies(model_registry, "POST", "/artifacts")
    assert artifact["uri"] == "s3://models/chat/v1" and artifact["modelFormatName"] == "safetensors"
    properties = {k: next(v for key, v in p.items() if key.endswith("_value")) for k, p in version["customProperties"].items()}
    assert properties["best_validation_loss"] == 5.8878 and properties["kfp_run_id"] == "run-123"
    assert properties["algorithm"] == "lora_sft" and properties["best_checkpoint"] == "checkpoints/checkpoint-72"
    assert {r["auth"] for r in model_registry.requests} == {"Bearer token-from-a-secret"}
    assert ids.overwritten is False and ids.model_artifact_id in model_registry.artifacts


def test_an_existing_version_is_an_error_unless_overwrite(model_registry):
    register("s3://models/chat/v1", "chat", "v1", model_registry.url, {"best_validation_loss": 5.9})
    already = r"registry_model_version: chat:v1 is already in the Model Registry \(set registry_overwrite"
    with pytest.raises(KubetuneError, match=already):
        register("s3://models/chat/v1-retrained", "chat", "v1", model_registry.url, {})
    result = register(
        "s3://models/chat/v1-retrained", "chat", "v1", model_registry.url, {"best_validation_loss": 5.7}, overwrite=True
    )
    assert result.overwritten and model_registry.artifacts[result.model_artifact_id]["uri"] == "s3://models/chat/v1-retrained"
    assert len(model_registry.versions) == 1 and len(model_registry.artifacts) == 1


def test_a_container_local_path_is_refused_before_any_request(model_registry):
    with pytest.raises(KubetuneError, match="registry_uri: the model was exported to '/mnt/models/chat'"):
        register_step(ExportedModel(uri="/mnt/models/chat"), None, None, model_registry.url, "chat", "v1")
    with pytest.raises(KubetuneError) as info:
        register("/tmp/model", "", "v1", model_registry.url, {})
    assert {p.where for p in info.value.problems} == {"registry_uri", "registry_model_name"} and model_registry.requests == []
    register_step(
        ExportedModel(uri="/mnt/models/chat"), None, None, model_registry.url, "chat", "v1", published_uri="pvc://models-pvc/chat"
    )
    assert _bodies(model_registry, "POST", "/artifacts")[0]["uri"] == "pvc://models-pvc/chat"
