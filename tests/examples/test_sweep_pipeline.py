"""The sweep example run with kfp.local: finetune once per kwargs variant, the lower validation loss promoted.

One run (module fixture, two variants on 24 chats, one epoch); the promotion step's own cases (a variant its gate
refused, none left, an S3 destination) call the component's function on that run's models, without training again."""

import json
from pathlib import Path

import pytest
from kfp.dsl import Markdown, Model

from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.steps.curve import LossCurve
from kubetune.steps.export import verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(example, tmp_path_factory):
    from kubetune.runs.kfp_local import init

    module = example("sweep_pipeline")
    root = tmp_path_factory.mktemp("sweep")
    with SAMPLE_DATA.open() as lines:
        (root / "chats.jsonl").write_text("".join(next(lines) for _ in range(24)))
    small = {**module.EMBEDDED_KWARGS, "num_epochs": 1, "effective_batch_size": 4, "save_steps": 2, "eval_steps": 2}
    variants = [{**small, "learning_rate": rate} for rate in (0.005, 0.0001)]
    init(pipeline_root=str(root / "runs"))
    task = module.sweep(variants=variants, data_uri=str(root / "chats.jsonl"), destination=str(root / "best"))
    (run,) = (root / "runs").iterdir()
    return module, task, run, root / "best"


def variants_of(run: Path) -> list[dict]:
    """Each iteration's learning rate, best validation loss and exported model, as kfp.local left them."""
    found = []
    for iteration in sorted(run.glob("for-loop-1-iteration-*")):
        kwargs = json.loads((iteration / "validate-kwargs" / "kwargs_artifact").read_text())
        curve = LossCurve.read(iteration / "evaluate-model" / "loss_curve")
        model = iteration / "export-model" / "exported_model"
        found.append({"learning_rate": kwargs["learning_rate"], "loss": curve.best.loss, "model": model})
    return found


def test_the_variant_with_the_lower_validation_loss_is_promoted(sweep):
    _, task, run, best = sweep
    variants = variants_of(run)
    assert len(variants) == 2 and variants[0]["loss"] != variants[1]["loss"]
    winner = min(variants, key=lambda v: v["loss"])
    assert verify(best) == []  # a complete kubetune export, checksummed
    assert json.loads((best / "kubetune-spec.json").read_text())["learning_rate"] == winner["learning_rate"]
    assert LossCurve.read(best / "loss_curve.json").best.loss == winner["loss"]
    weights = [json.loads((m / "manifest.json").read_text())["files"]["model.safetensors"] for m in (best, winner["model"])]
    assert weights[0] == weights[1]  # the winner's weights, checksum for checksum
    assert task.output.metadata["uri"] == str(best)
    outputs = json.loads((run / "promote-best" / "executor_output.json").read_text())
    assert outputs["parameterValues"]["Output"] == winner["loss"]
    rows = (run / "promote-best" / "table").read_text().splitlines()[2:]
    assert rows == [
        f"| {v['learning_rate']} | {v['loss']:.4f} | {LossCurve.read(v['model'] / 'loss_curve.json').best.checkpoint} | "
        + (f"promoted to `{best}` |" if v is winner else " |")
        for v in variants
    ]


def promote(module, models: list[Model], destination: str, tmp_path: Path) -> tuple[float, Model, str]:
    """The promotion step's function, called as KFP calls it."""
    promoted, table = Model(uri=str(tmp_path / "promoted")), Markdown(uri=str(tmp_path / "table"))
    loss = module.promote_best.python_func(models=models, destination=destination, promoted=promoted, table=table)
    return loss, promoted, Path(table.path).read_text()


def test_a_variant_its_gate_refused_is_listed_with_its_reasons_and_never_promoted(sweep, tmp_path):
    module, _, run, _ = sweep
    variants = variants_of(run)
    refused = min(variants, key=lambda v: v["loss"])  # the lower loss, but not promoted by its gate
    (tmp_path / "refused").mkdir()
    (tmp_path / "refused" / "README.md").write_text("not promoted")
    models = [
        Model(uri=str(tmp_path / "refused"), metadata={"promoted": False, "reasons": ["overfitting before the export"]}),
        *(Model(uri=str(v["model"])) for v in variants if v is not refused),
    ]
    loss, promoted, table = promote(module, models, str(tmp_path / "best"), tmp_path)
    assert loss == max(v["loss"] for v in variants) and verify(tmp_path / "best") == []
    assert promoted.metadata["uri"] == str(tmp_path / "best")
    assert table.endswith("- not promoted by its gate: overfitting before the export\n")
    with pytest.raises(SystemExit) as ended:  # none left: one line, exit 2, nothing written
        promote(module, models[:1], str(tmp_path / "none"), tmp_path)
    assert ended.value.code == 2 and not (tmp_path / "none").exists()


def test_a_destination_kubetune_did_not_write_is_refused_and_left_alone(sweep, tmp_path):
    module, _, run, _ = sweep
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as ended:
        promote(module, [Model(uri=str(v["model"])) for v in variants_of(run)], str(tmp_path / "theirs"), tmp_path)
    assert ended.value.code == 2 and [p.name for p in (tmp_path / "theirs").iterdir()] == ["notes.txt"]


def test_the_promotion_publishes_to_s3_through_kubetunes_export(sweep, s3, tmp_path):
    module, _, run, _ = sweep
    s3.create_bucket(Bucket="models")
    variants = variants_of(run)
    loss, promoted, _ = promote(module, [Model(uri=str(v["model"])) for v in variants], "s3://models/sweep/best", tmp_path)
    assert loss == min(v["loss"] for v in variants)
    assert verify("s3://models/sweep/best") == [] and promoted.metadata["uri"] == "s3://models/sweep/best"
