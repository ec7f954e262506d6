"""Review findings on the training step: CPU mode's one process, options the training image cannot honour,
lora_sft's backend names, stale trigger files, and the CPU-mode ``sitecustomize`` on ``PYTHONPATH``."""

import os
import subprocess
import sys
import uuid

import pytest

from kubetune.backends import cpu_mode, needs
from kubetune.backends.cpu_mode import SITE_DIR, launch_env
from kubetune.backends.registry import get_backend
from kubetune.errors import reported
from kubetune.validation import validate_spec

SFT = {"algorithm": "sft", "effective_batch_size": 8, "max_seq_len": 512, "learning_rate": 1e-5}
OSFT = {**SFT, "algorithm": "osft", "max_tokens_per_gpu": 1024, "unfreeze_rank_ratio": 0.25}


def one_line_exit_2(call, capsys) -> str:
    """What the step prints when ``call`` ends it (``reported``), checked to be exit 2 and one line."""
    with pytest.raises(SystemExit) as ended, reported():
        call()
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("document", [SFT, OSFT], ids=["sft", "osft"])
@pytest.mark.parametrize("nproc", [2, "4"])
def test_cpu_mode_refuses_more_than_one_process(document, nproc, capsys):
    """Two gloo ranks of CPU mode diverge and wait forever: any count but 1 is refused before the launch."""
    pytest.importorskip({"sft": "instructlab.training", "osft": "mini_trainer"}[document["algorithm"]], reason="backend extra")
    assert cpu_mode.wanted(), "this test needs a machine without CUDA (CPU mode)"
    backend = get_backend(document["algorithm"])
    spec = validate_spec({**document, "nproc_per_node": nproc}, require_paths=False)
    err = one_line_exit_2(lambda: backend.local_params(spec), capsys)
    assert "nproc_per_node" in err and "CPU mode" in err
    one = validate_spec({**document, "nproc_per_node": 1}, require_paths=False)
    assert "nproc_per_node" not in backend.local_params(one)


@pytest.mark.parametrize(
    ("algorithm", "option", "field"),
    [
        ("sft", {"use_liger": True}, "use_liger"),
        ("sft", {"distributed_backend": "deepspeed"}, "distributed_backend"),
        ("osft", {"use_liger": True}, "use_liger"),
        ("lora_sft", {"use_liger_kernel": True}, "use_liger_kernel"),
        ("lora_sft", {"deepspeed": "/configs/ds.json"}, "deepspeed"),
    ],
)
def test_an_option_the_training_image_cannot_honour_is_refused_before_the_model_is_fetched(
    algorithm, option, field, tmp_path, capsys
):
    """liger-kernel and deepspeed are absent here: the step ends in one line naming the field (exit 2), before it
    fetches the model (the model URI here does not exist) and long before the backend would fail."""
    from kubetune.steps.train import train

    module = {"use_liger": "liger_kernel", "use_liger_kernel": "liger_kernel"}.get(field, "deepspeed")
    if __import__("importlib.util").util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here: nothing to refuse")
    document = {**{"sft": SFT, "osft": OSFT, "lora_sft": {"algorithm": "lora_sft"}}[algorithm], **option}
    spec = validate_spec(document, require_paths=False)  # validation accepts it: it cannot know the training image
    err = one_line_exit_2(lambda: train(spec, str(tmp_path / "no-model"), tmp_path / "train", tmp_path / "out"), capsys)
    assert f"- {field}: needs" in err and "not installed" in err and "no-model" not in err, err
    assert err.count("\n") == 1  # the title and the one problem


def test_an_option_that_needs_cuda_is_refused_without_it(monkeypatch):
    """The package present but no CUDA GPU (liger's kernels and deepspeed are GPU-only): refused by name too."""
    osft = get_backend("osft").needs
    monkeypatch.setitem(osft, "use_liger", needs.Need(bool, "json", "liger-kernel", True))  # an installed module
    monkeypatch.setattr(needs, "cuda_available", lambda: False)
    [problem] = needs.environment_problems(osft, {"use_liger": True})
    assert problem.where == "use_liger" and "CUDA" in problem.message
    assert needs.environment_problems(osft, {"use_liger": False}) == []
    monkeypatch.setattr(needs, "cuda_available", lambda: True)
    assert needs.environment_problems(osft, {"use_liger": True}) == []


def test_lora_backend_peft_and_trl_never_use_unsloth(monkeypatch):
    """``peft`` and ``trl`` name the PEFT + TRL path even where Unsloth is usable; ``unsloth`` (Training Hub's only
    lora_sft backend) uses it there."""
    from kubetune.backends import lora

    monkeypatch.setattr(lora, "unsloth_usable", lambda: True)  # what a CUDA machine with Unsloth answers
    chosen = {}
    for name in ("unsloth", "peft", "trl"):
        spec = validate_spec({"algorithm": "lora_sft", "backend": name}, require_paths=False)
        chosen[name] = lora.uses_unsloth(spec)
    assert chosen == {"unsloth": True, "peft": False, "trl": False}


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
