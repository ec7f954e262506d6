"""The compose example run with kfp.local: our whole ``finetune`` pipeline as one task, then the user's own step
(in the ``dsl.If`` on finetune's ``promoted``: every default promotes)."""

import json
import math
import re

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from kubetune.secrets import scan_document
from kubetune.steps.curve import LossCurve
from kubetune.steps.export import verify


@pytest.mark.slow
def test_compose_example_runs_with_the_users_step_reading_our_model(example, tmp_path, capsys):
    """The example's ``finetune`` task is the whole pipeline with every default (the embedded lora_sft kwargs, the
    sample data, a local export): the end-to-end run of ``kubetune run-local``'s default pipeline, checked task by
    task from kfp.local's outputs, then read by the user's own step."""
    from kubetune.runs.kfp_local import init

    init(pipeline_root=str(tmp_path / "root"))
    example("compose_pipeline").finetune_and_evaluate()
    (run,) = (tmp_path / "root").iterdir()  # our tasks' outputs, as kfp.local left them
    (users,) = json.loads((run / "my-exact-match-eval" / "executor_output.json").read_text())["artifacts"]["metrics"]["artifacts"]
    assert 0.0 <= users["metadata"]["exact_match"] <= 1.0  # promoted: the user's step ran on the exported model
    # lora_sft's progress line in the training step's log (kubetune/steps/progress.py), its throughput in the step's Metrics
    log = capsys.readouterr().out
    lines = [line.split("[kubetune] progress: ", 1)[1] for line in log.splitlines() if "[kubetune] progress: " in line]
    last = r"step (\d+)/\1 \(100%\) \| samples (\d+)/\2 \| loss \d+\.\d{4} \| [\d,]+ tokens/s \| elapsed [\d:]+ \| ETA 0:00:00"
    assert lines and re.fullmatch(last, lines[-1]), lines
    (train_metrics,) = json.loads((run / "train-model" / "executor_output.json").read_text())["artifacts"]["metrics"]["artifacts"]
    assert min(train_metrics["metadata"][f"train_{name}"] for name in ("seconds", "tokens_per_second", "samples_per_second")) > 0
    curve = LossCurve.read(run / "evaluate-model" / "loss_curve")
    losses = curve.losses()
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses.values())
    assert losses[curve.best.checkpoint] == min(losses.values())
    exported = run / "export-model" / "exported_model"
    model = AutoModelForCausalLM.from_pretrained(exported)  # merged: transformers alone loads it
    assert model.config.model_type == "llama" and AutoTokenizer.from_pretrained(exported)
    assert verify(exported) == [] and "<svg" in (run / "evaluate-model" / "report").read_text()
    artifact = json.loads((run / "validate-kwargs" / "kwargs_artifact").read_text())
    assert artifact["algorithm"] == "lora_sft" and artifact["eval_steps"] == 18  # the embedded kwargs
    assert not scan_document(artifact)[0]  # no credential anywhere in the artifact
