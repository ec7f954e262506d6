"""Run a pipeline on this machine with ``kfp.local`` (offline, CPU), in the current Python environment.

``kubetune run-local`` keeps each run in a run folder:

- ``run.lock``: locked (``flock``) by the run-local and its pipeline process while the run is in progress: another
  run-local refuses the folder, and the lock ends with its holders, however they end;
- ``run.json``: the run's record, written first (``state: running``) and updated last (``finished``, or
  ``interrupted``/``failed``): a folder whose record is not ``finished`` holds an unfinished run;
- ``kfp-root/``: kfp.local's outputs (a new folder per attempt);
- ``workspace/<run_id>/``: the training step's checkpoints, where a resumed run's training continues from
  the newest complete checkpoint;
- ``cache/<run_id>/``: kfp.local's cache of this run's validation, data preparation and evaluation, so a
  resumed run reuses the prepared data instead of preparing it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubetune.contract.spec import integral
from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic

RECORD = "run.json"
LOCK = "run.lock"  # held (flock) by the run-local and its pipeline process while a run is in progress
KIND = "kubetune-run-local"
WORKSPACE_ENV = "KUBETUNE_LOCAL_WORKSPACE"  # read by the training step: where its checkpoints live
UNFINISHED = ("running", "interrupted", "failed")
INPUT = 2  # a step's exit code for an input, environment or network failure (``kubetune.errors.reported``)


def run_local(output_dir: str | Path, run_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """Run ``finetune`` locally; returns where the exported model, kwargs artifact and loss curve are.

    ``run_id``: the run folder's run (``run.json``): its training checkpoints and its cache of validation,
    preparation and evaluation are kept under ``output_dir`` by that id, so running it again resumes it."""
    from kfp import local

    from kubetune.pipelines.finetune import finetune

    output_dir = Path(output_dir).resolve()
    cache = str(output_dir / "cache" / run_id) if run_id else None
    _stable_cache_keys()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output_dir / "kfp-root"),
        enable_caching=bool(run_id),
        cache_root=cache,
    )
    if run_id:
        os.environ[WORKSPACE_ENV] = str(output_dir / "workspace" / run_id)
    run = finetune(**with_embedded_kwargs(arguments))
    curve = json.loads(Path(run.outputs["loss_curve"].path).read_text())
    return {
        "exported_model": run.outputs["model"].path,
        "kwargs_artifact": run.outputs["kwargs"].path,
        "loss_curve": run.outputs["loss_curve"].path,
        "report": run.outputs["eval_report"].path,
        "best_checkpoint": curve["best"]["checkpoint"],
        "validation_loss": {p["checkpoint"]: p["loss"] for p in curve["points"]},
        "overfitting_after": (curve["overfitting"] or {}).get("checkpoint"),
        "skipped": curve.get("skipped", []),
    }


def with_embedded_kwargs(arguments: dict[str, Any]) -> dict[str, Any]:
    """The pipeline arguments with the algorithm's embedded kwargs where none are given (the pipeline's own
    default is lora_sft's); a run's record keeps only what was given, so a resume picks the same ones again."""
    from kubetune.pipelines.parameters import EMBEDDED

    algorithm = arguments.get("algorithm", "lora_sft")
    return {"training_kwargs": EMBEDDED[algorithm], **arguments}


def _stable_cache_keys() -> None:
    """Make kfp.local's cache find a finished step again, so a resumed run reuses its prepared data:

    - its key covers the inputs' metadata, where an artifact's ``1`` read fresh is ``1.0`` read back from the
      cache: integral floats become integers;
    - an entry whose artifact file is missing counts as a miss, and a Metrics artifact never has a file (its
      values are in the entry): a Metrics artifact is taken from the entry as it is."""
    from kfp.dsl import executor
    from kfp.local import cache

    original = cache.LocalCache._serialize_value_for_key
    if getattr(original, "kubetune", False):
        return
    load = cache.LocalCache._deserialize_artifact

    def serialize(value: Any) -> Any:
        return integral(original(value))

    def deserialize(data: dict[str, Any]) -> Any:
        if data.get("schema_title") != "system.Metrics":
            return load(data)
        fields = {"name": data.get("name", ""), "uri": data.get("uri", ""), "metadata": data.get("metadata") or {}}
        return executor.create_artifact_instance({**fields, "type": {"schemaTitle": "system.Metrics"}})

    serialize.kubetune = True  # type: ignore[attr-defined]
    cache.LocalCache._serialize_value_for_key = staticmethod(serialize)
    cache.LocalCache._deserialize_artifact = staticmethod(deserialize)


# ---------------------------------------------------------------- options, checked before anything runs

ALGORITHMS = ("lora_sft", "osft", "sft")
# the module each algorithm trains with, and kubetune's extra that installs it
BACKENDS = {"lora_sft": ("trl", "lora"), "osft": ("mini_trainer", "osft"), "sft": ("instructlab.training", "sft")}
CHECKPOINTS = ("best", "final")
URI_SCHEMES = ("s3", "hf", "kubetune")
OPTION = {  # pipeline argument -> the run-local option that sets it
    "algorithm": "--algorithm",
    "data_uri": "--data",
    "training_kwargs": "--kwargs",
    "export_destination": "--destination",
    "export_checkpoint": "--checkpoint",
    "export_overwrite": "--overwrite",
}


def backend_problem(algorithm: str) -> Problem | None:
    """The algorithm's training backend must be installed here (the training step would fail after data preparation)."""
    import importlib.util

    module, extra = BACKENDS[algorithm]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return None
    message = f"{algorithm} trains with {module}, which is not installed here"
    return Problem("--algorithm", message, f"pip install 'kubetune[{extra}]'")


