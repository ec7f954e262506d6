"""Publishing a staged export to ``s3://bucket/prefix``: at every instant a reader sees the previous complete
export, the new complete export, or an explicit incomplete state (no ``manifest.json`` and a journal).

S3 has no rename: objects are written one by one. The protocol keeps every in-place change inside a
window where ``manifest.json`` is absent and the run's journal ``prefix/.kubetune-staging/<run>/journal.json``
says what is being changed, with copies of every object it replaces or deletes:

1. Recovery: what a dead run left under ``prefix/.kubetune-staging/`` is ROLLED BACK (when its journal
   is there and the manifest is not) and deleted. Then the prefix is listed.
2. When no export is there (no manifest), a journal naming the files about to be written goes first.
3. Each file is uploaded as soon as its checksum is known, unless its object already has the same SHA-256
   (object metadata) and size: a re-run moves no bytes. A file goes straight to its place only when
   neither an export nor an object is there; otherwise to ``<staging>/new/``. Staged uploads are verified.
   A new manifest equal to the old one ends the run here.
4. Objects about to be replaced or deleted (changed files; files of the old export that the new one drops;
   with ``overwrite``, every other object under the prefix) are copied to ``<staging>/old/``.
5. The journal (old and new manifest, which files existed, which were copied aside) is written.
6. ``manifest.json`` is deleted: from here readers see "interrupted" until 8.
7. Staged files are copied into place (and verified there), dropped ones deleted. Every file of the
   export has now been verified once: where it was skipped, uploaded, or copied.
8. ``manifest.json`` is written: the new export is complete. The staging prefix is deleted.

Roll back (an in-process failure at once, a killed run at the next run): the copies in ``<staging>/old/``
go back, objects the run created are deleted, the old manifest is written last, the staging is deleted.
Only objects listed in the old manifest, written by the run itself, or under the staging prefix are ever
deleted, unless the user passed ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.s3 import client, explain, head, split_uri
from kubetune.steps.manifest import (
    MANIFEST,
    OVERWRITE_HINT,
    dump_manifest,
    foreign_message,
    load_manifest,
    manifest_paths,
    refuse,
    write_manifest,
)

STAGING = ".kubetune-staging"
JOURNAL = "journal.json"
BUCKET_ROOT = "is a bucket root: an export needs a prefix of its own (s3://bucket/name)"


def _errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, S3UploadFailedError, S3TransferFailedError


def split_prefix(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ("bucket", "a/b/"); the bucket root's prefix is ""."""
    bucket, key = split_uri(uri)
    key = key.strip("/")
    return bucket, key + "/" if key else ""


def check_bucket(uri: str, s3: Any = None) -> None:
    """Credentials present and the bucket reachable: checked before any bytes move."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split_uri(uri)
    try:
        (s3 or client()).head_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise KubetuneError([Problem(f"s3://{bucket}", "the bucket does not exist")], "cannot export") from None
        raise explain(e, f"s3://{bucket}") from None
    except BotoCoreError as e:
        raise explain(e, uri) from None


@dataclass
class Remote:
    """What is under an export prefix: objects by name (relative to the prefix, staging left out) and size,
    the manifest, and the staging of runs by id (their keys and journals)."""

    objects: dict[str, int] = field(default_factory=dict)
    manifest: dict | None = None
    manifest_error: str | None = None
    staged: dict[str, list[str]] = field(default_factory=dict)
    journals: dict[str, dict] = field(default_factory=dict)

    def ours(self) -> set[str]:
        """Names kubetune wrote: the manifest's files, and what interrupted runs wrote or kept aside."""
        names = set(self.manifest["files"]) | {MANIFEST} if self.manifest else set()
        for journal in self.journals.values():
            names |= set(journal.get("writes", [])) | set((journal.get("old") or {}).get("files", {}))
            names |= {MANIFEST} if journal.get("old") else set()
        return names

    def foreign(self) -> list[str]:
        ours = self.ours()
        return sorted(name for name in self.objects if name not in ours)


