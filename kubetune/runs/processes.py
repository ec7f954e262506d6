"""The processes of a run: found through /proc, stopped as a pod is (SIGTERM), killed whole (SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # Linux prctl(2) options


def prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False elsewhere or where it fails."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0


def process_table() -> dict[int, tuple[int, str]]:
    """The running processes (zombies do not count): pid -> (parent pid, start time); empty without /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                table[int(stat.parent.name)] = (int(fields[1]), fields[19])
        except (OSError, IndexError, ValueError):
            continue
    return table


def start_time(pid: int) -> str:
    """The process's start time ("" when it is gone): with its pid, it names one process, never a later one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tree(table: dict[int, tuple[int, str]], roots: dict[int, str]) -> dict[int, str]:
    """The roots still running (same pid and start time) and all their descendants: pid -> start time."""
    tree = {pid: start for pid, start in roots.items() if pid in table and table[pid][1] == start}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    todo = list(tree)
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in tree:
                tree[pid] = table[pid][1]
                todo.append(pid)
    return tree


def kill_tree(roots: dict[int, str]) -> int:
    """SIGKILL the roots and every process descending from them, in whatever session: all are stopped first
    (SIGSTOP: none starts another or loses its parent meanwhile), then killed. Returns how many."""
    stopped: dict[int, str] = {}
    while new := {
        p: t for p, t in process_tree(process_table(), {**roots, **stopped}).items() if p not in stopped and p != os.getpid()
    }:
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        stopped.update(new)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(stopped)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def terminate(pgid: int, skip: int | None = None) -> None:
    """SIGTERM to the run as a pod gets it: to each process of the group but torchrun and what it started (and
    ``skip``). The backend that started torchrun catches the signal and has its workers save and stop; a SIGTERM
    of their own kills instructlab-training's workers (no handler there) and their data-loader workers before any save."""
    members = _members(pgid)
    if members is None:
        _killpg(pgid, signal.SIGTERM)
        return

    def launched_by_torchrun(pid: int) -> bool:
        while pid in members:
            parent, argv = members[pid]
            if any(Path(a).name == "torchrun" for a in argv[:2]) or "torch.distributed.run" in argv[:3]:
                return True
            pid = parent
        return False

    for pid in [p for p in members if p != skip and not launched_by_torchrun(p)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


def _members(pgid: int) -> dict[int, tuple[int, list[str]]] | None:
    """The running processes of the group ``pgid`` (zombies waiting to be reaped do not count): pid -> (parent
    pid, first words of the command line); None where there is no /proc to read."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")[:3]
                members[int(stat.parent.name)] = (int(fields[1]), [a.decode(errors="replace") for a in argv])
        except (OSError, IndexError, ValueError):
            continue
    return members
