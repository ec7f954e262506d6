"""``kubetune run-local`` killed: a SIGKILLed run-local stops its pipeline (nothing of the run left running, the
run marked interrupted, the folder's lock free) and resumes from its last complete checkpoint; a run in progress
holds its folder against another run-local; a run that does not stop is killed whole, in whatever session."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.checkpoints import resume_checkpoint
from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.runs.processes import kill_tree, process_table, process_tree, start_time


def _until(condition, seconds: float = 240) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _lock_free(folder: Path) -> bool:
    fd = os.open(folder / "run.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _running(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` (pid -> start time) still running, and their descendants."""
    return process_tree(process_table(), processes)


@pytest.mark.slow
def test_a_sigkilled_run_local_stops_its_pipeline_frees_its_folder_and_resumes_from_the_last_checkpoint(tmp_path):
    (tmp_path / "chat.jsonl").write_text("".join(SAMPLE_DATA.read_text(encoding="utf-8").splitlines(True)[:48]))
    kwargs = {"num_epochs": 1, "learning_rate": 0.005, "effective_batch_size": 4, "max_seq_len": 128, "save_steps": 2,
              "logging_steps": 2}  # fmt: skip
    (tmp_path / "kwargs.json").write_text(json.dumps(kwargs))
    folder = tmp_path / "run"
    cli = [sys.executable, "-m", "kubetune.cli", "run-local", "-o", str(folder)]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([*cli, "--data", "chat.jsonl", "--kwargs", "kwargs.json"], stdout=log, stderr=log,
                                 cwd=tmp_path, start_new_session=True)  # fmt: skip
    assert _until(lambda: any(folder.glob("workspace/*/checkpoints/checkpoint-2/trainer_state.json")) or first.poll() is not None)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]

    refused = subprocess.run([*cli, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [
        "cannot run: 1 problem(s)",
        f"  - -o {folder}: is in use by kubetune run-local (pid {first.pid})",
    ]

    run = process_tree(process_table(), {first.pid: start_time(first.pid)})
    assert len(run) >= 3  # run-local, its pipeline process (another session) and the training step
    os.killpg(first.pid, signal.SIGKILL)  # run-local's own session; its pipeline runs in another
    first.wait()
    assert _until(lambda: _lock_free(folder), 60), (tmp_path / "first.log").read_text()[-3000:]
    assert _until(lambda: not _running(run), 10), _running(run)  # nothing of the run runs on
    record = json.loads((folder / "run.json").read_text())
    assert record["state"] == "interrupted" and record["pid"] is None
    (workspace,) = folder.glob("workspace/*/checkpoints")
    saved = resume_checkpoint(workspace, own=False)
    assert saved is not None

    second = subprocess.Popen(  # --verbose: the steps' own lines as they are printed
        [*cli, "--resume", "--verbose"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    log = []
    for line in second.stdout:
        log.append(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if "[kubetune] resuming from" in log[-1]:
            break
    second.send_signal(signal.SIGINT)  # resumed as it should: evaluation and export are other tests' business
    log += second.stdout.readlines()
    second.wait(timeout=120)
    (tmp_path / "resume.log").write_text("".join(log))
    assert any(line.rstrip().endswith(f"[kubetune] resuming from {saved.name}") for line in log), "".join(log)[-3000:]
    assert second.returncode in (0, 130) and "Traceback" not in "".join(log), "".join(log)[-3000:]


HOLD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(300)"
MIDDLE = f"""import subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", {HOLD!r}], start_new_session=True, stdout=subprocess.PIPE)
g.stdout.readline(); print(g.pid, flush=True); time.sleep(300)"""
ROOT = f"""import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c", {HOLD!r}], start_new_session=True, stdout=subprocess.PIPE)
m = subprocess.Popen([sys.executable, "-c", {MIDDLE!r}], stdout=subprocess.PIPE)
g.stdout.readline(); print(g.pid, m.pid, m.stdout.readline().decode().strip(), flush=True); time.sleep(300)"""


def test_a_run_that_does_not_stop_is_killed_whole_in_every_session_orphans_included():
    """What run-local kills when its grace period ends or a second signal comes: the run's processes seen so far
    and their descendants, those that ignore SIGTERM, sit in sessions of their own or lost their parent."""
    root = subprocess.Popen([sys.executable, "-c", ROOT], stdout=subprocess.PIPE, text=True)
    session_child, middle, orphan = (int(p) for p in root.stdout.readline().split())
    seen = process_tree(process_table(), {root.pid: start_time(root.pid)})
    assert {root.pid, session_child, middle, orphan} <= set(seen)
    assert os.getsid(session_child) != os.getsid(root.pid) and os.getsid(orphan) != os.getsid(root.pid)
    os.kill(middle, signal.SIGKILL)  # the orphan's parent dies: it is no longer a descendant of the root
    assert _until(lambda: orphan not in process_tree(process_table(), {root.pid: seen[root.pid]}), 10)
    assert kill_tree(seen) == 3  # root, session_child, orphan (middle is gone)
    root.wait(timeout=10)
    assert _until(lambda: not _running(seen), 10), _running(seen)


def test_run_local_waits_for_a_stopping_run_no_longer_than_its_grace_period_then_kills_all_of_it(tmp_path, monkeypatch):
    """The grace period (1 s here) starts at the signal, not when the pipeline process ends; the run's step is
    stopped (SIGSTOP) first, so it hangs as a stuck step would."""
    import threading

    from kubetune.runs import supervise
    from kubetune.runs.local_options import check_options
    from kubetune.runs.run_folder import new_record

    monkeypatch.setattr(supervise, "GRACE_S", 1.0)
    folder = tmp_path / "run"
    folder.mkdir()
    record = new_record(check_options("lora_sft", "best", None, None, "", False, folder))
    me = {os.getpid(): start_time(os.getpid())}
    before = set(process_tree(process_table(), me))  # leftovers of earlier tests (this process may be a subreaper)
    run: dict[int, str] = {}
    returned = threading.Event()  # supervise returned (the run failed early too): no process may be stopped or signalled after

    def signal_it() -> None:
        _until(lambda: returned.is_set() or any((folder / "kfp-root").glob("*/validate-kwargs")), 120)
        stopped: set[int] = set()
        for _ in range(240):  # the steps hang: stop every process below the pipeline's, again until no new one starts
            if returned.is_set():
                return
            table = process_table()
            tree = {p: t for p, t in process_tree(table, me).items() if p not in me and p not in before}
            steps = {p for p in tree if table[p][0] != os.getpid()}
            if steps and steps <= stopped:
                run.update(tree)  # what is left to kill: the pipeline's process and its stopped steps
                break
            for pid in steps - stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            stopped |= steps
            time.sleep(0.5)
        if not returned.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_it, daemon=True).start()
    lines: list[str] = []
    try:
        code, record = supervise.supervise(folder, record, say=lines.append)
    finally:
        returned.set()
    assert code == 143 and record["state"] == "interrupted" and _lock_free(folder)
    assert len(run) >= 2  # the pipeline process and its step
    said = re.fullmatch(r"kubetune run-local: the run did not stop within 1 s: killed the run's (\d+) processes", lines[-1])
    assert said and 2 <= int(said[1]) <= len(run), lines[-1]  # one of those seen may have been exiting already
    assert _until(lambda: not _running(run), 10), _running(run)
