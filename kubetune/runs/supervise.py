"""``kubetune run-local``'s watch over its run: the pipeline runs in a child process (``kubetune.runs.local``)
that a signal stops as a pod is stopped, and that is killed whole when it does not stop in time. Its output (kfp.local's
and every step's) is appended to the run folder's ``run.log`` (redacted, readable by its user only), and handed to
``show`` as it grows."""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune.errors import INPUT, KubetuneError, Problem
from kubetune.runs.processes import kill_tree, process_table, process_tree, start_time, terminate
from kubetune.runs.run_folder import lock, read_record, write_record

GRACE_S = 120.0  # after the first SIGINT/SIGTERM: time for the training step to save its checkpoint
LOG = "run.log"  # in the run folder: the output of every attempt, appended
POLL_S = 0.2  # how often the log is read for ``show``


def supervise(
    folder: Path, record: dict[str, Any], say=print, show: Callable[[str], None] | None = None
) -> tuple[int, dict[str, Any]]:
    """Run the record's pipeline in a child process group (its own session, so a terminal's Ctrl-C reaches
    only this process); on SIGINT or SIGTERM send the run SIGTERM (``terminate``: the training step saves a
    checkpoint and stops, the other steps end, no further step starts), wait for it at most ``GRACE_S``, then
    kill every process the run started (in any session), and mark the run ``interrupted``; a second signal
    kills them at once. The run folder's lock (``run.lock``) is held by this process and the child, so no other
    run-local writes into the folder while either lives; the child stops (and marks the run ``interrupted``)
    when this process dies. The run's output goes to ``run.log`` (``LOG``); ``show`` is given it as it is written.
    Returns the exit code (0; 2: a step refused its input; 1: a step failed otherwise; 130/143: interrupted)
    and the record."""
    fd = lock(folder)
    try:
        on_disk = read_record(folder)  # as check_folder saw it, unless another run-local used the folder meanwhile
        resumed = on_disk is not None and on_disk.get("run_id") == record.get("run_id")
        if on_disk and (on_disk.get("updated") != record.get("updated") if resumed else on_disk.get("state") != "finished"):
            raise KubetuneError([Problem(f"-o {folder}", "changed while this run-local started; run it again")], "cannot run")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return _supervise(folder, record, fd, say, show)
    finally:
        os.close(fd)


def _supervise(folder: Path, record: dict[str, Any], fd: int, say, show) -> tuple[int, dict[str, Any]]:
    record = write_record(folder, record, state="running", pid=os.getpid(), host=socket.gethostname())
    command = [sys.executable, "-m", "kubetune.runs.local", str(folder), str(os.getpid())]
    with os.fdopen(os.open(folder / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:  # only its user reads it
        log.write(f"==== kubetune run-local: run {record['run_id']}, attempt of {record['updated']} ====\n".encode())
        log.flush()
        start = log.tell()
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line in the log as it is printed
        child = subprocess.Popen(
            command, start_new_session=True, pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT, env=environment
        )
    tail = _Tail(folder / LOG, start, show) if show else None
    received: list[int] = []
    deadline = [float("inf")]
    known: dict[int, str] = {}  # the run's processes seen so far: pid -> start time
    killed: list[int] = []

    def kill(why: str) -> None:
        killed.append(kill_tree({child.pid: start_time(child.pid), **known}))
        say(f"kubetune run-local: {why}: killed the run's {killed[-1]} processes")

    def stop(signum, frame):
        received.append(signum)
        if len(received) > 1:
            return kill(f"{signal.Signals(signum).name} received again")
        deadline[0] = time.monotonic() + GRACE_S
        terminate(child.pid)
        say(f"kubetune run-local: {signal.Signals(signum).name} received: stopping the run (send it again to kill it)")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while child.poll() is None and time.monotonic() < deadline[0]:
            known = process_tree(process_table(), {child.pid: start_time(child.pid), **known})
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
        if child.poll() is None:
            kill(f"the run did not stop within {GRACE_S:.0f} s")
        code = child.wait()
        if (code or received) and not killed and (left := kill_tree(known)):  # nothing of an unfinished run writes on
            say(f"kubetune run-local: killed {left} processes the run left behind")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tail:
            tail.stop()
    record = read_record(folder) or record
    if received:
        return 128 + received[0], write_record(folder, record, state="interrupted", pid=None)
    if code == 0 and record.get("state") == "finished":
        return 0, record
    return (2 if code == INPUT else 1), write_record(folder, record, state="failed", pid=None)


def redacted_output() -> None:
    """In the pipeline process: what it prints (kfp.local's lines, every step's output, a traceback) reaches
    ``run.log`` through the redaction the terminal's output gets: no credential is written there."""
    from kubetune.commands import _Redacting

    sys.stdout, sys.stderr = _Redacting(sys.stdout), _Redacting(sys.stderr)


class _Tail:
    """Hands ``show`` what is appended to ``path`` after ``offset``, every ``POLL_S`` seconds, from a thread of its own."""

    def __init__(self, path: Path, offset: int, show: Callable[[str], None]):
        self.file = path.open("rb")
        self.file.seek(offset)
        self.show = show
        self.decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kubetune-run-log", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.file:
            while not self.done.wait(POLL_S):
                self._read()
            self._read()  # what was written last

    def _read(self) -> None:
        if data := self.file.read():
            self.show(self.decode(data))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
