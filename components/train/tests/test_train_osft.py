"""osft trains for real on CPU through our training step: mini-trainer 0.9's own loop (CPU mode), the tiny model
and the embedded sample data prepared once for the module. Three real runs in all, to keep CI short: an
``osft: true`` run in ``step`` mode and an ``osft: false`` run in ``infinite`` mode started together in steps of
their own, each stopped by SIGTERM; then the first one's step again, which resumes and finishes. The
evaluation step then reads what mini-trainer really wrote."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune.backends.cpu_mode import launch_env
from kubetune.backends.mini_trainer import read_mini_trainer
from kubetune.backends.torchrun import final_model, saved_models
from kubetune.checkpoints import full_state_problem
from kubetune.steps.evaluate import evaluate_step
from kubetune.steps.timeline import read_backend_metrics
from kubetune.steps.train import train
from kubetune.validation import load_spec

OSFT = {"algorithm": "osft", "max_tokens_per_gpu": 2048, "max_seq_len": 512, "learning_rate": 1e-3, "unfreeze_rank_ratio": 0.5}
MAX_STEPS, BATCH = 16, 8
# stopped by SIGTERM after its first step, then resumed to the end: AdamW settings, every validation trigger but
# the epoch one, a regular save and a best-validation copy at the same points
STEP_RUN = {**OSFT, "effective_batch_size": BATCH, "training_mode": "step", "max_steps": MAX_STEPS,
            "validation_frequency": 4, "validate_at_final": True, "save_best_val_loss": True,
            "min_samples_per_checkpoint": 4 * BATCH, "beta1": 0.5, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.1}  # fmt: skip
# plain SFT through mini-trainer on 48 samples (6 steps an epoch), validating only at epoch ends, until stopped
INFINITE_RUN = {**OSFT, "osft": False, "effective_batch_size": BATCH, "training_mode": "infinite", "lr_scheduler": "constant",
                "validate_at_epoch": True, "save_best_val_loss": True}  # fmt: skip
STEP = (
    "import sys, json; from kubetune.steps.train import train; from kubetune.validation import load_spec; "
    "r = train(load_spec(sys.argv[1], require_paths=False), *sys.argv[2:6]); "
    "print(json.dumps({'metrics': r.metrics, 'final_model': r.final_model.name, 'saved': [c.name for c in r.checkpoints]}))"
)


@pytest.fixture(scope="module")
def prepared(tiny_model, tmp_path_factory) -> SimpleNamespace:
    from kubetune.steps.prepare import prepare

    root = tmp_path_factory.mktemp("osft-data")
    prepare("kubetune://sample-chat", str(tiny_model), root / "train", root / "val", num_proc=1)
    (root / "small").mkdir()  # the first 48 prepared samples: short epochs
    rows = (root / "train" / "data.jsonl").read_text().splitlines(keepends=True)
    (root / "small" / "data.jsonl").write_text("".join(rows[:48]))
    return SimpleNamespace(model=str(tiny_model), train=root / "train", small=root / "small", val=root / "val")


def kwargs_file(out: Path, document: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "kwargs.json"
    path.write_text(json.dumps(document))
    return path


def start(out: Path, document: dict, data: SimpleNamespace, train_data: Path) -> subprocess.Popen:
    """Our training step in a process of its own (as in a pod), its output in ``out/step.log``."""
    args = [sys.executable, "-c", STEP, str(kwargs_file(out, document)), data.model, str(train_data), str(out), str(data.val)]
    with open(out / "step.log", "w") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def logged_steps(out: Path) -> list[int]:
    """The steps of mini-trainer's metrics rows, in file order (a line still being written is skipped)."""
    path = out / "checkpoints" / "training_metrics_0.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return steps