def read_remote(s3: Any, bucket: str, prefix: str) -> Remote:

    remote = Remote()
    staging = prefix + STAGING + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.startswith(staging):
                run = key[len(staging) :].split("/", 1)[0]
                remote.staged.setdefault(run, []).append(key)
            elif key != prefix:  # "prefix/" itself: a folder marker some consoles create
                remote.objects[key[len(prefix) :]] = item["Size"]
    if MANIFEST in remote.objects:
        try:
            remote.manifest = load_manifest(_get(s3, bucket, prefix + MANIFEST))
        except ValueError as e:
            remote.manifest_error = str(e)
    for run, keys in remote.staged.items():
        if f"{staging}{run}/{JOURNAL}" in keys:
            with contextlib.suppress(ValueError):
                remote.journals[run] = json.loads(_get(s3, bucket, f"{staging}{run}/{JOURNAL}"))
    return remote


def _get(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def check_s3_destination(uri: str, overwrite: bool = False, s3: Any = None) -> Remote:
    """The S3 side of ``core.check_destination``: a bucket root is refused; objects under the prefix that
    kubetune did not write are refused unless ``overwrite``. Returns what is under the prefix."""

    bucket, prefix = split_prefix(uri)
    if not prefix:
        raise refuse(uri, BUCKET_ROOT)
    s3 = s3 or client()
    check_bucket(uri, s3)
    try:
        remote = read_remote(s3, bucket, prefix)
    except _errors() as e:
        raise explain(e, uri) from None
    if remote.manifest_error and not overwrite:
        raise refuse(uri, f"holds a {MANIFEST} that is not a valid kubetune manifest", OVERWRITE_HINT)
    foreign = remote.foreign()
    if foreign and not overwrite:
        raise refuse(uri, foreign_message(foreign), OVERWRITE_HINT)
    return remote


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=16)


def _remote(s3: Any, bucket: str, key: str) -> dict | None:
    found = head(s3, bucket, key)
    return None if found is None else {"bytes": found["ContentLength"], "sha256": found.get("Metadata", {}).get("sha256")}


def _check(s3: Any, bucket: str, key: str, entry: dict) -> str | None:
    remote = _remote(s3, bucket, key)
    if remote is None:
        return f"s3://{bucket}/{key} is missing"
    if remote["bytes"] != entry["bytes"] or remote["sha256"] != entry["sha256"]:
        return f"s3://{bucket}/{key} does not match its checksum"
    return None


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})


def _put_json(s3: Any, bucket: str, key: str, document: dict) -> None:

    s3.put_object(Bucket=bucket, Key=key, Body=dump_manifest(document).encode(), ContentType="application/json")


def recover(s3: Any, bucket: str, prefix: str, remote: Remote) -> bool:
    """Roll back every run whose journal is there while the manifest is not, then delete all staging.
    Returns whether anything was left (then the prefix should be listed again)."""
    manifest_there = MANIFEST in remote.objects
    for run, keys in remote.staged.items():
        journal = remote.journals.get(run)
        if journal and not manifest_there:
            roll_back(s3, bucket, prefix, run, journal)
            manifest_there = bool(journal.get("old"))
        _delete(s3, bucket, keys)
    return bool(remote.staged)


def roll_back(s3: Any, bucket: str, prefix: str, run: str, journal: dict) -> None:
    """Put back what the run ``run`` replaced or deleted, delete what it created, and the old manifest last."""
    aside = f"{prefix}{STAGING}/{run}/old/"
    kept = journal.get("backed_up", {})
    _parallel(lambda name: _copy(s3, bucket, aside + name, prefix + name, kept[name]), list(kept))
    existed = set(journal.get("existed", []))
    _delete(s3, bucket, [prefix + name for name in journal.get("writes", []) if name not in existed])
    if journal.get("old"):
        _put_json(s3, bucket, prefix + MANIFEST, journal["old"])


