"""sft trains for real on this CPU through our training step: instructlab-training's own loop in one process
(CPU mode; FSDP stays GPU-only, since accelerate never selects it without an accelerator), with its own
validation split, read back by the evaluation step. A SIGTERM saves and a restarted step resumes; two runs at
once do not collide.

One module-scoped set of real runs (steps in subprocesses, as in a pod): ``b`` trains to the end while ``a``,
started at the same time, is stopped by SIGTERM and then started again."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune.backends.registry import get_backend
from kubetune.backends.torchrun import final_model, flash_attn_missing, saved_models
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.steps.timeline import read_backend_metrics
from kubetune.steps.train import train
from kubetune.steps.validate import validate_to_artifact
from kubetune.validation import validate_spec

pytest.importorskip("instructlab.training", reason="instructlab-training is the `sft` extra")

SAMPLES, BATCH = 64, 8  # 48 train samples after instructlab's 25 % split: 6 steps, validation at 3 and 6
SPEC = {
    "algorithm": "sft", "effective_batch_size": BATCH, "max_tokens_per_gpu": 1024, "max_seq_len": 512,
    "learning_rate": 1e-3, "num_epochs": 1, "save_samples": 16, "validation_split": 0.25, "validation_frequency": 3,
}  # fmt: skip
STEP = (
    "import json, sys\nfrom kubetune.steps.train import train\nfrom kubetune.validation import load_spec\n"
    "r = train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6])\n"
    "print('RESULT ' + json.dumps({'final_model': str(r.final_model.relative_to(r.output_dir)), 'metrics': r.metrics}))"
)
METRICS = "checkpoints/training_params_and_metrics_global0.jsonl"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model) -> Path:
    """The embedded sample chat, prepared by our data step; training reads its first SAMPLES records."""
    from kubetune.steps.prepare import prepare

    root = tmp_path_factory.mktemp("sft")
    prepare("kubetune://sample-chat", str(tiny_model), root / "train", root / "val", num_proc=1)
    lines = (root / "train" / "data.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "small").mkdir()
    (root / "small" / "data.jsonl").write_text("".join(lines[:SAMPLES]), encoding="utf-8")
    (root / "kwargs.json").write_text(json.dumps(SPEC), encoding="utf-8")
    return root


def start(root: Path, tiny_model: Path, name: str) -> subprocess.Popen:
    args = [str(root / "kwargs.json"), str(tiny_model), str(root / "small"), str(root / name), str(root / "val")]
    log = (root / f"{name}.log").open("a")
    return subprocess.Popen([sys.executable, "-c", STEP, *args], stdout=log, stderr=subprocess.STDOUT, text=True)


def rows(out: Path) -> list[dict]:
    """The run's metrics rows so far (a line still being written is left out)."""
    path = out / METRICS
    found = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def progress_lines(log: str) -> list[str]:
    """The progress lines of a step's log, less their prefix (a progress bar of the backend may precede one)."""
    return [line.split("[kubetune] progress: ", 1)[1] for line in log.splitlines() if "[kubetune] progress: " in line]


def steps(out: Path) -> list[dict]:
    return [r for r in rows(out) if "avg_loss" in r]


def result(log: str) -> dict:
    found = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert found, log[-3000:]
    return json.loads(found[-1].removeprefix("RESULT "))


def metadata(out: Path) -> dict:
    import torch

    return torch.load(out / "checkpoints" / "full_state" / "epoch_0" / "training_metadata.json", weights_only=True)


def launch_of(step: subprocess.Popen) -> dict:
    """What a running step's launch gave its processes: torchrun's rendezvous endpoint and the training
    process's trigger-file name, read from the processes themselves."""
    import psutil

    found = {}
    for child in psutil.Process(step.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            for arg in child.cmdline():
                if arg.startswith("--rdzv-endpoint="):
                    found["endpoint"] = arg.split("=", 1)[1]
                if arg.endswith("main_ds.py"):
                    found["trigger"] = child.environ().get("CHECKPOINT_TRIGGER_FILENAME")
    return found


@pytest.fixture(scope="module")
def runs(prepared, tiny_model):
    """``a`` and ``b`` at once; once both train, SIGTERM to ``a``'s step; ``b`` trains on; ``a`` starts again."""
    a, b = start(prepared, tiny_model, "a"), start(prepared, tiny_model, "b")
    deadline = time.monotonic() + 600
    while not (steps(prepared / "a") and steps(prepared / "b")) and None in (a.poll(), b.poll()):
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)
    b_was_training = b.poll() is None
    launched = {name: launch_of(step) for name, step in (("a", a), ("b", b))}
    a.send_signal(signal.SIGTERM)
    a.wait(timeout=600)
    stopped = {"returncode": a.returncode, "log": (prepared / "a.log").read_text(), "metadata": metadata(prepared / "a")}
    stopped["steps"] = steps(prepared / "a")
    saved = prepared / "a-state"  # the on-demand save as it was, before the restarted step replaces it
    shutil.copytree(prepared / "a" / "checkpoints" / "full_state", saved / "full_state")
    again = start(prepared, tiny_model, "a")  # while b trains on: a restart beside a run, as a retried pod would be
    b.wait(timeout=600), again.wait(timeout=600)
    log = (prepared / "a.log").read_text()
    return SimpleNamespace(
        root=prepared, b_was_training=b_was_training, stopped=stopped, saved=saved, launched=launched,
        b={"returncode": b.returncode, "log": (prepared / "b.log").read_text()},
        again={"returncode": again.returncode, "log": log[len(stopped["log"]):]},
    )  # fmt: skip


