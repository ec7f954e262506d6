import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.backends.metrics import BackendSeries, Point
from kubetune.data.tokenize import read_jsonl, tokenize_samples
from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.steps.curve import LossCurve
from kubetune.steps.evaluate import best, curve, evaluate, evaluate_step, held_out_loss
from kubetune.steps.timeline import overfitting_point


@pytest.fixture(scope="module")
def validation(prepared_validation):
    """A prepared validation set (the prepare step's layout) of 24 bundled samples."""
    return prepared_validation(24)


def test_loss_equals_trainer_evaluate(tiny_model, validation):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    samples = list(read_jsonl(validation / "data.jsonl"))
    ours, tokens = held_out_loss(model, samples, tokenizer.pad_token_id, batch_size=5)
    # One batch holding every sample: Trainer.evaluate's loss is then the mean over all learned tokens, as ours.
    args = TrainingArguments(output_dir="unused", per_device_eval_batch_size=len(samples), use_cpu=True, report_to=[])
    rows = [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples]
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    theirs = trainer.evaluate(rows)["eval_loss"]
    assert tokens == sum(s["num_loss_counted_tokens"] for s in samples)
    assert math.isclose(ours, theirs, rel_tol=1e-4)


def _scaled_copy(source, target, scale: float):
    """A checkpoint whose output logits are ``scale`` times the tiny model's: its loss moves with the scale."""
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# one scale per checkpoint: a random model's loss grows with its logit scale, so validation loss falls,
# bottoms out at samples_300 and then rises twice, while the logged train loss keeps falling
SCALES = {100: 4.0, 200: 2.0, 300: 0.5, 400: 2.5, 500: 5.0}


@pytest.mark.parametrize("backend", ["instructlab-training", "mini-trainer"])
def test_sft_and_osft_layouts_and_metrics_files(tmp_path, tiny_model, validation, backend):
    run = tmp_path / "run" / "checkpoints"
    for samples, scale in SCALES.items():
        _scaled_copy(tiny_model, run / "hf_format" / f"samples_{samples}", scale)
    (run / "full_state" / "epoch_0").mkdir(parents=True)  # optimizer state: not a checkpoint
    steps = [{"step": s, "samples": 25 * s, "loss": 3.0 - 0.1 * s} for s in range(1, 21)]
    if backend == "instructlab-training":
        rows = [{"epoch": 0, "step": r["step"], "avg_loss": r["loss"], "samples_seen": r["samples"]} for r in steps]
        rows += [{"val_loss": 4.5, "val_num_tokens": 90, "step": 8}]
        _jsonl(run / "training_params_and_metrics_global0.jsonl", rows)
    else:  # mini-trainer repeats the last val_loss on every row; only rows with val_* counts are fresh
        rows = [
            {"step": r["step"], "loss": r["loss"], "total_samples_accumulated": r["samples"], "val_loss": None} for r in steps
        ]
        for row in rows[7:]:
            row["val_loss"] = 4.5
        rows[7].update(val_num_samples=12, val_num_loss_counted_tokens=90)
        _jsonl(run / "training_metrics_0.jsonl", rows)
        (run / "training_metrics_0.jsonl").open("a").write('{"step": 21, "lo')  # a row cut by a kill

    result = evaluate_step(run, validation, tmp_path / "curve.json", tmp_path / "report.html")
    points = result.points
    assert [p.checkpoint for p in points] == [f"hf_format/samples_{s}" for s in SCALES]
    assert [p.samples for p in points] == list(SCALES) and [p.step for p in points] == [4, 8, 12, 16, 20]
    losses = [p.loss for p in points]
    assert losses[2] == min(losses) and losses[2] < losses[3] < losses[4]
    assert result.axis == "samples" and result.best.checkpoint == "hf_format/samples_300"
    assert result.overfitting and result.overfitting.checkpoint == "hf_format/samples_300"
    assert result.metrics["best_samples"] == 300 and result.metrics["overfitting_detected"] == 1
    assert result.backend.backend == backend and len(result.backend.train) == 20
    assert [(v.step, v.samples, v.loss) for v in result.backend.validation] == [(8, 200, 4.5)]
    assert LossCurve.read(tmp_path / "curve.json").points == points