def publish_s3(
    staging: Path,
    uri: str,
    run_id: str,
    sources: dict[str, Path],
    kind: str,
    overwrite: bool = False,
    s3: Any = None,
    remote: Remote | None = None,
) -> tuple[dict, int]:
    """Checksum and publish the staged export (plus ``sources``: files read where they are, such as the
    checkpoint's weights) under ``uri``. Each file's upload starts as soon as its checksum is known.
    Returns the manifest and how many files were already there and skipped. On a failure the previous
    export is rolled back before the error is raised (or, if S3 cannot be reached for that, left marked
    incomplete for the next run to roll back). ``remote``: the prefix as just listed, if it was."""

    bucket, prefix = split_prefix(uri)
    s3 = s3 or client()
    stage = f"{prefix}{STAGING}/{run_id}/"
    written: list[str] = []  # keys under the staging prefix
    touched = [False]  # whether anything outside the staging prefix was changed yet
    try:
        remote = remote or read_remote(s3, bucket, prefix)
        if recover(s3, bucket, prefix, remote):
            remote = read_remote(s3, bucket, prefix)
        old = remote.manifest
        names = sorted(manifest_paths(staging, sources))
        journal = {"run": run_id, "old": old, "writes": names, "existed": sorted(set(names) & set(remote.objects))}
        if MANIFEST not in remote.objects:  # files may go straight to their place: the journal says which, first
            _put_json(s3, bucket, stage + JOURNAL, journal)
            written.append(stage + JOURNAL)
            touched[0] = True
        manifest, staged, skipped = _upload(s3, bucket, prefix, stage, staging, sources, kind, remote, written)
        dropped = [n for n in (remote.objects if overwrite else (old or {}).get("files", {})) if n not in manifest["files"]]
        dropped = [n for n in dropped if n in remote.objects and n != MANIFEST]
        if manifest == old and not staged and not dropped:  # nothing changed: nothing moves
            return manifest, skipped
        aside = {n: remote.objects[n] for n in staged + dropped if n in remote.objects}
        _parallel(lambda n: _copy(s3, bucket, prefix + n, f"{stage}old/{n}", aside[n]), list(aside))
        written += [f"{stage}old/{n}" for n in aside]
        if aside or staged or MANIFEST in remote.objects:  # else the first journal says all there is to undo
            _put_json(s3, bucket, stage + JOURNAL, {**journal, "new": manifest, "backed_up": aside})
            written.append(stage + JOURNAL)
        touched[0] = True
        if MANIFEST in remote.objects:
            s3.delete_object(Bucket=bucket, Key=prefix + MANIFEST)
        files = manifest["files"]
        _parallel(lambda n: _copy(s3, bucket, f"{stage}new/{n}", prefix + n, files[n]["bytes"]), staged)
        _delete(s3, bucket, [prefix + n for n in dropped])
        _raise_problems(_parallel(lambda n: _check(s3, bucket, prefix + n, files[n]), staged), uri, "publish")
        s3.upload_file(str(staging / MANIFEST), bucket, prefix + MANIFEST)
    except BaseException as error:
        _fail(s3, bucket, prefix, uri, error, touched[0])
    with contextlib.suppress(*_errors()):  # best effort: the next run deletes what is left
        _delete(s3, bucket, sorted(set(written)))
    return manifest, skipped


