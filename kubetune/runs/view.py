"""What ``kubetune run-local`` shows of its run, read from the run's log as it grows (``run.log`` in the run folder:
kfp.local's and every step's output): one line per step with its status, duration and key figures (read from the
step's ``executor_output.json``), a progress bar with the training loss on a terminal, and a failing step's own
report. ``--verbose`` shows the log itself instead."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kubetune.steps.curve import LossCurve

PLAIN_PROGRESS_S = 60.0  # without a terminal: at most one training progress line this often
REPORT_LINES = 12  # the most lines shown of a failing step's report, or of the log's end when no step failed

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMP = r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d\.\d+) - \w+ - "
_EXECUTING = re.compile(_STAMP + r"Executing task '(?P<task>[^']+)'")
_FINISHED = re.compile(_STAMP + r"Task '(?P<task>[^']+)' finished with status (?P<status>\w+)")
_OUTPUT = re.compile(r"Wrote executor output file to (?P<path>\S+executor_output\.json)")
_PROGRESS = re.compile(
    r"\[kubetune\] progress: step (?P<step>[\d,]+)/(?P<total>[\d,]+|\?).*?\| loss (?P<loss>\S+).*ETA (?P<eta>\S+)"
)
_OWN = "kubetune run-local:"  # the pipeline process's own lines (why the run failed): always shown


@dataclass(frozen=True)
class Outputs:
    """A finished step's outputs, from its ``executor_output.json``: parameter values, and each artifact's uri and
    metadata."""

    parameters: dict[str, Any] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path | None) -> Outputs:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
            first = {name: entry["artifacts"][0] for name, entry in data.get("artifacts", {}).items()}
            return cls(
                data.get("parameterValues", {}),
                {n: a["uri"] for n, a in first.items()},
                {n: a["metadata"] for n, a in first.items()},
            )
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            return cls()


def _validate(o: Outputs) -> str:
    kwargs, memory = o.metadata["kwargs_artifact"], o.metadata["memory_metrics"]
    backend = kwargs["backend"] + (" (PEFT + TRL where CUDA is absent)" if kwargs["backend"] == "unsloth" else "")
    return f"{kwargs['algorithm']} on {backend}, memory estimate {memory['memory_total_gib']:.2f} GiB per GPU"


def _prepare(o: Outputs) -> str:
    m = o.metadata["metrics"]
    kept = int(m["train_samples"] + m["validation_samples"])
    truncated = f", {int(m['truncated'])} truncated" if m.get("truncated") else ""
    return (
        f"{kept} records kept ({int(m['train_samples'])} train, {int(m['validation_samples'])} validation), "
        f"{int(m['dropped'])} dropped{truncated}"
    )


def _train(o: Outputs) -> str:
    m, model = o.metadata["metrics"], o.metadata.get("trained_model", {})
    parts = [f"train loss {m['final_train_loss']:.4f}"] if m.get("final_train_loss") is not None else []
    parts += [f"{int(m['train_samples'])} samples"] if "train_samples" in m else []
    parts += [f"{m['train_tokens_per_second']:.0f} tokens/s"] if m.get("train_tokens_per_second") else []
    parts += [f"resumed from {Path(model['resumed_from']).name}"] if model.get("resumed_from") else []
    parts += [f"stopped by {model['stopped_by']}"] if model.get("stopped_by") else []
    return ", ".join(parts)


def _evaluate(o: Outputs) -> str:
    try:
        curve = LossCurve.read(o.uris["loss_curve"])
    except (OSError, ValueError):  # its metrics alone
        best = f"{Path(o.parameters['best_checkpoint']).name}"
        return f"best validation loss {o.metadata['metrics']['best_validation_loss']:.4f} at {best}"
    first, best = curve.points[0], curve.best
    percent = 100 * (best.loss - first.loss) / first.loss if first.loss else None
    digits = 1 if percent is not None and abs(percent) < 10 else 0
    change = f"{first.loss:.4f} -> {best.loss:.4f} ({percent:+.{digits}f}%)" if percent is not None else ""
    overfitting = f", overfitting after {Path(curve.overfitting.checkpoint).name}" if curve.overfitting else ""
    return (
        f"validation loss {change or f'{best.loss:.4f}'}, best {Path(best.checkpoint).name} "
        f"of {len(curve.points)} checkpoints{overfitting}"
    )


def _benchmark(o: Outputs) -> str:
    if not o.metadata["results"].get("ran"):
        return "not asked for (--evaluate-benchmark)"
    m = o.metadata["metrics"]
    if "benchmark_delta" not in m or "forgetting" not in m:  # a task scored inf or NaN: no mean delta, no forgetting
        return "delta and forgetting not measured (a task has no finite score: see the benchmark report)"
    return f"benchmark delta {m['benchmark_delta'] + 0.0:+.4g} (positive: better), forgetting {m['forgetting']:.4g}"


def _gate(o: Outputs) -> str:
    decision = o.metadata["decision"]
    return "promoted" if decision["promoted"] else f"NOT promoted: {'; '.join(decision['reasons'])}"


def _export(o: Outputs) -> str:
    model = o.metadata["exported_model"]
    return f"{model['kind']} model, {decimal(int(model['bytes']))} in {int(model['files'])} files"


FIGURES: dict[str, Callable[[Outputs], str]] = {
    "validate-kwargs": _validate,
    "prepare-data": _prepare,
    "train-model": _train,
    "evaluate-model": _evaluate,
    "benchmark-model": _benchmark,
    "promotion-gate": _gate,
    "export-model": _export,
    "refused-model": lambda o: "nothing exported",
}


def figures(task: str, outputs: Outputs) -> str:
    """The key figures of a finished ``task`` (kfp.local's name: the component's, dashed); "" when it has none
    or its outputs lack them."""
    try:
        return FIGURES[task](outputs) if task in FIGURES else ""
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError, OSError):
        return ""


def report(lines: list[str]) -> list[str]:
    """The failing step's own report at the end of its output: kubetune's one line, or its title and the problem
    lines under it (``  - ...``), at most ``REPORT_LINES`` in all: the title always, then the first problems and
    ``... and K more``; a traceback's last line."""
    text = [line.removeprefix("    ").rstrip() for line in lines if line.strip()]
    start = len(text) - 1
    while start > 0 and text[start].startswith("  "):
        start -= 1
    shown = text[max(start, 0) :]
    if len(shown) <= REPORT_LINES:
        return shown
    return [*shown[: REPORT_LINES - 1], f"  ... and {len(shown) - REPORT_LINES + 1} more"]