def wait_for(condition, process: subprocess.Popen, what: str, out: Path, limit: float = 300) -> None:
    """Wait until ``condition()`` holds; fail with the step's log when the step ends first (``limit`` only bounds a hang)."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (out / "step.log").read_text()[-3000:]
            raise AssertionError(f"{what}: the step {'ended' if process.poll() is not None else 'hung'}\n{tail}")
        time.sleep(0.05)


def finished(process: subprocess.Popen, out: Path) -> dict:
    """What the step printed last (its metrics, final model and saves), once it ended with exit code 0."""
    code = process.wait(timeout=300)
    lines = (out / "step.log").read_text().strip().splitlines()
    assert code == 0, "\n".join(lines[-40:])
    return json.loads(lines[-1])


def processes() -> dict[int, tuple[int, bytes]]:
    """Every process here: pid -> (parent pid, command line)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            stat, command = (proc / "stat").read_text(), (proc / "cmdline").read_bytes()
            found[int(proc.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), command)
        except (OSError, ValueError, IndexError):
            continue  # not a process, or one that ended meanwhile
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts its workers in sessions of their own)."""
    table, found = processes(), [pid]
    for parent in found:
        found += [child for child, (ppid, _) in table.items() if ppid == parent]
    return found


def worker(step: subprocess.Popen) -> int:
    """The mini-trainer worker (``train.py`` under torchrun) of a step."""
    table = processes()
    for pid in tree(step.pid):
        command = table.get(pid, (0, b""))[1]
        if b"mini_trainer/train.py" in command and b"torchrun" not in command:
            return pid
    raise AssertionError(f"step {step.pid} has no mini-trainer worker")


def trigger_name(pid: int) -> str:
    """``CHECKPOINT_TRIGGER_FILENAME`` in the environment a process started with."""
    variables = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return dict(v.decode().split("=", 1) for v in variables if b"=" in v)["CHECKPOINT_TRIGGER_FILENAME"]


@pytest.fixture(scope="module")
def stopped(prepared, tmp_path_factory) -> SimpleNamespace:
    """A ``step`` run and an ``infinite`` run started together, both inheriting a trigger name; SIGTERM to the
    step run's process, then, once the infinite run has trained on and validated at its first epoch end, to the
    infinite run's; then the step run's step again, which resumes."""
    root = tmp_path_factory.mktemp("osft-sigterm")
    step_out, infinite_out = root / "step", root / "infinite"
    inherited = f"kubetune-{uuid.uuid4().hex}"  # as an earlier launch in this process would have left it
    facts = SimpleNamespace(step_out=step_out, infinite_out=infinite_out, inherited=inherited)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CHECKPOINT_TRIGGER_FILENAME", inherited)
        env.setenv("OMP_NUM_THREADS", "1")  # two runs side by side: a core each (threads spinning on a busy CI cost 2x)
        step_run = start(step_out, STEP_RUN, prepared, prepared.train)
        infinite = start(infinite_out, INFINITE_RUN, prepared, prepared.small)
    try:
        # the infinite run's worker is held (SIGSTOP) from its first step until the step run has trained one: then it
        # trains beside the step run's SIGTERM save, for a few steps, not through a whole start-up
        wait_for(lambda: logged_steps(infinite_out), infinite, "the infinite run's first metrics row", infinite_out)
        held = worker(infinite)
        os.kill(held, signal.SIGSTOP)
        wait_for(lambda: logged_steps(step_out), step_run, "the step run's first metrics row", step_out)
        facts.worker_triggers = [trigger_name(worker(process)) for process in (step_run, infinite)]
        os.kill(held, signal.SIGCONT)
        step_run.send_signal(signal.SIGTERM)
        states = step_out / "checkpoints" / "full_state_checkpoints"
        wait_for(lambda: list(states.glob("step_*/training_state.pt")), step_run, "the step run's full-state save", step_out)
        os.kill(held, signal.SIGSTOP)  # held again while the step run's step ends
        facts.step_metrics = finished(step_run, step_out)["metrics"]
        facts.steps_before_resume = logged_steps(step_out)
        facts.infinite_at_other_stop = logged_steps(infinite_out)[-1]
        facts.infinite_running_after_other_stop = infinite.poll() is None
        facts.infinite_states_before_own_stop = sorted((infinite_out / "checkpoints").glob("full_state_checkpoints/*"))
        os.kill(held, signal.SIGCONT)
        validated = infinite_out / "checkpoints" / "kubetune_validation_0.jsonl"
        wait_for(
            lambda: logged_steps(infinite_out)[-1] > facts.infinite_at_other_stop and validated.is_file(),
            infinite,
            "the infinite run training on after the other run's SIGTERM, to its first epoch end",
            infinite_out,
        )
        infinite.send_signal(signal.SIGTERM)
        facts.infinite = finished(infinite, infinite_out)
        facts.infinite_steps = logged_steps(infinite_out)
    finally:
        for process in (step_run, infinite):
            if process.poll() is None:  # a failed wait: stop the step, its torchrun and its workers
                for pid in tree(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        spec = load_spec(step_out / "kwargs.json", require_paths=False)
        facts.resumed = train(spec, prepared.model, prepared.train, step_out, prepared.val)
    return facts


@pytest.mark.slow
def test_step_mode_sigterm_saves_a_full_state_and_the_same_step_resumes_from_it(stopped):
    stop = stopped.step_metrics
    n = stopped.steps_before_resume[-1]
    assert stop["stopped_by"] == "SIGTERM" and stop["full_state_saved"] == f"full_state_checkpoints/step_{n}"
    assert stopped.steps_before_resume == list(range(1, n + 1)) and n < MAX_STEPS  # stopped early, not finished
    assert full_state_problem(stopped.step_out / "checkpoints" / stop["full_state_saved"]) is None
    resumed = stopped.resumed.metrics
    assert resumed["resumed_from"] == f"full_state_checkpoints/step_{n}" and resumed["stopped_by"] == ""
    assert logged_steps(stopped.step_out) == list(range(1, MAX_STEPS + 1))  # continued at step n + 1, each step once


@pytest.mark.slow
def test_each_step_logs_progress_lines_and_the_resumed_run_reports_its_throughput(stopped):
    """The progress line (kubetune/steps/progress.py), its totals from the run's mode: ``step`` knows its steps, an
    ``infinite`` run knows none and gives no ETA; the throughput of the resumed run counts its own steps only."""

    def progress_lines(out: Path) -> list[str]:
        log = (out / "step.log").read_text()
        return [line.split("[kubetune] progress: ", 1)[1] for line in log.splitlines() if "[kubetune] progress: " in line]

    assert progress_lines(stopped.step_out)[0].startswith("step 1/16 (6%) | samples 8/? | loss ")
    infinite = progress_lines(stopped.infinite_out)
    assert infinite[0].startswith("step 1/? | samples 8/? | loss ") and all(line.endswith("| ETA ?") for line in infinite)
    assert re.search(r"\| [\d,]+ tokens/s \|", infinite[-1]) and infinite[-1].startswith(f"step {stopped.infinite_steps[-1]}/?")
    rows = [json.loads(line) for line in (stopped.step_out / "checkpoints" / "training_metrics_0.jsonl").open()]
    again = [r for r in rows if r["step"] > stopped.steps_before_resume[-1]]  # the resumed run's rows
    speed, tokens = stopped.resumed.metrics, sum(r["num_total_tokens"] for r in again)  # mini-trainer's own count
    assert speed["train_tokens_per_second"] == pytest.approx(tokens / speed["train_seconds"], 1e-3)
    assert speed["train_samples_per_second"] == pytest.approx(sum(r["num_samples"] for r in again) / speed["train_seconds"], 1e-3)


@pytest.mark.slow
def test_infinite_mode_stops_on_sigterm_with_a_full_state_save(stopped):
    stop = stopped.infinite["metrics"]
    last = stopped.infinite_steps[-1]
    assert stop["stopped_by"] == "SIGTERM" and stop["full_state_saved"] == f"full_state_checkpoints/step_{last}"
    assert full_state_problem(stopped.infinite_out / "checkpoints" / stop["full_state_saved"]) is None


@pytest.mark.slow
def test_parallel_runs_never_share_the_trigger_file_even_when_they_inherit_one(stopped):
    """Both steps inherited the same kubetune trigger name; each worker polls a file of its own, and the SIGTERM of
    one run does not stop the other."""
    assert len(set(stopped.worker_triggers)) == 2 and stopped.inherited not in stopped.worker_triggers
    assert stopped.infinite_running_after_other_stop and stopped.infinite_states_before_own_stop == []
    assert stopped.infinite_steps[-1] > stopped.infinite_at_other_stop


@pytest.mark.slow
def test_adamw_settings_reach_mini_trainers_optimizer(stopped):
    """Read back from the optimizer state mini-trainer's worker saved (mini-trainer alone would use 0.9/0.95/1e-8/0)."""
    import torch

    saved = stopped.step_out / "checkpoints" / stopped.step_metrics["full_state_saved"] / "optimizer_rank_0.pt"
    groups = torch.load(saved, weights_only=False)["param_groups"]
    assert {(g["betas"], g["eps"], g["weight_decay"]) for g in groups} == {((0.5, 0.99), 1e-7, 0.1)}