def _upload(
    s3: Any,
    bucket: str,
    prefix: str,
    stage: str,
    staging: Path,
    sources: dict[str, Path],
    kind: str,
    remote: Remote,
    written: list[str],
) -> tuple[dict, list[str], int]:
    """Write the manifest while uploading each changed file as soon as it is hashed: to its place when
    nothing is there to protect, else to ``<stage>new/``. Returns the manifest, the staged names and how
    many files were skipped (already there with the same checksum)."""
    from boto3.s3.transfer import create_transfer_manager

    uploads: dict[str, Any] = {}
    targets: dict[str, str] = {}
    with create_transfer_manager(s3, _transfer_config()) as manager:

        def upload_if_changed(name: str, path: Path, entry: dict) -> None:
            if name in remote.objects and _check(s3, bucket, prefix + name, entry) is None:
                return
            direct = MANIFEST not in remote.objects and name not in remote.objects
            targets[name] = prefix + name if direct else f"{stage}new/{name}"
            metadata = {"Metadata": {"sha256": entry["sha256"]}}
            uploads[name] = manager.upload(str(path), bucket, targets[name], extra_args=metadata)

        manifest = write_manifest(staging, kind, sources, on_hashed=upload_if_changed)
        for future in uploads.values():
            future.result()
    staged = sorted(name for name, key in targets.items() if key.startswith(stage))
    written += [targets[name] for name in staged]
    files = manifest["files"]
    uploaded = sorted(targets)  # every upload is checked; files skipped were checked before
    _raise_problems(_parallel(lambda n: _check(s3, bucket, targets[n], files[n]), uploaded), f"s3://{bucket}/{prefix}", "upload")
    return manifest, staged, len(files) - len(uploads)


def _fail(s3: Any, bucket: str, prefix: str, uri: str, error: BaseException, touched: bool) -> None:
    """Roll back at once (when S3 can be reached), then raise the error with what a reader now sees."""
    try:
        recover(s3, bucket, prefix, read_remote(s3, bucket, prefix))
        state = "rolled back: the destination holds what it held before" if touched else "nothing was changed"
    except Exception:  # noqa: BLE001 -- the original error is the one to report
        state = "nothing was changed (its staging is deleted by the next export)"
        if touched:
            state = (
                "could not roll back: the destination holds what it held before or is marked incomplete; "
                "the next export to it restores what it held before"
            )
    if isinstance(error, KubetuneError):
        raise KubetuneError([*error.problems, Problem(uri, state)], error.title) from None
    if isinstance(error, _errors()):
        reported = explain(error, uri)
        raise KubetuneError([*reported.problems, Problem(uri, state)], reported.title) from None
    raise error


def _copy(s3: Any, bucket: str, source: str, key: str, size: int) -> None:
    """Server-side copy keeping the checksum metadata: one request up to 5 GiB, multipart above."""
    if size < 5 * 2**30:
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source}, MetadataDirective="COPY")
    else:
        s3.copy(
            {"Bucket": bucket, "Key": source}, bucket, key, ExtraArgs={"MetadataDirective": "COPY"}, Config=_transfer_config()
        )


def _parallel(work, items: list) -> list:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(work, items))


def _raise_problems(problems: list[str | None], uri: str, stage: str) -> None:
    found = [p for p in problems if p]
    if found:
        raise KubetuneError([Problem(uri, p) for p in found], f"S3 {stage} did not verify; no manifest was written")


def verify_s3(uri: str) -> list[str]:
    """Problems with an export under ``uri``: no manifest (saying so when a run was interrupted), an invalid
    manifest, an object whose size or checksum differs, an object that is not in the manifest."""
    bucket, prefix = split_prefix(uri)
    where = f"s3://{bucket}/{prefix}{MANIFEST}"
    try:
        s3 = client()
    except KubetuneError as e:  # no credentials: said as a problem, like any other
        return [str(p) for p in e.problems]
    try:
        remote = read_remote(s3, bucket, prefix)
        if remote.manifest_error:
            return [f"{where} is not a valid manifest: {remote.manifest_error}"]
        if remote.manifest is None:
            if remote.journals:
                runs = ", ".join(sorted(remote.journals))
                restores = f"the next export to {uri} restores the previous export"
                return [f"{where} is missing: an export run ({runs}) was interrupted; {restores}"]
            return [f"{where} is missing: the export is incomplete"]
        files = remote.manifest["files"]
        problems = [p for p in _parallel(lambda n: _check(s3, bucket, prefix + n, files[n]), list(files)) if p]
    except _errors() as e:
        return [str(p) for p in explain(e, uri).problems]
    extra = sorted(set(remote.objects) - set(files) - {MANIFEST})
    return problems + [f"s3://{bucket}/{prefix}{name} is not in the manifest" for name in extra]