@pytest.mark.slow
def test_trl_run_gets_one_point_per_checkpoint_and_a_report_with_both_curves(tmp_path, tiny_model, validation):
    from kubetune.backends.base import TrainingRun
    from kubetune.backends.lora import LoRASFT
    from kubetune.validation import validate_spec

    spec = validate_spec(
        {
            "algorithm": "lora_sft",
            "model_path": str(tiny_model),
            "data_path": str(validation.parent / "train" / "data.jsonl"),
            "ckpt_output_dir": str(tmp_path / "run"),
            "num_epochs": 3,
            "learning_rate": 0.01,
            "micro_batch_size": 4,
            "save_steps": 3,
            "eval_steps": 3,
            "logging_steps": 1,
            "seed": 0,
            "sample_packing": False,  # one sample per row: the step counts below
        }
    )
    LoRASFT().train(spec, TrainingRun(validation / "data.jsonl"))
    points = evaluate(tmp_path / "run", validation)
    assert [p.checkpoint for p in points] == ["checkpoint-3", "checkpoint-6", "checkpoint-9", "final"]
    assert all(math.isfinite(p.loss) and p.tokens > 0 for p in points)
    assert best(points).loss == min(p.loss for p in points)
    result = curve(tmp_path / "run", points)
    assert result.axis == "step" and [p.x for p in result.points] == [3, 6, 9, 9]
    assert [v.step for v in result.backend.validation] == [3, 6, 9]  # TRL's own eval_loss, on our split
    # TRL's eval_loss is a mean of per-batch means; ours weighs every learned token alike: close, not equal
    for ours, theirs in zip(result.points, result.backend.validation, strict=False):
        assert math.isclose(ours.loss, theirs.loss, rel_tol=0.05)

    from kubetune.steps.report import html_report

    html = html_report(result)
    assert '<polyline class="train-loss"' in html and '<polyline class="validation-loss"' in html
    assert '<polyline class="backend-validation-loss"' in html and html.count("<circle") == 4
    assert f"best: {result.best.checkpoint}" in html

    # the adapter's recorded base path is gone (another pod): the base model is found from the parameter
    config = tmp_path / "run" / "checkpoint-3" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "/elsewhere/base"}))
    again = evaluate(tmp_path / "run", validation, base_model=str(tiny_model))
    assert math.isclose(again[0].loss, points[0].loss, rel_tol=1e-6)


def test_raw_messages_validation_and_clear_errors(tmp_path, tiny_model):
    from kubetune.errors import KubetuneError

    shutil.copytree(tiny_model, tmp_path / "run" / "final")
    raw = tmp_path / "val.jsonl"
    raw.write_text("".join(line for line, _ in zip(SAMPLE_DATA.open(), range(4), strict=False)))
    (point,) = evaluate(tmp_path / "run", raw)  # tokenized here, with the checkpoint's tokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    samples, _ = tokenize_samples(tokenizer, read_jsonl(raw))
    assert point.tokens == sum(s["num_loss_counted_tokens"] for s in samples)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KubetuneError, match="empty: holds no checkpoint"):
        evaluate(tmp_path / "empty", raw)
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(KubetuneError, match="holds no validation sample"):
        evaluate(tmp_path / "run", tmp_path / "empty.jsonl")


def test_overfitting_needs_consecutive_rises_while_train_loss_falls():
    falling = BackendSeries("x", train=[Point(3.0 - 0.1 * s, step=s) for s in range(1, 11)])
    flat = BackendSeries("x", train=[Point(1.0, step=s) for s in range(1, 11)])
    xs = [2, 4, 6, 8, 10]
    assert overfitting_point([5, 4, 3, 3.5, 4], xs, falling, "step") == 2
    assert overfitting_point([5, 4, 3, 3.5, 3.2], xs, falling, "step") is None  # one rise is noise
    assert overfitting_point([5, 4, 3, 3.5, 4], xs, flat, "step") is None  # train loss stalled too: not overfitting
    assert overfitting_point([5, 4, 3, 3.5, 4], xs, BackendSeries(), "step") == 2  # no train series: rises alone
    assert overfitting_point([5, 4, 3, 3.5, 4, 4.5], [*xs, 12], falling, "step", patience=3) == 2
