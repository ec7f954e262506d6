"""Resume that survives the kill, evaluation that survives a damaged checkpoint, and a run-local that can be
stopped, resumed and checks its options first. Real files, real kills, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.checkpoints import find_checkpoints, latest_full_state, problem, resume_checkpoint

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- checkpoints crafted on disk


@pytest.fixture(scope="module")
def validation(prepared_validation):
    return prepared_validation(8)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_model):
    """A TRL run (3 adapter checkpoints with their trainer state) and an instructlab/mini-trainer run (3 models)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("runs")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    history = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 7)]
    for step in (2, 4, 6):
        path = root / "trl" / f"checkpoint-{step}"
        model.save_pretrained(path)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history[:step]}))
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            _torch_file(path / name)
    for samples in (100, 200, 300):
        shutil.copytree(tiny_model, root / "hf" / "hf_format" / f"samples_{samples}")
    return root


def _torch_file(path: Path) -> None:
    import torch

    torch.save({"x": torch.zeros(64)}, path)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _shard(path: Path) -> None:
    """Turn the model into a sharded one whose index lists a second shard that was never written."""
    (path / "model.safetensors").rename(path / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _garbage_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"\x00not json at all, a disk error\x00\x00"
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated adapter": ("trl", "checkpoint-4", lambda p: _truncate(p / "adapter_model.safetensors"),
                          "adapter_model.safetensors is truncated ({size} bytes, its header says {full})"),
    "missing adapter config": ("trl", "checkpoint-4", lambda p: (p / "adapter_config.json").unlink(),
                               "holds no config.json or adapter_config.json"),
    "garbage trainer_state.json": ("trl", "checkpoint-4", lambda p: (p / "trainer_state.json").write_text('{"log_hist'),
                                   "trainer_state.json does not parse as JSON"),
    "empty checkpoint directory": ("trl", "checkpoint-4", lambda p: [f.unlink() for f in p.iterdir()], "is empty"),
    "truncated model": ("hf", "hf_format/samples_200", lambda p: _truncate(p / "model.safetensors", 0.9),
                        "model.safetensors is truncated ({size} bytes, its header says {full})"),
    "missing config": ("hf", "hf_format/samples_200", lambda p: (p / "config.json").unlink(),
                       "holds no config.json or adapter_config.json"),
    "garbage config": ("hf", "hf_format/samples_200", lambda p: (p / "config.json").write_text("{'model_type': llama"),
                       "config.json does not parse as JSON"),
    "missing shard": ("hf", "hf_format/samples_200", _shard,
                      "model-00002-of-00002.safetensors is missing (listed in model.safetensors.index.json)"),
    "garbage safetensors header": ("hf", "hf_format/samples_200", lambda p: _garbage_header(p / "model.safetensors"),
                                   "model.safetensors has a header that does not parse"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_evaluation_skips_a_damaged_checkpoint_says_why_and_picks_the_best_of_the_rest(
    tmp_path, pristine, validation, tiny_model, case
):
    from kubetune.steps.evaluate import evaluate_step

    layout, damaged, damage, reason = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(pristine / layout, run)
    weights = run / damaged / ("adapter_model.safetensors" if layout == "trl" else "model.safetensors")
    full = weights.stat().st_size
    damage(run / damaged)
    result = evaluate_step(run, validation, tmp_path / "curve.json", tmp_path / "report.html", str(tiny_model))
    size = weights.stat().st_size if weights.exists() else 0
    line = f"skipped: {damaged}: {reason.format(size=size, full=full)}"
    assert result.skipped == [line]
    assert json.loads((tmp_path / "curve.json").read_text())["skipped"] == [line]
    assert line in (tmp_path / "report.html").read_text()
    evaluated = [p.checkpoint for p in result.points]
    assert damaged not in evaluated and len(evaluated) == 2
    assert result.best.checkpoint in evaluated and result.metrics["checkpoints_skipped"] == 1


def test_evaluation_of_only_damaged_checkpoints_is_one_error_naming_each(tmp_path, pristine, validation, tiny_model):
    run = tmp_path / "run"
    shutil.copytree(pristine / "trl", run)
    for step in (2, 4, 6):
        _truncate(run / f"checkpoint-{step}" / "adapter_model.safetensors")
    script = (
        "import sys; from kubetune.errors import reported; from kubetune.steps.evaluate import evaluate_step\n"
        "with reported(): evaluate_step(*sys.argv[1:5], base_model_uri=sys.argv[5])"
    )
    args = [run, validation, tmp_path / "c.json", tmp_path / "r.html", tiny_model]
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == "cannot evaluate: 1 problem(s)"
    (problem_line,) = done.stderr.splitlines()[1:]
    start = f"  - {run}: holds no complete checkpoint (checkpoint-2: adapter_model.safetensors is truncated"
    assert problem_line.startswith(start)
    assert "checkpoint-4:" in problem_line and "checkpoint-6:" in problem_line
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "r.html").exists()


