"""What ``kubetune run-local`` shows of its run (kubetune.runs.view), replayed from the log of a real default run
(``view_run/run.log``, shortened; its steps' executor outputs beside it) and from a step that refused its data.
The whole run-local, its line count and its run.log: tests/gate/test_gate_pipeline.py and tests/cli/test_cli.py."""

import contextlib
import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kubetune.runs.run_folder import new_record
from kubetune.runs.supervise import LOG, supervise
from kubetune.runs.view import Outputs, View, duration, figures, report

RECORDED = Path(__file__).parent / "view_run"

FAILED = """\
23:12:19.969 - INFO - Executing task \x1b[96m'prepare-data'\x1b[0m
23:12:19.969 - INFO - Streamed logs:

    [KFP Executor 2026-11-25 23:12:20,096 INFO]: Got executor_input:
    prepare train: 100%|##########| 141/141 [00:00<00:00, 870B/s]
    invalid data in /d/bad.jsonl (on_invalid=fail: nothing was written): 1 problem(s)
      - /d/bad.jsonl:2: messages[0].role must be one of system, user, assistant, tool, got 'bot'
    \n
23:12:34.137 - ERROR - Task \x1b[96m'prepare-data'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
--------------------------------------------------------------------------------

kubetune run-local: Pipeline 'kubetune-finetune' finished with status FAILURE. Inner task failed: 'prepare-data'.
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The recorded run's log and executor outputs under a temporary kfp root."""
    root = tmp_path_factory.mktemp("kfp-root")
    for path in RECORDED.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(RECORDED)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8").replace("{root}", str(root)), encoding="utf-8")
    return root


