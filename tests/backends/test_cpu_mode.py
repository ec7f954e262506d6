"""CPU mode of the two torchrun backends: its redirections still match the pinned backends, reach the backend's
training process (and no other), apply only where CUDA is absent, and parallel runs do not collide.

Real training through CPU mode: components/train/tests/test_train_sft.py (instructlab-training) and the osft tests."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.backends import cpu_mode
from kubetune.backends.cpu_mode import ENV_FLAG, REDIRECTIONS, SITE_DIR, launch_env, missing_sites, script
from kubetune.backends.registry import get_backend
from kubetune.validation import validate_spec

pytest.importorskip("instructlab.training", reason="instructlab-training is the `sft` extra")
pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")

SFT = {"algorithm": "sft", "effective_batch_size": 8, "max_seq_len": 512, "learning_rate": 1e-5}
SITES = [(file, text) for r in REDIRECTIONS for file, text in r.sites]
SITE_PACKAGES = {file.split("/")[0]: Path(__import__(file.split("/")[0]).__path__[0]).parent for file, _ in SITES}

# each redirected call, done as the backends do it; True when it behaved as on a GPU (None: it raised)
PROBE = r"""
import json, os, sys
report = {"torch_imported_at_start": "torch" in sys.modules}
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

def attempt(call, check):
    try:
        report[call] = bool(check())
    except Exception:
        report[call] = None

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
attempt("torch.device", lambda: torch.device("cuda", 0).type == "cpu")
attempt("torch.distributed.init_process_group",
        lambda: dist.init_process_group("nccl", device_id=0) or dist.get_backend() == "gloo")
attempt("torch.distributed.device_mesh.init_device_mesh", lambda: init_device_mesh("cuda", [1]).device_type == "cpu")
attempt("torch.cuda.set_device", lambda: torch.cuda.set_device(0) is None)
attempt("torch.cuda.current_device", lambda: torch.tensor([1], device=torch.cuda.current_device()).device.type == "cpu")
attempt("torch.Tensor.cuda", lambda: torch.ByteTensor([0]).cuda().device.type == "cpu")
attempt("torch.cuda.memory_stats", lambda: torch.cuda.memory_stats()["num_alloc_retries"] == 0)
attempt("torch.cuda.reset_peak_memory_stats", lambda: torch.cuda.reset_peak_memory_stats() is None)
print("PROBE " + json.dumps(report), flush=True)
"""


def run_child(argv0: Path | str, flag: str | None, *args: str, pythonpath: list[Path] = ()) -> tuple[dict, str]:
    """A Python child as torchrun starts the backend's script (``argv0``), with the CPU-mode site folder first
    on PYTHONPATH; returns the probe's report and the child's output."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FLAG, "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, [SITE_DIR, *pythonpath]))
    if flag is not None:
        env[ENV_FLAG] = flag
    command = [sys.executable, "-c", PROBE, *args] if argv0 == "-c" else [sys.executable, str(argv0), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE ")), done.stdout


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_every_redirected_line_is_in_the_pinned_backends():
    assert set(SITE_PACKAGES) == {"instructlab", "mini_trainer"} and all(file.split("/")[0] in SITE_PACKAGES for file, _ in SITES)
    assert missing_sites() == []
    assert all(script(backend).is_file() for backend in cpu_mode.SCRIPTS)


@pytest.mark.parametrize(("file", "text"), SITES, ids=[f"{f}:{t[:40]}" for f, t in SITES])
def test_a_backend_version_without_a_redirected_line_is_reported(tmp_path, file, text):
    """A copy of the installed backends with one redirected line changed (as a new version would) is caught."""
    for name in {f for f, _ in SITES}:
        copy = tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SITE_PACKAGES[name.split("/")[0]] / name, copy)
    assert missing_sites(tmp_path) == []
    changed = tmp_path / file
    changed.write_text(changed.read_text(encoding="utf-8").replace(text, text.replace("cuda", "xpu").replace("nccl", "xccl")))
    assert [line.split(" (")[0] for line in missing_sites(tmp_path)] == [f"{file}: {text}"]


def test_the_backend_script_in_a_torchrun_child_gets_every_redirection(tmp_path):
    """A real child whose script is the one CPU mode names: each redirected call works on this CPU, where the
    same call in the same child without CPU mode fails (or picks CUDA)."""
    assert cpu_mode.wanted(), "this test observes the redirections on a machine without CUDA"
    probe = tmp_path / "main_ds.py"
    probe.write_text(PROBE)
    redirected, output = run_child(probe, str(probe), free_port())
    plain, _ = run_child(probe, None, free_port())
    calls = {r.call for r in REDIRECTIONS}
    assert set(redirected) - {"torch_imported_at_start"} == calls  # every redirection has its observation
    assert {call: redirected[call] for call in calls} == dict.fromkeys(calls, True)
    assert not any(plain[call] for call in calls), plain  # each one is needed here
    assert f"[kubetune] CPU mode: redirected {', '.join(r.call for r in REDIRECTIONS)}" in output


