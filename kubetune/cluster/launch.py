"""The ``trainjob`` launcher: the training step's work done by a Kubeflow Trainer TrainJob across nodes.

The launcher pod needs no GPU and no credential of its own: it checks the artifact (which the validation step
wrote, every kwarg checked) against the TrainJob's placement before any GPU is requested, stages the inputs on
the shared workspace PVC, submits the TrainJob with the pod's ServiceAccount, follows it, then publishes node 0's
result from the workspace into the step's output, exactly as the in-pod step with a workspace does.
A restarted launcher re-attaches to the run's TrainJob.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubetune.backends.base import TrainResult
from kubetune.backends.rules import PLACED_BY_TRAINJOB
from kubetune.backends.training_record import write_training_record
from kubetune.cluster.node import RESULT_FILE
from kubetune.cluster.trainjob import SecretEnv, TrainJobSettings, build_trainjob, node_command, trainjob_name
from kubetune.cluster.watch import DEFAULT_LIMITS, KubeApi, Limits, phase, wait
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.runtime import resolve_model
from kubetune.secrets import SECRET_KEYS, STEP_SECRETS
from kubetune.steps.train import publish, read_result


def placement_problems(params: dict, nnodes: int | None = None, gpus: int | None = None) -> list[Problem]:
    """Where the spec contradicts the TrainJob, which places every node itself."""
    problems = [
        Problem(name, f"is set by the TrainJob (nnodes={nnodes or 'the pipeline parameter'}, one node_rank per node); remove it")
        for name in PLACED_BY_TRAINJOB
        if params.get(name) is not None
    ]
    per_node = params.get("nproc_per_node")
    if isinstance(per_node, int) and gpus is not None and per_node != gpus:
        problems.append(Problem("nproc_per_node", f"is {per_node} in the spec but {gpus} in the TrainJob (gpus); give it once"))
    return problems


def check_placement(spec: TrainingSpec, settings: TrainJobSettings) -> None:
    if problems := placement_problems(spec.params, settings.nnodes, settings.gpus):
        raise KubetuneError(problems, "the spec contradicts the TrainJob")


def secret_env(spec: TrainingSpec, secret_names: dict[str, str]) -> list[SecretEnv]:
    """Environment variables of the nodes, read from Kubernetes secrets: the pipeline's (optional) ones and
    the spec's own ``secrets`` references, which win for the variable they name."""
    env = {
        variable: SecretEnv(env=variable, secret=secret_names[kind], key=key)
        for kind in STEP_SECRETS["train"]
        if secret_names.get(kind)
        for key, variable in SECRET_KEYS[kind].items()
    }
    for variable, ref in spec.secrets.items():
        if ref.secret:
            env[variable] = SecretEnv(env=variable, secret=ref.secret, key=ref.key, optional=False)
    return [env[name] for name in sorted(env)]


def stage_inputs(workspace: Path, spec: TrainingSpec, train_data: Path, validation_data: Path | None) -> None:
    """Put what the nodes read on the shared workspace (the step's own inputs live in this pod only): the
    artifact as ``kwargs.json``, the prepared splits."""
    inputs = workspace / "inputs"
    staging = workspace / ".inputs.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "kwargs.json").write_text(spec.to_json(), encoding="utf-8")
    shutil.copytree(train_data, staging / "train")
    if validation_data and Path(validation_data).is_dir():
        shutil.copytree(validation_data, staging / "validation")
    shutil.rmtree(inputs, ignore_errors=True)
    staging.rename(inputs)


def launch(
    spec: TrainingSpec,
    model_uri: str,
    train_data: str | Path,
    validation_data: str | Path | None,
    output_dir: str | Path,
    settings: TrainJobSettings,
    run_id: str,
    secret_names: dict[str, str] | None = None,
    api: KubeApi | None = None,
    limits: Limits = DEFAULT_LIMITS,
    logs: bool = True,
) -> TrainResult:
    """Train ``spec`` (the kwargs artifact, read once by the caller) on a TrainJob and return the result as the
    in-pod step does: checkpoints in ``output_dir``, with the record of the backend that trained them."""
    check_placement(spec, settings)
    api = api or KubeApi.connect()
    workspace = Path(settings.workspace_dir) / (run_id or "run")
    name = trainjob_name(run_id or str(workspace), spec.algorithm)
    existing = api.get(name)
    if existing is not None and (phase(existing).state == "failed" or existing["metadata"].get("deletionTimestamp")):
        print(f"[kubetune] TrainJob {name} is {phase(existing)}; starting it again", flush=True)
        api.delete(name, wait_s=600)  # a retry of the step: the new job resumes from the workspace's checkpoints
        existing = None
    if existing is None:
        (workspace / RESULT_FILE).unlink(missing_ok=True)
        stage_inputs(workspace, spec, Path(train_data), Path(validation_data) if validation_data else None)
        model = resolve_model(model_uri, workspace / "base")  # the embedded tiny model is written once, here
        settings = settings.model_copy(update={"secret_env": secret_env(spec, secret_names or {})})
        command, args = node_command(str(workspace), model)
        owner = {"name": os.environ["KFP_POD_NAME"], "uid": os.environ["KFP_POD_UID"]} if os.environ.get("KFP_POD_UID") else None
        job = build_trainjob(
            name,
            api.namespace,
            settings,
            command,
            args,
            labels={"kubetune.io/algorithm": spec.algorithm.replace("_", "-")},
            owner=owner,
        )
        api.create(job)
        print(
            f"[kubetune] submitted TrainJob {api.namespace}/{name}: {settings.nnodes} node(s) x {settings.gpus} process(es)",
            flush=True,
        )
    else:
        print(f"[kubetune] TrainJob {api.namespace}/{name} already exists ({phase(existing)}): following it", flush=True)
    wait(api, name, limits, logs=logs)
    result_file = workspace / RESULT_FILE
    if not result_file.is_file():
        raise KubetuneError(
            [Problem(str(result_file), "is missing: node 0 ended without writing its result")], "TrainJob output missing"
        )
    result = publish(read_result(result_file), workspace, Path(output_dir))
    write_training_record(output_dir, spec)
    return result
