"""The training step's progress line (kubetune/steps/progress.py): its format and cadence on a fake clock, and the
monitor on a real metrics file written row by row, as a backend writes it. Real training runs print it too: the
slow tests of each algorithm check their lines (components/train/tests, test_train.py for lora_sft)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from kubetune.backends.registry import get_backend
from kubetune.steps.progress import (
    FileMonitor,
    InstructLabRows,
    JsonTail,
    MiniTrainerRows,
    Observation,
    Progress,
    Start,
    watching,
)
from kubetune.steps.train import bind
from kubetune.validation import validate_spec


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_gives_step_samples_loss_tokens_per_second_elapsed_and_eta():
    clock, lines = Clock(), []
    progress = Progress(every=10, clock=clock, out=lines.append)
    progress.begin(Start(step=0, time=100.0, samples=0))
    clock.now = 5.0
    progress.observe(Observation(1, 102.0, loss=2.5, samples=8, tokens=2000, total_steps=10, total_samples=80))
    # 2,000 tokens in the 2 s since the run's start; 9 steps to go at 2 s a step
    assert lines == [
        "[kubetune] progress: step 1/10 (10%) | samples 8/80 | loss 2.5000 | 1,000 tokens/s | elapsed 0:00:05 | ETA 0:00:18"
    ]


def test_what_the_backend_does_not_know_is_a_question_mark_not_a_guess():
    lines = []
    progress = Progress(clock=Clock(), out=lines.append)  # no start known, no totals (an infinite run)
    progress.observe(Observation(7, 50.0, loss=None, samples=None, tokens=None))
    assert lines == ["[kubetune] progress: step 7/? | samples ?/? | loss ? | ? tokens/s | elapsed 0:00:00 | ETA ?"]


def test_a_line_for_the_first_step_then_one_every_interval_and_the_last_at_the_end():
    clock, lines = Clock(), []
    progress = Progress(clock=clock, out=lines.append)  # every 10 s by default
    for step in range(1, 36):  # a step a second, 100 tokens and 2 samples each; the first took 1 s
        clock.now = float(step)
        progress.observe(Observation(step, 1000.0 + step, 1.0, 2 * step, 100 * step, 35, 70, step_seconds=1.0, step_samples=2))
    progress.finish()
    assert [line.split(" | ")[0] for line in lines] == [
        f"[kubetune] progress: step {s}/35 ({100 * s // 35}%)" for s in (1, 11, 21, 31, 35)
    ]
    assert all("| 100 tokens/s |" in line for line in lines)  # each since the line before; the first since the run's start
    assert lines[1].endswith("| elapsed 0:00:11 | ETA 0:00:24")
    assert progress.summary() == {"train_seconds": 35.0, "train_tokens_per_second": 100.0, "train_samples_per_second": 2.0}
    progress.finish()
    assert len(lines) == 5  # the last line once


def row(step: int, **extra) -> dict:
    """A mini-trainer ``training_metrics_0.jsonl`` row (its fields, a run's values): a step of 8 samples in 0.5 s."""
    return {
        "step": step, "epoch": 0, "steps_per_epoch": 6, "lr": 0.001, "loss": 6.0 - step / 10, "num_samples": 8.0,
        "num_total_tokens": 300.0, "time_per_batch": 0.5, "tokens_per_second": 600.0, "total_samples_accumulated": 8.0 * step,
        "val_loss": None, "timestamp": datetime.fromtimestamp(1_800_000_000 + step / 2).isoformat(), **extra,
    }  # fmt: skip


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_the_monitor_tails_a_file_being_written_waits_for_a_partial_line_and_stops(tmp_path):
    path = tmp_path / "training_metrics_0.jsonl"
    path.write_text(json.dumps(row(9)) + "\n")  # an earlier run's row: not this run's
    lines = []
    monitor = FileMonitor(JsonTail(path), MiniTrainerRows("epoch", 2, 0, 48), Progress(every=0, out=lines.append), poll=0.01)
    monitor.start()
    with path.open("a") as f:
        for step in (1, 2):
            f.write(json.dumps(row(step)) + "\n")
            f.flush()
            wait_until(lambda: len(lines) == step, f"no line for step {step}")  # noqa: B023 - waited for here
        third = json.dumps(row(3)) + "\n"
        f.write(third[:40])  # the backend's write, cut in the middle
        f.flush()
        time.sleep(0.1)  # ten reads of the file meanwhile
        assert len(lines) == 2
        f.write(third[40:])
        f.flush()
        wait_until(lambda: len(lines) == 3, "no line for the completed row")
        f.write(json.dumps(row(4)) + "\n")  # written just before training ends: read when the monitor stops
    monitor.stop()
    assert not monitor.thread.is_alive()
    assert [line.split(" | ")[:3] for line in lines] == [
        [f"[kubetune] progress: step {s}/12 ({100 * s // 12}%)", f"samples {8 * s}/96", f"loss {6.0 - s / 10:.4f}"]
        for s in (1, 2, 3, 4)
    ]
    assert all("| 600 tokens/s |" in line for line in lines)  # 300 tokens every 0.5 s, from mini-trainer's own counts


def test_rows_with_numbers_out_of_range_are_passed_over_and_never_fail_the_step(tmp_path):
    path = tmp_path / "training_metrics_0.jsonl"
    garbage = [row(1, time_per_batch=2**63), row(2, num_total_tokens=1e308), row(3, num_total_tokens=1e308)]
    lines = []
    progress = Progress(every=0, out=lines.append)
    monitor = FileMonitor(JsonTail(path), MiniTrainerRows("epoch", 2, 0, 48), progress, poll=3600).start()
    path.write_text("".join(json.dumps(r) + "\n" for r in [*garbage, row(4)]))
    monitor.stop()  # its last read meets every row; the step's own result stays what training made it
    assert lines[-1].startswith("[kubetune] progress: step 4/12") and all(v < float("inf") for v in progress.summary().values())


def test_instructlab_rows_give_the_totals_from_its_own_arguments_and_epoch_rows():
    reader = InstructLabRows()
    assert reader.read({"num_epochs": 2, "effective_batch_size": 8, "timestamp": "2026-11-25T19:36:48"}) is None
    assert reader.read({"num_gpus": 1, "num_batches": 6, "total_samples": 48, "timestamp": "2026-11-25T19:36:48"}) is None
    step = {"epoch": 0, "step": 1, "overall_throughput": 4.0, "num_tokens_rank0": 302, "batch_size": 8, "avg_loss": 6.2384,
            "samples_seen": 8, "total_samples": 48, "num_epoch_steps": 6, "timestamp": "2026-11-25T19:36:50.5"}  # fmt: skip
    seen = reader.read(step)
    assert (seen.step, seen.samples, seen.loss, seen.tokens, seen.total_steps, seen.total_samples) == (1, 8, 6.2384, 302, 12, 96)
    assert (seen.step_seconds, seen.step_samples) == (2.0, 8)  # 8 samples at 4 samples/s
    assert reader.read({"val_loss": 5.9, "val_num_tokens": 80, "step": 1, "timestamp": "2026-11-25T19:36:51"}) is None


def osft(root: Path, **kwargs):
    """A bound osft spec: 2 epochs of the 48 samples in ``root/train``, unless ``kwargs`` say otherwise."""
    (root / "train").mkdir(exist_ok=True)
    (root / "train" / "data.jsonl").write_text('{"input_ids": [1], "labels": [1]}\n' * 48)
    document = {"algorithm": "osft", "max_tokens_per_gpu": 2048, "max_seq_len": 512, "learning_rate": 1e-3,
                "unfreeze_rank_ratio": 0.5, "effective_batch_size": 8, "num_epochs": 2, **kwargs}  # fmt: skip
    return bind(validate_spec(document, require_paths=False), "/models/base", root / "train", root / "out")


@pytest.fixture
def osft_spec(tmp_path):
    return osft(tmp_path)


def test_watching_stops_its_thread_when_training_raises_and_prints_what_was_written(osft_spec, capsys):
    metrics = Path(osft_spec.params["ckpt_output_dir"]) / "training_metrics_0.jsonl"
    metrics.parent.mkdir(parents=True)
    with pytest.raises(RuntimeError), watching(get_backend("osft"), osft_spec) as watch:
        assert watch.callbacks == ()  # mini-trainer trains in torchrun's processes: its file is read instead
        metrics.write_text(json.dumps(row(1)) + "\n")
        raise RuntimeError("the backend failed")
    assert "kubetune-progress" not in [t.name for t in threading.enumerate()]
    # totals from the spec (2 epochs, 48 samples in the file) and the row (6 steps an epoch)
    assert capsys.readouterr().out.startswith("[kubetune] progress: step 1/12 (8%) | samples 8/96 | loss 5.9000 | 600 tokens/s")
    assert watch.summary() == {"train_seconds": 0.5, "train_tokens_per_second": 600.0, "train_samples_per_second": 16.0}


def test_only_node_0_reports(osft_spec, capsys):
    metrics = Path(osft_spec.params["ckpt_output_dir"]) / "training_metrics_0.jsonl"
    metrics.parent.mkdir(parents=True)
    with watching(get_backend("osft"), osft_spec, main=False) as watch:
        metrics.write_text(json.dumps(row(1)) + "\n")
    assert capsys.readouterr().out == "" and watch.summary() == {}


def test_mini_trainer_totals_follow_its_training_mode(tmp_path):
    backend = get_backend("osft")
    reader = MiniTrainerRows.of(backend, osft(tmp_path))
    assert (reader.mode, reader.epochs, reader.samples_per_epoch) == ("epoch", 2, 48)
    assert MiniTrainerRows.of(backend, osft(tmp_path, validation_split=0.25, validate_at_final=True)).samples_per_epoch is None
    for kwargs, totals in (
        ({"training_mode": "step", "max_steps": 20}, (20, None)),
        ({"training_mode": "infinite"}, (None, None)),
    ):
        seen = MiniTrainerRows.of(backend, osft(tmp_path, lr_scheduler="constant", **kwargs)).read(row(1))
        assert (seen.total_steps, seen.total_samples) == totals, kwargs