def test_a_damaged_newest_trainer_state_does_not_hide_the_train_loss_history(tmp_path, pristine):
    from kubetune.steps.timeline import read_backend_metrics

    run = tmp_path / "run"
    shutil.copytree(pristine / "trl", run)
    (run / "checkpoint-6" / "trainer_state.json").write_text("[1, 2")
    assert [p.step for p in read_backend_metrics(run).train] == [1, 2, 3, 4]  # checkpoint-4's history


# ---------------------------------------------------------------- which checkpoint a restart resumes from


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing (TRL writes it last"),
        (lambda p: _truncate(p / "optimizer.pt"), "optimizer.pt is truncated (not a whole zip)"),
        (lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x10"), "adapter_model.safetensors is truncated (1 bytes)"),
        (lambda p: (p / "rng_state.pth").write_bytes(b""), "rng_state.pth is empty"),
    ],
)
def test_resume_takes_the_newest_complete_trl_checkpoint_and_sets_the_incomplete_one_aside(tmp_path, pristine, damage, reason):
    run = tmp_path / "run"
    shutil.copytree(pristine / "trl", run)
    damage(run / "checkpoint-6")
    notes: list[str] = []
    assert resume_checkpoint(run, say=notes.append) == run / "checkpoint-4"
    (note,) = notes
    assert note.startswith(f"[kubetune] skipped incomplete checkpoint checkpoint-6: {reason}")
    assert note.endswith(f"moved to {run / 'incomplete' / 'checkpoint-6'}")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "checkpoint-4", "incomplete"]  # nothing deleted
    assert (run / "incomplete" / "checkpoint-6" / "adapter_config.json").is_file()
    assert "incomplete/checkpoint-6" not in [str(p.relative_to(run)) for p in find_checkpoints(run)]


def test_resume_outside_kubetunes_own_output_only_skips(tmp_path, pristine):
    run = tmp_path / "run"
    shutil.copytree(pristine / "trl", run)
    shutil.rmtree(run / "checkpoint-6")
    (run / "checkpoint-6").mkdir()
    notes: list[str] = []
    assert resume_checkpoint(run, say=notes.append, own=False) == run / "checkpoint-4"
    assert notes == ["[kubetune] skipped incomplete checkpoint checkpoint-6: is empty"] and (run / "checkpoint-6").is_dir()


def test_mini_trainer_resumes_from_its_newest_complete_full_state(tmp_path):
    states = tmp_path / "full_state_checkpoints"
    for step in (10, 20, 30):
        (states / f"step_{step}" / "distributed").mkdir(parents=True)
        (states / f"step_{step}" / "distributed" / ".metadata").write_bytes(b"dcp")
        _torch_file(states / f"step_{step}" / "optimizer_rank_0.pt")
        _torch_file(states / f"step_{step}" / "training_state.pt")
    _truncate(states / "step_30" / "training_state.pt")
    (states / "step_20" / "optimizer_rank_0.pt").write_bytes(b"")
    notes: list[str] = []
    assert latest_full_state(tmp_path, say=notes.append) == str(states / "step_10")
    assert notes == [
        "[kubetune] skipped incomplete checkpoint step_30: training_state.pt is truncated (not a whole zip)",
        "[kubetune] skipped incomplete checkpoint step_20: optimizer_rank_0.pt is empty",
    ]
    assert problem(states / "step_10") == "holds no config.json or adapter_config.json"  # not a model: never evaluated


