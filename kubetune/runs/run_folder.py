"""The run folder of ``kubetune run-local``: its record (``run.json``) and its lock (``run.lock``)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic

RECORD = "run.json"
LOCK = "run.lock"  # held (flock) by the run-local and its pipeline process while a run is in progress
KIND = "kubetune-run-local"
UNFINISHED = ("running", "interrupted", "failed")


def read_record(folder: Path) -> dict[str, Any] | None:
    """The run folder's record, None when there is none; a ``run.json`` that is not ours is an error."""
    path = folder / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise KubetuneError([Problem(str(path), "is not a kubetune run record; choose another folder (-o)")])
    return record


def write_record(folder: Path, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    record.update(changes, updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_text_atomic(folder / RECORD, json.dumps(record, indent=2))
    return record


def lock(folder: Path, create: bool = True) -> int | None:
    """An open descriptor holding the run folder's exclusive lock (the OS releases it when its holders die);
    None when there is no lock file (``create=False``). A lock held elsewhere is refused in one line."""
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise KubetuneError([Problem(f"-o {folder}", f"is in use by kubetune run-local (pid {holder})")], "cannot run") from None
    return fd


def check_folder(folder: Path, resume: bool, allow_nonempty: bool) -> dict[str, Any] | None:
    """The unfinished run to resume, or None for a new run; refuses a folder kubetune should not write into."""
    if folder.exists() and not folder.is_dir():
        raise KubetuneError([Problem(f"-o {folder}", "is a file, not a folder")], "cannot run")
    if folder.is_dir() and (fd := lock(folder, create=False)) is not None:
        os.close(fd)  # free now; ``supervise`` takes it for the run
    record = read_record(folder) if folder.is_dir() else None
    where = f"-o {folder}"
    if record is None:
        if resume:
            raise KubetuneError([Problem("--resume", f"{folder} holds no kubetune run to resume")], "cannot resume")
        foreign = sorted(p.name for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []
        if foreign and not allow_nonempty:
            listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            hint = "choose a new or empty folder, or pass --allow-nonempty: nothing in it is deleted or overwritten"
            raise KubetuneError([Problem(where, f"holds files kubetune did not write ({listed})", hint)], "cannot run")
        return None
    state = record.get("state")
    if state in UNFINISHED:
        if resume:
            return record
        hint = "pass --resume to continue it, or choose another folder"
        message = f"holds an unfinished run {record.get('run_id')} ({state}, last updated {record.get('updated')})"
        raise KubetuneError([Problem(where, message, hint)], "cannot run")
    if resume:
        raise KubetuneError([Problem("--resume", f"the run in {folder} finished; there is nothing to resume")], "cannot resume")
    return None


def new_record(arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": KIND,
        "run_id": time.strftime("run-%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}",
        "state": "running",
        "arguments": arguments,
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
