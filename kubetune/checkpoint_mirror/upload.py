"""Mirroring while the backend trains: a watcher thread uploads each complete save not mirrored as it is now, its
marker last (files, sizes, SHA-256, the run), with a small pool; the metrics files as they grow; a last pass at the end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from kubetune.checkpoint_mirror.layout import LOGS, WRITER, Save, complete_saves, fingerprint, manifest
from kubetune.checkpoint_mirror.remote import OWN_PREFIX, Remote, Say, refuse
from kubetune.checkpoint_mirror.retention import DEFAULT_RETENTION, check_retention, newest, prune
from kubetune.console import say
from kubetune.errors import KubetuneError, Problem

WORKERS = 2  # saves uploaded at once; one more may wait, later ones are found by the next scan
INTERVAL_S = 2.0


class Uploads(Remote):
    """The mirroring half of a mirror (``retention``: saves kept per folder, 0: all)."""

    def __init__(
        self, uri: str, root: Path, retention: int = DEFAULT_RETENTION, say: Say = say, run: dict[str, str] | None = None
    ):
        check_retention(retention)
        super().__init__(uri, root, say, run)
        self.retention = retention
        self.busy: set[str] = set()
        self.errors: dict[str, KubetuneError] = {}  # prefix (or "" for logs, retention) -> its last failure, until it succeeds
        self.log_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kubetune-mirror")
        self.stop = threading.Event()
        self.watcher: threading.Thread | None = None

    def upload(self, save: Save) -> None:
        """Upload one save, its marker last; a save that changed or vanished meanwhile stays unmarked."""
        path, rel = self.root / save.prefix, save.prefix
        before = fingerprint(path)
        found = self.marker(rel)
        if found == {}:
            raise refuse(self.where(rel), "holds a save kubetune did not write", OWN_PREFIX)
        if found and found.get("fingerprint") == before:
            self.done[rel] = before
            return
        files, old = manifest(path), (found or {}).get("files") or {}
        if found:  # an older upload of the same save: before a byte of the new one lands, its marker becomes a claim on
            # the files of both (pruned whole if this upload never ends) that no restore takes
            self.write_marker(rel, {"writer": WRITER, "version": 2, "replacing": True, "files": {**old, **files}})
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
        self.write_marker(rel, {"writer": WRITER, "version": 2, "resumable": save.resumable, "fingerprint": before,
                                "files": files, "sha256": sums, "run": self.run})  # fmt: skip
        self.delete_files(rel, [name for name in old if name not in files])  # the older upload's files this one lacks
        self.done[rel] = before
        self.say(f"[kubetune] mirrored {rel} to {self.where(rel)}")
        self.upload_logs()
        self.prune(save.folder)

    def prune(self, folder: str | None = None) -> None:
        prune(self, self.retention, folder)

    def upload_logs(self) -> None:
        """The metrics files as they are now (after each mirrored save and at the end, not at every scan: they grow)."""
        with self.log_lock:
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
            failure = self.failure(error, rel)
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