@pytest.mark.slow
def test_a_sigkill_during_a_checkpoint_save_resumes_from_the_previous_complete_one(tmp_path, tiny_model):
    """A real LoRA run on CPU is SIGKILLed while TRL writes checkpoint-20 (its adapter and optimizer are on disk,
    its trainer state not yet); the same step run again resumes from checkpoint-10 and finishes."""
    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", num_proc=1)
    kwargs = tmp_path / "kwargs.json"
    kwargs.write_text(json.dumps({"algorithm": "lora_sft", "max_steps": 24, "micro_batch_size": 2, "learning_rate": 0.001,
                                  "save_steps": 10, "logging_steps": 2, "seed": 0}))  # fmt: skip
    saving = tmp_path / "saving-checkpoint-20"
    # the first run stops for good inside TRL's save of checkpoint-20, after the optimizer and before the RNG and
    # trainer state: the test then kills it there, as a pre-emption would at any instant
    hang = (
        "import os, sys, time, transformers.trainer as t\n"
        "original = t.Trainer._save_rng_state\n"
        "def save(self, output_dir):\n"
        "    if self.state.global_step == 20 and not os.environ.get('RESTART'):\n"
        f"        open({str(saving)!r}, 'w').close(); time.sleep(600)\n"
        "    return original(self, output_dir)\n"
        "t.Trainer._save_rng_state = save\n"
    )
    script = hang + (
        "import json; from kubetune.steps.train import train; from kubetune.validation import load_spec\n"
        "r = train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6], workspace=sys.argv[6])\n"
        "print(json.dumps(r.metrics))"
    )
    args = [sys.executable, "-c", script, str(kwargs), str(tiny_model), str(tmp_path / "data" / "train"), str(tmp_path / "out"),
            str(tmp_path / "data" / "val"), str(tmp_path / "pvc" / "run-1")]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=(tmp_path / "first.log").open("w"))
    deadline = time.monotonic() + 240
    while not saving.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL and saving.exists(), (tmp_path / "first.log").read_text()[-3000:]
    checkpoints = tmp_path / "pvc" / "run-1" / "checkpoints"
    half = checkpoints / "checkpoint-20"
    assert (half / "optimizer.pt").is_file() and not (half / "trainer_state.json").exists()  # killed mid-save

    second = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "RESTART": "1"})
    assert second.returncode == 0, second.stderr[-2000:]
    lines = second.stdout.strip().splitlines()
    assert (
        "[kubetune] skipped incomplete checkpoint checkpoint-20: trainer_state.json is missing "
        "(TRL writes it last: the save did not finish); moved to " + str(checkpoints / "incomplete" / "checkpoint-20")
    ) in lines
    assert "[kubetune] resuming from checkpoint-10" in lines
    metrics = json.loads(lines[-1])
    assert metrics["resumed_from"] == "checkpoint-10" and metrics["logged_train_steps"] == 12
    assert resume_checkpoint(checkpoints, say=print, own=False) == checkpoints / "checkpoint-24"
    assert problem(checkpoints / "checkpoint-20") is None  # saved again, whole, by the resumed run
    published = tmp_path / "out" / "checkpoints"
    names = sorted(p.name for p in published.iterdir() if p.is_dir())
    assert names == ["checkpoint-10", "checkpoint-20", "checkpoint-24", "final"]  # not incomplete/


# ---------------------------------------------------------------- run-local: options first, the run folder, signals


def _run_local(*args: str):
    from typer.testing import CliRunner

    from kubetune.cli import app

    return CliRunner().invoke(app, ["run-local", *args])


