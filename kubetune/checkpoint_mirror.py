"""Checkpoints that survive pre-emption without a shared volume: ``checkpoint_storage="s3://bucket/prefix"``.

Training Hub's meaning and layout: every save in the backend's output (``ckpt_output_dir``) is mirrored to
``<uri>/<its path relative to the output>/...`` and an ``.upload_complete`` marker is written last; only marked
prefixes are ever restored. kubetune's marker is JSON naming kubetune as writer with the save's files and sizes
(a restore checks the download against it; a marker kubetune did not write is never restored, replaced or pruned).

- mirror: while the backend trains, a watcher thread finds each complete save (``kubetune.checkpoints``' checks:
  TRL ``checkpoint-N``, mini-trainer ``full_state_checkpoints/step_N``, instructlab-training ``full_state/epoch_N``,
  ``hf_format/*`` models) not mirrored yet (or changed since) and uploads it through ``kubetune.s3`` with a small
  pool; a full state the backend would resume wrongly (``kubetune.backends.resume``) is not mirrored. The backends'
  metrics files (``training_metrics_*.jsonl``, ``training_params_and_metrics_global*.jsonl``) are mirrored as they
  grow. After the backend returns (a SIGTERM save included), a last synchronous pass mirrors what is left.
- restore: before training, when the output holds no complete resumable state, the newest marked, verified
  resumable state is downloaded, with the model saves up to it and the metrics files, each prefix into a temporary
  folder renamed into place; the backend's own resume then picks it up.
- retention: the newest ``retention`` mirrored saves per folder are kept (0: all); older kubetune-marked ones are
  pruned (marker first, then the files its manifest names), never the newest.
- failures: an upload that fails after retries leaves its save unmarked and ends the step with one line naming
  the S3 prefix and the cause; access is probed (write, delete) before training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubetune import s3
from kubetune.backends.resume import instructlab_skip, mini_trainer_skip
from kubetune.checkpoints import (
    INCOMPLETE_DIR,
    accelerate_state_problem,
    full_state_problem,
    hf_save_problem,
    resume_problem,
    samples_position,
    set_aside,
)
from kubetune.console import say
from kubetune.contract import TrainingSpec
from kubetune.data import tokenized_file
from kubetune.errors import KubetuneError, Problem

MARKER = ".upload_complete"  # Training Hub's name
WRITER = "kubetune"
LOGS = ("training_metrics_*.jsonl", "training_params_and_metrics_global*.jsonl")
DEFAULT_RETENTION = 3
WORKERS = 2  # saves uploaded at once; one more may wait, later ones are found by the next scan
ATTEMPTS = 3  # per file, on top of boto3's own retries
INTERVAL_S = 2.0
RESTORE_TMP = ".restore-tmp"
RESTORING = ".kubetune-restoring"  # in the output while a restore places its saves: a kill there is finished next time
# the resumable layout each algorithm's backend consumes: (folder, name pattern)
RESUMABLE = {"sft": ("full_state", r"epoch_(\d+)"), "osft": ("full_state_checkpoints", r"step_(\d+)")}
TRL = ("", r"checkpoint-(\d+)")
# the save folders a mirror holds, directly under its prefix (folder -> name pattern): nothing else is ever pruned
LAYOUT = {"": TRL[1], **dict(RESUMABLE.values()), "hf_format": r"[^.].*"}
OWN_PREFIX = "give checkpoint_storage a prefix of its own"
IDENTITY = ".kubetune-mirror"  # written at a mirror's root: another mirror above or below it is refused
Say = Callable[[str], None]


@dataclass(frozen=True)
class Save:
    """A complete save in the output: its path relative to it (posix), its folder, and its place in that folder."""

    prefix: str
    folder: str
    order: tuple[int, str]
    resumable: bool


def _number(name: str, pattern: str) -> int | None:
    found = re.fullmatch(pattern, name)
    return int(found.group(1)) if found else None


def _folder(rel: str) -> str:
    """The folder of a save's prefix (``""`` for TRL's ``checkpoint-N`` at the top)."""
    parent = str(PurePosixPath(rel).parent)
    return "" if parent == "." else parent


def _order(rel: str) -> tuple[int, str]:
    """A save's place in its folder: samples seen (``hf_format``), else the number in its name."""
    name = PurePosixPath(rel).name
    at = samples_position(Path(name)) if _folder(rel) == "hf_format" else None
    number = at.samples if at else _number(name, r"\D*(\d+)")
    return (-1 if number is None else number, name)


