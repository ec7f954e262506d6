"""Restoring before training: when the output holds no complete resumable state, the newest kubetune-marked one of
the algorithm's layout that is this run's and verifies (sizes, SHA-256) is downloaded, then the model saves up to it
and the metrics files, each into a temporary folder renamed into place, the state last."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from kubetune.checkpoint_mirror.identity import other_run
from kubetune.checkpoint_mirror.layout import LOGS, RESUMABLE, TRL, complete_saves, fingerprint, folder_of, number, state_problem
from kubetune.checkpoint_mirror.remote import Remote, refuse
from kubetune.checkpoints import INCOMPLETE_DIR, hf_save_problem, resume_problem, samples_position, set_aside

RESTORE_TMP = ".restore-tmp"  # skipped by evaluation and export (checkpoints.SKIPPED_DIRS)
RESTORING = ".kubetune-restoring"  # in the output while a restore places its saves: a kill there is finished next time
MISSING = ("404", "NoSuchKey", "NotFound")


class Restores(Remote):
    """The restoring half of a mirror."""

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
            raise self.failure(error, folder) from None
        finally:
            shutil.rmtree(self.root / RESTORE_TMP, ignore_errors=True)

    def _restore(self, folder: str, pattern: str) -> str | None:
        marked = {rel: doc for rel, doc in self.markers().items() if doc}
        numbered = ((number(PurePosixPath(rel).name, pattern), rel) for rel in marked if folder_of(rel) == folder)
        states = sorted(((n, rel) for n, rel in numbered if n is not None), reverse=True)
        if states and self.run is not None and (problem := other_run(marked[states[0][1]].get("run"), self.run)):
            raise refuse(self.where(states[0][1]), problem, "give each run its own checkpoint_storage prefix")
        for _, rel in states:
            if (state := self.fetch(rel, marked[rel], state_problem)) is not None:
                break
        else:
            self.say(f"[kubetune] no complete resumable save in {self.uri}: training starts from the beginning")
            (self.root / RESTORING).unlink(missing_ok=True)
            return None
        (self.root / RESTORING).write_text(rel)
        models = self._restore_models(rel, state, marked)
        logs = self._restore_logs()
        if (self.root / rel).exists() and state_problem(self.root / rel) is None:  # placed by a restore killed after
            shutil.rmtree(state)
        else:
            self.place(rel, state)
        (self.root / RESTORING).unlink()
        self.say(
            f"[kubetune] restored {rel} ({models} model saves, {logs} metrics files) from {self.where(rel)} into {self.root}"
        )
        return rel

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
                if getattr(error, "response", {}).get("Error", {}).get("Code") in MISSING:
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
            set_aside(destination, self.root / INCOMPLETE_DIR / folder_of(rel))
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(destination)
        self.done[rel] = fingerprint(destination)  # mirrored as it is: not uploaded again

    def _restore_models(self, state: str, downloaded: Path, marked: dict[str, dict]) -> int:
        """The mirrored models saved up to the restored state (``downloaded``, not in place yet): TRL's earlier
        ``checkpoint-N``; ``hf_format`` saves of no more samples than the state has seen."""
        limit = samples_seen(downloaded)
        count = 0
        for rel, document in sorted(marked.items()):
            name, parent = PurePosixPath(rel).name, folder_of(rel)
            if (self.root / rel).exists():
                continue
            if parent == "" and (n := number(name, TRL[1])) is not None and n < (number(PurePosixPath(state).name, TRL[1]) or 0):
                count += self.take(rel, document, resume_problem)
            elif parent == "hf_format" and limit is not None and (at := samples_position(Path(name))) and at.samples <= limit:
                count += self.take(rel, document, hf_save_problem)
        return count

    def _restore_logs(self) -> int:
        count = 0
        for key in self.keys():
            name = self.relative(key)
            if "/" not in name and any(PurePosixPath(name).match(p) for p in LOGS):
                target, partial = self.root / name, self.root / RESTORE_TMP / name
                self.s3.download_file(self.bucket, key, str(partial))
                partial.rename(target)
                self.done[name] = f"{target.stat().st_size}:{target.stat().st_mtime_ns}"
                count += 1
        return count


def samples_seen(state: Path) -> int | None:
    """Samples a torchrun backend's full state has seen (None for TRL's ``checkpoint-N``)."""
    meta_file = {"full_state": "training_metadata.json", "full_state_checkpoints": "training_state.pt"}.get(state.parent.name)
    if meta_file is None:
        return None
    import torch

    meta = torch.load(state / meta_file, weights_only=False, map_location="cpu")  # kubetune's own, verified save
    seen = meta.get("samples_seen", meta.get("total_samples_accumulated")) if isinstance(meta, dict) else None
    return int(seen) if seen is not None else None
