"""Experiment tracking for real: one short CPU run per algorithm through our training step, with every tracking
parameter at once; MLflow (a local file store), TensorBoard and offline W&B are read back from their own storage
and hold the train loss of the backend's own metrics file. Nothing goes online."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.backends import tracking
from kubetune.errors import KubetuneError
from kubetune.steps.timeline import read_backend_metrics
from kubetune.steps.train import bind, train
from kubetune.validation import load_spec, validate_spec

SHORT = {
    "sft": {"num_epochs": 1, "effective_batch_size": 8, "max_tokens_per_gpu": 2048},
    "osft": {"training_mode": "step", "max_steps": 3, "effective_batch_size": 8, "max_tokens_per_gpu": 2048,
             "unfreeze_rank_ratio": 0.5},
    "lora_sft": {"max_steps": 3, "micro_batch_size": 8, "logging_steps": 1},
}  # fmt: skip
# the key each backend logs its train loss under, in each tracker
LOSS_KEY = {
    "sft": {"mlflow": "avg_loss", "tensorboard": "avg_loss", "wandb": "avg_loss"},
    "osft": {"mlflow": "loss", "wandb": "loss"},
    "lora_sft": {"mlflow": "loss", "tensorboard": "train/loss", "wandb": "train/loss"},
}
KEY_MARK = "kubetune0test0wandb0key0never0written00"  # 40 characters, like a W&B key
TOKEN_MARK = "kubetune-test-mlflow-token-never-written"
CLOSED = "http://127.0.0.1:9"  # the discard port: a request that tried to leave would fail here, not go out
NETWORK_ENV = {"WANDB_MODE": "offline", "WANDB_BASE_URL": CLOSED, "HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED,
               "http_proxy": CLOSED, "https_proxy": CLOSED, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
               "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_TOKEN": TOKEN_MARK}  # fmt: skip
CLEARED = ("WANDB_DIR", "WANDB_API_KEY", "MLFLOW_ALLOW_FILE_STORE", *tracking.FROM_ENV.values(), "TENSORBOARD_LOGGING_DIR")


def settings(algorithm: str, root: Path) -> dict[str, str]:
    return {
        "wandb_project": "kubetune-ci",
        "wandb_entity": "kubetune-team",
        "wandb_run_name": f"{algorithm}-wandb",
        "mlflow_tracking_uri": f"file://{root}/mlruns",
        "mlflow_experiment_name": f"kubetune-{algorithm}",
        "mlflow_run_name": f"{algorithm}-mlflow",
        "tensorboard_log_dir": str(root / "tensorboard"),
    }


class Connections:
    """Every outbound connection this process opens (an audit hook), to show that none leaves the machine."""

    def __init__(self):
        self.seen: list[tuple] = []
        self.on = False
        sys.addaudithook(self.hook)

    def hook(self, event, args):
        if self.on and event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
            self.seen.append(args[1])

    def remote(self) -> list[tuple]:
        return [address for address in self.seen if address[0] not in ("127.0.0.1", "::1", "localhost")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model):
    """24 records of the embedded sample (3 steps of 8), prepared once for the three runs."""
    from kubetune.steps.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    source = Path(__file__).parents[2] / "kubetune" / "data" / "sample_chat.jsonl"
    (root / "chat.jsonl").write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:24]))
    prepare(str(root / "chat.jsonl"), str(tiny_model), root / "train", root / "val", num_proc=1)
    return root


@pytest.fixture(scope="module")
def connections():
    return Connections()


@pytest.fixture(scope="module", params=["sft", "osft", "lora_sft"])
def run(request, tmp_path_factory, tiny_model, prepared, connections):
    """One real CPU run of the algorithm through our training step, reporting to all its trackers at once."""
    algorithm = request.param
    root = tmp_path_factory.mktemp(algorithm)
    document = {"algorithm": algorithm, "max_seq_len": 512, "learning_rate": 1e-3, **SHORT[algorithm]}
    document.update(settings(algorithm, root))
    (root / "kwargs.json").write_text(json.dumps(document))
    with pytest.MonkeyPatch.context() as env:
        for name in CLEARED:
            env.delenv(name, raising=False)
        for name, value in NETWORK_ENV.items():
            env.setenv(name, value)
        if algorithm != "osft":  # osft runs without a key: offline W&B needs none (mini-trainer asks for one)
            env.setenv("WANDB_API_KEY", KEY_MARK)
        env.chdir(root)  # where a tracker would fall back to (./wandb, ./mlruns, ./mlflow.db)
        connections.on = True
        try:
            spec = load_spec(root / "kwargs.json", require_paths=False)
            result = train(spec, str(tiny_model), prepared / "train", root / "out", prepared / "val")
        finally:
            connections.on = False
    losses = [point.loss for point in read_backend_metrics(result.output_dir).train]
    assert len(losses) >= 3, losses  # the backend's own metrics file
    return algorithm, root, result, losses


def mlflow_run(root: Path, algorithm: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"file://{root}/mlruns")
    (found,) = client.search_runs([client.get_experiment_by_name(f"kubetune-{algorithm}").experiment_id])
    return client, found


@pytest.mark.slow
def test_mlflow_file_store_holds_the_train_loss_under_the_given_experiment_and_run_name(run, monkeypatch):
    algorithm, root, _, losses = run
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading it back: MLflow 3 keeps file stores behind this
    client, found = mlflow_run(root, algorithm)
    history = client.get_metric_history(found.info.run_id, LOSS_KEY[algorithm]["mlflow"])
    assert [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))] == pytest.approx(losses)
    # Training Hub's meaning: TRL names both runs after wandb_run_name when it is given, the others use mlflow_run_name
    assert found.info.run_name == (f"{algorithm}-wandb" if algorithm == "lora_sft" else f"{algorithm}-mlflow")
    assert found.info.status == "FINISHED"


@pytest.mark.slow
def test_tensorboard_holds_the_train_loss_for_sft_and_lora_and_osft_says_it_has_none(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    algorithm, root, _, losses = run
    if algorithm == "osft":
        notes = validate_spec(json.loads((root / "kwargs.json").read_text()), require_paths=False).notes
        assert any(note.startswith("tensorboard_log_dir is ignored: mini-trainer") for note in notes)
        assert not (root / "tensorboard").exists()
        return
    tag = LOSS_KEY[algorithm]["tensorboard"]
    values = []
    for events in sorted((root / "tensorboard").rglob("events.out.tfevents.*")):
        scalars = EventAccumulator(str(events)).Reload()
        if tag in scalars.Tags()["scalars"]:
            values += [(e.step, e.value) for e in scalars.Scalars(tag)]
    assert [value for _, value in sorted(values)] == pytest.approx(losses, rel=1e-6)


def wandb_records(run_file: Path) -> list[dict]:
    """The records of an offline run's ``.wandb`` log, read by wandb's own reader (``wandb leet inspect``)."""
    command = [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(run_file)]
    lines = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_offline_wandb_run_beside_the_checkpoints_holds_the_train_loss_under_the_given_names(run):
    algorithm, _, result, losses = run
    (run_file,) = (result.output_dir / "wandb").glob("offline-run-*/run-*.wandb")  # offline, kept with the model
    records = wandb_records(run_file)
    (header,) = [r["run"] for r in records if r["type"] == "run"]
    assert (header["project"], header["entity"], header["display_name"]) == ("kubetune-ci", "kubetune-team", f"{algorithm}-wandb")
    key = LOSS_KEY[algorithm]["wandb"]
    logged = [r["history"]["item"][key] for r in records if r["type"] == "history" and key in r["history"]["item"]]
    assert logged == pytest.approx(losses)
    assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [0]  # finished when the step returned


@pytest.mark.slow
def test_nothing_went_online_and_no_credential_was_written(run, connections):
    algorithm, root, _, _ = run
    assert connections.remote() == []
    assert not (root / "wandb").exists() and not (root / "mlflow.db").exists()  # no tracker fell back to the cwd
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert KEY_MARK.encode() not in text and TOKEN_MARK.encode() not in text, path


@pytest.mark.parametrize(
    ("algorithm", "given", "env", "missing", "field"),
    [
        ("sft", {"wandb_run_name": "r"}, {}, (), "wandb_run_name"),  # instructlab-training would log nothing
        ("osft", {"wandb_entity": "team"}, {}, (), "wandb_entity"),  # mini-trainer too
        ("osft", {"mlflow_experiment_name": "e"}, {}, (), "mlflow_experiment_name"),  # no store but the pod's
        ("lora_sft", {}, {"MLFLOW_EXPERIMENT_NAME": "e"}, (), "mlflow_experiment_name"),
        ("osft", {}, {"MLFLOW_TRACKING_URI": "https://user:hunter2-secret@mlflow.example"}, (), "MLFLOW_TRACKING_URI"),
        ("sft", {"mlflow_tracking_uri": "sqlite:///runs.db"}, {}, ("sqlalchemy",), "mlflow_tracking_uri"),
        ("lora_sft", {"tensorboard_log_dir": "/tb"}, {}, ("tensorboard",), "tensorboard_log_dir"),
        ("osft", {"wandb_project": "p"}, {}, ("wandb",), "wandb_project"),
    ],
)
def test_tracking_that_could_not_happen_is_refused_by_name_before_training(
    tmp_path, monkeypatch, algorithm, given, env, missing, field
):
    from kubetune.backends.registry import get_backend

    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for package in missing:  # not installed, as far as importlib can tell
        monkeypatch.setitem(sys.modules, package, None)
    document = {"algorithm": algorithm, "max_seq_len": 512, "learning_rate": 1e-3, **SHORT[algorithm], **given}
    spec = bind(validate_spec(document, require_paths=False), "/no/model", tmp_path / "train", tmp_path / "out")
    with pytest.raises(KubetuneError) as refused:
        get_backend(algorithm).train(spec)
    assert [p.where for p in refused.value.problems] == [field]
    assert "hunter2" not in str(refused.value)
    assert not (tmp_path / "out" / "checkpoints" / "hf_format").exists()


@pytest.mark.parametrize(
    ("params", "env", "expected"),
    [
        ({}, {}, ["none"]),
        ({"wandb_run_name": "r"}, {}, ["wandb"]),  # Training Hub's lora_sft: any wandb_* turns W&B on
        ({"mlflow_run_name": "r"}, {}, ["mlflow"]),
        ({}, {"WANDB_PROJECT": "p", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, ["wandb", "mlflow"]),
        ({"tensorboard_log_dir": "/tb"}, {"MLFLOW_EXPERIMENT_NAME": "e"}, ["mlflow", "tensorboard"]),
    ],
)
def test_trl_reports_to_what_training_hub_would(monkeypatch, params, env, expected):
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracking.trackers(params) == expected


def test_unset_tracking_parameters_come_from_the_environment_as_training_hub_fills_them(monkeypatch, tmp_path):
    from kubetune.backends.registry import get_backend

    env = {"WANDB_PROJECT": "from-env", "WANDB_ENTITY": "team", "WANDB_RUN_NAME": "run", "MLFLOW_RUN_NAME": "ml-run",
           "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_EXPERIMENT_NAME": "exp"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    document = {"algorithm": "osft", "max_seq_len": 512, "learning_rate": 1e-3, **SHORT["osft"], "wandb_project": "given"}
    spec = bind(validate_spec(document, require_paths=False), "/no/model", tmp_path / "train", tmp_path / "out")
    unset = tracking.from_env(spec.params)
    assert "wandb_project" not in unset  # a parameter given wins over the environment
    _, args = get_backend("osft").build(spec.with_params(**unset))  # mini-trainer's own TrainingArgs
    assert [getattr(args, key) for key in tracking.FROM_ENV] == ["given", "team", "run", "http://127.0.0.1:5000", "exp", "ml-run"]