def _state_problem(path: Path) -> str | None:
    """Why a resumable save cannot be resumed (incomplete, or a full state its backend resumes wrongly), else None."""
    if path.parent.name == "full_state":
        return accelerate_state_problem(path) or instructlab_skip(path)
    if path.parent.name == "full_state_checkpoints":
        return full_state_problem(path) or mini_trainer_skip(path)
    return resume_problem(path)


def candidates(root: Path) -> list[tuple[Path, str, tuple[int, str], bool]]:
    """Every save folder of the layouts kubetune knows under ``root``: (path, folder, order, resumable)."""
    found = []
    for folder, pattern in (TRL, *RESUMABLE.values()):
        for path in (root / folder).glob("*") if (root / folder).is_dir() else []:
            if path.is_dir() and (n := _number(path.name, pattern)) is not None:
                found.append((path, folder, (n, path.name), True))
    for path in (root / "hf_format").glob("*") if (root / "hf_format").is_dir() else []:
        if path.is_dir() and not path.name.startswith("."):
            at = samples_position(path)
            found.append((path, "hf_format", (at.samples if at else -1, path.name), False))
    return found


def complete_saves(root: Path) -> list[Save]:
    """The complete saves under ``root`` (resumable ones only where their backend resumes them correctly)."""
    saves = []
    for path, folder, order, resumable in candidates(root):
        if (_state_problem(path) if resumable else hf_save_problem(path)) is None:
            saves.append(Save(path.relative_to(root).as_posix(), folder, order, resumable))
    return sorted(saves, key=lambda s: (s.folder, s.order))


