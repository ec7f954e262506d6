"""The benchmark component as kfp.local runs it (a task of a pipeline, importers feeding it) on a LoRA adapter of the
tiny model, its scores checked against lm-eval's own CLI on the same model and tasks; its refusals as a pod ends
them (``reported``): one report, exit 2; an unknown task name already in the validation step."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kfp import dsl
from kfp.dsl import Artifact

from kubetune.benchmark.results import BenchmarkResults
from kubetune.benchmark.tasks import write_held_out_tasks
from kubetune.components.benchmark.component import benchmark_model
from tests.support.exits import one_line_exit_2

LIMIT = 6


@dsl.pipeline
def benchmark_alone(trained: str, validation: str, base: str):
    model = dsl.importer(artifact_uri=trained, artifact_class=dsl.Model).output
    data = dsl.importer(artifact_uri=validation, artifact_class=dsl.Dataset).output
    benchmark_model(
        trained_model=model,
        checkpoint="checkpoint-1",  # the evaluation's best; the export takes the final one: so is it scored
        export_checkpoint="final",
        validation_data=data,
        model_uri=base,
        benchmark_tasks="held_out",
        benchmark_limit=LIMIT,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, prepared_validation):
    """One kfp.local run: the tiny model as the base, a randomly initialised LoRA adapter on it (so it changes the
    scores) as the fine-tuned checkpoint."""
    import torch
    from kfp import local
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("benchmark-component")
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    for step in (1, 2):  # two saves; checkpoint-2 is the final one
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config)
        model.save_pretrained(root / "trained" / f"checkpoint-{step}")
    validation = prepared_validation(24)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline-root"))
    benchmark_alone(trained=str(root / "trained"), validation=str(validation), base=str(tiny_model))
    (task,) = (root / "pipeline-root").glob("*/benchmark-model")
    return SimpleNamespace(task=task, adapter=root / "trained" / "checkpoint-2", validation=validation)


def test_kfp_local_task_writes_results_report_and_metrics(run):
    results = BenchmarkResults.read(run.task / "results")
    assert results.run["checkpoint"] == "checkpoint-2"  # export_checkpoint=final: the checkpoint the export takes
    assert results.ran and [t.name for t in results.tasks] == ["held_out_loglikelihood", "held_out_exact_match"]
    loglikelihood = results.tasks[0]
    assert loglikelihood.metric == "bits_per_byte" and not loglikelihood.higher_is_better
    assert loglikelihood.tuned != loglikelihood.base  # the adapter was applied on the base
    assert loglikelihood.delta == pytest.approx(loglikelihood.base - loglikelihood.tuned)
    assert all(t.documents == LIMIT for t in results.tasks)
    assert results.delta == pytest.approx(sum(t.delta for t in results.tasks) / 2)
    assert results.forgetting == max(0.0, *(-t.delta for t in results.tasks))
    report = (run.task / "report").read_text()
    for t in results.tasks:
        assert f"| {t.name} | {t.metric} " in report and f"| {t.base:.4g} | {t.tuned:.4g} | {t.delta + 0.0:+.4g} |" in report
    assert "apply_chat_template=True" in report and f"limit={LIMIT}" in report
    output = json.loads((run.task / "executor_output.json").read_text())
    (metrics,) = output["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["held_out_loglikelihood_base"] == pytest.approx(loglikelihood.base)
    assert metrics["metadata"]["held_out_loglikelihood_tuned"] == pytest.approx(loglikelihood.tuned)
    assert metrics["metadata"]["benchmark_delta"] == pytest.approx(results.delta)
    assert metrics["metadata"]["forgetting"] == pytest.approx(results.forgetting)


def test_scores_equal_lm_evals_own_cli_on_the_same_model_and_tasks(run, tiny_model, tmp_path):
    results = BenchmarkResults.read(run.task / "results")
    tasks = write_held_out_tasks(run.validation, tmp_path / "tasks")  # the step's tasks, rebuilt from the same chats
    args = [
        *("run", "--model", "hf", "--model_args", f"pretrained={tiny_model},peft={run.adapter},dtype=float32"),
        *("--tasks", "held_out_loglikelihood,held_out_exact_match", "--include_path", str(tasks), "--apply_chat_template"),
        *("--limit", str(LIMIT), "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out")),
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    done = subprocess.run([str(lm_eval), *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(written.read_text())["results"]
    for t in results.tasks:
        (key,) = (k for k in theirs[t.name] if k.split(",")[0] == t.metric)  # "<metric>,<filter>"
        assert theirs[t.name][key] == pytest.approx(t.tuned, rel=1e-6, abs=1e-9), t.name


def step(out: Path, tasks: str, limit: int) -> None:
    """The component's function as the pod runs it, with its artifacts under ``out`` (no trained model there)."""

    def artifact(name: str) -> Artifact:
        return Artifact(name=name, uri=str(out / name), metadata={})

    outputs = {name: artifact(name) for name in ("results", "report", "metrics")}
    benchmark_model.python_func(
        trained_model=artifact("trained"), checkpoint="final", validation_data=artifact("validation"), **outputs,
        benchmark_tasks=tasks, benchmark_limit=limit,
    )  # fmt: skip


def test_an_unknown_task_a_negative_limit_and_a_missing_checkpoint_are_refused_together_exit_2(tmp_path, capsys):
    err = one_line_exit_2(lambda: step(tmp_path, "held_out, hellaswg", -1), capsys)
    assert err.splitlines() == [
        "invalid benchmark: 3 problem(s)",
        "  - benchmark_limit: must be 0 (every document) or more, got -1",
        "  - benchmark_tasks: unknown lm-eval task 'hellaswg' (did you mean 'hellaswag'?)",
        f"  - checkpoint: 'final' is not a folder of {tmp_path / 'trained'}",
    ]
    assert not (tmp_path / "results").exists()


def test_an_unknown_task_stops_the_run_in_the_validation_step_before_training(capsys):
    from kubetune.components.validate_spec.component import validate_kwargs

    unused = Artifact(name="unused", uri="/nonexistent/unused", metadata={})
    call = lambda: validate_kwargs.python_func(  # noqa: E731
        algorithm="lora_sft", training_kwargs={"learning_rate": 1e-4}, kwargs_artifact=unused, memory_plan=unused,
        memory_metrics=unused, benchmark_tasks="held_out,arc_esay",
    )  # fmt: skip
    assert one_line_exit_2(call, capsys).splitlines() == [
        "invalid benchmark: 1 problem(s)",
        "  - benchmark_tasks: unknown lm-eval task 'arc_esay' (did you mean 'arc_easy'?)",
    ]


def test_no_tasks_is_not_run_and_says_so(tmp_path):
    step(tmp_path, " , ", 0)
    results = BenchmarkResults.read(tmp_path / "results")
    assert not results.ran and results.delta is None and results.forgetting is None and results.metrics() == {}
    assert "Not run: `benchmark_tasks` is empty" in (tmp_path / "report").read_text()
