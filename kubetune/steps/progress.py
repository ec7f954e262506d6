"""The training step's progress line: step, samples, loss, tokens/s, elapsed and ETA, one line every ``every``
seconds (and at the first and the last step), the same for every backend; the run's throughput for Metrics.

The torchrun backends (instructlab-training, mini-trainer) train in child processes and append rows to their
metrics file: a thread here tails it. ``lora_sft`` trains in this process: a TRL callback reports each logged step."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubetune.backends import instructlab, mini_trainer
from kubetune.backends.base import Backend
from kubetune.backends.resume import train_samples
from kubetune.backends.rules import effective
from kubetune.console import say
from kubetune.contract import TrainingSpec

EVERY = 10.0  # seconds between two lines while training goes on
POLL = 1.0  # seconds between two reads of a backend's metrics file


@dataclass(frozen=True)
class Observation:
    """One trained step, as the backend reported it. ``time``: when it ended (seconds, the backend's clock);
    ``samples``: seen by the whole run so far (a resumed run counts on); ``tokens``: trained since this run began;
    ``step_seconds``/``step_samples``: what this step alone took and trained, where the backend says."""

    step: int
    time: float
    loss: float | None = None
    samples: int | None = None
    tokens: int | None = None
    total_steps: int | None = None
    total_samples: int | None = None
    step_seconds: float | None = None
    step_samples: int | None = None


@dataclass(frozen=True)
class Start:
    """Where this run's training began: just before its first step."""

    step: int
    time: float
    samples: int | None = None


@dataclass
class Progress:
    """Prints ``line`` for the first observation, then at most one every ``every`` seconds of ``clock``, and the last
    one at ``finish`` if it was not printed yet."""

    every: float = EVERY
    clock: Callable[[], float] = time.monotonic
    out: Callable[[str], None] = say
    start: Start | None = None
    last: Observation | None = None
    printed: Observation | None = None
    began: float = field(init=False)
    printed_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.began = self.clock()

    def begin(self, start: Start) -> None:
        if self.start is None:
            self.start = start

    def observe(self, seen: Observation) -> None:
        if self.start is None and seen.step_seconds is not None:
            before = seen.samples - seen.step_samples if None not in (seen.samples, seen.step_samples) else None
            self.start = Start(seen.step - 1, seen.time - seen.step_seconds, before)
        self.last = seen
        if self.printed_at is None or self.clock() - self.printed_at >= self.every:
            self._print(seen)

    def finish(self) -> None:
        """The last step's line, where it was not printed yet."""
        if self.last is not None and self.last is not self.printed:
            self._print(self.last)

    def _print(self, seen: Observation) -> None:
        try:
            line = self.line(seen)
        except ArithmeticError:  # numbers out of range in the backend's row (1e308 tokens): no line, training goes on
            return
        self.out(line)
        self.printed, self.printed_at = seen, self.clock()

    def line(self, seen: Observation) -> str:
        percent = f" ({100 * seen.step // seen.total_steps}%)" if seen.total_steps else ""
        samples = "?" if seen.samples is None else f"{seen.samples:,}"
        loss = "?" if seen.loss is None else f"{seen.loss:.4f}"
        parts = [
            f"step {seen.step:,}/{_count(seen.total_steps)}{percent}",
            f"samples {samples}/{_count(seen.total_samples)}",
            f"loss {loss}",
            f"{_rate(self._tokens_per_second(seen))} tokens/s",
            f"elapsed {_duration(self.clock() - self.began)}",
            f"ETA {_duration(self._eta(seen))}",
        ]
        return "[kubetune] progress: " + " | ".join(parts)

    def _tokens_per_second(self, seen: Observation) -> float | None:
        """Since the line before (the run's start for the first): the current rate."""
        before = self.printed
        tokens, then = (before.tokens, before.time) if before is not None else (0, self.start.time if self.start else None)
        if seen.tokens is None or tokens is None or then is None or seen.time <= then:
            return None
        return (seen.tokens - tokens) / (seen.time - then)

    def _eta(self, seen: Observation) -> float | None:
        if not (self.start and seen.total_steps and seen.step > self.start.step and seen.time > self.start.time):
            return None
        per_step = (seen.time - self.start.time) / (seen.step - self.start.step)
        return max(0, seen.total_steps - seen.step) * per_step

    def summary(self) -> dict[str, float]:
        """The run's training throughput, from the start of its first step to the end of its last: ``train_seconds``,
        ``train_tokens_per_second``, ``train_samples_per_second`` (each where known; none before a first step)."""
        start, last = self.start, self.last
        if start is None or last is None or last.time <= start.time:
            return {}
        seconds = last.time - start.time
        found = {"train_seconds": seconds}
        try:
            if last.tokens is not None:
                found["train_tokens_per_second"] = last.tokens / seconds
            if last.samples is not None and start.samples is not None:
                found["train_samples_per_second"] = (last.samples - start.samples) / seconds
        except ArithmeticError:  # numbers out of range in the backend's rows: what could be computed
            pass
        return {name: round(value, 3) for name, value in found.items() if math.isfinite(value)}


def _count(total: int | None) -> str:
    return "?" if total is None else f"{total:,}"


def _rate(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def _duration(seconds: float | None) -> str:
    try:
        return "?" if seconds is None or not math.isfinite(seconds) else str(timedelta(seconds=round(seconds)))
    except OverflowError:  # more days than a timedelta holds: a row's clock out of range
        return "?"


def _number(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _time(row: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(row["timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class InstructLabRows:
    """instructlab-training's ``training_params_and_metrics_global0.jsonl``: its arguments row (``num_epochs``),
    then one row per step (``step``, ``avg_loss``, ``samples_seen``, ``num_tokens_rank0``: the step's tokens summed
    over ranks, ``batch_size`` / ``overall_throughput``: the step's seconds, ``num_epoch_steps``, ``total_samples``:
    one epoch's)."""

    def __init__(self) -> None:
        self.epochs: int | None = None
        self.tokens = 0

    def read(self, row: dict[str, Any]) -> Observation | None:
        if "avg_loss" not in row:
            self.epochs = row["num_epochs"] if isinstance(row.get("num_epochs"), int) else self.epochs
            return None
        step, when, loss = row.get("step"), _time(row), _number(row, "avg_loss")
        if not isinstance(step, int) or when is None:
            return None
        self.tokens += int(_number(row, "num_tokens_rank0") or 0)
        batch, throughput = _number(row, "batch_size"), _number(row, "overall_throughput")
        per_epoch, steps = _number(row, "total_samples"), _number(row, "num_epoch_steps")
        return Observation(
            step,
            when,
            loss,
            _int(_number(row, "samples_seen")),
            self.tokens,
            total_steps=int(steps * self.epochs) if steps and self.epochs else None,
            total_samples=int(per_epoch * self.epochs) if per_epoch and self.epochs else None,
            step_seconds=batch / throughput if batch and throughput else None,
            step_samples=_int(batch),
        )


class MiniTrainerRows:
    """mini-trainer's ``training_metrics_0.jsonl``: one row per step (``step``, ``loss``, ``num_samples``,
    ``total_samples_accumulated``, ``num_total_tokens``: summed over ranks, ``time_per_batch``, ``steps_per_epoch``).
    Totals from the run's mode: ``epoch`` (epochs x steps per epoch; samples from the data where an epoch is the
    whole file), ``step`` (max_steps), ``token``/``infinite`` (unknown)."""

    def __init__(self, mode: str, epochs: int, max_steps: int, samples_per_epoch: int | None) -> None:
        self.mode, self.epochs, self.max_steps, self.samples_per_epoch = mode, epochs, max_steps, samples_per_epoch
        self.tokens = 0

    def read(self, row: dict[str, Any]) -> Observation | None:
        step, when = row.get("step"), _time(row)
        if not isinstance(step, int) or when is None or _number(row, "loss") is None:
            return None
        self.tokens += int(_number(row, "num_total_tokens") or 0)
        per_epoch = _int(_number(row, "steps_per_epoch"))
        total_steps = {"epoch": per_epoch * self.epochs if per_epoch else None, "step": self.max_steps or None}
        epoch_samples = self.samples_per_epoch * self.epochs if self.mode == "epoch" and self.samples_per_epoch else None
        return Observation(
            step,
            when,
            _number(row, "loss"),
            _int(_number(row, "total_samples_accumulated")),
            self.tokens,
            total_steps=total_steps.get(self.mode),
            total_samples=epoch_samples,
            step_seconds=_number(row, "time_per_batch"),
            step_samples=_int(_number(row, "num_samples")),
        )

    @classmethod
    def of(cls, backend: Backend, spec: TrainingSpec) -> MiniTrainerRows:
        args, catalog = backend.training_kwargs(spec), backend.catalog()  # type: ignore[attr-defined]
        mode = effective(args, catalog, "training_mode", "epoch")
        mode = str(getattr(mode, "value", mode))  # the enum, where the catalogue gives its default so
        whole_file = not spec.params.get("is_pretraining") and not (effective(args, catalog, "validation_split", 0.0) or 0) > 0
        data = Path(args.get("data_path", ""))
        samples = train_samples(data) if whole_file and data.is_file() else None
        return cls(
            mode, int(effective(args, catalog, "max_epochs", 1) or 1), int(effective(args, catalog, "max_steps", 0) or 0), samples
        )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


class JsonTail:
    """The complete new rows of a JSON-lines file that another process appends to: read from where the last read
    ended (from the size it had when watching began: an earlier run's rows are not this run's); a partial last line
    waits for its end; a file that shrank (replaced) is read again from its start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0
        self.partial = b""

    def rows(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self.offset:
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except OSError:  # not written yet
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return [row for row in found if isinstance(row, dict)]


class FileMonitor:
    """A thread that feeds ``progress`` from a backend's metrics file every ``poll`` seconds, until ``stop``."""

    def __init__(self, tail: JsonTail, reader: InstructLabRows | MiniTrainerRows, progress: Progress, poll: float = POLL):
        self.tail, self.reader, self.progress, self.poll = tail, reader, progress, poll
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kubetune-progress", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(self.poll):
            self.drain()

    def drain(self) -> None:
        """Every row written since the last read; one whose numbers are out of range (inf, 1e308) is passed over: the
        line is a report, never a reason for the training step to fail."""
        for row in self.tail.rows():
            try:
                if (seen := self.reader.read(row)) is not None:
                    self.progress.observe(seen)
            except ArithmeticError:
                continue

    def start(self) -> FileMonitor:
        self.thread.start()
        return self

    def stop(self) -> None:
        """The thread ended, then the rows written meanwhile read, and the last line printed."""
        self.stopping.set()
        self.thread.join()
        self.drain()
        self.progress.finish()


@dataclass(frozen=True)
class Watch:
    """What ``watching`` hands the step: TRL callbacks for ``TrainingRun.callbacks``, and the throughput at the end."""

    progress: Progress
    callbacks: tuple[Any, ...] = ()

    def summary(self) -> dict[str, float]:
        return self.progress.summary()


@contextlib.contextmanager
def watching(backend: Backend, spec: TrainingSpec, main: bool = True, every: float = EVERY) -> Iterator[Watch]:
    """The progress of ``backend`` training the bound ``spec``, printed while the block runs. ``main``: this process
    reports (node 0 of a multi-node job). The monitor stops when the block ends, however it ends."""
    progress = Progress(every)
    if not main:
        yield Watch(progress)
        return
    files = {
        instructlab.InstructLabSFT.name: instructlab.METRICS_FILE,
        mini_trainer.MiniTrainerOSFT.name: mini_trainer.METRICS_FILE,
    }
    if backend.name in files:
        reader = MiniTrainerRows.of(backend, spec) if backend.name == mini_trainer.MiniTrainerOSFT.name else InstructLabRows()
        monitor = FileMonitor(JsonTail(Path(spec.params["ckpt_output_dir"]) / files[backend.name]), reader, progress).start()
        try:
            yield Watch(progress)
        finally:
            monitor.stop()
        return
    try:
        yield Watch(progress, (trl_callback(progress),) if not backend.spawns_torchrun else ())
    finally:
        progress.finish()


def trl_callback(progress: Progress) -> Any:
    """A TRL ``TrainerCallback`` feeding ``progress`` on the main process at each logged train loss (``logging_steps``)
    and at the last step (with the last logged loss): tokens are TRL's own count (``num_tokens``), samples the steps
    times the global batch (sequences: packed ones where packing is on). Built here so that importing this module
    stays cheap."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        batch, total_samples = 1, None

        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.total_samples = state.max_steps * self.batch if state.max_steps > 0 else None
            if args.max_steps <= 0 and train_dataloader is not None and hasattr(train_dataloader, "dataset"):
                whole = math.ceil(len(train_dataloader.dataset) * args.num_train_epochs)
                self.total_samples = min(self.total_samples or whole, whole)

        def samples(self, step: int) -> int:
            return min(step * self.batch, self.total_samples) if self.total_samples else step * self.batch

        def on_step_begin(self, args, state, control, **kwargs):
            progress.begin(Start(state.global_step, time.time(), self.samples(state.global_step)))

        def on_log(self, args, state, control, logs=None, **kwargs):
            """A train loss, or the summary TRL logs once training ended (the last step, where it logged no loss)."""
            logs, seen = logs or {}, progress.last
            ended = "train_runtime" in logs and (seen is None or seen.step != state.global_step)
            if not state.is_world_process_zero or not (_number(logs, "loss") is not None or ended):
                return
            loss = _number(logs, "loss") if not ended else seen.loss if seen else None
            tokens = _int(_number(logs, "num_tokens")) if "num_tokens" in logs else seen.tokens if seen else None
            step = state.global_step
            progress.observe(
                Observation(step, time.time(), loss, self.samples(step), tokens, state.max_steps or None, self.total_samples)
            )

    return ProgressCallback()