@pytest.mark.slow
def test_final_model_is_the_last_regular_save_not_the_newer_best_validation_copy(stopped):
    result = stopped.resumed
    last = f"samples_{MAX_STEPS * BATCH}.0"
    copy = result.final_model.parent / f"{last}_best_val_loss"
    assert result.final_model.name == last and copy in result.checkpoints
    assert copy.stat().st_mtime_ns > result.final_model.stat().st_mtime_ns  # newest by file time: the copy


@pytest.mark.slow
def test_evaluation_gives_a_loss_per_checkpoint_and_mini_trainers_validation_points(stopped, prepared, tmp_path):
    curve = evaluate_step(stopped.step_out, prepared.val, tmp_path / "curve.json", tmp_path / "report.html")
    checkpoints = curve.losses()
    saved = {str(c.relative_to(stopped.step_out)) for c in stopped.resumed.checkpoints}
    assert set(checkpoints) == saved and all(math.isfinite(loss) for loss in checkpoints.values())
    backend = curve.backend
    assert [p.step for p in backend.train] == list(range(1, MAX_STEPS + 1))
    # validation_frequency 4 and validate_at_final (the last step twice in our log, once in mini-trainer's): one point a step
    assert [p.step for p in backend.validation] == list(range(4, MAX_STEPS + 1, 4))
    # our held-out loss of the last save is mini-trainer's own validation loss at that point (same weights, same data)
    final = str(stopped.resumed.final_model.relative_to(stopped.step_out))
    assert checkpoints[final] == pytest.approx(backend.validation[-1].loss, rel=1e-3)