@pytest.mark.parametrize("argv0", ["train.py", "instructlab/training/main_ds.py", "-c"])
def test_every_other_python_process_is_left_alone(tmp_path, argv0):
    """With the flag naming instructlab's real script, a process running another ``train.py`` or ``main_ds.py``
    (or ``-c``) gets no redirection and does not even import torch at start-up."""
    if argv0 != "-c":
        (tmp_path / argv0).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / argv0).write_text(PROBE)
        argv0 = tmp_path / argv0
    report, output = run_child(argv0, str(script("instructlab-training")), free_port())
    assert report["torch_imported_at_start"] is False and report["torch.device"] is False
    assert "CPU mode" not in output


def test_a_sitecustomize_it_shadows_still_runs(tmp_path):
    """Ours comes first on PYTHONPATH, so Python would skip another ``sitecustomize``: ours runs it, in the
    backend's process (after the redirections) and in every other process."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("print('PROBE ' + __import__('json').dumps({'other': True}), flush=True)\n")
    probe = tmp_path / "train.py"
    probe.write_text(PROBE)
    for argv0 in (probe, "-c"):
        env = {**os.environ, "PYTHONPATH": f"{SITE_DIR}{os.pathsep}{other}", ENV_FLAG: str(probe)}
        command = [sys.executable, str(argv0), free_port()] if argv0 != "-c" else [sys.executable, "-c", "pass"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and 'PROBE {"other": true}' in done.stdout, done.stderr[-2000:]
        assert ("[kubetune] CPU mode: redirected" in done.stdout) is (argv0 == probe)


def test_cpu_mode_only_without_cuda_and_it_says_so_loudly(monkeypatch):
    assert cpu_mode.wanted() is True  # this machine has no CUDA: CPU mode is on
    said: list[str] = []
    with launch_env("instructlab-training", said.append):
        assert os.environ[ENV_FLAG] == str(script("instructlab-training"))
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(SITE_DIR)
    assert ENV_FLAG not in os.environ and str(SITE_DIR) not in os.environ.get("PYTHONPATH", "")
    assert said == [cpu_mode.WARNING.format(backend="instructlab-training")] and "not for real training" in said[0]
    spec = validate_spec(SFT, require_paths=False)
    assert get_backend("sft").local_params(spec)["nproc_per_node"] == 1

    monkeypatch.setattr(cpu_mode, "wanted", lambda: False)  # what a CUDA machine answers (no GPU in CI)
    monkeypatch.setattr("kubetune.backends.torchrun.wanted", lambda: False)
    monkeypatch.setattr("kubetune.backends.rules.wanted", lambda: False)
    said.clear()
    with launch_env("instructlab-training", said.append):
        assert ENV_FLAG not in os.environ and str(SITE_DIR) not in os.environ.get("PYTHONPATH", "")
    assert said == [] and "nproc_per_node" not in get_backend("sft").local_params(spec)


def test_two_runs_get_their_own_rendezvous_port_and_trigger_file():
    """Two launches on one machine (the real concurrent runs: test_train_sft.py) never share the rendezvous port
    or the /dev/shm file whose presence makes a run save and stop."""
    spec = validate_spec(SFT, require_paths=False)
    backend = get_backend("sft")
    first, second = (backend.local_params(spec)["rdzv_endpoint"] for _ in range(2))
    assert first != second and first.startswith("127.0.0.1:")
    given = validate_spec({**SFT, "rdzv_endpoint": "10.0.0.1:29400"}, require_paths=False)
    assert "rdzv_endpoint" not in backend.local_params(given)  # the user's (or a TrainJob's) endpoint is kept
    names = []
    for _ in range(2):
        with launch_env("instructlab-training", lambda line: None):
            names.append(os.environ["CHECKPOINT_TRIGGER_FILENAME"])
    assert names[0] != names[1] and all(n.startswith("kubetune-") for n in names)
    # a child started by a launch inherits its name, and its own launch takes a fresh one
    inherited = {**os.environ, "CHECKPOINT_TRIGGER_FILENAME": names[0]}
    code = (
        "import os\nfrom kubetune.backends.cpu_mode import launch_env\n"
        "with launch_env('mini-trainer', lambda line: None):\n    print(os.environ['CHECKPOINT_TRIGGER_FILENAME'])"
    )
    child = subprocess.run([sys.executable, "-c", code], env=inherited, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and child.stdout.strip() not in ("", *names), child.stderr[-2000:]


def test_a_trigger_file_left_by_a_late_signal_is_removed_and_only_ours(monkeypatch, tmp_path):
    """A signal after the workers stopped polling leaves the launcher's trigger file behind: the launch removes
    its own, never a file named by the user."""
    monkeypatch.setattr(cpu_mode, "TRIGGER_DIR", tmp_path)
    with launch_env("instructlab-training", lambda line: None):
        ours = tmp_path / os.environ["CHECKPOINT_TRIGGER_FILENAME"]
        ours.write_text("1")  # what the backend's launcher-side signal handler writes
    assert not ours.exists()
    monkeypatch.setenv("CHECKPOINT_TRIGGER_FILENAME", "users-trigger")
    with launch_env("instructlab-training", lambda line: None):
        (tmp_path / "users-trigger").write_text("1")
    assert (tmp_path / "users-trigger").exists()
