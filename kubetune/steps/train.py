"""Training step: bind the pipeline's paths into the kwargs artifact and run the chosen backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kubetune import validation
from kubetune.backends.base import Backend, TrainingRun, TrainResult
from kubetune.backends.registry import get_backend
from kubetune.backends.resume import NOT_RESUMABLE_DIR
from kubetune.backends.training_record import RECORD_FILE, write_training_record
from kubetune.checkpoint_mirror import DEFAULT_RETENTION, mirrored, run_identity, storage_uri
from kubetune.checkpoints import INCOMPLETE_DIR, TRAINING_STATE
from kubetune.contract import TrainingSpec
from kubetune.data import tokenized_file
from kubetune.errors import KubetuneError, Problem, reported
from kubetune.files import write_text_atomic
from kubetune.runtime import resolve_model
from kubetune.steps.progress import watching


def bind(
    spec: TrainingSpec,
    model_path: str,
    train_data: str | Path,
    output_dir: str | Path,
    validation_data: str | Path | None = None,
    torchrun: dict | None = None,
) -> TrainingSpec:
    """The spec with the pipeline's paths: prepared data for every backend, and what the backend binds itself
    (``Backend.bind_data``: e.g. our validation split where it validates during training and the user asked it
    to). ``torchrun``: this node's place in a multi-node job (``nnodes``, ``node_rank``, ``master_addr``, ...),
    set by the launcher, not the user."""
    split = Path(validation_data) if validation_data else None
    bound: dict = {
        **(torchrun or {}),
        "model_path": model_path,
        "data_path": str(tokenized_file(train_data)),
        "ckpt_output_dir": str(checkpoints_dir(output_dir)),
        **get_backend(spec.algorithm).bind_data(spec, Path(train_data), Path(output_dir), split),
    }
    return validation.bind(spec, **bound)


def train(
    spec: TrainingSpec,
    model_uri: str,
    train_data: str | Path,
    output_dir: str | Path,
    validation_data: str | Path | None = None,
    workspace: str | Path | None = None,
    torchrun: dict | None = None,
    retention: int = DEFAULT_RETENTION,
    mirror: bool = True,
) -> TrainResult:
    """Run the backend of ``spec`` (the kwargs artifact, read once by the caller: ``TrainingSpec.read``); model,
    data and output paths come from the pipeline. The trained-model folder records which backend trained it
    (``kubetune-training.json``, written whole once training has ended).

    ``workspace``: a directory that outlives the pod (a PVC), where checkpoints are written. A restarted
    step (retry, pre-emption, kill) finds them there and resumes; the result is then copied to ``output_dir``.
    ``retention``, ``mirror``: the spec's ``checkpoint_storage`` mirror (``kubetune.checkpoint_mirror``): saves kept
    there per folder (0: all); False where another process of this node mirrors (a TrainJob's TRL workers).
    """
    (Path(output_dir) / RECORD_FILE).unlink(missing_ok=True)  # an earlier run's record: not this run's until it ends
    mirror = mirror and (torchrun or {}).get("node_rank", 0) in (0, "0")  # node 0 mirrors (it holds the S3 secret)
    if workspace:
        trained = _train(spec, model_uri, train_data, Path(workspace), validation_data, None, retention, mirror)
        result = publish(trained, Path(workspace), Path(output_dir))
    else:
        result = _train(spec, model_uri, train_data, Path(output_dir), validation_data, torchrun, retention, mirror)
    write_training_record(output_dir, spec)
    return result


def _train(
    spec: TrainingSpec,
    model_uri: str,
    train_data: str | Path,
    output_dir: Path,
    validation_data: str | Path | None = None,
    torchrun: dict | None = None,
    retention: int = DEFAULT_RETENTION,
    mirror: bool = True,
) -> TrainResult:
    output_dir.mkdir(parents=True, exist_ok=True)
    backend = get_backend(spec.algorithm)
    backend.require_environment(spec)  # before the model is fetched
    # checkpoint_storage: access probed and the newest mirrored save restored first, mirrored while training, synced after
    uri = storage_uri(spec.params) if mirror else None
    run = run_identity(spec, model_uri, train_data) if uri else None  # a mirror of another run is refused, not resumed
    with mirrored(uri, checkpoints_dir(output_dir), spec.algorithm, retention, run=run):
        spec = bind(spec, resolve_model(model_uri, output_dir / "base"), train_data, output_dir, validation_data, torchrun)
        # the progress line in the step's log (node 0 prints it); the run's throughput into its metrics
        with watching(backend, spec, main=(torchrun or {}).get("node_rank", 0) in (0, "0")) as progress:
            run = TrainingRun(validation_data=Path(validation_data) if validation_data else None, callbacks=progress.callbacks)
            result = backend.train(spec, run)
        result.metrics.update(progress.summary())
    if uri:
        result.metrics["checkpoint_storage"] = uri  # where a fresh pod resumes from (require_model says it)
    return with_train_loss(result, backend)


def checkpoints_dir(output_dir: str | Path) -> Path:
    """Where a backend writes its saves and metrics files (``ckpt_output_dir``) in the step's output."""
    return Path(output_dir) / "checkpoints"


def require_model(result: TrainResult) -> None:
    """Nothing, unless a signal stopped the run before its first model save: then there is no model to evaluate or
    export, and the step ends here with one line saying where the full state is and that a new run resumes from it."""
    saved, workspace = result.metrics.get("full_state_saved"), result.metrics.get("workspace")
    if result.checkpoints or not (saved or result.metrics.get("stopped_by")):
        return
    if not saved:
        message, hint = "was stopped before its first model save and saved no full state", "run the step again"
    elif workspace:
        message = f"was stopped before its first model save; its full state is saved in {Path(workspace, 'checkpoints', saved)}"
        hint = "run the step again with the same workspace to resume from it"
    elif mirror := result.metrics.get("checkpoint_storage"):
        message = f"was stopped before its first model save; its full state is mirrored to {mirror}/{saved}"
        hint = "run the step again with the same checkpoint_storage to resume from it"
    else:
        message = f"was stopped before its first model save; its full state is saved in {Path(result.output_dir, saved)}"
        hint = "run the step again on this output to resume from it; a pipeline step keeps it only with workspace_dir"
    raise KubetuneError([Problem("training", message, hint)], "no trained model")


def with_train_loss(result: TrainResult, backend: Backend) -> TrainResult:
    """The final train loss from the backend's own metrics files (kept as they are), the same for every backend."""
    series = backend.read_metrics(result.output_dir)
    if series is not None and series.train:
        result.metrics.update(final_train_loss=series.train[-1].loss, logged_train_steps=len(series.train))
    return result


def record(result: TrainResult, trained_model, metrics) -> None:
    """The result on the step's KFP artifacts: paths and numbers on the Model, numbers in Metrics. A run stopped
    before its first model save ends the step with one line instead (``require_model``)."""
    with reported():
        require_model(result)
    trained_model.metadata.update(
        {
            "final_model": str(result.final_model.relative_to(trained_model.path)),
            "checkpoints": [str(c.relative_to(trained_model.path)) for c in result.checkpoints],
            **result.metrics,
        }
    )
    for name, value in result.metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(name, value)


def write_result(result: TrainResult, path: Path) -> None:
    """What a TrainJob's node 0 leaves for the launcher: the run's outputs, relative to its output directory."""
    out = result.output_dir
    document = {
        "output_dir": str(out),
        "final_model": str(result.final_model.relative_to(out)),
        "checkpoints": [str(c.relative_to(out)) for c in result.checkpoints],
        "metrics": result.metrics,
    }
    write_text_atomic(path, json.dumps(document, indent=2))


def read_result(path: Path) -> TrainResult:
    document = json.loads(path.read_text(encoding="utf-8"))
    out = Path(document["output_dir"])
    return TrainResult(out, out / document["final_model"], [out / c for c in document["checkpoints"]], document["metrics"])


def publish(result: TrainResult, workspace: Path, output_dir: Path) -> TrainResult:
    """Copy the model directories of a workspace run into the step's output, without optimizer state or the base copy."""
    checkpoints = workspace / "checkpoints"
    shutil.copytree(
        checkpoints,
        output_dir / "checkpoints",
        dirs_exist_ok=True,
        # optimizer state stays behind; trainer_state.json (the log history the evaluation reads) comes along
        ignore=shutil.ignore_patterns(
            *(p for p in TRAINING_STATE if p != "trainer_state.json"), "full_state*", ".*", INCOMPLETE_DIR, NOT_RESUMABLE_DIR
        ),
    )
    moved = output_dir / "checkpoints"
    return TrainResult(
        output_dir,
        moved / result.final_model.relative_to(checkpoints),
        [moved / c.relative_to(checkpoints) for c in result.checkpoints],
        {**result.metrics, "workspace": str(workspace)},
    )
