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
from kubetune.steps.export import export_step
from kubetune.steps.register import register_step
from kubetune.steps.validate import validate_to_artifact

EXAMPLE = Path(__file__).parents[3] / "examples" / "osft.json"
MODEL_URI = "s3://models/granite-3b"


def test_model_card_and_registry_entry_name_the_trained_model_uri(tmp_path, tiny_model, s3, model_registry):
    arguments = parameters(EXAMPLE, [f"model_uri={MODEL_URI}", "data_uri=s3://data/chat.jsonl", "gpus=8"])
    spec_model = json.loads(EXAMPLE.read_text())["model_path"]
    assert arguments["model_uri"] == MODEL_URI and spec_model != MODEL_URI

    artifact = tmp_path / "kwargs" / "artifact.json"
    validate_to_artifact(arguments["algorithm"], arguments["training_kwargs"], artifact)
    shutil.copytree(tiny_model, tmp_path / "trained" / "checkpoints" / "checkpoint-4")  # what the train step left
    curve = tmp_path / "loss_curve.json"
    best = {"checkpoint": "checkpoints/checkpoint-4", "loss": 5.6, "perplexity": 270.4}
    curve.write_text(json.dumps({"points": [best], "best": best}))
    s3.create_bucket(Bucket="out")

    exported = export_step(
        trained_model=tmp_path / "trained",
        checkpoint=best["checkpoint"],
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

    register_step(dict(exported.metadata()), curve, artifact, model_registry.url, "chat", "v1")
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
