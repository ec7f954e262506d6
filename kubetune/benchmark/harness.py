"""Runs lm-eval (``simple_evaluate``, the ``hf`` model type) on one model and reads each task's primary score.

The chat template is applied (``apply_chat_template=True``), zero-shot, greedy; cuda when present, else cpu
(float32). A LoRA adapter is loaded with lm-eval's own ``peft=`` on its base. Only the held-out tasks run
offline for datasets (HF_DATASETS_OFFLINE: their data is a local JSONL); the hub stays reachable for a base model
given as a hub id. lm-eval's logging and progress bars are held back (shown when it fails).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubetune.backends.cpu_mode import environment
from kubetune.benchmark.tasks import HELD_OUT, limit_problems, name_problems
from kubetune.console import say
from kubetune.errors import KubetuneError, Problem

TAIL = 4000  # characters of held-back output shown when lm-eval fails
QUIET = ("lm_eval", "lm-eval", "transformers", "datasets", "evaluate", "accelerate", "peft", "filelock", "httpx")


@dataclass(frozen=True)
class Score:
    """A task's primary metric (the first of its metric list) on one model."""

    metric: str
    higher_is_better: bool
    value: float
    documents: int


@dataclass(frozen=True)
class ModelUnderTest:
    label: str  # base, tuned
    pretrained: str  # a model directory or hub id
    adapter: str | None = None  # a LoRA adapter directory, loaded on ``pretrained``

    def model_args(self, device: str) -> dict[str, str]:
        args = {"pretrained": self.pretrained, "dtype": "bfloat16" if device == "cuda" else "float32"}
        return args | ({"peft": self.adapter} if self.adapter else {})


@dataclass(frozen=True)
class Settings:
    """How every model is run: the task names as lm-eval knows them, the include path, limit, device, batch size."""

    tasks: list[str]
    include_path: Path | None
    limit: int | None
    device: str
    batch_size: int
    offline: bool

    def described(self) -> dict[str, object]:
        from importlib.metadata import version

        return {
            "lm_eval": version("lm-eval"),
            "model": "hf",
            "apply_chat_template": True,
            "num_fewshot": 0,
            "limit": self.limit or "all",
            "device": self.device,
            "batch_size": self.batch_size,
        }


def check(names: list[str], limit: int, more: Sequence[Problem] = ()) -> None:
    """Refuse a negative limit and unknown task names (lm-eval's index is read only when a name other than held_out
    is given: about 15 s), with ``more`` problems found by the caller, all in one report."""
    problems = limit_problems(limit)
    if named := [n for n in names if n != HELD_OUT]:
        problems += name_problems(named, known_tasks())
    if problems := [*problems, *more]:
        raise KubetuneError(problems, "invalid benchmark")


@functools.cache
def known_tasks() -> list[str]:
    """lm-eval's task, group and tag names (its whole index: read once per process)."""
    from lm_eval.tasks import TaskManager

    with quiet():
        return TaskManager().all_tasks


def settings(names: list[str], include_path: Path | None, limit: int) -> Settings:
    """How to run the (checked) tasks: cuda when present, else cpu."""
    import torch

    named = [n for n in names if n != HELD_OUT]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Settings(named, include_path, limit or None, device, 16 if device == "cuda" else 4, offline=not named)


def chat_template_problems(tokenizers: dict[str, str]) -> list[Problem]:
    """The benchmark applies the chat template: a model whose tokenizer (``where`` -> its path) has none is refused
    before lm-eval runs."""
    from transformers import AutoTokenizer

    hint = "benchmark a chat model, or set chat_template in its tokenizer_config.json"
    return [
        Problem(where, "its tokenizer has no chat template, which the benchmark applies", hint)
        for where, path in tokenizers.items()
        if AutoTokenizer.from_pretrained(path).chat_template is None
    ]


def evaluate(model: ModelUnderTest, tasks: list[str], how: Settings) -> dict[str, Score]:
    """Each task's primary score for ``model`` (groups by their aggregate), with one line of ours."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    started = time.monotonic()
    with quiet(offline=how.offline):
        manager = TaskManager(include_path=str(how.include_path) if how.include_path else None, include_defaults=bool(how.tasks))
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=model.model_args(how.device),
            tasks=tasks,
            task_manager=manager,
            limit=how.limit,
            apply_chat_template=True,
            batch_size=how.batch_size,
            device=how.device,
            log_samples=False,
            bootstrap_iters=0,
        )
    scores = {row: primary(row, out) for row in scored_rows(out)}
    summary = ", ".join(f"{name} {s.metric} {s.value:.4g}" for name, s in scores.items())
    seconds = time.monotonic() - started
    say(f"[kubetune] benchmark {model.label} ({model.adapter or model.pretrained}): {summary} in {seconds:.1f} s")
    return scores


def scored_rows(out: dict) -> list[str]:
    """The rows of lm-eval's results that score what was asked: each task; a group by its aggregate, or by its
    subtasks' rows when it has none; the tasks of a tag (a tag has no row of its own)."""
    results, children = out["results"], out.get("group_subtasks", {})
    nested = {child for group in children.values() for child in group}

    def rows(name: str) -> list[str]:
        if _metric_keys(results.get(name, {})):
            return [name]
        return [row for child in children.get(name, []) for row in rows(child)]

    return [row for name in results if name not in nested for row in rows(name)]


def _metric_keys(row: dict) -> list[str]:
    """``<metric>,<filter>`` keys of a result row that hold a number."""
    return [k for k in row if "," in k and "_stderr" not in k and isinstance(row[k], int | float)]


def primary(name: str, out: dict) -> Score:
    """The first metric of row ``name`` in lm-eval's output (its metric list's order), with its direction."""
    row = out["results"][name]
    listed = [m["metric"] for m in out.get("configs", {}).get(name, {}).get("metric_list", [])]
    keys = _metric_keys(row)
    key = next((k for m in listed for k in keys if k.split(",")[0] == m), keys[0])
    metric = key.split(",")[0]
    higher = out.get("higher_is_better", {}).get(name, {}).get(metric, True)
    return Score(metric, bool(higher), float(row[key]), int(row.get("sample_len", 0)))


@contextlib.contextmanager
def quiet(offline: bool = False) -> Iterator[None]:
    """lm-eval's and transformers' chatter (logs at INFO, progress bars: stderr) held back, and shown only when the
    block fails; datasets offline when asked."""
    saved_levels = {n: logging.getLogger(n).level for n in QUIET}
    for n in QUIET:
        logging.getLogger(n).setLevel(logging.WARNING)
    held = io.StringIO()
    try:
        with environment({"HF_DATASETS_OFFLINE": "1"} if offline else {}), contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue()[-TAIL:])
        raise
    finally:
        for n, level in saved_levels.items():
            logging.getLogger(n).setLevel(level)
