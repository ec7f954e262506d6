"""Run a pipeline on this machine with ``kfp.local`` (offline, CPU), in the current Python environment.

``kubetune run-local`` keeps each run in a run folder:

- ``run.lock``: locked (``flock``) by the run-local and its pipeline process while the run is in progress: another
  run-local refuses the folder, and the lock ends with its holders, however they end;
- ``run.json``: the run's record, written first (``state: running``) and updated last (``finished``, or
  ``interrupted``/``failed``): a folder whose record is not ``finished`` holds an unfinished run;
- ``run.log``: this process's output (kfp.local's and every step's), every attempt's appended
  (``kubetune.runs.supervise``); run-local shows it as step lines (``kubetune.runs.view``), or whole with ``--verbose``;
- ``kfp-root/``: kfp.local's outputs (a new folder per attempt);
- ``workspace/<run_id>/``: the training step's checkpoints, where a resumed run's training continues from
  the newest complete checkpoint;
- ``cache/<run_id>/``: kfp.local's cache of this run's validation, data preparation and evaluation, so a
  resumed run reuses the prepared data instead of preparing it again.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kubetune.contract.spec import integral
from kubetune.errors import INPUT, KubetuneError, Problem
from kubetune.runs.processes import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    kill_tree,
    prctl,
    process_table,
    process_tree,
    start_time,
    terminate,
)
from kubetune.runs.run_folder import RECORD, read_record, write_record
from kubetune.runs.supervise import GRACE_S, redacted_output
from kubetune.steps.curve import LossCurve

WORKSPACE_ENV = "KUBETUNE_LOCAL_WORKSPACE"  # read by the training step: where its checkpoints live


def run_local(output_dir: str | Path, run_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """Run ``finetune`` locally; returns where the exported model, kwargs artifact and loss curve are, and the
    promotion gate's verdict (``promoted``; ``not_promoted``: its reasons; ``exported_model`` None when refused).

    ``run_id``: the run folder's run (``run.json``): its training checkpoints and its cache of validation,
    preparation and evaluation are kept under ``output_dir`` by that id, so running it again resumes it."""
    from kubetune.pipelines.finetune import finetune
    from kubetune.runs import kfp_local

    output_dir = Path(output_dir).resolve()
    cache = str(output_dir / "cache" / run_id) if run_id else None
    _stable_cache_keys()
    kfp_local.init(str(output_dir / "kfp-root"), enable_caching=bool(run_id), cache_root=cache)
    if run_id:
        os.environ[WORKSPACE_ENV] = str(output_dir / "workspace" / run_id)
    run = finetune(**with_embedded_kwargs(arguments))
    curve = LossCurve.read(run.outputs["loss_curve"].path)
    decision = run.outputs["decision"]
    promoted = bool(decision.metadata.get("promoted"))
    return {
        "promoted": promoted,
        "not_promoted": [] if promoted else list(decision.metadata.get("reasons") or []),
        "decision": decision.path,
        "exported_model": run.outputs["model"].path if promoted else None,
        "kwargs_artifact": run.outputs["kwargs"].path,
        "loss_curve": run.outputs["loss_curve"].path,
        "report": run.outputs["eval_report"].path,
        "best_checkpoint": curve.best.checkpoint,
        "validation_loss": curve.losses(),
        "overfitting_after": curve.overfitting.checkpoint if curve.overfitting else None,
        "skipped": curve.skipped,
        "benchmark": dict(run.outputs["benchmark_metrics"].metadata),  # per task base, tuned, delta; {} when not run
        "benchmark_report": run.outputs["benchmark_report"].path,
    }


def with_embedded_kwargs(arguments: dict[str, Any]) -> dict[str, Any]:
    """The pipeline arguments with the algorithm's embedded kwargs where none are given (the pipeline's own
    default is ``DEFAULT_ALGORITHM``'s); a run's record keeps only what was given, so a resume picks the same ones again."""
    from kubetune.backends.registry import DEFAULT_ALGORITHM
    from kubetune.pipelines.parameters import EMBEDDED

    algorithm = arguments.get("algorithm", DEFAULT_ALGORITHM)
    return {**({"training_kwargs": EMBEDDED[algorithm]} if algorithm in EMBEDDED else {}), **arguments}


def _stable_cache_keys() -> None:
    """Make kfp.local's cache find a finished step again, so a resumed run reuses its prepared data:

    - its key covers the inputs' metadata, where an artifact's ``1`` read fresh is ``1.0`` read back from the
      cache: integral floats become integers;
    - an entry whose artifact file is missing counts as a miss, and a Metrics artifact never has a file (its
      values are in the entry): a Metrics artifact is taken from the entry as it is."""
    from kfp.dsl import executor
    from kfp.local import cache

    original = cache.LocalCache._serialize_value_for_key
    if getattr(original, "kubetune", False):
        return
    load = cache.LocalCache._deserialize_artifact

    def serialize(value: Any) -> Any:
        return integral(original(value))

    def deserialize(data: dict[str, Any]) -> Any:
        if data.get("schema_title") != "system.Metrics":
            return load(data)
        fields = {"name": data.get("name", ""), "uri": data.get("uri", ""), "metadata": data.get("metadata") or {}}
        return executor.create_artifact_instance({**fields, "type": {"schemaTitle": "system.Metrics"}})

    serialize.kubetune = True  # type: ignore[attr-defined]
    cache.LocalCache._serialize_value_for_key = staticmethod(serialize)
    cache.LocalCache._deserialize_artifact = staticmethod(deserialize)


def _child(folder: Path, parent: int) -> int:
    """The supervised process: run the recorded pipeline, then mark the record finished with the result. It
    holds the run folder's lock (inherited) and keeps every process it starts as its descendant (a subreaper);
    when run-local (``parent``) dies, it stops the run itself as run-local would have and marks it interrupted."""
    record = read_record(folder)
    if record is None:
        raise KubetuneError([Problem(str(folder / RECORD), "is missing")])
    stopping: list[int] = []  # SIGTERM: the running step ends (its logs still shown), no further step starts

    def stop(signum, frame):
        stopping.append(signum)
        if len(stopping) == 1 and os.getppid() != parent:  # run-local is gone: stop the run as it would have
            terminate(os.getpgid(0), skip=os.getpid())
            me = {os.getpid(): start_time(os.getpid())}

            def kill_the_rest() -> None:  # what has not stopped when the grace period ends
                kill_tree({p: t for p, t in process_tree(process_table(), me).items() if p not in me})

            late = threading.Timer(GRACE_S, kill_the_rest)
            late.daemon = True
            late.start()

    signal.signal(signal.SIGTERM, stop)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # run-local died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
    codes = _step_codes(stopping)
    try:
        result = run_local(folder, run_id=record["run_id"], **record["arguments"])
    except RuntimeError as e:  # kfp.local's way of saying a step failed; the step's own report is above
        if "finished with status" not in str(e):
            raise
        if stopping:
            if os.getppid() != parent:
                write_record(folder, record, state="interrupted", pid=None)
            return 128 + signal.SIGTERM
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        print(f"\nkubetune run-local: {message} The step's report is printed above.", file=sys.stderr, flush=True)
        return INPUT if INPUT in codes else 1
    write_record(folder, record, state="finished", pid=None, result=result)
    return 0


def _step_codes(stopping: list[int] | tuple[()] = ()) -> list[int]:
    """The exit codes of the steps kfp.local runs from here on (it keeps only SUCCESS or FAILURE); once
    ``stopping`` holds a signal, a step fails without starting."""
    from kfp.local import subprocess_task_handler as handler

    codes: list[int] = []
    run = handler.run_local_subprocess

    def recorded(*args: Any, **kwargs: Any) -> int:
        codes.append(128 + stopping[0] if stopping else run(*args, **kwargs))
        return codes[-1]

    handler.run_local_subprocess = recorded
    return codes


if __name__ == "__main__":
    redacted_output()
    raise SystemExit(_child(Path(sys.argv[1]), int(sys.argv[2])))
