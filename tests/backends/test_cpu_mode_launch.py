"""CPU mode's launch environment (``cpu_mode.launch_env``): stale trigger files swept, ``PYTHONPATH`` kept, the
``sitecustomize`` it shadows still importable. These need no backend extra (test_cpu_mode.py needs both)."""

import os
import subprocess
import sys
import uuid

import pytest

from kubetune.backends import cpu_mode
from kubetune.backends.cpu_mode import SITE_DIR, launch_env


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_trigger_files_of_dead_launches_are_swept_and_only_those(monkeypatch, tmp_path):
    """A SIGKILLed step leaves its trigger file behind: the next launch removes kubetune's own files whose process
    is gone, never a live launch's, a user's, or a name it did not make."""
    monkeypatch.setattr(cpu_mode, "TRIGGER_DIR", tmp_path)
    monkeypatch.delenv("CHECKPOINT_TRIGGER_FILENAME", raising=False)
    stale = tmp_path / f"kubetune-{dead_pid()}-{uuid.uuid4().hex}"
    live = tmp_path / f"kubetune-{os.getppid()}-{uuid.uuid4().hex}"  # the test runner's parent: alive
    kept = [live, tmp_path / "users-trigger", tmp_path / f"kubetune-{dead_pid()}-notours", tmp_path / "kubetune-1234"]
    for path in (stale, *kept):
        path.write_text("1")
    with launch_env("mini-trainer", lambda line: None):
        own = os.environ["CHECKPOINT_TRIGGER_FILENAME"]
        assert own.startswith(f"kubetune-{os.getpid()}-") and cpu_mode._TRIGGER.fullmatch(own)
    assert not stale.exists() and all(path.exists() for path in kept)


@pytest.mark.parametrize("given", [os.pathsep + "/somewhere", "/somewhere" + os.pathsep, f"/a{os.pathsep}{os.pathsep}/b"])
def test_cpu_mode_keeps_empty_pythonpath_entries(monkeypatch, given):
    """An empty PYTHONPATH entry means the current directory: CPU mode puts its folder first and keeps the rest."""
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    monkeypatch.setenv("PYTHONPATH", given)
    with launch_env("mini-trainer", lambda line: None):
        assert os.environ["PYTHONPATH"] == f"{SITE_DIR}{os.pathsep}{given}"
    assert os.environ["PYTHONPATH"] == given


def test_the_sitecustomize_ours_shadows_is_importable_under_its_name(tmp_path):
    """After ours ran, ``import sitecustomize`` gives the module it shadows (as without ours); ours stays loaded
    under its own name."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("MARK = 'other'\n")
    code = "import sitecustomize, sys; print(sitecustomize.MARK, 'sitecustomize_kubetune' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": f"{SITE_DIR}{os.pathsep}{other}"}
    env.pop(cpu_mode.ENV_FLAG, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["other", "True"], done.stderr[-2000:]
