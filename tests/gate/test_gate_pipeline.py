"""The promotion gate in the finetune pipeline: a model that misses a threshold is neither exported nor registered,
and the run says why (decision Markdown, Metrics, the refused model's README, run-local's summary and exit code 3).
The passing side, through the pipeline: tests/pipelines/test_finetune.py::test_local_run_exports_to_s3_and_registers_when_asked
(its gate passes, then it exports to S3 and registers)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.pipelines.parameters import EMBEDDED

FAILING = '{"max_validation_loss": 0.001, "no_overfitting": true}'  # a tiny model's loss is far above 0.001
# 24 records (21 to train), one epoch of lora_sft: 3 steps, a checkpoint every 2
SHORT = {**EMBEDDED["lora_sft"], "num_epochs": 1, "save_steps": 2, "eval_steps": 2}


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """One real run of ``kubetune run-local`` whose model the gate refuses, with an export destination asked for."""
    tmp = tmp_path_factory.mktemp("refused")
    (tmp / "chat.jsonl").write_text("".join(SAMPLE_DATA.read_text(encoding="utf-8").splitlines(True)[:24]))
    (tmp / "kwargs.json").write_text(json.dumps(SHORT))
    cli = [sys.executable, "-m", "kubetune.cli", "run-local", "-o", "run", "--kwargs", "kwargs.json", "--data", "chat.jsonl"]
    done = subprocess.run(
        [*cli, "--gate", FAILING, "--destination", "published"], capture_output=True, text=True, cwd=tmp, timeout=900
    )
    return tmp, done


@pytest.mark.slow
def test_a_refused_model_is_not_exported_and_the_run_says_why(refused):
    tmp, done = refused
    assert done.returncode == 3, done.stderr[-3000:]  # finished, not promoted
    out = done.stdout
    (line,) = [line for line in out.splitlines() if "NOT PROMOTED" in line]
    assert re.fullmatch(r"  NOT PROMOTED: validation loss \d+\.\d{4} of \S+ is not below 0\.001", line), line
    assert "  nothing was exported or published\n" in out and "exported model:" not in out and "published to:" not in out
    # run-local's default output: a line per step (its key figures), the summary; kfp.local's logs only in run.log
    shown = (out + done.stderr).splitlines()
    assert len(shown) < 40, "\n".join(shown)
    assert re.search(r"^  promotion-gate   done .+   NOT promoted: validation loss", out, re.M), out
    assert re.search(r"^  prepare-data     done .+   24 records kept \(\d+ train, \d+ validation\), 0 dropped$", out, re.M), out
    assert "  full log:         run/run.log\n" in out and "[KFP Executor" not in out + done.stderr
    log = re.sub(r"\x1b\[[0-9;]*m", "", (tmp / "run" / "run.log").read_text())
    for task in ("validate-kwargs", "prepare-data", "train-model", "evaluate-model", "promotion-gate", "refused-model"):
        assert f"Executing task '{task}'" in log and f"/{task}/executor_output.json" in log
    assert "[KFP Executor" in log and "[kubetune] progress: step 3/3 (100%)" in log
    assert "have no effect in the current local runner" not in log  # warnings that only say "this runs locally"
    assert not (tmp / "published").exists()  # the destination was never touched
    record = json.loads((tmp / "run" / "run.json").read_text())
    result = record["result"]
    assert record["state"] == "finished" and result["promoted"] is False and result["exported_model"] is None
    assert result["not_promoted"] == [line.removeprefix("  NOT PROMOTED: ")]
    (run,) = (tmp / "run" / "kfp-root").iterdir()
    tasks = {p.name for p in run.iterdir()}
    assert {"benchmark-model", "promotion-gate", "refused-model"} <= tasks
    assert not tasks & {"export-model", "register-model"}  # neither ran
    decision = Path(result["decision"]).read_text()
    assert decision.startswith("### Promotion gate: NOT promoted\n") and "| `no_overfitting` |" in decision
    assert f"Not promoted: {result['not_promoted'][0]}. Nothing was exported or registered." in decision
    gate = json.loads((run / "promotion-gate" / "executor_output.json").read_text())
    (metrics,) = gate["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["promoted"] == 0 and metrics["metadata"]["thresholds_checked"] == 2
    assert gate["parameterValues"]["Output"] is False
    model = run / "refused-model" / "model"
    assert [p.name for p in model.iterdir()] == ["README.md"]  # no weights
    assert (model / "README.md").read_text().startswith(f"# Not promoted\n\nnot promoted: {result['not_promoted'][0]}\n")


def test_export_and_registration_run_only_in_the_gates_promoted_branch(tmp_path):
    """Compiled with KFP's compiler: export and register are inside the sub-DAG that runs when the gate says True,
    the refusal inside the one that runs otherwise, and the pipeline's model output is one of the two."""
    from kubetune.pipelines.finetune import finetune

    compiler.Compiler().compile(finetune, str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    components = spec["components"]

    def inside(dag: dict) -> set[str]:  # the component tasks of a DAG and of its sub-DAGs (conditions)
        found = set()
        for name, task in dag["tasks"].items():
            component = components[task["componentRef"]["name"]]
            found |= inside(component["dag"]) if "dag" in component else {name}
        return found

    root = spec["root"]["dag"]["tasks"]
    (branches,) = [t for n, t in root.items() if n.startswith("condition-branches")]
    branch_tasks = components[branches["componentRef"]["name"]]["dag"]["tasks"]
    conditions = {
        t["triggerPolicy"]["condition"]: inside(components[t["componentRef"]["name"]]["dag"]) for t in branch_tasks.values()
    }
    gate = "inputs.parameter_values['pipelinechannel--promotion-gate-Output']"
    assert conditions == {
        f"{gate} == true": {"export-model", "register-model"},
        f"!({gate} == true)": {"refused-model"},
    }
    assert {"export-model", "register-model", "refused-model"}.isdisjoint(root)
    model = spec["root"]["dag"]["outputs"]["artifacts"]["model"]["artifactSelectors"]
    assert [s["producerSubtask"] for s in model] == [branches["taskInfo"]["name"]]


def test_a_gate_typo_or_a_benchmark_threshold_without_benchmark_is_refused_before_anything_runs(tmp_path, capsys):
    from typer.testing import CliRunner

    from kubetune.cli import app
    from kubetune.components.validate_spec.component import validate_kwargs
    from tests.support.exits import one_line_exit_2

    result = CliRunner().invoke(app, ["run-local", "-o", str(tmp_path / "run"), "--gate", '{"max_validation_los": 2}'])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert (
        result.stderr.splitlines()[1] == "  - --gate.max_validation_los: is not a threshold (did you mean `max_validation_loss`?)"
    )
    result = CliRunner().invoke(app, ["run-local", "-o", str(tmp_path / "run"), "--gate", '{"max_forgetting": 0.1}'])
    assert (
        result.exit_code == 2
        and "--gate.max_forgetting: is measured by the benchmark, but benchmark_tasks is empty" in result.stderr
    )

    class Out:  # an output artifact of the validation step: the kwargs artifact must not be written
        def __init__(self, name):
            self.path, self.metadata = str(tmp_path / name), {}

        def log_metric(self, name, value):
            self.metadata[name] = value

    kwargs = Out("kwargs_artifact")
    gate = '{"min_benchmark_delta": 0}'
    err = one_line_exit_2(
        lambda: validate_kwargs.python_func("lora_sft", EMBEDDED["lora_sft"], kwargs, Out("plan"), Out("m"), promotion_gate=gate),
        capsys,
    )
    assert "promotion_gate.min_benchmark_delta: is measured by the benchmark, but benchmark_tasks is empty" in err
    assert not Path(kwargs.path).exists()