@pytest.mark.slow
def test_validate_at_epoch_losses_reach_the_evaluation(stopped, prepared, tmp_path):
    """The ``osft: false`` run validated only at epoch ends: mini-trainer prints those losses and never writes them to
    its metrics file; the evaluation shows them, read from our callback's log, one point per epoch end."""
    own = [json.loads(line) for line in (stopped.infinite_out / "checkpoints" / "training_metrics_0.jsonl").open()]
    assert not [row for row in own if "val_num_loss_counted_tokens" in row]  # mini-trainer's own file: no validation
    epoch_ends = [(r["step"], r["total_samples_accumulated"]) for r in own if r["step"] % r["steps_per_epoch"] == 0]
    curve = evaluate_step(stopped.infinite_out, prepared.val, tmp_path / "curve.json", tmp_path / "report.html")
    points = [(p.step, p.samples) for p in curve.backend.validation]
    # every epoch end, but the last logged step's when the SIGTERM came before that epoch's validation
    assert points and (points == epoch_ends or (points == epoch_ends[:-1] and epoch_ends[-1][0] == own[-1]["step"]))
    # each improvement wrote a best-validation copy, the only models saved: the newest is the final model, and
    # our evaluation of each gives the validation loss mini-trainer computed for it
    saved = stopped.infinite["saved"]
    assert saved and all(name.endswith("_best_val_loss") for name in saved) and stopped.infinite["final_model"] == saved[-1]
    by_samples = {p.samples: p.loss for p in curve.backend.validation}
    evaluated = {Path(p.checkpoint).name: p.loss for p in curve.points}
    assert set(evaluated) == set(saved)
    for name, loss in evaluated.items():
        assert loss == pytest.approx(by_samples[float(name.removeprefix("samples_").removesuffix("_best_val_loss"))], rel=1e-3)