@pytest.mark.slow
def test_sft_trains_its_own_loop_on_cpu_and_evaluation_reads_its_validation_rows(runs):
    from kubetune.steps.evaluate import evaluate_step

    out = runs.root / "b"
    assert runs.b["returncode"] == 0, runs.b["log"][-3000:]
    assert "[kubetune] CPU mode: redirected" in runs.b["log"] and "not for real training" in runs.b["log"]
    trained = steps(out)
    assert [(r["step"], r["samples_seen"]) for r in trained] == [(s, s * BATCH) for s in range(1, 7)]
    validation = [r for r in rows(out) if "val_loss" in r]
    assert [r["step"] for r in validation] == [3, 6]
    done = result(runs.b["log"])
    assert done["final_model"] == "hf_format/samples_48"
    assert done["metrics"]["logged_train_steps"] == 6 and done["metrics"]["final_train_loss"] == trained[-1]["avg_loss"]
    lines = progress_lines(runs.b["log"])  # the progress line (kubetune/steps/progress.py): the first step, the last
    assert lines[0].startswith("step 1/6 (16%) | samples 8/48 | loss ")
    assert re.search(r"\| [\d,]+ tokens/s \| elapsed [\d:]+ \| ETA [\d:]+$", lines[0])
    assert lines[-1].startswith(f"step 6/6 (100%) | samples 48/48 | loss {trained[-1]['avg_loss']:.4f} | ")
    speed, tokens = done["metrics"], sum(r["num_tokens_rank0"] for r in trained)  # instructlab's own count of tokens
    assert speed["train_tokens_per_second"] == pytest.approx(tokens / speed["train_seconds"], 1e-3)
    assert speed["train_samples_per_second"] == pytest.approx(48 / speed["train_seconds"], 1e-3)
    saved = out / "checkpoints" / "hf_format"
    assert sorted(p.name for p in saved.iterdir()) == ["samples_16", "samples_32", "samples_48"]
    assert all((saved / name / "config.json").is_file() for name in ("samples_16", "samples_32", "samples_48"))

    curve = evaluate_step(out, runs.root / "val", runs.root / "curve.json", runs.root / "report.html")
    assert [(p.step, p.samples, p.loss) for p in curve.backend.validation] == [
        (r["step"], r["step"] * BATCH, r["val_loss"]) for r in validation
    ]
    assert [p.samples for p in curve.points] == [16, 32, 48]


@pytest.mark.slow
def test_final_model_is_the_last_save_by_samples_not_the_newest_file(runs):
    """A copy (a sync, ``publish``) can leave an earlier checkpoint the newest file: still the last by samples."""
    out = runs.root / "b" / "checkpoints"
    later = time.time() + 3600
    os.utime(out / "hf_format" / "samples_16", (later, later))
    assert final_model(saved_models(out)) == out / "hf_format" / "samples_48"


@pytest.mark.slow
def test_sigterm_saves_on_demand_and_the_step_ends_cleanly(runs):
    stopped = runs.stopped
    assert stopped["returncode"] == 0, stopped["log"][-3000:]
    assert result(stopped["log"])["metrics"]["full_state_saved"] == "full_state/epoch_0"
    meta = stopped["metadata"]
    assert meta["current_epoch"] == 0 and "global_step" in meta  # instructlab's mid-epoch on-demand save
    assert meta["samples_seen"] < 48 and stopped["steps"][-1]["samples_seen"] < 48  # stopped before the end
    aside = runs.root / "a" / "checkpoints" / "not-resumable" / "hf_format"  # set aside by the restarted step
    assert (aside / f"samples_{meta['samples_seen']}" / "config.json").is_file()


@pytest.mark.slow
def test_two_runs_at_once_do_not_collide(runs):
    """``b`` shared the machine with ``a`` (rendezvous port, /dev/shm trigger file): ``a``'s SIGTERM stopped ``a`` only."""
    assert runs.b_was_training, "b finished before a was stopped: the runs did not overlap"
    assert runs.b["returncode"] == 0 and len(steps(runs.root / "b")) == 6
    assert "global_step" not in metadata(runs.root / "b")  # b saved at its epoch's end, never on demand
    assert result(runs.b["log"])["metrics"]["full_state_saved"] == ""
    a, b = runs.launched["a"], runs.launched["b"]  # read from the running processes
    assert a["endpoint"] != b["endpoint"] and a["trigger"] != b["trigger"] and None not in (a["trigger"], b["trigger"])


