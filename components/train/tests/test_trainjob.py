"""The ``trainjob`` launcher: the TrainJob built for each algorithm, what every node runs, and the wait logic.

No cluster, Kubeflow Trainer or Kueue runs here. The launcher's real Kubernetes client talks over HTTP to a
recording stand-in of the API (tests/support/standins.py, the ``kube_api`` fixture) whose TrainJob walks through the
states a test scripts; the stand-in plays node 0 by writing what it leaves on the workspace. One test runs
the submitted command for real: two node processes of a LoRA TrainJob on this CPU (gloo instead of NCCL).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from kubetune.backends.base import TrainResult
from kubetune.backends.registry import get_backend
from kubetune.cluster.launch import launch
from kubetune.cluster.node import RESULT_FILE, torchrun_from_env, worker_command
from kubetune.cluster.trainjob import TrainJobSettings, trainjob_name
from kubetune.cluster.watch import KubeApi, Limits, wait
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError
from kubetune.steps.train import bind, write_result
from kubetune.steps.validate import validate_to_artifact
from kubetune.validation import validate_spec

ROOT = Path(__file__).resolve().parents[3]
FAST = Limits(poll_s=0.02)
SPECS = {
    "sft": {"max_tokens_per_gpu": 8192},
    "osft": {"max_tokens_per_gpu": 8192, "unfreeze_rank_ratio": 0.25},
    "lora_sft": {"lora_r": 16, "lora_alpha": 32},
}


def kwargs_file(tmp_path: Path, algorithm: str, **extra) -> Path:
    spec = {"algorithm": algorithm, "effective_batch_size": 64, "max_seq_len": 4096, "learning_rate": 1e-5, **SPECS[algorithm]}
    spec["secrets"] = {"WANDB_API_KEY": {"secret": "team-wandb", "key": "api-key"}}
    path = tmp_path / "kwargs.json"
    document = {**spec, **extra}
    validate_to_artifact(document.pop("algorithm"), document, path)  # what the pipeline's validation step writes
    return path


def prepared(tmp_path: Path) -> tuple[Path, Path]:
    for part in ("train", "validation"):
        (tmp_path / part).mkdir(exist_ok=True)
        (tmp_path / part / "data.jsonl").write_text('{"input_ids": [1, 2], "labels": [-100, 2], "len": 2}\n')
    return tmp_path / "train", tmp_path / "validation"


def settings(tmp_path: Path, **changes) -> TrainJobSettings:
    values = {
        "nnodes": 2,
        "gpus": 4,
        "cpu_per_node": "32",
        "memory_per_node": "256Gi",
        "trainjob_image": "registry.example.com/kubetune-cuda:0.1.0",
        "workspace_pvc": "shared-rwx",
        "workspace_dir": str(tmp_path / "workspace"),
        "kueue_queue": "gpu-queue",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    }
    return TrainJobSettings(**{**values, **changes})


def node_zero(states: list[str]):
    """The stand-in's TrainJob walks through ``states``; when it completes, node 0 has left its result."""

    def state(job: dict, gets: int) -> str:
        now = states[min(gets, len(states) - 1)]
        if now == "succeeded":
            args = job["spec"]["trainer"]["args"]
            out = Path(args[args.index("--output") + 1])
            final = out / "checkpoints" / "final"
            final.mkdir(parents=True, exist_ok=True)
            (final / "config.json").write_text("{}")
            write_result(TrainResult(out / "checkpoints", final, [], {"final_train_loss": 1.25}), out / RESULT_FILE)
        return now

    return state


