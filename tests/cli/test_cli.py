"""The console script as a user runs it."""

import json
import subprocess
import sys

OSFT_WITH_TYPO = {
    "algorithm": "osft", "model_path": "/m", "data_path": "/d.jsonl", "ckpt_output_dir": "/o",
    "unfreeze_rank_ratio": 0.2, "effective_batch_size": 8, "max_tokens_per_gpu": 2048, "max_seq_len": 1024,
    "learning_rate": 1e-5, "validaton_split": 0.1,
}  # fmt: skip


def kubetune(*args):
    return subprocess.run([sys.executable, "-m", "kubetune.cli", *args], capture_output=True, text=True, timeout=120)


def test_validate_rejects_typo_with_suggestion(tmp_path):
    spec = tmp_path / "osft.json"
    spec.write_text(json.dumps(OSFT_WITH_TYPO, indent=2))
    result = kubetune("validate", str(spec))
    assert result.returncode == 2
    assert "did you mean `validation_split`" in result.stderr and f"{spec}:11" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_prints_the_artifact(tmp_path):
    spec = tmp_path / "osft.json"
    spec.write_text(
        json.dumps(
            {**OSFT_WITH_TYPO, "validaton_split": None, "osft": False} | {"validation_split": 0.1, "validate_at_final": True}
        )
    )
    document = {k: v for k, v in json.loads(spec.read_text()).items() if k != "validaton_split"}
    spec.write_text(json.dumps(document))
    result = kubetune("validate", str(spec), "-o", str(tmp_path / "artifact.json"))
    assert result.returncode == 0, result.stderr
    artifact = json.loads((tmp_path / "artifact.json").read_text())
    assert artifact["backend_kwargs"] == {"osft": False, "validate_at_final": True, "validation_split": 0.1}
    assert artifact["schema_version"] == 1 and artifact["backend"] == "mini-trainer"


def test_schema_is_json_schema():
    result = kubetune("schema")
    schema = json.loads(result.stdout)
    assert {v["properties"]["algorithm"]["const"] for v in schema["oneOf"]} == {"sft", "osft", "lora_sft"}


def test_run_local_rejects_bad_kwargs_file_before_running(tmp_path):
    spec = tmp_path / "kwargs.json"
    spec.write_text('{\n  "algorithm": "lora_sft",\n  "eval_stepz": 5\n}')
    result = kubetune("run-local", "-o", str(tmp_path / "run"), "--kwargs", str(spec))
    assert result.returncode == 2 and f"{spec}:3" in result.stderr and "did you mean `eval_steps`" in result.stderr
    assert not (tmp_path / "run").exists()


def test_prepare_reports_bad_lines_then_writes_the_datasets(tmp_path):
    good = {"messages": [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4"}]}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(good) + "\n" + '{"messages": [{"role": "user"}]}\n')
    result = kubetune("prepare", str(data), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{data}:2: messages[0].content must be a non-empty string" in result.stderr
    assert not (tmp_path / "out" / "train").exists()
    result = kubetune("prepare", str(data), "-o", str(tmp_path / "out"), "--on-invalid", "skip", "--validation-ratio", "0")
    assert result.returncode == 0, result.stderr
    assert "| samples | 1 | 0 |" in result.stdout and (tmp_path / "out" / "train" / "data.jsonl").is_file()


def test_run_local_with_bad_data_ends_with_the_steps_report_not_a_traceback(tmp_path):
    data = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    result = kubetune("run-local", "--data", str(data), "-o", str(tmp_path / "out"))
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    assert f"{data}:2: messages[0].role must be one of system, user, assistant, tool, got 'bot'" in output
    assert "Inner task failed: 'prepare-data'. The step's report is printed above." in result.stderr


def test_prepare_checks_the_data_and_the_output_before_it_writes_the_model(tmp_path):
    result = kubetune("prepare", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["invalid data: 1 problem(s)", f"  - {tmp_path / 'missing.jsonl'}: does not exist"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = kubetune("prepare", "kubetune://sample-chat", "-o", str(tmp_path / "mine"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "refusing to replace data kubetune did not prepare: 1 problem(s)"
    assert len(result.stderr.splitlines()) == 2  # no model written first (its progress bar would be here)
    assert not (tmp_path / "out").exists() and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