@pytest.mark.slow
def test_a_restarted_step_sets_the_mid_epoch_save_aside_and_trains_every_batch(runs):
    """instructlab-training 0.16.2 would resume the mid-epoch save one batch short (kubetune/backends/resume.py)."""
    again = runs.again
    assert again["returncode"] == 0, again["log"][-3000:]
    loud = [line for line in again["log"].splitlines() if "NOT RESUMING" in line]
    assert len(loud) == 1 and "full_state/epoch_0 (instructlab-training bug" in loud[0] and "one ahead" in loud[0]
    aside = runs.root / "a" / "checkpoints" / "not-resumable"
    assert (aside / "full_state" / "epoch_0" / "training_metadata.json").is_file()
    assert (aside / "hf_format" / f"samples_{runs.stopped['metadata']['samples_seen']}" / "config.json").is_file()
    assert result(again["log"])["metrics"]["resumed_from"] == ""
    again_rows = steps(runs.root / "a")[len(runs.stopped["steps"]) :]
    assert [(r["step"], r["samples_seen"]) for r in again_rows] == [(s, s * BATCH) for s in range(1, 7)]  # every batch
    series = read_backend_metrics(runs.root / "a")  # what evaluation reads: the new run's rows replace the first's
    assert [p.step for p in series.train] == list(range(1, 7)) and [p.step for p in series.validation] == [3, 6]


@pytest.mark.slow
def test_a_run_started_again_from_scratch_in_the_same_folder_replaces_the_rows_it_logs_again(runs, tmp_path):
    """Without a full state to resume (killed before any save) instructlab-training starts over and appends."""
    logged = (runs.root / "b" / METRICS).read_text(encoding="utf-8")
    again = tmp_path / "training_params_and_metrics_global0.jsonl"
    again.write_text(logged + "".join(line + "\n" for line in logged.splitlines()[:4]), encoding="utf-8")  # to step 2
    series = read_backend_metrics(tmp_path)
    assert [(p.step, p.samples) for p in series.train] == [(1, 8), (2, 16)] and series.validation == []


SPEC_PATHS = {"model_path": "/m", "data_path": "/d", "ckpt_output_dir": "/o"}


def test_flash_attn_missing_means_sdpa_and_an_explicit_false_is_refused_not_overridden(capsys, prepared, tiny_model):
    assert flash_attn_missing()  # this machine, and CI, have no flash-attn
    backend = get_backend("sft")
    left_open = validate_spec({**SPEC, **SPEC_PATHS})
    assert backend.local_params(left_open)["disable_flash_attn"] is True
    assert "instructlab-training uses sdpa (disable_flash_attn)" in capsys.readouterr().out
    given = validate_spec({**SPEC, **SPEC_PATHS, "disable_flash_attn": True})
    assert "disable_flash_attn" not in backend.local_params(given) and "sdpa" not in capsys.readouterr().out

    kwargs = prepared / "flash.json"
    validate_to_artifact("sft", {**SPEC, "disable_flash_attn": False}, kwargs)  # validation cannot know the image
    with pytest.raises(KubetuneError) as refused:
        train(TrainingSpec.read(kwargs), str(tiny_model), prepared / "small", prepared / "flash", prepared / "val")
    assert [(p.where, p.message) for p in refused.value.problems] == [
        ("disable_flash_attn", "is false but flash-attn is not installed here")
    ]
    assert not (prepared / "flash" / "checkpoints").exists()  # refused before instructlab-training started


@pytest.mark.parametrize("field", ["chat_tmpl_path", "use_legacy_tmpl"])
def test_a_training_time_chat_template_is_refused(prepared, tiny_model, field):
    """The data was tokenized with the model's own template: another one at training time would not match it."""
    value = "/templates/other.py" if field == "chat_tmpl_path" else True
    for require_paths in (True, False):
        with pytest.raises(KubetuneError) as refused:
            validate_spec({**SPEC, **SPEC_PATHS, field: value}, require_paths=require_paths)
        assert [p.where for p in refused.value.problems] == [f"`{field}`"]
        assert "model's own chat template" in refused.value.problems[0].message
    kwargs = prepared / f"{field}.json"
    artifact = {**validate_spec(SPEC, require_paths=False).to_document(), field: value}
    kwargs.write_text(json.dumps(artifact))  # a hand-edited artifact reaching the training step
    with pytest.raises(KubetuneError):
        train(TrainingSpec.read(kwargs), str(tiny_model), prepared / "small", prepared / field, prepared / "val")
    assert not (prepared / field / "checkpoints").exists()