def data_problem(data: str) -> Problem | None:
    """A local file or folder that exists and can be read, or an s3://, hf:// (or kubetune://) URI."""
    if "://" in data:
        scheme = data.split("://", 1)[0]
        if scheme in URI_SCHEMES:
            return None
        return Problem("--data", f"{data!r}: {scheme}:// is not a data source (a local path, s3:// or hf://)")
    path = Path(data)
    try:
        if path.is_dir():
            next(path.iterdir(), None)
        else:
            with path.open("rb") as f:
                f.read(1)
    except FileNotFoundError:
        return Problem("--data", f"{data}: no such file or folder")
    except OSError as error:
        return Problem("--data", f"{data}: cannot be read ({error.strerror or error})")
    return None


def credential_problem(option: str, value: str) -> Problem | None:
    """A credential inside a URI or path would be written to run.json and the run's logs: refused, unechoed."""
    from kubetune.secrets import scan_text

    if shapes := scan_text(value):
        hint = "credentials come from the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, HF_TOKEN"
        return Problem(option, f"holds a credential ({', '.join(shapes)}); it is not shown or stored", hint)
    return None


def kwargs_problems(path: Path, algorithm: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The kwargs document, checked as the pipeline's validation step will (errors name the file and line)."""
    from kubetune.contract.spec import read_document
    from kubetune.validation import validate_spec

    try:
        document, lines = read_document(path)
        if not isinstance(document, dict):
            return None, [Problem(f"--kwargs {path}", "is not a JSON object")]
        if document.setdefault("algorithm", algorithm) != algorithm:
            message = f"says algorithm {document['algorithm']!r} but --algorithm is {algorithm!r}"
            return None, [Problem(f"--kwargs {path}", message)]
        validate_spec(document, require_paths=False, source=str(path), lines=lines)
    except KubetuneError as error:
        return None, error.problems
    except OSError as error:
        return None, [Problem(f"--kwargs {path}", f"cannot be read ({error.strerror or error})")]
    return document, []


def check_options(
    algorithm: str,
    checkpoint: str,
    data: str | None,
    kwargs: Path | None,
    destination: str,
    overwrite: bool,
    run_folder: Path | None = None,
) -> dict[str, Any]:
    """The pipeline arguments of these options; every problem with any of them in one KubetuneError.
    Local paths become absolute (run.json holds them so, for a resume from any directory)."""
    problems: list[Problem] = []
    arguments: dict[str, Any] = {"algorithm": algorithm, "export_checkpoint": checkpoint}
    if algorithm not in ALGORITHMS:
        problems.append(Problem("--algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}"))
    elif found := backend_problem(algorithm):
        problems.append(found)
    if checkpoint not in CHECKPOINTS:
        problems.append(Problem("--checkpoint", f"must be best or final, got {checkpoint!r}"))
    if data is not None and not data.strip():
        problems.append(Problem("--data", "is empty: give a file, a folder, s3:// or hf://, or leave --data out for the sample"))
    elif data:
        if found := credential_problem("--data", data) or data_problem(data):
            problems.append(found)
        arguments["data_uri"] = data if "://" in data else str(Path(data).resolve())
    if kwargs is not None and kwargs.is_dir():
        message = "is empty: give a JSON file" if str(kwargs) == "." else f"{kwargs}: is a folder, not a JSON file"
        problems.append(Problem("--kwargs", message))
    elif kwargs is not None:
        document, found = kwargs_problems(kwargs, algorithm if algorithm in ALGORITHMS else "lora_sft")
        problems += found
        if document is not None:
            arguments["training_kwargs"] = document
    if destination and (found := credential_problem("--destination", destination)):
        problems.append(found)
    elif destination:
        protect = {"--data": arguments.get("data_uri"), "--kwargs": kwargs, "the run folder -o": run_folder}
        problems += destination_problems(destination, overwrite, protect)
        arguments["export_destination"] = destination if "://" in destination else os.path.abspath(destination)
    if overwrite:
        arguments["export_overwrite"] = True
    if problems:
        raise KubetuneError(problems, "invalid run-local options")
    return arguments


def destination_problems(destination: str, overwrite: bool, protect: dict[str, Any]) -> list[Problem]:
    """The export step's own destination check, up front (``protect``: local inputs and the run folder)."""
    from kubetune.steps.export import check_destination

    keep = {name: Path(path) for name, path in protect.items() if path and "://" not in str(path)}
    try:
        check_destination(destination, overwrite, source=None, protect=keep)
    except KubetuneError as error:
        return [Problem(f"--destination {p.where}".rstrip(), p.message, p.hint) for p in error.problems]
    return []


def resumed_arguments(record: dict[str, Any], given: dict[str, Any], run_folder: Path | None = None) -> dict[str, Any]:
    """The recorded run's arguments, checked again; an option given again must say the same (``given``:
    options set away from their defaults). A relative path of an older record is refused from another
    working directory (it would name another file or folder there)."""
    recorded = record.get("arguments") or {}
    defaults = {"algorithm": "lora_sft", "export_checkpoint": "best"}
    problems = [
        Problem(OPTION.get(key, key), f"differs from the run being resumed ({recorded.get(key, defaults.get(key))!r})",
                "--resume continues with the run's own options: leave it out")
        for key, value in given.items()
        if value != defaults.get(key) and value != recorded.get(key, defaults.get(key))
    ]  # fmt: skip
    if record.get("cwd") != os.getcwd():
        for key in ("data_uri", "export_destination"):
            value = recorded.get(key)
            if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
                started = f"in {record['cwd']}" if record.get("cwd") else "in another working directory"
                message = f"was recorded as the relative path {value!r} by a run started {started}"
                problems.append(Problem(OPTION[key], message, "run --resume from the directory the run started in"))
    if problems:
        raise KubetuneError(problems, "cannot resume")
    destination = recorded.get("export_destination", "")
    if destination:
        protect = {"--data": recorded.get("data_uri"), "the run folder -o": run_folder}
        if found := destination_problems(destination, bool(recorded.get("export_overwrite")), protect):
            raise KubetuneError(found, "cannot resume")
    return recorded


# ---------------------------------------------------------------- the run folder and its record


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


# ---------------------------------------------------------------- the supervised run


GRACE_S = 120.0  # after the first SIGINT/SIGTERM: time for the training step to save its checkpoint
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # Linux prctl(2) options


def supervise(folder: Path, record: dict[str, Any], say=print) -> tuple[int, dict[str, Any]]:
    """Run the record's pipeline in a child process group (its own session, so a terminal's Ctrl-C reaches
    only this process); on SIGINT or SIGTERM send the run SIGTERM (``_terminate``: the training step saves a
    checkpoint and stops, the other steps end, no further step starts), wait for it at most ``GRACE_S``, then
    kill every process the run started (in any session), and mark the run ``interrupted``; a second signal
    kills them at once. The run folder's lock (``run.lock``) is held by this process and the child, so no other
    run-local writes into the folder while either lives; the child stops (and marks the run ``interrupted``)
    when this process dies.
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
        return _supervise(folder, record, fd, say)
    finally:
        os.close(fd)


def _supervise(folder: Path, record: dict[str, Any], fd: int, say) -> tuple[int, dict[str, Any]]:
    record = write_record(folder, record, state="running", pid=os.getpid(), host=socket.gethostname())
    command = [sys.executable, "-m", "kubetune.runs.local", str(folder), str(os.getpid())]
    child = subprocess.Popen(command, start_new_session=True, pass_fds=(fd,))
    received: list[int] = []
    deadline = [float("inf")]
    known: dict[int, str] = {}  # the run's processes seen so far: pid -> start time
    killed: list[int] = []

    def kill(why: str) -> None:
        killed.append(_kill_tree({child.pid: _start(child.pid), **known}))
        say(f"kubetune run-local: {why}: killed the run's {killed[-1]} processes")

    def stop(signum, frame):
        received.append(signum)
        if len(received) > 1:
            return kill(f"{signal.Signals(signum).name} received again")
        deadline[0] = time.monotonic() + GRACE_S
        _terminate(child.pid)
        say(f"kubetune run-local: {signal.Signals(signum).name} received: stopping the run (send it again to kill it)")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while child.poll() is None and time.monotonic() < deadline[0]:
            known = _tree(_processes(), {child.pid: _start(child.pid), **known})
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
        if child.poll() is None:
            kill(f"the run did not stop within {GRACE_S:.0f} s")
        code = child.wait()
        if (code or received) and not killed and (left := _kill_tree(known)):  # nothing of an unfinished run writes on
            say(f"kubetune run-local: killed {left} processes the run left behind")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    record = read_record(folder) or record
    if received:
        return 128 + received[0], write_record(folder, record, state="interrupted", pid=None)
    if code == 0 and record.get("state") == "finished":
        return 0, record
    return (2 if code == INPUT else 1), write_record(folder, record, state="failed", pid=None)


def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False elsewhere or where it fails."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0


def _processes() -> dict[int, tuple[int, str]]:
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


def _start(pid: int) -> str:
    """The process's start time ("" when it is gone): with its pid, it names one process, never a later one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _tree(table: dict[int, tuple[int, str]], roots: dict[int, str]) -> dict[int, str]:
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


def _kill_tree(roots: dict[int, str]) -> int:
    """SIGKILL the roots and every process descending from them, in whatever session: all are stopped first
    (SIGSTOP: none starts another or loses its parent meanwhile), then killed. Returns how many."""
    stopped: dict[int, str] = {}
    while new := {p: t for p, t in _tree(_processes(), {**roots, **stopped}).items() if p not in stopped and p != os.getpid()}:
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


def _terminate(pgid: int, skip: int | None = None) -> None:
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


def _child(folder: Path, parent: int) -> int:
    """The supervised process: run the recorded pipeline, then mark the record finished with the result. It
    holds the run folder's lock (inherited) and keeps every process it starts as its descendant (a subreaper);
    when run-local (``parent``) dies, it stops the run itself as run-local would have and marks it interrupted."""
    record = read_record(folder)
    if record is None:
        raise KubetuneError([Problem(str(folder / RECORD), "is missing")])
    stopping: list[int] = []  # SIGTERM: the running step ends (its logs still shown), no further step starts

    def stop(signum, frame):
        stopping.append(signum)
        if len(stopping) == 1 and os.getppid() != parent:  # run-local is gone: stop the run as it would have
            _terminate(os.getpgid(0), skip=os.getpid())
            me = {os.getpid(): _start(os.getpid())}
            late = threading.Timer(GRACE_S, lambda: _kill_tree({p: t for p, t in _tree(_processes(), me).items() if p not in me}))
            late.daemon = True
            late.start()

    signal.signal(signal.SIGTERM, stop)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # run-local died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
    codes = _step_codes(stopping)
    try:
        result = run_local(folder, run_id=record["run_id"], **record["arguments"])
    except RuntimeError as e:  # kfp.local's way of saying a step failed; the step's own report is above
        if "finished with status" not in str(e):
            raise
        if stopping:
            if os.getppid() != parent:
                write_record(folder, record, state="interrupted", pid=None)
            return 128 + signal.SIGTERM
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        print(f"\nkubetune run-local: {message} The step's report is printed above.", file=sys.stderr, flush=True)
        return INPUT if INPUT in codes else 1
    write_record(folder, record, state="finished", pid=None, result=result)
    return 0


def _step_codes(stopping: list[int] | tuple[()] = ()) -> list[int]:
    """The exit codes of the steps kfp.local runs from here on (it keeps only SUCCESS or FAILURE); once
    ``stopping`` holds a signal, a step fails without starting."""
    from kfp.local import subprocess_task_handler as handler

    codes: list[int] = []
    run = handler.run_local_subprocess

    def recorded(*args: Any, **kwargs: Any) -> int:
        codes.append(128 + stopping[0] if stopping else run(*args, **kwargs))
        return codes[-1]

    handler.run_local_subprocess = recorded
    return codes


if __name__ == "__main__":
    raise SystemExit(_child(Path(sys.argv[1]), int(sys.argv[2])))
