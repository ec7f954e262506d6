"""A SIGKILL in the middle of a save (a node lost, an OOM kill) never breaks the next run: the training step sets the
half-written save aside (``incomplete/``, nothing deleted), resumes from the newest complete full state or starts
afresh, and evaluation/export never see a half-written model. And a run stopped by SIGTERM before its first model
save ends the step with one line saying where its full state is.

Real kills, not mocks: ``KILL_HOOK`` counts the backend's own file writes under a save folder (``torch.save``,
safetensors, DCP's shard and ``.metadata`` writes) and at the k-th one writes it whole or half, then SIGKILLs its
process (and, in a step, the step's whole process group). The backends' real save functions are killed at every
file of their save (one process, forked per kill point); then one real step per backend is killed during a real
SIGTERM save and started again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubetune.checkpoints import accelerate_state_problem, full_state_problem, hf_save_problem, set_aside_incomplete
from kubetune.steps.validate import validate_to_artifact

KILL_HOOK = r'''
"""Kills its own process (and the group KILL_GROUP) at the KILL_AT-th file write under KILL_UNDER."""
import io
import os
import signal
import sys
from pathlib import Path

COUNT = [0]


def install(under, at, mode, group=None, log=None):
    import safetensors.torch as st
    import torch
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    def kill(what):
        if log:
            Path(log).write_text(what)
        if group:
            os.killpg(group, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def counted(path):
        if under not in str(path):
            return False
        COUNT[0] += 1
        return COUNT[0] == at

    def half(path, data):
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())

    real_save, real_file = torch.save, st.save_file

    def save(obj, f, *args, **kwargs):
        if not (isinstance(f, (str, os.PathLike)) and counted(f)):
            return real_save(obj, f, *args, **kwargs)
        if mode == "half":
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            half(f, buffer.getvalue())
        else:
            real_save(obj, f, *args, **kwargs)
        kill(f"{mode} {Path(f).name}")

    def save_file(tensors, filename, metadata=None):
        if not counted(filename):
            return real_file(tensors, filename, metadata=metadata)
        if mode == "half":
            half(filename, st.save(tensors, metadata=metadata))
        else:
            real_file(tensors, filename, metadata=metadata)
        kill(f"{mode} {Path(filename).name}")

    def dcp(real, pattern):
        def write(self, *args, **kwargs):
            if not counted(self.path):
                return real(self, *args, **kwargs)
            found = real(self, *args, **kwargs)
            if hasattr(found, "wait"):
                found.wait()
            for path in Path(self.path).glob(pattern):
                if mode == "half":
                    half(path, path.read_bytes())
            kill(f"{mode} distributed/{pattern}")
        return write

    torch.save, st.save_file = save, save_file
    for module in list(sys.modules.values()):  # modules that bound safetensors' save_file when imported (accelerate)
        for name in ("save_file", "safe_save_file"):
            if getattr(module, name, None) is real_file:
                setattr(module, name, save_file)
    FileSystemWriter.write_data = dcp(FileSystemWriter.write_data, "*.distcp")
    FileSystemWriter.finish = dcp(FileSystemWriter.finish, ".metadata")


def from_env():
    """In a torchrun worker of a step started with KILL_AT set; the kill takes torchrun's process group (the step's)."""
    if os.environ.get("LOCAL_RANK") is not None and os.environ.get("KILL_AT"):
        group = os.getpgid(os.getppid())
        install(os.environ["KILL_UNDER"], int(os.environ["KILL_AT"]), os.environ["KILL_MODE"], group, os.environ["KILL_LOG"])
'''

# The backends' own save and load functions on the tiny model. A complete save first; then, forked once per kill
# point, a child saves the next state into a copy of that output and is killed at its k-th file (or finishes).
# Then each output is loaded by the backend's own resume code as it was (a copy) and after the step's set-aside.
SAVES = r"""
import json, os, shutil, sys
from pathlib import Path
from types import SimpleNamespace
import killhook
import torch
from transformers import AutoModelForCausalLM
from kubetune.checkpoints import set_aside_incomplete