def expected_trainjob(algorithm: str, workspace: Path) -> dict:
    """The TrainJob for 2 nodes x 4 GPUs, written out field by field."""
    run = workspace / "run-7"
    secret = lambda env, name, key, optional=True: {  # noqa: E731
        "name": env,
        "valueFrom": {"secretKeyRef": {"name": name, "key": key, "optional": optional}},
    }
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": trainjob_name("run-7", algorithm),
            "namespace": "team-a",
            "labels": {
                "app.kubernetes.io/managed-by": "kubetune",
                "kubetune.io/algorithm": algorithm.replace("_", "-"),
                "kueue.x-k8s.io/queue-name": "gpu-queue",
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "finetune-x7-train-42", "uid": "5f0c-launcher-pod"}],
        },
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed"},
            "suspend": True,
            "trainer": {
                "image": "registry.example.com/kubetune-cuda:0.1.0",
                "command": ["kubetune-node", "train"],
                "args": [
                    "--kwargs",
                    f"{run}/inputs/kwargs.json",
                    "--model",
                    "/models/granite-3.3-8b",
                    "--train-data",
                    f"{run}/inputs/train",
                    "--validation-data",
                    f"{run}/inputs/validation",
                    "--output",
                    str(run),
                ],  # fmt: skip
                "env": [
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                    {"name": "KUBETUNE_CHECKPOINT_RETENTION", "value": "3"},  # node 0's checkpoint_storage mirror
                    secret("HF_TOKEN", "kubetune-hf", "HF_TOKEN"),
                    secret("MLFLOW_TRACKING_PASSWORD", "kubetune-tracking", "MLFLOW_TRACKING_PASSWORD"),
                    secret("MLFLOW_TRACKING_TOKEN", "kubetune-tracking", "MLFLOW_TRACKING_TOKEN"),
                    secret("MLFLOW_TRACKING_USERNAME", "kubetune-tracking", "MLFLOW_TRACKING_USERNAME"),
                    secret("WANDB_API_KEY", "team-wandb", "api-key", optional=False),  # the spec's own reference wins
                ],
                "numNodes": 2,
                "numProcPerNode": 4,
                "resourcesPerNode": {
                    "limits": {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"},
                    "requests": {"cpu": "32", "memory": "256Gi"},
                },
            },
            "runtimePatches": [
                {
                    "manager": "kubetune.io/launcher",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {
                                                        "terminationGracePeriodSeconds": 300,
                                                        "volumes": [
                                                            {
                                                                "name": "workspace",
                                                                "persistentVolumeClaim": {"claimName": "shared-rwx"},
                                                            },
                                                            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                                                        ],
                                                        "containers": [
                                                            {
                                                                "name": "node",
                                                                "volumeMounts": [
                                                                    {"name": "workspace", "mountPath": str(workspace)},
                                                                    {"name": "dshm", "mountPath": "/dev/shm"},
                                                                ],
                                                            }
                                                        ],
                                                        "tolerations": [
                                                            {
                                                                "key": "nvidia.com/gpu",
                                                                "operator": "Exists",
                                                                "effect": "NoSchedule",
                                                            }
                                                        ],
                                                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                                                    }
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize("algorithm", ["sft", "osft", "lora_sft"])
def test_the_trainjob_for_two_nodes_of_four_gpus_is_exact_and_every_node_places_itself(
    tmp_path, kube_api, monkeypatch, algorithm
):
    monkeypatch.setenv("KFP_POD_NAME", "finetune-x7-train-42")
    monkeypatch.setenv("KFP_POD_UID", "5f0c-launcher-pod")
    api = kube_api(node_zero(["queued", "running", "succeeded"]))
    train, validation = prepared(tmp_path)
    result = launch(
        TrainingSpec.read(kwargs_file(tmp_path, algorithm)), "/models/granite-3.3-8b", train, validation, tmp_path / "out",
        settings(tmp_path), "run-7", {"hf": "kubetune-hf", "tracking": "kubetune-tracking"},
        KubeApi.connect(api.kubeconfig), FAST, logs=False,
    )  # fmt: skip
    (sent,) = [r["body"] for r in api.requests if r["method"] == "POST"]
    assert sent == expected_trainjob(algorithm, tmp_path / "workspace")
    assert TrainerV1alpha1TrainJob.from_dict(sent).to_dict() == sent  # the trainer API models keep every field
    assert {r["auth"] for r in api.requests} == {"Bearer launcher-token"}
    # what node 0 left on the workspace is the step's output, as with the in-pod launcher
    assert (result.final_model / "config.json").is_file() and result.metrics["final_train_loss"] == 1.25
    assert result.final_model == tmp_path / "out" / "checkpoints" / "final"

    # every node runs the same artifact; the Trainer's PET_* variables place it (here: node 1 of 2)
    args = sent["spec"]["trainer"]["args"]
    arg = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert json.loads(Path(arg["--kwargs"]).read_text()) == json.loads(kwargs_file(tmp_path, algorithm).read_text())
    assert (Path(arg["--train-data"]) / "data.jsonl").is_file() and (Path(arg["--validation-data"]) / "data.jsonl").is_file()
    env = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "4", "PET_MASTER_PORT": "29400",
           "PET_MASTER_ADDR": f"{sent['metadata']['name']}-node-0-0.{sent['metadata']['name']}"}  # fmt: skip
    placed = torchrun_from_env(env)
    if algorithm == "lora_sft":
        command = worker_command(placed, ["--kwargs", arg["--kwargs"]])
        assert command[1:3] == ["-m", "torch.distributed.run"]
        assert {"--nnodes=2", "--nproc-per-node=4", "--node-rank=1", "--master-port=29400"} <= set(command)
        assert command[-5:-2] == ["-m", "kubetune.cluster.node_cli", "worker"]
        return
    spec = validate_spec(json.loads(Path(arg["--kwargs"]).read_text()), require_paths=False)
    bound = bind(spec, arg["--model"], arg["--train-data"], arg["--output"], arg["--validation-data"], placed)
    torch_args, train_args = get_backend(algorithm).build(bound)  # the backend's own config classes
    assert (torch_args.nnodes, torch_args.node_rank, torch_args.nproc_per_node) == (2, 1, 4)
    assert (torch_args.master_addr, torch_args.master_port, torch_args.rdzv_endpoint) == (env["PET_MASTER_ADDR"], 29400, None)
    assert train_args.data_path == f"{arg['--train-data']}/data.jsonl"
    assert str(getattr(train_args, "ckpt_output_dir", None) or train_args.output_dir) == f"{arg['--output']}/checkpoints"


@pytest.mark.parametrize(
    ("states", "limits", "title", "deleted"),
    [
        (["queued", "running", "failed"], FAST, "TrainJob failed: 1 problem(s)", False),
        (["queued", "running", "evicted"], FAST, "TrainJob evicted", True),
        (["queued"], Limits(queued_timeout_s=0.3, poll_s=0.02), "TrainJob never started", True),
        (["starting"], Limits(queued_timeout_s=0.3, poll_s=0.02), "TrainJob never started", True),
        (["queued", "running"], Limits(running_timeout_s=0.3, poll_s=0.02), "TrainJob too long", True),
    ],
)
def test_a_job_that_fails_is_evicted_or_overstays_fails_the_step_with_its_reason(
    kube_api, tmp_path, states, limits, title, deleted
):
    api = kube_api(states, log="step 1 loss 2.31\n")
    client = KubeApi.connect(api.kubeconfig)
    client.create({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "job"},
                   "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}}})  # fmt: skip
    said = []
    with pytest.raises(KubetuneError) as error:
        wait(client, "job", limits, say=said.append, logs=False)
    assert error.value.report().startswith(title)
    assert ("job" not in api.jobs) is deleted  # a failed job stays for inspection; the others are removed
    report = error.value.report()
    if states[-1] == "failed":
        assert "JobSetFailed: jobset failed: node 1 exited with code 1 (OOMKilled)" in report
    if states[-1] == "evicted":
        assert "Preempted: Preempted to accommodate a higher priority workload" in report and "resumes" in report
    if "never started" in title:
        assert "still queued (Suspended" in report or "still starting (waiting for nodes: Unschedulable: 0/4 nodes" in report


def test_queued_and_waiting_for_nodes_is_not_a_failure_and_node_zeros_log_is_streamed(kube_api, capfd):
    """Kueue keeps the job suspended for a while, then the nodes come up one by one: only then does the
    running limit start to count, and node 0's log shows up in the step's log."""
    states = ["queued"] * 20 + ["starting"] * 10 + ["running"] * 5 + ["succeeded"]
    api = kube_api(states, log="rank 0: step 10 loss 1.93\nrank 0: step 20 loss 1.71\n")
    client = KubeApi.connect(api.kubeconfig)
    client.create({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "job"},
                   "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}}})  # fmt: skip
    said = []
    done = wait(client, "job", Limits(queued_timeout_s=30, running_timeout_s=0.5, poll_s=0.02), say=said.append)
    assert done.state == "succeeded"
    assert [line.split(": ", 1)[1].split(" ")[0] for line in said] == ["queued", "starting", "running", "succeeded"]
    assert "rank 0: step 20 loss 1.71" in capfd.readouterr().out
    assert "starting (waiting for nodes: Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)" in said[1]
    pods = {r["query"]["labelSelector"] for r in api.requests if r["path"].endswith("/pods")}
    assert pods == {"jobset.sigs.k8s.io/jobset-name=job",  # why nodes wait; then node 0, whose log is followed
                    "jobset.sigs.k8s.io/jobset-name=job,jobset.sigs.k8s.io/replicatedjob-name=node,"
                    "batch.kubernetes.io/job-completion-index=0"}  # fmt: skip


def test_cancelling_the_run_deletes_the_trainjob(kube_api):
    """KFP cancels a run by sending SIGTERM to the step's process."""
    api = kube_api(["running"])
    KubeApi.connect(api.kubeconfig).create(
        {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "job"}, "spec": {"trainer": {}}}
    )
    script = (
        "import sys; from kubetune.cluster.watch import KubeApi, Limits, wait; "
        "wait(KubeApi.connect(sys.argv[1]), 'job', Limits(poll_s=0.05), logs=False)"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script, api.kubeconfig], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while api.gets.get("job", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 143 and "run cancelled: TrainJob team-a/job deleted" in out
    assert "job" not in api.jobs and [r["query"] for r in api.requests if r["method"] == "DELETE"]


def test_a_restarted_launcher_follows_its_running_job_and_restarts_a_failed_one(tmp_path, kube_api):
    train, validation = prepared(tmp_path)
    kwargs = TrainingSpec.read(kwargs_file(tmp_path, "lora_sft"))
    name = trainjob_name("run-7", "lora_sft")
    running = kube_api(node_zero(["running", "succeeded"]))
    running.jobs[name] = {
        "metadata": {"name": name},
        "spec": {"trainer": {"numNodes": 2, "args": ["--output", str(tmp_path / "workspace" / "run-7")]}},
    }
    client = KubeApi.connect(running.kubeconfig)
    launch(kwargs, "/m", train, validation, tmp_path / "out", settings(tmp_path), "run-7", api=client, limits=FAST, logs=False)
    assert [r["method"] for r in running.requests if "trainjobs" in r["path"]].count("POST") == 0  # attached, not duplicated

    second_attempt = node_zero(["running", "succeeded"])
    failed = kube_api(lambda job, gets: "failed" if job.get("first_attempt") else second_attempt(job, gets))
    failed.jobs[name] = {"metadata": {"name": name}, "first_attempt": True, "spec": {"trainer": {"numNodes": 2}}}
    client = KubeApi.connect(failed.kubeconfig)
    launch(kwargs, "/m", train, validation, tmp_path / "out2", settings(tmp_path), "run-7", api=client, limits=FAST, logs=False)
    calls = [r["method"] for r in failed.requests if "trainjobs" in r["path"]]
    assert calls[:4] == ["GET", "DELETE", "GET", "POST"]  # the failed attempt is gone before a new one; checkpoints remain


def test_a_spec_that_places_itself_is_refused_before_any_api_call(tmp_path, kube_api):
    api = kube_api(["running"])
    train, validation = prepared(tmp_path)
    kwargs = TrainingSpec.read(kwargs_file(tmp_path, "osft", nnodes=4, nproc_per_node=8, master_addr="10.0.0.1"))
    with pytest.raises(KubetuneError) as error:
        launch(kwargs, "/m", train, validation, tmp_path / "out", settings(tmp_path), "r", api=KubeApi.connect(api.kubeconfig))
    report = error.value.report()
    assert "nnodes: is set by the TrainJob" in report and "master_addr" in report and "nproc_per_node: is 8" in report
    assert api.requests == [] and not (tmp_path / "workspace").exists()


def test_bad_settings_name_the_parameter():
    from kubetune.cluster.trainjob import settings_from

    with pytest.raises(KubetuneError) as error:
        settings_from(nnodes=0, gpus=0, trainjob_image="img", workspace_pvc="")
    report = error.value.report()
    assert report.startswith("invalid TrainJob settings: 3 problem(s)")
    assert "nnodes: Input should be greater than or equal to 1" in report and "workspace_pvc:" in report


def test_outside_a_cluster_without_a_kubeconfig_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubetuneError, match="cannot reach the Kubernetes API") as error:
        KubeApi.connect(str(tmp_path / "absent-kubeconfig"))
    assert "kubeconfig: none given, and not in a cluster" in error.value.report()


def test_the_role_in_the_repo_grants_exactly_the_calls_the_launcher_makes(tmp_path, kube_api):
    """Every call of a whole life (submit, follow, stream the log, delete on eviction) and nothing else."""
    role, binding = yaml.safe_load_all((ROOT / "pipelines" / "manifests" / "trainjob-launcher-rbac.yaml").read_text())
    assert role["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    api = kube_api(["queued", "running", "running", "evicted"], log="step 1\n")
    train, validation = prepared(tmp_path)
    with pytest.raises(KubetuneError, match="evicted"):
        spec = TrainingSpec.read(kwargs_file(tmp_path, "sft"))
        launch(spec, "/m", train, validation, tmp_path / "out", settings(tmp_path), "r",
               api=KubeApi.connect(api.kubeconfig), limits=Limits(poll_s=0.1))  # fmt: skip
    assert api.calls() == granted


def test_in_cluster_the_pods_service_account_is_used(tmp_path, monkeypatch):
    """No kubeconfig given (or its optional secret absent): the ServiceAccount token and the pod's namespace."""
    from kubernetes.config import incluster_config

    (tmp_path / "token").write_text("service-account-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    api = KubeApi.connect(str(tmp_path / "absent-kubeconfig"))
    configuration = api.custom.api_client.configuration
    assert configuration.host == "https://10.96.0.1:443" and api.namespace == "team-a"
    assert configuration.api_key["authorization"].lower() == "bearer service-account-token"


def start_nodes(trainer: dict) -> list[subprocess.Popen]:
    """Start the TrainJob's container command and args on each of its nodes, with the torch runtime's PET_* variables,
    as the Trainer would."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / trainer["command"][0]), *trainer["command"][1:], *trainer["args"]]
    nodes = []
    for rank in range(trainer["numNodes"]):
        env = {**os.environ, "PET_NNODES": str(trainer["numNodes"]), "PET_NODE_RANK": str(rank),
               "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]), "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(port)}  # fmt: skip
        nodes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return nodes


@pytest.mark.slow
def test_a_two_node_lora_trainjob_runs_its_submitted_command_on_this_cpu(tmp_path, kube_api, tiny_model):
    """The stand-in runs the TrainJob it receives as the Trainer would: the container's command and args on
    every node, with the PET_* variables of the torch runtime (two processes here, DDP over gloo)."""

    from kubetune.steps.prepare import prepare

    prepare("kubetune://sample-chat", str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", num_proc=1)
    kwargs = tmp_path / "kwargs.json"
    validate_to_artifact("lora_sft", {"num_epochs": 1, "effective_batch_size": 8, "learning_rate": 0.001, "max_steps": 12,
                                      "max_seq_len": 256, "save_steps": 6, "eval_steps": 6, "logging_steps": 3, "seed": 0},
                         kwargs)  # fmt: skip  (packed rows of 256 tokens: the same 12 steps, 8x cheaper than 2048)
    nodes: list[subprocess.Popen] = []

    def cluster(job: dict, gets: int) -> str:
        trainer = job["spec"]["trainer"]
        if not nodes:
            nodes.extend(start_nodes(trainer))
            return "queued"
        if any(n.poll() is None for n in nodes):
            return "running"
        return "succeeded" if all(n.returncode == 0 for n in nodes) else "failed"

    api = kube_api(cluster)
    result = launch(
        TrainingSpec.read(kwargs), str(tiny_model), tmp_path / "data" / "train", tmp_path / "data" / "val", tmp_path / "out",
        settings(tmp_path, gpus=1, kueue_queue="", cpu_per_node="", memory_per_node=""), "run-1",
        api=KubeApi.connect(api.kubeconfig), limits=Limits(poll_s=0.2, running_timeout_s=300), logs=False,
    )  # fmt: skip
    state = json.loads((result.output_dir / "checkpoints" / "trainer_state.json").read_text())
    assert state["global_step"] == 12 and state["train_batch_size"] == 4  # 8 per step over a world of 2 processes
    assert [c.name for c in result.checkpoints] == ["checkpoint-6", "checkpoint-12"]
    assert (result.final_model / "adapter_model.safetensors").is_file() and result.metrics["final_train_loss"] > 0
    assert not list((tmp_path / "out").rglob("optimizer.pt"))  # published without training state
    # the evaluation step reads the published checkpoints as it reads the in-pod step's, train loss included
    from kubetune.steps.evaluate import evaluate_step

    evaluated = evaluate_step(tmp_path / "out", tmp_path / "data" / "val", tmp_path / "curve.json", tmp_path / "report.html")
    names = [p.checkpoint for p in evaluated.points]
    assert names == ["checkpoints/checkpoint-6", "checkpoints/checkpoint-12", "checkpoints/final"]
    assert evaluated.backend.train  # TRL's log history came along with the checkpoints
