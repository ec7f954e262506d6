"""The pipeline's benchmark step: lm-eval on the base model and the chosen checkpoint, in the same step.

``benchmark_tasks`` empty: nothing runs, the results say ``ran: false`` and the report says why. Otherwise the
names are checked first (``held_out`` and lm-eval's index; a negative limit, a missing or damaged checkpoint are
refused too), then the base model (``model_uri``) and the fine-tuned checkpoint (a full model directory, or a LoRA
adapter loaded on the base) are scored on the same tasks with the same settings (``kubetune.benchmark.harness``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from kubetune.benchmark.harness import ModelUnderTest, chat_template_problems, check, evaluate, settings
from kubetune.benchmark.results import BenchmarkResults, TaskScore
from kubetune.benchmark.tasks import (
    EXACT_MATCH_TASK,
    HELD_OUT,
    LOGLIKELIHOOD_TASK,
    parse_tasks,
    write_held_out_tasks,
)
from kubetune.checkpoints import is_adapter, problem
from kubetune.console import say
from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic
from kubetune.runtime import resolve_model
from kubetune.steps.export import chosen_checkpoint


def benchmark_step(
    trained_model: str | Path,
    checkpoint: str,
    validation_data: str | Path,
    results_out: str | Path,
    report_out: str | Path,
    model_uri: str,
    benchmark_tasks: str = "",
    benchmark_limit: int = 0,
    export_checkpoint: str = "best",
) -> BenchmarkResults:
    """Score the base model and the checkpoint the export takes (``checkpoint``, the evaluation's best one, or the
    final one: ``export_checkpoint``) on ``benchmark_tasks``; write the results JSON and the report."""
    names = parse_tasks(benchmark_tasks)
    tuned = chosen_checkpoint(Path(trained_model), checkpoint, export_checkpoint)
    checkpoint = tuned.relative_to(trained_model).as_posix() if tuned != Path(trained_model) else "."
    check(names, benchmark_limit, _checkpoint_problems(Path(trained_model), checkpoint) if names else [])
    if not names:
        results = BenchmarkResults(ran=False)
    else:
        with tempfile.TemporaryDirectory(prefix="kubetune-benchmark-") as workdir:
            results = _run(names, tuned, validation_data, Path(workdir), model_uri, benchmark_limit)
            results = results.model_copy(update={"run": results.run | {"base": model_uri, "checkpoint": checkpoint}})
    results.write(results_out)
    write_text_atomic(report_out, results.markdown())
    return results


def _checkpoint_problems(root: Path, checkpoint: str) -> list[Problem]:
    path = root / checkpoint
    if not checkpoint or not path.is_dir():
        return [Problem("checkpoint", f"{checkpoint!r} is not a folder of {root}")]
    if reason := problem(path):
        return [Problem("checkpoint", f"{checkpoint}: {reason}")]
    return []


def _run(
    names: list[str], tuned: Path, validation_data: str | Path, workdir: Path, model_uri: str, limit: int
) -> BenchmarkResults:
    skipped: list[str] = []
    include = write_held_out_tasks(validation_data, workdir / "tasks", skipped) if HELD_OUT in names else None
    if skipped:
        say(f"held_out: {len(skipped)} validation chats left out ({'; '.join(skipped[:3])})")
    how = settings(names, include, limit)
    tasks = [t for name in names for t in ([LOGLIKELIHOOD_TASK, EXACT_MATCH_TASK] if name == HELD_OUT else [name])]
    base = resolve_model(model_uri, workdir / "base")
    fine_tuned = ModelUnderTest("tuned", base, str(tuned)) if is_adapter(tuned) else ModelUnderTest("tuned", str(tuned))
    tokenizers = {"model_uri": base} | ({} if fine_tuned.adapter else {"checkpoint": fine_tuned.pretrained})
    if problems := chat_template_problems(tokenizers):
        raise KubetuneError(problems, "cannot benchmark")
    started = time.monotonic()
    before = evaluate(ModelUnderTest("base", base), tasks, how)
    after = evaluate(fine_tuned, tasks, how)
    scores = [
        TaskScore(
            name=t,
            metric=b.metric,
            higher_is_better=b.higher_is_better,
            base=b.value,
            tuned=after[t].value,
            documents=b.documents,
        )
        for t, b in before.items()
    ]
    run = how.described() | ({"held_out_left_out": len(skipped)} if skipped else {})
    return BenchmarkResults(ran=True, tasks=scores, run=run | {"seconds": round(time.monotonic() - started, 1)})
