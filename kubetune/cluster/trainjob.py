"""The training step as a Kubeflow Trainer TrainJob: the resource every node of a multi-node run is built from.

Every node runs our own entry point (``kubetune-node train``) on the same kwargs artifact, so validation and
the backend mapping are the code that runs in a pod. The object is checked against the ``kubeflow-trainer-api``
models before it is sent: a field those models do not know is an error here, not a silent drop by the server.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune.contract.spec import pydantic_problems
from kubetune.errors import KubetuneError, Problem

RETENTION_ENV = "KUBETUNE_CHECKPOINT_RETENTION"  # the pipeline's checkpoint_retention, for node 0's mirror

API_GROUP = "trainer.kubeflow.org"
API_VERSION = "v1alpha1"
PLURAL = "trainjobs"
NODE = "node"  # the replicated job and container of the torch runtimes that run the trainer
PATCH_MANAGER = "kubetune.io/launcher"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


class SecretEnv(BaseModel):
    """One environment variable read from a Kubernetes secret (a reference: the value never leaves the cluster)."""

    env: str
    secret: str
    key: str
    optional: bool = True


class TrainJobSettings(BaseModel):
    """Where and how big the TrainJob is: the pipeline's parameters of the same names, checked before anything is
    submitted (``secret_env`` alone is the launcher's: the pipeline's secret names and the spec's references)."""

    model_config = ConfigDict(extra="forbid")

    nnodes: Annotated[int, Field(ge=1)] = Field(2, description="Training nodes (pods), each with its own GPUs.")
    gpus: Annotated[int, Field(ge=1)] = Field(1, description="GPUs per node, one training process each.")
    accelerator_type: str = Field("nvidia.com/gpu", description="Extended resource name of the GPUs.")
    cpu_per_node: str = Field("", description='CPU request and limit per node, e.g. "32" (empty: none).')
    memory_per_node: str = Field("", description='Memory request and limit per node, e.g. "512Gi" (empty: none).')
    trainjob_runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime to run on.")
    trainjob_image: str = Field(..., min_length=1, description="Image with kubetune and the training backends installed.")
    workspace_pvc: str = Field(..., min_length=1, description="ReadWriteMany PVC shared by the launcher and every node.")
    workspace_dir: str = Field("/workspace", description="Where the PVC is mounted, in the launcher and the nodes.")
    kueue_queue: str = Field("", description="Kueue LocalQueue; the job waits there, suspended, until admitted.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    secret_env: list[SecretEnv] = Field(default_factory=list)
    checkpoint_retention: int = Field(3, ge=0, description="checkpoint_storage: mirrored saves kept per folder (0: all).")
    termination_grace_s: int = Field(300, ge=0, description="The nodes' termination grace period (the SIGTERM save).")


def settings_from(**values: Any) -> TrainJobSettings:
    """The settings, or every problem with them by parameter name (e.g. ``gpus`` from ``gpus=0``)."""
    try:
        return TrainJobSettings(**values)
    except ValidationError as error:
        raise KubetuneError(pydantic_problems(error, empty="settings"), "invalid TrainJob settings") from None


def trainjob_name(run_id: str, algorithm: str) -> str:
    """A DNS-1035 name that is the same for every attempt of one pipeline run, so a restarted launcher
    finds the TrainJob it started instead of starting a second one."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"kubetune-{algorithm.replace('_', '-')}-{digest}"


def node_command(workspace: str, model_path: str) -> tuple[list[str], list[str]]:
    """The entry point every node runs, on the inputs the launcher staged in the workspace."""
    ws = PurePosixPath(workspace)
    args = [
        "--kwargs", str(ws / "inputs" / "kwargs.json"),
        "--model", model_path,
        "--train-data", str(ws / "inputs" / "train"),
        "--validation-data", str(ws / "inputs" / "validation"),
        "--output", str(ws),
    ]  # fmt: skip
    return ["kubetune-node", "train"], args


def build_trainjob(
    name: str,
    namespace: str,
    settings: TrainJobSettings,
    command: list[str],
    args: list[str],
    labels: dict[str, str] | None = None,
    owner: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob resource, as the Kubernetes API receives it (validated against the trainer API models).

    ``owner``: the launcher pod (``name``, ``uid``); the TrainJob is then garbage-collected with the run's pods.
    """
    s = settings
    limits = {s.accelerator_type: str(s.gpus)}
    requests: dict[str, str] = {}
    for resource, value in (("cpu", s.cpu_per_node), ("memory", s.memory_per_node)):
        if value:
            limits[resource] = requests[resource] = value
    resources: dict[str, Any] = {"limits": limits, **({"requests": requests} if requests else {})}
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    env.append({"name": RETENTION_ENV, "value": str(s.checkpoint_retention)})  # node 0's checkpoint_storage mirror
    env += [
        {"name": e.env, "valueFrom": {"secretKeyRef": {"name": e.secret, "key": e.key, "optional": e.optional}}}
        for e in s.secret_env
    ]
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": s.termination_grace_s,  # the SIGTERM save and its mirror
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": s.workspace_pvc}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},  # NCCL and data loaders need more than the runtime's 64 MiB
        ],
        "containers": [
            {
                "name": NODE,
                "volumeMounts": [
                    {"name": "workspace", "mountPath": s.workspace_dir},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
    }
    if s.tolerations:
        pod_spec["tolerations"] = s.tolerations
    if s.node_selector:
        pod_spec["nodeSelector"] = s.node_selector
    patch = {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod_spec}}}}]}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: "kubetune", **(labels or {})},
    }
    if s.kueue_queue:
        metadata["labels"][KUEUE_QUEUE_LABEL] = s.kueue_queue
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["name"], "uid": owner["uid"]}]
    job = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": API_GROUP, "kind": "ClusterTrainingRuntime", "name": s.trainjob_runtime},
            "trainer": {
                "image": s.trainjob_image,
                "command": command,
                "args": args,
                "env": env,
                "numNodes": s.nnodes,
                "numProcPerNode": s.gpus,
                "resourcesPerNode": resources,
            },
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": patch}}}],
        },
    }
    if s.kueue_queue:
        job["spec"]["suspend"] = True  # Kueue admits it by resuming it
    return validated(job)


def validated(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` unchanged if the ``kubeflow-trainer-api`` models take every field of it, else every problem."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(job).to_dict()
    except ValidationError as error:
        raise KubetuneError(pydantic_problems(error, empty="TrainJob"), "invalid TrainJob") from None
    dropped = list(_unknown(job, parsed, "TrainJob"))
    if dropped:
        raise KubetuneError([Problem(where, "is not a TrainJob field") for where in dropped], "invalid TrainJob")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"]) or len(job["metadata"]["name"]) > 63:
        raise KubetuneError([Problem("metadata.name", "must be a DNS-1035 label of at most 63 characters")])
    return job


def _unknown(sent: Any, kept: Any, path: str):
    """Paths present in ``sent`` that the models did not keep."""
    if isinstance(sent, dict):
        for key, value in sent.items():
            if not isinstance(kept, dict) or key not in kept:
                yield f"{path}.{key}"
            else:
                yield from _unknown(value, kept[key], f"{path}.{key}")
    elif isinstance(sent, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(sent, kept, strict=False)):
            yield from _unknown(a, b, f"{path}[{i}]")
