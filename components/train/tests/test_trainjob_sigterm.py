"""A lora_sft TrainJob node that Kubernetes stops (pre-emption, cancel): the kubelet's SIGTERM to the node's process,
PID 1 of its container, reaches the torchrun workers, which make their SIGTERM save and end with the node.

The stand-in cluster runs the submitted container command as the Trainer would (see test_trainjob.py), on one node.
"""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from components.train.tests.test_trainjob import settings, start_nodes
from kubetune.cluster.launch import launch
from kubetune.cluster.watch import KubeApi, Limits
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.steps.validate import validate_to_artifact

MAX_STEPS, SAVE_STEPS = 40, 6


def processes_naming(path: Path) -> list[int]:
    """The live processes whose command line names ``path`` (the node's workers name their output directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if str(path) in cmdline and " Z " not in state + " ":
                found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_a_sigterm_to_a_lora_trainjob_node_stops_its_workers_with_their_save(tmp_path, kube_api, tiny_model):
    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", num_proc=1)
    kwargs = tmp_path / "kwargs.json"
    validate_to_artifact("lora_sft", {"num_epochs": 1, "effective_batch_size": 8, "learning_rate": 0.001,
                                      "max_steps": MAX_STEPS, "max_seq_len": 256, "save_steps": SAVE_STEPS,
                                      "logging_steps": 3, "seed": 0}, kwargs)  # fmt: skip
    workspace = tmp_path / "workspace" / "run-1"  # the run's directory on the shared workspace
    nodes: list[subprocess.Popen] = []
    outlived: list[int] = []

    def cluster(job: dict, gets: int) -> str:
        trainer = job["spec"]["trainer"]
        if not nodes:
            nodes.extend(start_nodes(trainer))  # one node (nnodes=1)
            return "queued"
        node = nodes[0]
        if node.poll() is None:
            if list(workspace.glob(f"checkpoints/checkpoint-{SAVE_STEPS}/adapter_model.safetensors")):
                node.send_signal(signal.SIGTERM)  # the kubelet signals PID 1 only; the node must pass it on
                node.wait(timeout=120)
                outlived.extend(processes_naming(workspace))
            return "running"
        return "succeeded" if node.returncode == 0 else "failed"

    api = kube_api(cluster)
    try:
        launch(
            TrainingSpec.read(kwargs), str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val",
            tmp_path / "out", settings(tmp_path, nnodes=1, gpus=1, kueue_queue="", cpu_per_node="", memory_per_node=""),
            "run-1", api=KubeApi.connect(api.kubeconfig), limits=Limits(poll_s=0.2, running_timeout_s=300), logs=False,
        )  # fmt: skip
    except KubetuneError:
        pass  # the node ends with torchrun's exit code 1 after a SIGTERM, so the TrainJob fails; the save is what counts
    finally:
        for pid in processes_naming(workspace):  # orphans of a node that did not forward the signal
            os.kill(pid, signal.SIGKILL)
    assert not outlived, f"worker processes {outlived} outlived their node"
    checkpoints = workspace / "checkpoints"
    stopped_at = json.loads((checkpoints / "trainer_state.json").read_text())["global_step"]
    assert SAVE_STEPS < stopped_at < MAX_STEPS  # stopped early, after the first save (the signal came once it existed)
    assert (checkpoints / f"checkpoint-{stopped_at}" / "adapter_model.safetensors").is_file()  # the SIGTERM save