kind, root, model_path, points = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_path)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def step():
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step(), sched.step(), opt.zero_grad()


if kind == "sft":
    from accelerate import Accelerator
    from instructlab.training.utils import load_latest_full_state, save_full_state
    accelerator = Accelerator(cpu=True)
    model, opt, sched = accelerator.prepare(model, opt, sched)

    def save(out, n):
        args = SimpleNamespace(output_dir=str(out), distributed_training_framework="none")
        save_full_state(args, accelerator, False, n, 8 * (n + 1), global_step=n + 1)

    def load(out):  # what instructlab-training 0.16.2 does when it starts
        args = SimpleNamespace(output_dir=str(out))
        load_latest_full_state(args, accelerator)
        return {"samples_seen": args.samples_seen} if "samples_seen" in vars(args) else {}
elif kind == "hf":
    import torch.distributed as dist
    from mini_trainer.train import save_model
    from kubetune.backends.torchrun import complete_models, final_model
    os.environ.update(RANK="0", LOCAL_WORLD_SIZE="1")  # one process as torchrun would start it; no process group
    dist.get_rank, dist.barrier = (lambda *a, **k: 0), (lambda *a, **k: None)  # (a group would not survive a fork)

    def save(out, n):  # mini-trainer's HF save: the weights, config.json, then the tokenizer
        save_model(model, 8.0 * n, str(out), model_path)  # samples_N.0, as mini-trainer counts

    def load(out):  # the model the training step reports as final (evaluation and export start from it)
        found = final_model(complete_models(out))
        return {"final": found.name} if found else {}
else:
    import torch.distributed.checkpoint as dcp
    from mini_trainer.full_state_checkpoint import FullStateCheckpointer, find_latest_full_state_checkpoint
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    def save(out, n):
        saver = FullStateCheckpointer(str(out / "full_state_checkpoints"), 0, 1, trigger_path=str(out / "trigger"))
        loader = SimpleNamespace(sampler=SimpleNamespace(epoch=0))
        saver.save(model, opt, sched, {"step": n, "epoch": 0}, {}, loader, torch.device("cpu"))

    def load(out):  # mini-trainer's own choice of checkpoint (auto-detect), loaded as its train.py does
        latest = find_latest_full_state_checkpoint(out)
        if latest is None:
            return {}
        meta = FullStateCheckpointer.load_metadata(latest)
        dcp.load({"model": get_model_state_dict(model)}, checkpoint_id=str(Path(latest) / "distributed"))
        torch.load(Path(latest) / "optimizer_rank_0.pt", weights_only=False)
        FullStateCheckpointer.load_rng_states(latest, rank=0)
        return {"step": meta["step"]}


def loaded(out):
    try:
        return load(out)
    except Exception as error:
        return {"error": type(error).__name__}


step()
save(root / "complete", 1)
step()
report = {}
for name, (at, mode, n) in points.items():
    shutil.copytree(root / "complete", root / name)
    pid = os.fork()
    if pid == 0:
        killhook.install(str(root / name), at, mode, log=str(root / f"killed-at-{name}"))
        save(root / name, n)
        os._exit(0)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    shutil.copytree(root / name, root / (name + "-as-killed"))
    lines = []
    before = loaded(root / (name + "-as-killed"))
    set_aside_incomplete(root / name, say=lines.append)
    report[name] = {"exit": code, "before": before, "after": loaded(root / name), "lines": lines}
print("REPORT " + json.dumps(report), flush=True)
"""


def tools(root: Path) -> Path:
    """A folder with the kill hook and a ``sitecustomize`` that installs it in a step's torchrun workers."""
    folder = root / "hook"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "killhook.py").write_text(KILL_HOOK)
    (folder / "sitecustomize.py").write_text("import killhook\nkillhook.from_env()\n")
    return folder