def _files(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


BAD_OPTIONS = {
    "algorithm": (["--algorithm", "dpo"], "--algorithm: must be one of lora_sft, osft, sft, got 'dpo'"),
    "checkpoint": (["--checkpoint", "worst"], "--checkpoint: must be best or final, got 'worst'"),
    "missing data": (["--data", "{tmp}/nope.jsonl"], "--data: {tmp}/nope.jsonl: no such file or folder"),
    "data scheme": (["--data", "ftp://host/d.jsonl"], "--data: 'ftp://host/d.jsonl': ftp:// is not a data source "
                    "(a local path, s3:// or hf://)"),
    "kwargs typo": (["--kwargs", "typo.json"], "{tmp}/typo.json:2: `lerning_rate`: is not a parameter of lora_sft"),
    "kwargs algorithm": (["--kwargs", "osft.json"], "--kwargs {tmp}/osft.json: says algorithm 'osft' "
                         "but --algorithm is 'lora_sft'"),
    "foreign destination": (["--destination", "{tmp}/dest"], "--destination {tmp}/dest: holds 1 file(s) or "
                            "folder(s) kubetune did not export (INDEX.md)"),
    "credential in data": (["--data", "s3://reader:wJalrXUtnFEMIK7MDENG@bucket/chat.jsonl"],
                           "--data: holds a credential (URL with credentials); it is not shown or stored"),
    "credential in destination": (["--destination", "https://user:hunter2hunter2@models.example/v1"],
                                  "--destination: holds a credential (URL with credentials); it is not shown or stored"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_run_local_refuses_a_bad_option_before_anything_runs(tmp_path, case):
    args, expected = BAD_OPTIONS[case]
    _files(tmp_path, "typo.json", '{"algorithm": "lora_sft",\n "lerning_rate": 0.1}')
    _files(tmp_path, "osft.json", '{"algorithm": "osft"}')
    (tmp_path / "dest").mkdir()
    _files(tmp_path / "dest", "INDEX.md", "keep")
    args = [a.format(tmp=tmp_path) if "{tmp}" in a else (str(tmp_path / a) if a.endswith(".json") else a) for a in args]
    result = _run_local("-o", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    title, line = result.stderr.splitlines()
    assert title == "invalid run-local options: 1 problem(s)" and line.startswith(f"  - {expected.format(tmp=tmp_path)}")
    assert not (tmp_path / "run").exists() and (tmp_path / "dest" / "INDEX.md").read_text() == "keep"
    assert "wJalrXUtnFEMI" not in result.output and "hunter2" not in result.output


def test_run_local_reports_every_bad_option_at_once(tmp_path):
    result = _run_local("-o", str(tmp_path / "run"), "--algorithm", "x", "--checkpoint", "y", "--data", str(tmp_path / "z"))
    assert result.exit_code == 2 and result.stderr.splitlines()[0] == "invalid run-local options: 3 problem(s)"
    assert not (tmp_path / "run").exists()


def _record(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"kind": "kubetune-run-local", "run_id": "run-1", "arguments": {"algorithm": "lora_sft"}, **fields}
    (folder / "run.json").write_text(json.dumps(record))


HELD: list[int] = []  # the run.lock descriptors "in use" holds, as a running run-local does


def _held(folder: Path, **fields) -> None:
    import fcntl

    _record(folder, **fields)
    HELD.append(os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT))
    os.write(HELD[-1], str(os.getpid()).encode())
    fcntl.flock(HELD[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)


FOLDERS = {
    "foreign files": (lambda f: _files(f, "notes.txt", "mine"), [],
                      "cannot run", "-o {f}: holds files kubetune did not write (notes.txt) (choose a new or empty folder, "
                      "or pass --allow-nonempty: nothing in it is deleted or overwritten)"),
    "foreign run.json": (lambda f: _files(f, "run.json", '{"state": "done"}'), [],
                         "invalid input", "{f}/run.json: is not a kubetune run record; choose another folder (-o)"),
    "unfinished": (lambda f: _record(f, state="interrupted", updated="2026-01-01T00:00:00Z"), [],
                   "cannot run", "-o {f}: holds an unfinished run run-1 (interrupted, last updated 2026-01-01T00:00:00Z) "
                   "(pass --resume to continue it, or choose another folder)"),
    "in use": (lambda f: _held(f, state="running", pid=os.getpid(), updated="t"),
               ["--resume"], "cannot run", f"-o {{f}}: is in use by kubetune run-local (pid {os.getpid()})"),
    "nothing to resume": (lambda f: None, ["--resume"], "cannot resume", "--resume: {f} holds no kubetune run to resume"),
    "finished": (lambda f: _record(f, state="finished"), ["--resume"],
                 "cannot resume", "--resume: the run in {f} finished; there is nothing to resume"),
    "resume with other data": (lambda f: _record(f, state="failed"), ["--resume", "--data", "kubetune://sample-chat"],
                               "cannot resume", "--data: differs from the run being resumed (None) (--resume continues "
                               "with the run's own options: leave it out)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FOLDERS))
def test_run_local_never_writes_into_a_folder_it_should_not(tmp_path, case):
    make, args, title, line = FOLDERS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    make(folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = _run_local("-o", str(folder), *args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{title}: 1 problem(s)", f"  - {line.format(f=folder)}"]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing written, nothing deleted


def _wait_for(condition, process, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)


def test_ctrl_c_stops_run_local_with_130_a_message_and_the_folder_marked_unfinished(tmp_path):
    folder = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "run-local", "-o", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    _wait_for(lambda: any((folder / "kfp-root").glob("*/validate-kwargs")), process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out
    assert err.splitlines()[-1] == (
        f"kubetune run-local: interrupted; the run in {folder} is unfinished: "
        f"`kubetune run-local -o {folder} --resume` continues it"
    )
    record = json.loads((folder / "run.json").read_text())
    assert record["state"] == "interrupted" and record["pid"] is None and "result" not in record
    assert not list(folder.rglob("export-model/exported_model/*"))  # no export, half or whole
    again = _run_local("-o", str(folder))
    assert again.exit_code == 2 and "holds an unfinished run" in again.stderr


@pytest.mark.slow
def test_an_interrupted_run_local_resumes_from_its_last_checkpoint_with_its_prepared_data(tmp_path):
    folder = tmp_path / "run"
    kwargs = _files(tmp_path, "kwargs.json", json.dumps({"num_epochs": 1, "learning_rate": 0.005, "effective_batch_size": 8,
                                                          "max_seq_len": 128, "save_steps": 4, "logging_steps": 4}))  # fmt: skip
    command = [sys.executable, "-m", "kubetune.cli", "run-local", "-o", str(folder), "--kwargs", kwargs]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    _wait_for(lambda: any(folder.glob("workspace/*/checkpoints/checkpoint-4/trainer_state.json")), first)
    first.send_signal(signal.SIGINT)  # training saves a checkpoint on the SIGTERM it gets, then the run stops
    _, err = first.communicate(timeout=180)
    assert first.returncode == 130 and "Traceback" not in err, err[-2000:]
    (workspace,) = folder.glob("workspace/*/checkpoints")
    saved = resume_checkpoint(workspace, own=False)
    assert saved is not None

    second = subprocess.run([*command[:-2], "--resume", "--verbose"], capture_output=True, text=True, cwd=tmp_path, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    log = re.sub(r"\x1b\[[0-9;]*m", "", second.stdout + second.stderr)
    (tmp_path / "resume.log").write_text(log)
    assert "Executing task 'train-model'" in log
    assert "Executing task 'prepare-data'" not in log and "Executing task 'validate-kwargs'" not in log  # reused
    assert f"[kubetune] resuming from {saved.name}" in log
    record = json.loads((folder / "run.json").read_text())
    assert record["state"] == "finished" and Path(record["result"]["exported_model"], "manifest.json").is_file()
    assert "kubetune run-local finished" in second.stdout
    header = rf"^==== kubetune run-local: run {record['run_id']}, attempt of "
    assert len(re.findall(header, (folder / "run.log").read_text(), re.M)) == 2  # run.log: both attempts' output


# ---------------------------------------------------------------- round 2: run-local's destination, empty options, run.json paths


RUN_LOCAL_REFUSED = {
    "cwd with overwrite": (["--destination", ".", "--overwrite"], "--destination .: is the working directory ({c}): "
                           "an export replaces its destination whole"),
    "home with overwrite": (["--destination", "{home}", "--overwrite"], "--destination {home}: is the home directory "
                            "({home}): an export replaces its destination whole"),
    "/usr": (["--destination", "/usr", "--overwrite"], "--destination /usr: is the system folder /usr: "
             "export to a folder of its own inside it"),
    "holds --data": (["--data", "data/d.jsonl", "--destination", "data", "--overwrite"],
                     "--destination data: contains --data ({c}/data/d.jsonl): exporting there would delete it"),
    "the run folder": (["--destination", "run"], "--destination run: is the run folder -o ({c}/run): "
                       "an export replaces its destination whole"),
    "inside the run folder": (["--destination", "run/model"], "--destination run/model: is inside the run folder -o ({c}/run)"),
    "parent is a file": (["--destination", "notes.txt/sub"], "--destination notes.txt/sub: cannot be created: "
                         "{c}/notes.txt is not a directory"),
    "under /proc": (["--destination", "/proc/model"], "--destination /proc/model: is under /proc, "
                    "where no export can be written"),
    "file://": (["--destination", "file:///tmp/x"], "--destination file:///tmp/x: file:// is not an export destination: "
                "give a directory or s3://bucket/prefix"),
    "hf://": (["--destination", "hf://org/m"], "--destination hf://org/m: hf:// is not an export destination: "
              "give a directory or s3://bucket/prefix"),
    "dangling link": (["--destination", "dangling"], "--destination dangling: is a symbolic link to {c}/nowhere, "
                      "which does not exist"),
    "empty --data": (["--data", ""], "--data: is empty: give a file, a folder, s3:// or hf://, "
                     "or leave --data out for the sample"),
    "empty --kwargs": (["--kwargs", ""], "--kwargs: is empty: give a JSON file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RUN_LOCAL_REFUSED))
def test_run_local_refuses_a_destination_that_would_wreck_or_fail_after_training_up_front(tmp_path, monkeypatch, case):
    args, expected = RUN_LOCAL_REFUSED[case]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print()")
    _files(tmp_path, "notes.txt", "mine")
    (tmp_path / "data").mkdir()
    _files(tmp_path / "data", "d.jsonl", '{"messages": []}\n')
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = _run_local("-o", "run", *[a.format(home=tmp_path / "home") for a in args])
    assert result.exit_code == 2
    expected = expected.format(c=tmp_path, home=tmp_path / "home")
    assert result.stderr.splitlines() == ["invalid run-local options: 1 problem(s)", f"  - {expected}"]
    assert not (tmp_path / "run").exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_run_json_holds_absolute_paths_and_an_older_relative_one_is_refused_from_another_directory(tmp_path, monkeypatch):
    from kubetune.runs.local_options import check_options
    from kubetune.runs.run_folder import new_record

    (tmp_path / "d.jsonl").write_text('{"messages": []}\n')
    monkeypatch.chdir(tmp_path)
    arguments = check_options("lora_sft", "best", "d.jsonl", None, "out/model", False, Path("run"))
    record = new_record(arguments)
    assert record["arguments"]["data_uri"] == str(tmp_path / "d.jsonl") and record["cwd"] == str(tmp_path)
    assert record["arguments"]["export_destination"] == str(tmp_path / "out" / "model")

    folder = tmp_path / "old-run"
    _record(folder, state="failed", arguments={"algorithm": "lora_sft", "export_destination": "out", "export_overwrite": True})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "out").mkdir()
    _files(tmp_path / "elsewhere" / "out", "precious.txt", "keep")
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = _run_local("-o", str(folder), "--resume")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "cannot resume: 1 problem(s)",
        "  - --destination: was recorded as the relative path 'out' by a run started in another working directory "
        "(run --resume from the directory the run started in)",
    ]
    assert (tmp_path / "elsewhere" / "out" / "precious.txt").read_text() == "keep"
    assert json.loads((folder / "run.json").read_text())["state"] == "failed"  # untouched


def test_a_step_that_refused_its_input_ends_run_local_with_2_and_a_bug_with_1(tmp_path):
    from kfp.local import subprocess_task_handler as handler

    from kubetune.runs.local import INPUT, _step_codes

    original = handler.run_local_subprocess
    try:
        codes = _step_codes()
        for code in (0, INPUT, 1):
            assert handler.run_local_subprocess([sys.executable, "-c", f"raise SystemExit({code})"]) == code
        assert codes == [0, 2, 1]
    finally:
        handler.run_local_subprocess = original
