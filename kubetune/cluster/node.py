"""What every node of a TrainJob runs (``kubetune-node train``): the in-pod training step, placed in the job.

Kubeflow Trainer's torch runtimes tell each node where it stands through torchrun's ``PET_*`` variables.
A backend that spawns torchrun itself (``sft``, ``osft``) gets them for its own launch; one that trains in-process
(``lora_sft``: TRL) is started under torchrun here, one process per GPU. Node 0 writes ``result.json`` for the launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from kubetune.backends.registry import get_backend
from kubetune.backends.rules import pet_variable, torchrun_kwargs
from kubetune.checkpoint_mirror import DEFAULT_RETENTION, mirrored, run_identity, storage_uri
from kubetune.cluster.trainjob import RETENTION_ENV
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem

RESULT_FILE = "result.json"
SET_ON_EVERY_NODE = ("nnodes", "node_rank", "master_addr", "master_port")  # by the Trainer's torch plugin


def torchrun_from_env(env: dict[str, str]) -> dict[str, str | int]:
    """This node's torchrun parameters, from the ``PET_*`` variables (read as the backends read them)."""
    missing = [pet_variable(name) for name in SET_ON_EVERY_NODE if not env.get(pet_variable(name))]
    if missing:
        raise KubetuneError(
            [
                Problem(var, "is not set", "kubetune-node runs on a Kubeflow Trainer torch runtime, which sets it")
                for var in missing
            ],
            "not a TrainJob node",
        )
    return torchrun_kwargs({}, [*SET_ON_EVERY_NODE, "nproc_per_node"], env)  # "auto": one process per visible GPU


def worker_command(torchrun: dict[str, str | int], argv: list[str]) -> list[str]:
    """torchrun around this command's worker mode, for a backend that trains in-process (``lora_sft``'s TRL):
    it runs in every process, DDP across the nodes."""
    per_node = torchrun["nproc_per_node"]
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={torchrun['nnodes']}",
        f"--nproc-per-node={per_node}",
        f"--node-rank={torchrun['node_rank']}",
        f"--master-addr={torchrun['master_addr']}",
        f"--master-port={torchrun['master_port']}",
        "-m", "kubetune.cluster.node_cli", "worker", *argv,
    ]  # fmt: skip


def run_workers(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun and its workers, forwarding a SIGTERM or SIGINT to them and waiting for them to end (their SIGTERM
    save), so that the mirror's last pass follows; returns their exit code. Without this, the node's process, PID 1
    of its container, would ignore the kubelet's SIGTERM and the workers would be SIGKILLed at the grace's end."""
    process = subprocess.Popen(command, env=env, start_new_session=True)  # its own group: signalled as one

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_node(
    kwargs_path: Path,
    model: str,
    train_data: Path,
    validation_data: Path | None,
    output_dir: Path,
    env: dict[str, str] | None = None,
) -> int:
    """Run this node's share of the training; returns the exit code of the training processes. The artifact is
    read here, once per process that trains."""
    from kubetune.steps.train import checkpoints_dir, train, write_result

    env = dict(os.environ if env is None else env)
    torchrun = torchrun_from_env(env)
    retention = int(env.get(RETENTION_ENV, DEFAULT_RETENTION))
    spec = TrainingSpec.read(kwargs_path)
    if not get_backend(spec.algorithm).spawns_torchrun:
        argv = ["--kwargs", str(kwargs_path), "--model", model, "--train-data", str(train_data), "--output", str(output_dir)]
        if validation_data:
            argv += ["--validation-data", str(validation_data)]
        # the workers never mirror: node 0's process does, around all of them (restore before any starts)
        uri = storage_uri(spec.params) if torchrun["node_rank"] == 0 else None
        run = run_identity(spec, model, train_data) if uri else None
        with mirrored(uri, checkpoints_dir(output_dir), spec.algorithm, retention, run=run):
            code = run_workers(worker_command(torchrun, argv), env)
        return code
    result = train(spec, model, train_data, output_dir, validation_data, torchrun=torchrun, retention=retention)
    if torchrun["node_rank"] == 0:
        write_result(result, output_dir / RESULT_FILE)
    return 0


def train_worker(kwargs_path: Path, model: str, train_data: Path, validation_data: Path | None, output_dir: Path) -> None:
    """One torchrun process of an in-process backend's node (``lora_sft``): TRL reads RANK/WORLD_SIZE itself;
    global rank 0 reports."""
    from kubetune.steps.train import train, write_result

    result = train(TrainingSpec.read(kwargs_path), model, train_data, output_dir, validation_data, mirror=False)
    if int(os.environ.get("RANK", "0")) == 0:
        write_result(result, output_dir / RESULT_FILE)