def python(script: str, *args: str, hook: Path, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


SFT_POINTS = {  # name: (k-th file of the save, written half or whole, epoch saved); the complete save is epoch_1
    **{f"file{k}-half": (k, "half", 2) for k in range(1, 6)},  # model, optimizer, scheduler, RNG, training_metadata.json
    "file4-whole": (4, "whole", 2),  # accelerate's files all written, training_metadata.json not yet
    "again-file2-whole": (2, "whole", 1),  # epoch_1 saved again (an on-demand save, then the epoch end): a mix of two
    "finished": (99, "half", 2),
}
OSFT_POINTS = {  # the complete save is step_1
    "file1-half": (1, "half", 2),  # distributed/*.distcp
    "file1-whole": (1, "whole", 2),
    "file2-half": (2, "half", 2),  # distributed/.metadata
    "file2-whole": (2, "whole", 2),
    "file3-half": (3, "half", 2),  # optimizer_rank_0.pt
    "file4-whole": (4, "whole", 2),  # rng_state_rank_0.pt (config.json comes next)
    "file5-half": (5, "half", 2),  # training_state.pt
    "again-file3-whole": (3, "whole", 1),
    "finished": (99, "half", 2),
}

HF_POINTS = {  # mini-trainer's hf_format/samples_N.0 saves; the complete one is samples_8.0
    "file1-half": (1, "half", 2),  # model.safetensors
    "file1-whole": (1, "whole", 2),  # the weights whole, config.json and the tokenizer not yet
    "again-file1-half": (1, "half", 1),
    "finished": (99, "half", 2),
}


@pytest.mark.slow  # no training, but the backends' imports: about 10 s a kind
@pytest.mark.parametrize(
    "kind, points, folder, complete, crashed",
    [
        ("sft", SFT_POINTS, "full_state", {"samples_seen": 16}, {n for n in SFT_POINTS if n.startswith("file")}),
        ("osft", OSFT_POINTS, "full_state_checkpoints", {"step": 1}, {"file5-half"}),
        ("hf", HF_POINTS, "hf_format", {"final": "samples_8.0"}, set()),
    ],
)
def test_a_sigkill_at_any_file_of_a_save_is_set_aside_and_the_newest_complete_save_is_taken(
    tmp_path, tiny_model, kind, points, folder, complete, crashed
):
    """Full states (instructlab-training, mini-trainer) and mini-trainer's HF models, killed at each file. After the
    step's set-aside, the backend's own resume loads the newest complete full state (or nothing: it starts afresh)
    and the step's final model is the newest complete one. ``crashed``: the kill points where the backend's own
    resume fails on the output as the kill left it (at the others it loads an older save, or silently a mix of two)."""
    pytest.importorskip("instructlab.training" if kind == "sft" else "mini_trainer", reason="the backend's extra")
    check = {"sft": accelerate_state_problem, "osft": full_state_problem, "hf": hf_save_problem}[kind]
    out = python(SAVES, kind, str(tmp_path), str(tiny_model), json.dumps(points), hook=tools(tmp_path), cwd=tmp_path)
    report = json.loads(out.split("REPORT ", 1)[1])
    assert {n for n, r in report.items() if "error" in r["before"]} == crashed
    states = sorted((tmp_path / "complete" / folder).iterdir())
    assert len(states) == 1 and check(states[0]) is None
    finished = report.pop("finished")
    assert finished["exit"] == 0 and finished["lines"] == [] and finished["after"] not in ({}, complete)
    for name, (_, mode, n) in points.items():
        if name == "finished":
            continue
        found, save = report[name], f"{folder}/" + {"sft": f"epoch_{n}", "osft": f"step_{n}", "hf": f"samples_{8 * n}.0"}[kind]
        assert found["exit"] == -signal.SIGKILL and (tmp_path / f"killed-at-{name}").read_text().startswith(mode), name
        assert check(tmp_path / f"{name}-as-killed" / save) is not None, name  # the checker sees what the kill left
        assert found["after"] == ({} if name.startswith("again") else complete), name  # never the half-written save
        assert len(found["lines"]) == 1 and said_set_aside(found["lines"][0], save, tmp_path / name), name
        assert (tmp_path / name / "incomplete" / save).is_dir() and not (tmp_path / name / save).exists()


def said_set_aside(line: str, save: str, output: Path) -> bool:
    """``line`` is the one line the step says for a save it sets aside."""
    head, tail = f"[kubetune] set aside incomplete {save} (", f"); moved to {output / 'incomplete' / save}"
    return line.startswith(head) and line.endswith(tail)


# ---- real steps: the training step's component in a process group of its own, SIGKILLed during a real save ----

STEP = """
import json, sys
from types import SimpleNamespace as Artifact
from kubetune.components.train.component import train_model
kwargs, model, data, val, out = sys.argv[1:6]
trained = Artifact(path=out, metadata={})
train_model.python_func(kwargs_artifact=Artifact(path=kwargs), train_data=Artifact(path=data), model_uri=model,
                        validation_data=Artifact(path=val), trained_model=trained, metrics=Artifact(log_metric=print))
print("RESULT " + json.dumps(trained.metadata), flush=True)
"""
SFT = {"algorithm": "sft", "effective_batch_size": 8, "max_tokens_per_gpu": 1024, "max_seq_len": 512, "learning_rate": 1e-3,
       "num_epochs": 1, "save_samples": 16}  # fmt: skip
OSFT = {"algorithm": "osft", "effective_batch_size": 8, "max_tokens_per_gpu": 2048, "max_seq_len": 512, "learning_rate": 1e-3,
        "unfreeze_rank_ratio": 0.5, "training_mode": "step", "max_steps": 4}  # fmt: skip
ROWS = {"sft": "training_params_and_metrics_global0.jsonl", "osft": "training_metrics_0.jsonl"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model) -> SimpleNamespace:
    """The embedded sample chat prepared by our data step; the steps train on its first 24 records (3 steps)."""
    from kubetune.steps.prepare import prepare

    root = tmp_path_factory.mktemp("kills-data")
    prepare("kubetune://sample-chat", str(tiny_model), root / "train", root / "val", num_proc=1)
    (root / "small").mkdir()
    lines = (root / "train" / "data.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "small" / "data.jsonl").write_text("".join(lines[:24]), encoding="utf-8")
    return SimpleNamespace(model=str(tiny_model), train=root / "small", val=root / "val", hook=tools(root))


class Step:
    """One run of the training step, in a process group of its own (as a pod); ``kill``: where its worker SIGKILLs
    the group (``under``, ``at``, ``mode`` as in ``KILL_HOOK``)."""

    def __init__(self, out: Path, spec: dict, data: SimpleNamespace, kill: tuple[str, int, str] | None = None):
        self.out, self.log = out, out.parent / f"{out.name}.log"
        validate_to_artifact(spec["algorithm"], spec, out.parent / f"{out.name}.json")  # the validation step's artifact
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(data.hook), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("KUBETUNE_LOCAL_WORKSPACE", None)
        self.killed_at = out.parent / f"{out.name}.killed-at"
        if kill:
            env.update(
                KILL_UNDER=str(out / "checkpoints" / kill[0]),
                KILL_AT=str(kill[1]),
                KILL_MODE=kill[2],
                KILL_LOG=str(self.killed_at),
            )
        self.start = len(self.log.read_text()) if self.log.exists() else 0
        args = [str(out.parent / f"{out.name}.json"), data.model, str(data.train), str(data.val), str(out)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", STEP, *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def rows(self, name: str) -> list[dict]:
        path = self.out / "checkpoints" / name
        found = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
        return [r for r in found if "avg_loss" in r or "step" in r and "loss" in r]

    def wait_for(self, condition, what: str) -> None:
        """Until ``condition()``; fails with the log when the step ends first (the deadline only bounds a hang)."""
        deadline = time.monotonic() + 300
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: the step {'ended' if self.process.poll() is not None else 'hung'}\n{self.text()[-3000:]}"
                )
            time.sleep(0.05)

    def end(self) -> int:
        try:
            return self.process.wait(timeout=300)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def text(self) -> str:
        return self.log.read_text()[self.start :]

    def result(self) -> dict:
        found = [line for line in self.text().splitlines() if line.startswith("RESULT ")]
        assert found, self.text()[-3000:]
        return json.loads(found[-1].removeprefix("RESULT "))


def evaluated(out: Path, data: SimpleNamespace) -> list[str]:
    """The checkpoints our evaluation step takes from the step's output (it refuses any it skips)."""
    from kubetune.steps.evaluate import evaluate

    skipped: list = []
    points = evaluate(out / "checkpoints", data.val, skipped=skipped)
    assert skipped == []
    return [p.checkpoint for p in points]


@pytest.mark.slow
def test_sft_killed_during_its_sigterm_save_starts_afresh_not_from_the_half_written_state(tmp_path, data):
    """SIGTERM after the first step: instructlab-training saves full_state/epoch_0, killed (SIGKILL, the whole step)
    with optimizer.bin half written. The same step again sets it aside and trains from the start to the end; the
    unpatched backend would load the half-written state and fail."""
    pytest.importorskip("instructlab.training", reason="instructlab-training is the `sft` extra")
    out = tmp_path / "sft"
    killed = Step(out, SFT, data, kill=("full_state", 2, "half"))
    killed.wait_for(lambda: killed.rows(ROWS["sft"]), "the first training step")
    killed.process.send_signal(signal.SIGTERM)
    assert killed.end() == -signal.SIGKILL, killed.text()[-3000:]
    assert killed.killed_at.read_text() == "half optimizer.bin"
    state = out / "checkpoints" / "full_state" / "epoch_0"
    assert accelerate_state_problem(state) == (
        "training_metadata.json is missing (instructlab-training writes it last: the save did not finish)"
    )

    again = Step(out, SFT, data)
    assert again.end() == 0, again.text()[-3000:]
    log = again.text()
    assert (
        [line for line in log.splitlines() if "set aside" in line]
        == [line for line in log.splitlines() if said_set_aside(line, "full_state/epoch_0", out / "checkpoints")]
        != []
    )
    assert "Loading state from" not in log and again.result()["resumed_from"] == ""  # started afresh
    assert (out / "checkpoints" / "incomplete" / "full_state" / "epoch_0" / "model.safetensors").is_file()  # kept
    assert accelerate_state_problem(state) is None  # this run's own epoch-end save, complete
    saved = [c.removeprefix("checkpoints/") for c in again.result()["checkpoints"]]
    assert saved[-1] == "hf_format/samples_24" and evaluated(out, data) == saved


@pytest.mark.slow
def test_osft_stopped_before_its_first_save_says_so_then_a_kill_mid_save_resumes_from_the_complete_state(tmp_path, data):
    """Three runs of the same step: SIGTERM after the first step (a full state, no model yet: the step ends with one
    line saying so); the step again resumes, and is SIGKILLed while its next SIGTERM save writes optimizer_rank_0.pt;
    the step again sets that save aside, resumes from the first one and trains to the end."""
    pytest.importorskip("mini_trainer", reason="mini-trainer is the `osft` extra")
    out = tmp_path / "osft"
    states = out / "checkpoints" / "full_state_checkpoints"

    stopped = Step(out, OSFT, data)
    stopped.wait_for(lambda: stopped.rows(ROWS["osft"]), "the first training step")
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.end() == 2, stopped.text()[-3000:]
    (first,) = [p for p in states.iterdir()]
    assert full_state_problem(first) is None
    tail = stopped.text().strip().splitlines()[-2:]
    assert tail == [
        "no trained model: 1 problem(s)",
        f"  - training: was stopped before its first model save; its full state is saved in {first} "
        "(run the step again on this output to resume from it; a pipeline step keeps it only with workspace_dir)",
    ]
    assert "Traceback" not in stopped.text()

    steps = len(stopped.rows(ROWS["osft"]))
    killed = Step(out, OSFT, data, kill=("full_state_checkpoints", 3, "half"))
    killed.wait_for(lambda: len(killed.rows(ROWS["osft"])) > steps, "a step after the resume")
    killed.process.send_signal(signal.SIGTERM)
    assert killed.end() == -signal.SIGKILL, killed.text()[-3000:]
    assert killed.killed_at.read_text() == "half optimizer_rank_0.pt"
    (second,) = [p for p in states.iterdir() if p != first]
    assert full_state_problem(second) == "training_state.pt is missing (mini-trainer writes it last: the save did not finish)"

    again = Step(out, OSFT, data)
    assert again.end() == 0, again.text()[-3000:]
    log = again.text()
    lines = [line for line in log.splitlines() if "set aside" in line]
    assert len(lines) == 1 and said_set_aside(lines[0], f"full_state_checkpoints/{second.name}", out / "checkpoints")
    assert again.result()["resumed_from"] == f"full_state_checkpoints/{first.name}"
    assert f"Resuming from full-state checkpoint: {first}" in log
    assert (out / "checkpoints" / "incomplete" / "full_state_checkpoints" / second.name / "optimizer_rank_0.pt").is_file()
    assert evaluated(out, data) == [again.result()["final_model"].removeprefix("checkpoints/")]


def _zip(path: Path, newer_than: Path | None = None) -> None:
    """A whole ``torch.save``-like file (a zip); ``newer_than``: its mtime after that file's."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"x")
    if newer_than is not None:
        stamp = newer_than.stat().st_mtime_ns + 1_000_000
        os.utime(path, ns=(stamp, stamp))


def _weights(path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(path))


def _accelerate_state(folder: Path) -> None:
    _weights(folder / "model.safetensors")
    for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "training_metadata.json"):
        _zip(folder / name)


def test_the_step_sets_aside_each_incomplete_save_of_a_torchrun_backend_and_keeps_the_complete_ones(tmp_path):
    states, hf = tmp_path / "full_state", tmp_path / "hf_format"
    _accelerate_state(states / "epoch_0")
    _accelerate_state(states / "epoch_1")
    (states / "epoch_1" / "training_metadata.json").unlink()
    _accelerate_state(states / "epoch_2")  # saved again, stopped after the model: a mix of two saves
    _zip(states / "epoch_2" / "optimizer.bin", newer_than=states / "epoch_2" / "training_metadata.json")
    _weights(hf / "samples_8" / "model.safetensors")  # mini-trainer's order: weights, config.json, tokenizer (not yet)
    (hf / "samples_8" / "config.json").write_text("{}")
    lines: list[str] = []
    moved = set_aside_incomplete(tmp_path, say=lines.append)
    assert [p.relative_to(tmp_path).as_posix() for p in moved] == [
        "incomplete/full_state/epoch_1",
        "incomplete/full_state/epoch_2",
        "incomplete/hf_format/samples_8",
    ]
    assert lines == [
        "[kubetune] set aside incomplete full_state/epoch_1 (training_metadata.json is missing (instructlab-training "
        f"writes it last: the save did not finish)); moved to {tmp_path / 'incomplete/full_state/epoch_1'}",
        "[kubetune] set aside incomplete full_state/epoch_2 (optimizer.bin is newer than training_metadata.json "
        f"(a second save into this folder did not finish)); moved to {tmp_path / 'incomplete/full_state/epoch_2'}",
        "[kubetune] set aside incomplete hf_format/samples_8 (tokenizer_config.json is missing); "
        f"moved to {tmp_path / 'incomplete/hf_format/samples_8'}",
    ]
    assert sorted(p.name for p in states.iterdir()) == ["epoch_0"] and accelerate_state_problem(states / "epoch_0") is None
    assert set_aside_incomplete(tmp_path, say=lines.append) == [] and len(lines) == 3  # the second time: nothing to do