def replay(text: str, chunk: int = 997, terminal: bool = False) -> tuple[list[str], list[str]]:
    """The lines ``View`` prints for ``text`` fed in pieces of ``chunk`` characters (lines cut anywhere): stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    view = View(Console(file=out, force_terminal=terminal, width=100, highlight=False, soft_wrap=True))
    view.errors = Console(file=err, highlight=False, soft_wrap=True)
    for start in range(0, len(text), chunk):
        view.feed(text[start : start + chunk])
    view.close(failed="SUCCESS" not in text)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def test_one_line_per_step_with_its_status_duration_and_key_figures(recorded):
    out, err = replay((recorded / "run.log").read_text(encoding="utf-8"))
    assert out == [
        "  validate-kwargs  done     13.6 s   lora_sft on unsloth (PEFT + TRL where CUDA is absent), memory estimate 0.52 GiB"
        " per GPU",
        "  prepare-data     done     14.0 s   320 records kept (288 train, 32 validation), 0 dropped",
        "  train-model      step 8/72, loss 6.2118, ETA 0:02:35",  # no terminal: at most one progress line a minute
        "  train-model      done      3m00s   train loss 5.8907, 288 samples, 140 tokens/s",
        "  evaluate-model   done     29.8 s   validation loss 6.0214 -> 5.8859 (-2.2%), best checkpoint-72 of 4 checkpoints",
        "  benchmark-model  done      1.0 s   not asked for (--evaluate-benchmark)",
        "  promotion-gate   done      0.9 s   promoted",
        "  export-model     done     22.5 s   merged model, 588.1 kB in 10 files",
    ]
    assert err == []
    assert replay((recorded / "run.log").read_text(encoding="utf-8"), chunk=1)[0] == out  # however the log is read


def test_on_a_terminal_the_training_has_a_progress_bar_with_its_loss_and_leaves_the_step_lines(recorded):
    out, _ = replay((recorded / "run.log").read_text(encoding="utf-8"), chunk=50_000, terminal=True)
    screen = "\n".join(out)
    assert "step 72/72, loss 5.8907, ETA 0:00:00" in screen  # the bar's text, redrawn in place
    assert "\x1b[?25l" in screen  # the cursor hidden while the bar is drawn


def test_a_failing_step_shows_its_own_report_and_the_pipeline_line_goes_to_stderr():
    out, err = replay(FAILED, chunk=7)
    assert out == [
        "  prepare-data     FAILED   14.2 s   its report:",
        "    invalid data in /d/bad.jsonl (on_invalid=fail: nothing was written): 1 problem(s)",
        "      - /d/bad.jsonl:2: messages[0].role must be one of system, user, assistant, tool, got 'bot'",
    ]
    assert err == [
        "kubetune run-local: Pipeline 'kubetune-finetune' finished with status FAILURE. Inner task failed: 'prepare-data'."
    ]


def test_a_step_that_fails_once_run_local_stops_the_run_was_stopped_not_failed():
    out, err = io.StringIO(), io.StringIO()
    view = View(Console(file=out, width=100, soft_wrap=True))
    view.errors = Console(file=err, soft_wrap=True)
    view.feed(FAILED[: FAILED.index("23:12:34")])
    view.say("kubetune run-local: SIGINT received: stopping the run (send it again to kill it)")
    view.feed(FAILED[FAILED.index("23:12:34") :])
    view.close()
    assert out.getvalue().splitlines()[0] == "  prepare-data     stopped  14.2 s   its report:"
    assert err.getvalue().splitlines()[0] == "kubetune run-local: SIGINT received: stopping the run (send it again to kill it)"
    report_lines = FAILED[FAILED.index("    invalid data") : FAILED.index("    \n")]
    quiet = FAILED.replace(report_lines, '    {\n        "outputFile": "x"\n    }\n')  # stopped in the executor's input
    assert replay(quiet)[0] == ["  prepare-data     FAILED   14.2 s"]


def stopped(before: str, after: str) -> list[str]:
    """The lines ``View`` prints when run-local is told to stop the run between ``before`` and ``after``."""
    out = io.StringIO()
    view = View(Console(file=out, width=100, soft_wrap=True))
    view.errors = Console(file=io.StringIO())
    view.feed(before)
    view.say("kubetune run-local: SIGINT received: stopping the run (send it again to kill it)")
    view.feed(after)
    view.close()
    return out.getvalue().splitlines()


def test_a_stopped_step_keeps_what_it_reported_its_figures_or_its_last_line(recorded, tmp_path):
    """Ctrl-C during training: the step saves a checkpoint, writes its outputs (stopped_by) and kfp.local says FAILURE."""
    log = (recorded / "run.log").read_text(encoding="utf-8")
    training = log[log.index("23:04:06.093 - INFO - Executing task") : log.index("23:07:05.927")]
    output = json.loads((recorded / "train-model" / "executor_output.json").read_text(encoding="utf-8"))
    output["artifacts"]["trained_model"]["artifacts"][0]["metadata"]["stopped_by"] = "SIGTERM"
    (tmp_path / "executor_output.json").write_text(json.dumps(output), encoding="utf-8")
    training = training.replace(str(recorded / "train-model"), str(tmp_path))
    failure = "23:07:05.927 - ERROR - Task \x1b[96m'train-model'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m\n"
    assert stopped(training, failure)[-1] == (
        "  train-model      stopped   3m00s   train loss 5.8907, 288 samples, 140 tokens/s, stopped by SIGTERM"
    )
    unwritten = training[: training.index("    [KFP Executor 2026-11-25 23:07:00")]  # stopped before its outputs
    assert stopped(unwritten, failure)[-2:] == [
        "  train-model      stopped   3m00s   its report:",
        "    100%|██████████| 72/72 [02:28<00:00,  2.91s/it][kubetune] progress: step 72/72 (100%) | samples 576/576 | "
        "loss 5.8907 | 89 tokens/s | elapsed 0:02:33 | ETA 0:00:00",
    ]


def test_a_failure_no_step_reported_shows_the_logs_last_lines():
    out, err = replay("Traceback (most recent call last):\n  File 'x', line 1\nValueError: the pipeline broke\n", chunk=5)
    assert out == [] and err[0] == "the run's log ends with:" and err[-1] == "  ValueError: the pipeline broke"


def test_verbose_shows_the_log_as_it_is(recorded, capsys):
    log = (recorded / "run.log").read_text(encoding="utf-8")
    view = View(verbose=True)
    view.feed(log[:500])
    view.feed(log[500:])
    view.close(failed=True)
    assert capsys.readouterr() == (log, "")


def test_verbose_goes_on_when_stdout_is_closed(monkeypatch):
    """``run-local --verbose | head -1``: the reader of stdout is gone; the view neither raises nor stops."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        view = View(verbose=True)
        view.feed("first line\n")
        view.feed("second line\n")
        monkeypatch.undo()
        with contextlib.suppress(OSError):  # what is still buffered for the closed pipe
            closed.close()


