"""``kubetune run-local --evaluate-benchmark``: the option asks the pipeline for the held_out benchmark, is refused
where lm-eval is not installed, and the summary shows each task's base and fine-tuned score and the delta (the
pipeline's run with the benchmark: tests/pipelines/test_finetune.py, the S3 run)."""

import sys

from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.cli.local import show
from kubetune.runs.local_options import check_options


def test_evaluate_benchmark_sets_the_held_out_tasks_and_lets_a_benchmark_threshold_through(tmp_path):
    gate = '{"min_benchmark_delta": 0}'
    arguments = check_options("lora_sft", "best", None, None, "", False, tmp_path / "run", gate=gate, evaluate_benchmark=True)
    assert arguments["benchmark_tasks"] == "held_out" and arguments["promotion_gate"] == gate
    assert "benchmark_tasks" not in check_options("lora_sft", "best", None, None, "", False, tmp_path / "run")


def test_evaluate_benchmark_is_refused_before_anything_runs_without_lm_eval(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an install without kubetune[eval] looks like
    result = CliRunner().invoke(app, ["run-local", "-o", str(tmp_path / "run"), "--evaluate-benchmark"])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert result.stderr.splitlines() == [
        "invalid run-local options: 1 problem(s)",
        "  - --evaluate-benchmark: runs lm-eval, which is not installed here (pip install 'kubetune[eval]')",
    ]


def test_the_summary_shows_base_and_fine_tuned_scores_and_the_delta_of_each_task(capsys):
    metrics = {
        "held_out_loglikelihood_base": 3.927, "held_out_loglikelihood_tuned": 3.5, "held_out_loglikelihood_delta": 0.427,
        "held_out_exact_match_base": 0.0, "held_out_exact_match_tuned": 0.25, "held_out_exact_match_delta": 0.25,
        "benchmark_delta": 0.3385, "forgetting": 0.0,
    }  # fmt: skip
    result = {"exported_model": "m", "kwargs_artifact": "k", "loss_curve": "c", "report": "r", "best_checkpoint": "a"}
    result |= {"validation_loss": {"a": 1.0}, "overfitting_after": None, "benchmark": metrics, "benchmark_report": "b.md"}
    show({"arguments": {}, "result": result})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4:] == [
        "  benchmark report: b.md",
        "  benchmark         held_out_loglikelihood: base 3.927, fine-tuned 3.5, delta +0.427",
        "  benchmark         held_out_exact_match: base 0, fine-tuned 0.25, delta +0.25",
        "  benchmark delta   +0.3385 (mean; positive: better), forgetting 0",
    ]
    show({"arguments": {}, "result": result | {"benchmark": {}}})  # not run: no benchmark lines
    assert "benchmark" not in capsys.readouterr().out