def test_saved_models_go_by_samples_and_the_final_model_is_the_newest_regular_save(tmp_path):
    folder = tmp_path / "hf_format"
    names = ["samples_9.0", "samples_10.0_best_val_loss", "samples_10.0", "samples_24.0_best_val_loss", ".samples_30.0", "notes"]
    for name in names:
        (folder / name).mkdir(parents=True)
    order = ["samples_9.0", "samples_10.0", "samples_10.0_best_val_loss", "samples_24.0_best_val_loss"]
    assert [p.name for p in saved_models(tmp_path)] == order
    # the last validation wrote a best copy, mini-trainer then skipped its final save: the copy holds the last weights
    assert final_model(saved_models(tmp_path)).name == "samples_24.0_best_val_loss"
    (folder / "samples_24.0").mkdir()
    assert final_model(saved_models(tmp_path)).name == "samples_24.0"  # a regular save of the same point wins
    for name in ("samples_100", "samples_20", "last_epoch"):  # instructlab-training's names
        (tmp_path / "sft" / "hf_format" / name).mkdir(parents=True)
    assert [p.name for p in saved_models(tmp_path / "sft")] == ["samples_20", "samples_100", "last_epoch"]
    assert final_model([]) is None


def test_mini_trainer_timeline_merges_our_validation_log_one_point_per_step(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def row(step, **more):
        return {"step": step, "total_samples_accumulated": 8.0 * step, "loss": 5.0 - step / 10, **more}

    fresh = {"val_loss": 4.5, "val_num_loss_counted_tokens": 96}
    # a run that reached step 3, then started again from scratch in the same folder and reached step 4
    write("training_metrics_0.jsonl", [row(1), row(2, **fresh), row(3, val_loss=4.5), row(1), row(2, **fresh), row(3), row(4)])
    ours = [{"step": s, "total_samples_accumulated": 8.0 * s, "val_loss": v} for s, v in ((2, 4.4), (2, 4.5), (4, 4.2), (4, 4.2))]
    write("kubetune_validation_0.jsonl", ours)
    series = read_mini_trainer(tmp_path / "training_metrics_0.jsonl")
    assert [p.step for p in series.train] == [1, 2, 3, 4]
    assert [(p.step, p.loss, p.samples) for p in series.validation] == [(2, 4.5, 16.0), (4, 4.2, 32.0)]
    assert read_backend_metrics(tmp_path).validation == series.validation


def test_each_launch_has_its_own_trigger_file_and_a_users_name_is_kept(monkeypatch):
    names = []
    monkeypatch.setenv("CHECKPOINT_TRIGGER_FILENAME", "kubetune-inherited")
    for _ in range(2):
        with launch_env("mini-trainer", say=lambda line: None):
            names.append(os.environ["CHECKPOINT_TRIGGER_FILENAME"])
    assert len(set(names)) == 2 and "kubetune-inherited" not in names
    assert os.environ["CHECKPOINT_TRIGGER_FILENAME"] == "kubetune-inherited"
    monkeypatch.setenv("CHECKPOINT_TRIGGER_FILENAME", "ckpt-pod-7")  # the user's own: every launch keeps it
    with launch_env("mini-trainer", say=lambda line: None):
        assert os.environ["CHECKPOINT_TRIGGER_FILENAME"] == "ckpt-pod-7"