def test_run_log_is_redacted_as_the_terminal_is_and_readable_by_its_user_only(tmp_path):
    """The pipeline process's output goes to run.log through ``redact``; here a traceback that echoes a URL's password
    (an argument the pipeline does not take: the run fails before any step)."""
    secret = "https://user:hunter2pw@example.com/data.jsonl"
    code, record = supervise(tmp_path, new_record({secret: 1}))
    log = (tmp_path / LOG).read_text(encoding="utf-8")
    assert code == 1 and record["state"] == "failed"
    assert "unexpected keyword argument" in log and "https://<redacted>@example.com/data.jsonl" in log, log[-2000:]
    assert "hunter2pw" not in log
    assert stat.S_IMODE((tmp_path / LOG).stat().st_mode) == 0o600


def test_the_report_is_kubetunes_title_and_problems_or_the_last_line():
    assert report(["    step output", "    cannot read s3://b/k: access denied", "    "]) == [
        "cannot read s3://b/k: access denied"
    ]
    assert report(["x", "    title: 2 problem(s)", "      - a: b", "      - c: d"]) == [
        "title: 2 problem(s)",
        "  - a: b",
        "  - c: d",
    ]
    assert report(["    Traceback (most recent call last):", '      File "x", line 1', "    ValueError: v"]) == ["ValueError: v"]
    assert report([]) == []


def test_a_long_report_keeps_its_title_then_the_first_problems_and_how_many_more():
    problems = [f"      - /d/bad.jsonl:{n}: messages[0].role must be one of system, user" for n in range(1, 31)]
    shown = report(["    step output", "    invalid data in /d/bad.jsonl: 30 problem(s)", *problems])
    assert shown[0] == "invalid data in /d/bad.jsonl: 30 problem(s)"
    assert shown[1:-1] == [p.removeprefix("    ") for p in problems[:10]]
    assert shown[-1] == "  ... and 20 more" and len(shown) == 12
    assert len(report(["    title: 11 problem(s)", *problems[:11]])) == 12  # title and 11 problems: all shown


def test_missing_or_partial_outputs_give_no_figures_and_never_fail(tmp_path):
    assert Outputs.read(tmp_path / "absent.json") == Outputs() and Outputs.read(None) == Outputs()
    (tmp_path / "bad.json").write_text('{"artifacts": {"metrics": {"artifacts": []}}}')
    assert Outputs.read(tmp_path / "bad.json") == Outputs()
    assert figures("prepare-data", Outputs()) == "" and figures("some-other-step", Outputs()) == ""
    written = (RECORDED / "evaluate-model" / "executor_output.json").read_text(encoding="utf-8")
    (tmp_path / "evaluate.json").write_text(written.replace("{root}", str(tmp_path)))  # its loss curve is not there
    assert figures("evaluate-model", Outputs.read(tmp_path / "evaluate.json")) == "best validation loss 5.8859 at checkpoint-72"


def test_figures_of_a_refused_model_a_benchmark_and_a_resumed_training():
    gate = Outputs(metadata={"decision": {"promoted": False, "reasons": ["best validation loss 5.9 is not below 0.001"]}})
    assert figures("promotion-gate", gate) == "NOT promoted: best validation loss 5.9 is not below 0.001"
    benchmark = Outputs(metadata={"results": {"ran": True}, "metrics": {"benchmark_delta": -0.0, "forgetting": 0.25}})
    assert figures("benchmark-model", benchmark) == "benchmark delta +0 (positive: better), forgetting 0.25"
    unscored = Outputs(metadata={"results": {"ran": True}, "metrics": {"held_out_exact_match_base": 0.0}})
    assert figures("benchmark-model", unscored).startswith("delta and forgetting not measured")
    train = Outputs(
        metadata={"metrics": {"final_train_loss": 2.5}, "trained_model": {"resumed_from": "checkpoints/checkpoint-4"}}
    )
    assert figures("train-model", train) == "train loss 2.5000, resumed from checkpoint-4"


def test_durations():
    assert [duration(s) for s in (0.04, 59.94, 59.96, 61, 3600)] == ["0.0 s", "59.9 s", "1m00s", "1m01s", "60m00s"]
