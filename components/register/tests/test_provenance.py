"""The base model named by the model card and the Model Registry entry is the one the run trained.

The README's command, ``kubetune run finetune --spec examples/osft.json -p model_uri=s3://models/granite-3b ...``,
trains ``model_uri``; the spec's ``model_path`` (``/mnt/models/granite-3.3-8b-instruct``) is not what was trained.
The steps are driven here as the finetune pipeline drives them: the arguments ``kubetune run`` sends, the validation
step's artifact, the export step given ``base_model_uri=model_uri``, and the registration step given the exported
model artifact's metadata (KFP hands it on as it is) and the same kwargs artifact.
"""

import json
import shutil
from pathlib import Path

from kubetune.contract import TrainingSpec
from kubetune.runs.kfp_api import parameters
from kubetune.steps.export import ExportedModel, export_step
from kubetune.steps.register import register_step
from kubetune.steps.validate import validate_to_artifact
from tests.support.curves import write_loss_curve

EXAMPLE = Path(__file__).parents[3] / "examples" / "osft.json"
MODEL_URI = "s3://models/granite-3b"


def test_model_card_and_registry_entry_name_the_trained_model_uri(tmp_path, tiny_model, s3, model_registry):
    arguments = parameters(EXAMPLE, [f"model_uri={MODEL_URI}", "data_uri=s3://data/chat.jsonl", "gpus=8"])
    spec_model = json.loads(EXAMPLE.read_text())["model_path"]
    assert arguments["model_uri"] == MODEL_URI and spec_model != MODEL_URI

    artifact = tmp_path / "kwargs" / "artifact.json"
    validate_to_artifact(arguments["algorithm"], arguments["training_kwargs"], artifact)
    shutil.copytree(tiny_model, tmp_path / "trained" / "checkpoints" / "checkpoint-4")  # what the train step left
    curve = write_loss_curve(tmp_path / "loss_curve.json", {"checkpoints/checkpoint-4": 5.6})
    s3.create_bucket(Bucket="out")

    exported = export_step(
        trained_model=tmp_path / "trained",
        checkpoint="checkpoints/checkpoint-4",
        destination="s3://out/chat/v1",
        pointer_dir=tmp_path / "pointer",
        spec_path=artifact,
        curve_path=curve,
        base_model_uri=arguments["model_uri"],
    )
    card = s3.get_object(Bucket="out", Key="chat/v1/README.md")["Body"].read().decode()
    assert f"base_model: {MODEL_URI}\n" in card and f"# Fine-tuned {MODEL_URI}\n" in card
    assert spec_model not in card and (tmp_path / "pointer" / "README.md").read_text() == card
    shipped = json.loads(s3.get_object(Bucket="out", Key="chat/v1/kubetune-spec.json")["Body"].read())
    assert shipped["model_path"] == MODEL_URI and shipped["algorithm"] == "osft"  # the artifact as the run used it

    register_step(ExportedModel.from_metadata(exported.metadata()), curve, artifact, model_registry.url, "chat", "v1")
    (version,) = [r["body"] for r in model_registry.requests if r["method"] == "POST" and r["path"].endswith("/model_versions")]
    properties = {k: next(v for key, v in p.items() if key.endswith("_value")) for k, p in version["customProperties"].items()}
    assert properties["base_model"] == MODEL_URI and properties["algorithm"] == "osft"


def test_without_a_bound_model_the_spec_model_path_is_named(tmp_path, tiny_model, model_registry):
    """``kubetune export``-style use with no ``base_model_uri``: the spec's ``model_path`` is all there is."""
    artifact = tmp_path / "artifact.json"
    validate_to_artifact("osft", {k: v for k, v in json.loads(EXAMPLE.read_text()).items() if k != "algorithm"}, artifact)
    shutil.copytree(tiny_model, tmp_path / "trained" / "checkpoints" / "checkpoint-4")
    exported = export_step(tmp_path / "trained", "checkpoints/checkpoint-4", str(tmp_path / "out"), spec_path=artifact)
    spec_model = TrainingSpec.read(artifact).model_path
    assert f"base_model: {spec_model}\n" in exported.card and exported.metadata()["base_model"] == spec_model


def test_the_card_and_the_metadata_never_show_credentials_in_the_base_model_uri(tmp_path, tiny_model):
    """evaluate_export has no spec: the card names ``base_model_uri`` itself, as a message may show it."""
    shutil.copytree(tiny_model, tmp_path / "trained" / "checkpoint-1")
    secret_uri, shown = "https://alice:hf_x@example.com/m?token=hf_y", "https://example.com/m"
    bare = export_step(tmp_path / "trained", "checkpoint-1", str(tmp_path / "bare"), base_model_uri=secret_uri)
    artifact = tmp_path / "artifact.json"
    validate_to_artifact("osft", {k: v for k, v in json.loads(EXAMPLE.read_text()).items() if k != "algorithm"}, artifact)
    bound = export_step(
        tmp_path / "trained", "checkpoint-1", str(tmp_path / "bound"), spec_path=artifact, base_model_uri=secret_uri
    )
    for exported, out in ((bare, tmp_path / "bare"), (bound, tmp_path / "bound")):
        assert f"base_model: {shown}\n" in exported.card and exported.metadata()["base_model"] == shown
        written = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".md", ".json"))
        assert "hf_x" not in written and "hf_y" not in written and "alice" not in written