def manifest(path: Path) -> dict[str, int]:
    """Every file of a save (relative posix path -> size)."""
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def fingerprint(path: Path) -> str:
    """Files, sizes and modification times of a save: it changes when the save is written again."""
    files = sorted(
        (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


# spec fields a resume may change (duration, saving, logging, tracking, placement, paths): left out of the run's hash
MAY_CHANGE = frozenset({
    "num_epochs", "max_steps", "max_tokens_per_gpu", "checkpoint_storage", "enable_jit_checkpoint", "save_samples",
    "save_steps", "save_total_limit", "checkpoint_at_epoch", "accelerate_full_state_at_epoch", "save_final_checkpoint",
    "eval_steps", "logging_steps", "wandb_project", "wandb_entity", "wandb_run_name", "mlflow_tracking_uri",
    "mlflow_experiment_name", "mlflow_run_name", "tensorboard_log_dir", "nproc_per_node", "nnodes", "node_rank", "rdzv_id",
    "rdzv_endpoint", "master_addr", "master_port", "model_path", "data_path", "ckpt_output_dir", "data_output_dir",
    "eval_data_path", "on_demand_checkpointing",
})  # fmt: skip


def data_fingerprint(path: Path) -> str:
    """The prepared data's size and the SHA-256 of its first and last MiB (a file of GBs is not read whole)."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            digest = hashlib.sha256(file.read(2**20))
            file.seek(max(size - 2**20, 0))
            digest.update(file.read(2**20))
    except OSError:
        return "absent"
    return f"{size} bytes, sha256 {digest.hexdigest()[:16]}"


def run_identity(spec: TrainingSpec, model_uri: str, train_data: str | Path) -> dict[str, str]:
    """What makes a mirror this run's: the algorithm, the base model, the training data (size and SHA-256 of its first
    and last MiB: the prepared file is read in part) and a hash of the spec but ``MAY_CHANGE``."""
    kept = {k: v for k, v in spec.params.items() if k not in MAY_CHANGE}
    kept["backend_kwargs"] = {k: v for k, v in spec.backend_kwargs.items() if k not in MAY_CHANGE}
    return {
        "algorithm": spec.algorithm,
        "base model": s3.public_uri(model_uri).split("?")[0].split("#")[0],
        "training data": data_fingerprint(tokenized_file(train_data)),
        "spec": hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16],
    }


def in_layout(rel: str) -> bool:
    """Whether ``rel`` (relative to the mirror) is a save folder of a layout kubetune mirrors."""
    pattern = LAYOUT.get(_folder(rel))
    return pattern is not None and re.fullmatch(pattern, PurePosixPath(rel).name) is not None


def refuse(where: str, message: str, hint: str) -> KubetuneError:
    return KubetuneError([Problem(where, message, hint)], "checkpoint mirror failed")


def check_retention(retention: int) -> None:
    """A negative retention would delete every mirrored save, the newest included: refused."""
    if not isinstance(retention, int) or isinstance(retention, bool) or retention < 0:
        raise refuse("checkpoint_retention", f"must be 0 (keep all) or a positive count, got {retention!r}", "give 0 or more")


def newest(saves: list[Save], retention: int) -> list[Save]:
    """The saves retention keeps, per folder: the newest ``retention`` (0: all)."""
    kept = []
    for folder in {s.folder for s in saves}:
        ordered = sorted((s for s in saves if s.folder == folder), key=lambda s: s.order)
        kept += ordered[-retention:] if retention else ordered
    return kept


class Hashing:
    """A file read once, sequentially (not seekable: the transfer reads each part once, in order), hashed as read."""

    def __init__(self, file: Any):
        self.file, self.sha256 = file, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.sha256.update(data)
        return data

    def seekable(self) -> bool:
        return False


class Mirror:
    """The mirror of one training output (``root``: the backend's ``ckpt_output_dir``) at ``uri``."""

    def __init__(
        self, uri: str, root: Path, retention: int = DEFAULT_RETENTION, say: Say = say, run: dict[str, str] | None = None
    ):
        self.uri, self.root, self.retention, self.say = uri.rstrip("/"), Path(root), retention, say
        self.run = run  # this run's identity (``run_identity``), recorded in each marker and checked by a restore
        self.bucket, key = s3.split_uri(self.uri)
        self.base = key.strip("/")
        check_retention(retention)
        if not self.base:
            raise refuse(self.uri, "is a bucket root", "give checkpoint_storage a prefix of its own: s3://bucket/run-name")
        self.s3 = s3.client()
        self.done: dict[str, str] = {}  # prefix (or log file) -> fingerprint mirrored by this process
        self.busy: set[str] = set()
        self.errors: dict[str, KubetuneError] = {}  # prefix (or "" for logs, retention) -> its last failure, until it succeeds
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kubetune-mirror")
        self.stop = threading.Event()
        self.watcher: threading.Thread | None = None

    # ---- S3 ----
    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def where(self, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(rel)}".rstrip("/")

    def _failure(self, error: Exception, rel: str) -> KubetuneError:
        if isinstance(error, KubetuneError):
            return error
        return s3.explain(error, self.where(rel))

    def check_access(self) -> None:
        """Write and delete a probe object (a bad bucket, endpoint or credential fails before training starts), then
        refuse a prefix another mirror sits above or below (its retention would prune this one's saves, or the reverse)
        or that holds a save another writer marked, and mark this prefix as a mirror."""
        probe = self.key(f".kubetune-access-probe-{uuid.uuid4().hex}")
        try:
            self.s3.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.s3.delete_object(Bucket=self.bucket, Key=probe)
            self._refuse_nested()
            self.s3.put_object(Bucket=self.bucket, Key=self.key(IDENTITY), Body=json.dumps({"writer": WRITER}).encode())
        except Exception as error:  # noqa: BLE001 - boto3's and the network's errors, explained in one line
            raise self._failure(error, "") from None

    def _refuse_nested(self) -> None:
        parts = self.base.split("/")
        for depth in range(len(parts)):
            above = "/".join(parts[:depth])
            if s3.head(self.s3, self.bucket, f"{above}/{IDENTITY}" if above else IDENTITY) is not None:
                raise refuse(self.uri, f"lies inside the checkpoint mirror s3://{self.bucket}/{above}".rstrip("/"),
                             "give each run a prefix of its own, outside other runs' prefixes")  # fmt: skip
        for key in self.keys():
            rel = self.relative(key)
            inner = rel[: -len(IDENTITY) - 1] if rel.endswith("/" + IDENTITY) else None
            if inner is None and rel.endswith("/" + MARKER) and not in_layout(rel[: -len(MARKER) - 1]):
                inner = rel[: -len(MARKER) - 1] if self.marker(rel[: -len(MARKER) - 1]) else None
            if inner:
                raise refuse(self.uri, f"holds another checkpoint mirror ({self.where(inner)})",
                             "give each run a prefix of its own, outside other runs' prefixes")  # fmt: skip
        foreign = sorted(rel for rel, document in self.markers().items() if not document)
        if foreign:  # found now, not when this run's save of that name is uploaded, after hours of training
            raise refuse(self.where(foreign[0]), "holds a save kubetune did not write", OWN_PREFIX)

    def keys(self, rel: str = "") -> list[str]:
        """Every object key under ``rel`` (relative to the mirror's prefix)."""
        prefix = self.key(rel).rstrip("/") + "/" if (self.base or rel) else ""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def relative(self, key: str) -> str:
        return key[len(self.base) + 1 :] if self.base else key

    def marker(self, rel: str) -> dict | None:
        """The marker of the prefix ``rel``: its JSON, ``{}`` for one kubetune did not write, None where there is none."""
        if s3.head(self.s3, self.bucket, self.key(f"{rel}/{MARKER}")) is None:
            return None
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"))["Body"].read()
        try:
            document = json.loads(body)
        except ValueError:
            return {}
        return document if isinstance(document, dict) and document.get("writer") == WRITER else {}

    def markers(self) -> dict[str, dict]:
        """Every marked prefix under the mirror and its marker (``{}``: not kubetune's); unsafe names are left out."""
        found = {}
        for key in self.keys():
            rel = self.relative(key)
            if rel.endswith("/" + MARKER):
                prefix = rel[: -len(MARKER) - 1]
                if in_layout(prefix):
                    found[prefix] = self.marker(prefix) or {}
        return found

    # ---- mirror ----
    def put(self, path: Path, rel: str) -> str:
        """Upload one file; returns the SHA-256 of what was sent (hashed as it is read: one read of the file)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(max_concurrency=4)  # parts of one file at once; WORKERS saves: within botocore's pool of 10
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with path.open("rb") as file:
                    reader = Hashing(file)
                    self.s3.upload_fileobj(reader, self.bucket, self.key(rel), Config=config)
                return reader.sha256.hexdigest()
            except FileNotFoundError:
                raise
            except Exception:
                if attempt == ATTEMPTS:
                    raise
                time.sleep(attempt)

    def upload(self, save: Save) -> None:
        """Upload one save, its marker last; a save that changed or vanished meanwhile stays unmarked."""
        path, rel = self.root / save.prefix, save.prefix
        before = fingerprint(path)
        found = self.marker(rel)
        if found == {}:
            raise KubetuneError(
                [Problem(self.where(rel), "holds a save kubetune did not write", OWN_PREFIX)],
                "checkpoint mirror failed",
            )
        if found and found.get("fingerprint") == before:
            self.done[rel] = before
            return
        files, old = manifest(path), (found or {}).get("files") or {}
        if found:  # an older upload of the same save: before a byte of the new one lands, its marker becomes a claim on
            # the files of both (pruned whole if this upload never ends) that no restore takes
            claim = {"writer": WRITER, "version": 2, "replacing": True, "files": {**old, **files}}
            self.s3.put_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"), Body=json.dumps(claim).encode())
        try:
            sums = {name: self.put(path / name, f"{rel}/{name}") for name in files}
        except FileNotFoundError:  # the backend deleted the save (rotation): what was uploaded of it goes too
            self.delete(rel, files)
            return
        if not path.is_dir():  # deleted once uploaded (rotation): so are its files there
            self.delete(rel, files)
            return
        if fingerprint(path) != before:
            return  # written again meanwhile: the next scan uploads it
        document = {"writer": WRITER, "version": 2, "resumable": save.resumable, "fingerprint": before, "files": files,
                    "sha256": sums, "run": self.run}  # fmt: skip
        self.s3.put_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"), Body=json.dumps(document).encode())
        self.delete_files(rel, [name for name in old if name not in files])  # the older upload's files this one lacks
        self.done[rel] = before
        self.say(f"[kubetune] mirrored {rel} to {self.where(rel)}")
        self.upload_logs()
        self.prune(save.folder)

    def delete(self, rel: str, files: dict[str, int]) -> None:
        """Unmark ``rel`` (marker first), then delete the files kubetune wrote there (its manifest)."""
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"))
        self.delete_files(rel, list(files))

    def delete_files(self, rel: str, files: list[str]) -> None:
        names = [self.key(f"{rel}/{name}") for name in files]
        for start in range(0, len(names), 1000):
            chunk = [{"Key": k} for k in names[start : start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def prune(self, folder: str | None = None) -> None:
        """Retention: kubetune-marked saves of ``folder`` (None: of every folder) older than the newest ``retention``
        are deleted."""
        if not self.retention:
            return
        with self.lock:
            marked: dict[str, list] = {}
            for rel, document in self.markers().items():
                if document and folder in (None, _folder(rel)) and isinstance(document.get("files"), dict):
                    marked.setdefault(_folder(rel), []).append((_order(rel), rel, document["files"]))
            for saves in marked.values():
                for _, rel, files in sorted(saves)[: -self.retention]:
                    self.delete(rel, files)
                    self.say(f"[kubetune] pruned {self.where(rel)} (checkpoint_retention={self.retention})")

    def upload_logs(self) -> None:
        """The metrics files as they are now (after each mirrored save and at the end, not at every scan: they grow)."""
        with self.log_lock:
            self._upload_logs()

    def _upload_logs(self) -> None:
        for pattern in LOGS:
            for path in sorted(self.root.glob(pattern)):
                stat = path.stat()
                stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
                if self.done.get(path.name) != stamp:
                    self.put(path, path.name)
                    self.done[path.name] = stamp

    def pending(self) -> list[Save]:
        """Complete saves retention keeps that this process has not mirrored as they are now, newest first."""
        saves = newest(complete_saves(self.root), self.retention)
        return sorted(
            (s for s in saves if s.prefix not in self.busy and self.done.get(s.prefix) != fingerprint(self.root / s.prefix)),
            key=lambda s: s.order,
            reverse=True,
        )

    def _guarded(self, work: Callable[[], None], rel: str) -> None:
        """Run ``work``; a failure is said once per prefix (not at every retry) and kept until that prefix succeeds."""
        try:
            work()
            with self.lock:
                self.errors.pop(rel, None)
        except Exception as error:  # noqa: BLE001 - reported by the step (finish), and said now
            failure = self._failure(error, rel)
            with self.lock:
                new = rel not in self.errors
                self.errors[rel] = failure
            if new:
                self.say(f"[kubetune] checkpoint mirror failed: {failure.problems[0].where}: {failure.problems[0].message}")
        finally:
            with self.lock:
                self.busy.discard(rel)

    def scan(self, skip: set[str] | None = None) -> list[Future]:
        """Queue the saves to mirror (a bounded pool), but those in ``skip``."""
        futures = []
        for save in self.pending():
            if save.prefix in (skip or ()):
                continue
            with self.lock:
                if len(self.busy) > WORKERS:
                    break
                self.busy.add(save.prefix)
            if skip is not None:
                skip.add(save.prefix)
            futures.append(self.pool.submit(self._guarded, lambda s=save: self.upload(s), save.prefix))
        return futures

    def _watch(self) -> None:
        while not self.stop.wait(INTERVAL_S):
            try:
                self.scan()
            except Exception as error:  # noqa: BLE001 - a scan of a folder the backend is writing: the next one retries
                self.say(f"[kubetune] checkpoint mirror scan: {error}")

    def start(self) -> None:
        self.watcher = threading.Thread(target=self._watch, name="kubetune-mirror-watch", daemon=True)
        self.watcher.start()

    def finish(self, raising: bool = True) -> None:
        """Stop watching, wait for the uploads under way, then always a last pass: every save retention keeps that is
        not mirrored as it is now gets one more try. A save retention keeps still unmarked after it is raised (an
        earlier failure since mirrored is forgotten; a failed metrics upload or pruning is said, not raised)."""
        self.stop.set()
        if self.watcher:
            self.watcher.join()
        self.pool.shutdown(wait=True)
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kubetune-mirror")
        tried: set[str] = set()
        while futures := self.scan(tried):  # a bounded pool: round by round, each save once, until nothing is left
            for future in futures:
                future.result()
        self._guarded(self.upload_logs, "")
        self._guarded(self.prune, "")
        self.pool.shutdown(wait=True)
        unmarked = [s.prefix for s in self.pending()]
        if unmarked and raising:
            first = self.errors.get(unmarked[0]) or refuse(self.where(unmarked[0]), "was not mirrored", "")
            more = f" (and {len(unmarked) - 1} more)" if len(unmarked) > 1 else ""
            raise KubetuneError(
                [Problem(first.problems[0].where, f"{first.problems[0].message}{more}; that save is not marked complete",
                         "check the bucket, the endpoint and the credentials, then run the step again: it resumes from "
                         "the newest save the mirror holds")],
                "checkpoint mirror failed",
            )  # fmt: skip

    # ---- restore ----
    def download(self, rel: str, files: dict[str, int], sums: dict[str, str]) -> Path:
        """The files of the marked prefix ``rel``, checked against its manifest (size, SHA-256), in a temporary folder."""
        tmp = self.root / RESTORE_TMP / rel
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, size in files.items():
            parts = PurePosixPath(name).parts
            if PurePosixPath(name).is_absolute() or ".." in parts:
                raise ValueError(f"a file named {name!r}")
            target = tmp.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.s3.download_file(self.bucket, self.key(f"{rel}/{name}"), str(target))
            except Exception as error:
                if getattr(error, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise ValueError(f"{self.where(f'{rel}/{name}')} is missing") from None  # this prefix only
                raise
            if target.stat().st_size != size:
                raise ValueError(f"{name} is {target.stat().st_size} bytes, its marker says {size}")
            with target.open("rb") as file:
                if hashlib.file_digest(file, "sha256").hexdigest() != sums.get(name):
                    raise ValueError(f"{name}'s SHA-256 differs from its marker's")
        stamp = time.time_ns()  # one time for all: the layout checks compare which file a save wrote last
        for target in tmp.rglob("*"):
            os.utime(target, ns=(stamp, stamp))
        return tmp

    def fetch(self, rel: str, document: dict, check: Callable[[Path], str | None]) -> Path | None:
        """Download ``rel`` into the temporary folder and verify it; None (one line) where it does not verify."""
        try:
            if document.get("replacing"):
                raise ValueError("its upload was replacing an older one and did not end")
            tmp = self.download(rel, document["files"], document["sha256"])
            problem = check(tmp)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            problem = str(error)
        if problem:
            self.say(f"[kubetune] not restoring {self.where(rel)}: {problem}")
            shutil.rmtree(self.root / RESTORE_TMP / rel, ignore_errors=True)
            return None
        return tmp

    def take(self, rel: str, document: dict, check: Callable[[Path], str | None]) -> bool:
        """Download ``rel``, verify it, rename it into place; False (one line) where it does not verify."""
        tmp = self.fetch(rel, document, check)
        if tmp is not None:
            self.place(rel, tmp)
        return tmp is not None

    def place(self, rel: str, tmp: Path) -> None:
        """Rename a verified download into place (an incomplete local copy set aside first)."""
        destination = self.root / rel
        if destination.exists():  # an incomplete local copy (a complete one would have been resumed)
            set_aside(destination, self.root / INCOMPLETE_DIR / _folder(rel))
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(destination)
        self.done[rel] = fingerprint(destination)  # mirrored as it is: not uploaded again

    def restore(self, algorithm: str) -> str | None:
        """Before training: the newest verified resumable state (and the model saves up to it, the metrics files)
        when the output holds no complete resumable state. Returns what was restored, one line said either way.
        The state is renamed into place last, after the ``RESTORING`` note: a restore killed before that note is
        gone is done again (what is in place already is kept), whatever the output holds."""
        shutil.rmtree(self.root / RESTORE_TMP, ignore_errors=True)  # a killed restore's partial downloads
        folder, pattern = RESUMABLE.get(algorithm, TRL)
        local = [s for s in complete_saves(self.root) if s.resumable and s.folder == folder]
        if local and not (self.root / RESTORING).exists():
            self.say(f"[kubetune] {local[-1].prefix} in the output: resuming from it, nothing restored from {self.uri}")
            return None
        try:
            return self._restore(folder, pattern)
        except Exception as error:  # noqa: BLE001 - never train from the beginning silently
            raise self._failure(error, folder) from None
        finally:
            shutil.rmtree(self.root / RESTORE_TMP, ignore_errors=True)

    def _restore(self, folder: str, pattern: str) -> str | None:
        marked = {rel: doc for rel, doc in self.markers().items() if doc}
        numbered = ((_number(PurePosixPath(rel).name, pattern), rel) for rel in marked if _folder(rel) == folder)
        states = sorted(((n, rel) for n, rel in numbered if n is not None), reverse=True)
        if states and self.run is not None:
            self.refuse_other_run(states[0][1], marked[states[0][1]])
        for _, rel in states:
            if (state := self.fetch(rel, marked[rel], _state_problem)) is not None:
                break
        else:
            self.say(f"[kubetune] no complete resumable save in {self.uri}: training starts from the beginning")
            (self.root / RESTORING).unlink(missing_ok=True)
            return None
        (self.root / RESTORING).write_text(rel)
        models = self._restore_models(rel, state, marked)
        logs = self._restore_logs()
        if (self.root / rel).exists() and _state_problem(self.root / rel) is None:  # placed by a restore killed after
            shutil.rmtree(state)
        else:
            self.place(rel, state)
        (self.root / RESTORING).unlink()
        self.say(
            f"[kubetune] restored {rel} ({models} model saves, {logs} metrics files) from {self.where(rel)} into {self.root}"
        )
        return rel

    def refuse_other_run(self, rel: str, document: dict) -> None:
        """A mirror a previous run (a schedule's, one with new data) left at this prefix is never resumed."""
        theirs = document.get("run") if isinstance(document.get("run"), dict) else {}
        for item, ours in (self.run or {}).items():
            if theirs.get(item) != ours:
                raise refuse(self.where(rel), f"is another run's save: its {item} is {theirs.get(item, 'not recorded')!r}, "
                             f"this run's {ours!r}", "give each run its own checkpoint_storage prefix")  # fmt: skip

    def _restore_models(self, state: str, downloaded: Path, marked: dict[str, dict]) -> int:
        """The mirrored models saved up to the restored state (``downloaded``, not in place yet): TRL's earlier
        ``checkpoint-N``; ``hf_format`` saves of no more samples than the state has seen."""
        limit = _samples_seen(downloaded)
        count = 0
        for rel, document in sorted(marked.items()):
            name, parent = PurePosixPath(rel).name, _folder(rel)
            if (self.root / rel).exists():
                continue
            if (
                parent == ""
                and (n := _number(name, TRL[1])) is not None
                and n < (_number(PurePosixPath(state).name, TRL[1]) or 0)
            ):
                count += self.take(rel, document, resume_problem)
            elif parent == "hf_format" and limit is not None and (at := samples_position(Path(name))) and at.samples <= limit:
                count += self.take(rel, document, hf_save_problem)
        return count

    def _restore_logs(self) -> int:
        count = 0
        for key in self.keys():
            name = self.relative(key)
            if "/" not in name and any(PurePosixPath(name).match(p) for p in LOGS):
                target = self.root / name
                partial = self.root / RESTORE_TMP / name
                self.s3.download_file(self.bucket, key, str(partial))
                partial.rename(target)
                self.done[name] = f"{target.stat().st_size}:{target.stat().st_mtime_ns}"
                count += 1
        return count


def _samples_seen(state: Path) -> int | None:
    """Samples a torchrun backend's full state has seen (None for TRL's ``checkpoint-N``)."""
    meta_file = {"full_state": "training_metadata.json", "full_state_checkpoints": "training_state.pt"}.get(state.parent.name)
    if meta_file is None:
        return None
    import torch

    meta = torch.load(state / meta_file, weights_only=False, map_location="cpu")  # kubetune's own, verified save
    seen = meta.get("samples_seen", meta.get("total_samples_accumulated")) if isinstance(meta, dict) else None
    return int(seen) if seen is not None else None


def storage_uri(spec_params: dict[str, Any]) -> str | None:
    """The ``s3://`` mirror a spec asks for, else None (``"pvc"``, left out)."""
    value = spec_params.get("checkpoint_storage")
    return value if isinstance(value, str) and value.startswith("s3://") else None


@contextmanager
def mirrored(
    uri: str | None,
    root: Path,
    algorithm: str,
    retention: int = DEFAULT_RETENTION,
    say: Say = say,
    run: dict[str, str] | None = None,
) -> Iterator[None]:
    """Around a backend's training: probe access, restore, mirror while it trains, then a last synchronous pass
    (errors raised); on a failure of training, the last pass is best effort and the failure goes on. ``run``: this
    run's identity (``run_identity``): a mirror of another run is refused, not resumed."""
    check_retention(retention)
    if uri is None:
        yield
        return
    mirror = Mirror(uri, root, retention, say, run)
    root.mkdir(parents=True, exist_ok=True)
    mirror.check_access()
    mirror.restore(algorithm)
    mirror.start()
    try:
        yield
    except BaseException:
        mirror.finish(raising=False)
        raise
    mirror.finish()