def duration(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``2m05s``."""
    if seconds < 59.95:  # not "60.0 s"
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _seconds(match: re.Match) -> float:
    return int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])


@dataclass
class _Step:
    task: str
    began: float  # seconds of the day, from kfp.local's log line
    output: Path | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))


class View:
    """Turns the run's log, fed as it grows (``feed``), into the lines above on ``console`` (stdout); run-local's
    own messages (``say``) go to stderr. ``verbose``: the log as it is, nothing else."""

    def __init__(self, console: Console | None = None, verbose: bool = False, clock: Callable[[], float] = time.monotonic):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)
        self.verbose, self.clock = verbose, clock
        self.pending = ""  # the log's last line, until it ends
        self.step: _Step | None = None
        self.failed = False
        self.stopping = False  # run-local was told to stop the run: a step that fails now was stopped
        self.recent: deque[str] = deque(maxlen=REPORT_LINES)
        self.progress: Progress | None = None
        self.printed_at: float | None = None
        self.lock = threading.RLock()  # fed from supervise's reading thread, told from its signal handler

    def feed(self, text: str) -> None:
        """The log's next ``text``; never raises (what cannot be read is left to the log file)."""
        if self.verbose:
            with contextlib.suppress(OSError):  # stdout closed (``| head``): the run goes on, its log is in run.log
                sys.stdout.write(text)
                sys.stdout.flush()
            return
        with self.lock:
            *lines, self.pending = (self.pending + text).split("\n")
            for line in lines:
                with contextlib.suppress(Exception):  # a line the view cannot place stays in the log; the run goes on
                    self._line(_ANSI.sub("", line))

    def say(self, line: str) -> None:
        """A message of run-local's own: it was told to stop the run (a signal), or killed what did not stop."""
        with self.lock:
            self.stopping = True
            self._tell(line)

    def close(self, failed: bool = False) -> None:
        """The end of the run; ``failed``: it failed, and where no step's report was shown, the log's last lines are."""
        self.feed("\n" if self.pending else "")
        with self.lock:
            self._end_progress()
        if failed and not self.failed and not self.verbose and self.recent:
            self.errors.print("the run's log ends with:")
            for line in self.recent:
                self.errors.print(f"  {escape(line)}")

    def _line(self, line: str) -> None:
        if line.strip():
            self.recent.append(line.strip())
        if match := _EXECUTING.match(line):
            self.step = _Step(match["task"], _seconds(match))
            self._start_progress(match["task"])
        elif match := _FINISHED.match(line):
            self._finished(match["task"], match["status"], _seconds(match))
        elif line.startswith(_OWN):
            self._tell(line)
        elif self.step is not None:
            if match := _OUTPUT.search(line):  # the step's end: its output (and what it printed before) kept
                self.step.output = Path(match["path"])
            elif line.rstrip() == "    }" or "[KFP Executor " in line:  # the executor's input (JSON) and lines: not the step's
                self.step.tail.clear()
            else:
                self.step.tail.append(line)
                if match := _PROGRESS.search(line):
                    self._progressed(match)

    def _tell(self, line: str) -> None:
        self._end_progress()
        self.errors.print(("\n" if self.verbose else "") + escape(line))

    def _finished(self, task: str, status: str, at: float) -> None:
        step = self.step if self.step is not None and self.step.task == task else _Step(task, at)
        self.step = None
        self._end_progress()
        took = duration((at - step.began) % 86400)  # kfp.local's clock is the time of day
        name = f"{escape(task):<16}"
        if status == "SUCCESS":
            self.console.print(f"  {name} [green]done[/]   {took:>8}   {escape(figures(task, Outputs.read(step.output)))}")
            return
        self.failed = not self.stopping
        status = "[yellow]stopped[/]" if self.stopping else "[bold red]FAILED[/] "
        said = figures(task, Outputs.read(step.output)) if self.stopping and step.output else ""
        if said:  # it stopped as asked and wrote its outputs (training: the checkpoint it saved)
            self.console.print(f"  {name} {status}{took:>8}   {escape(said)}")
            return
        lines = report(list(step.tail))
        self.console.print(f"  {name} {status}{took:>8}" + ("   its report:" if lines else ""))
        for line in lines:
            self.console.print(f"    {escape(line)}")

    def _start_progress(self, task: str) -> None:
        if not self.console.is_terminal:
            return
        columns = (TextColumn(f"  {escape(task):<16}"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        self.progress = Progress(*columns, console=self.console, transient=True)
        self.progress.add_task("", total=None)
        self.progress.start()

    def _progressed(self, match: re.Match) -> None:
        step, total = int(match["step"].replace(",", "")), match["total"].replace(",", "")
        text = f"step {step}/{total}, loss {match['loss']}, ETA {match['eta']}"
        if self.progress is not None:
            self.progress.update(self.progress.task_ids[0], completed=step, total=int(total) if total.isdigit() else None,
                                 description=text)  # fmt: skip
        elif self.printed_at is None or self.clock() - self.printed_at >= PLAIN_PROGRESS_S:
            self.printed_at = self.clock()
            self.console.print(f"  {escape(self.step.task if self.step else ''):<16} {escape(text)}")

    def _end_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
