"""Kubernetes settings of the pipelines' tasks (kfp-kubernetes): secrets, shared memory, GPU placement.

Secrets reach the pods only as references to Kubernetes secrets, mounted as environment variables, never
as values in the pipeline or the kwargs artifact. Every reference is optional: a cluster without, say, a
W&B secret still runs, and the step that needs one reports it clearly.
"""

from __future__ import annotations

from kfp import kubernetes

from kubetune.secrets import SECRET_KEYS, STEP_SECRETS


def use_secrets(task, step: str, parameters: dict) -> None:
    """Mount the step's secrets as env vars: each kind's secret is named by the pipeline parameter ``<kind>_secret``."""
    for kind in STEP_SECRETS[step]:
        secret = parameters[f"{kind}_secret"]
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=SECRET_KEYS[kind], optional=True)


REGISTRY_AUTH_DIR = "/var/run/secrets/kubetune/registry-auth"


def use_registry_auth(task, parameters: dict) -> None:
    """The container registry credentials of an oci:// export: the dockerconfigjson secret named by
    ``registry_auth_secret``, mounted as a file (optional: a public or anonymous registry needs none) that skopeo
    reads as ``REGISTRY_AUTH_FILE``; never a value in the pipeline."""
    secret = parameters["registry_auth_secret"]
    kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=REGISTRY_AUTH_DIR, optional=True)
    task.set_env_variable("REGISTRY_AUTH_FILE", f"{REGISTRY_AUTH_DIR}/.dockerconfigjson")


def on_gpus(task, gpus, accelerator, tolerations, node_selector) -> None:
    """The training task alone asks for GPUs, lands on GPU nodes, and gets a RAM-backed /dev/shm for NCCL
    and data-loader workers (the container runtime's 64 MiB default breaks multi-GPU training)."""
    task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
