"""Publishing a staged export to ``s3://bucket/prefix`` so that a half-finished upload never looks complete.

1. Files whose object under the prefix already has the same SHA-256 (stored as object metadata) and size
   are skipped: a re-run of the same export moves no bytes.
2. The others are uploaded with boto3's transfer manager (multipart, parallel parts and files, retries
   with backoff), each as soon as its checksum is computed; then every uploaded object's size and
   checksum are verified. When a complete export
   (one with a manifest) is already there, they go under ``prefix/.kubetune-staging/<run>/`` so that a
   failed upload leaves that export untouched; otherwise straight to their place (nothing to protect).
3. The old manifest is deleted, so from here until step 5 readers see "incomplete", never a mix.
4. Staged objects are copied server-side into the prefix; objects of an older export that are not in the
   new manifest are deleted; the staging prefix is removed.
5. Every object is verified again, and ``manifest.json`` is written last.

A failure at any step leaves no manifest for the new content (and the staging prefix is cleaned up).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.s3 import client, explain, split_uri

MANIFEST = "manifest.json"
STAGING = ".kubetune-staging"


def check_bucket(uri: str) -> None:
    """Credentials present and the bucket reachable: checked before any bytes move."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = split_uri(uri)
    try:
        client().head_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise KubetuneError([Problem(f"s3://{bucket}", "the bucket does not exist")], "cannot export") from None
        raise explain(e, f"s3://{bucket}") from None
    except BotoCoreError as e:
        raise explain(e, uri) from None


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=16)


def _remote(s3: Any, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise
    return {"bytes": head["ContentLength"], "sha256": head.get("Metadata", {}).get("sha256")}


def _check(s3: Any, bucket: str, key: str, entry: dict) -> str | None:
    remote = _remote(s3, bucket, key)
    if remote is None:
        return f"s3://{bucket}/{key} is missing"
    if remote["bytes"] != entry["bytes"] or remote["sha256"] != entry["sha256"]:
        return f"s3://{bucket}/{key} does not match its checksum"
    return None


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})


def publish_s3(staging: Path, uri: str, run_id: str, sources: dict[str, Path], kind: str) -> tuple[dict, int]:
    """Checksum and publish the staged export (plus ``sources``: files read where they are, such as the
    checkpoint's weights) under ``uri``. Each file's upload starts as soon as its checksum is known.
    Returns the manifest and how many files were already there and skipped."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from boto3.s3.transfer import create_transfer_manager
    from botocore.exceptions import BotoCoreError, ClientError
    from kubetune.components.export.core import write_manifest

    bucket, prefix = split_uri(uri)
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    s3 = client()
    stage = f"{prefix}{STAGING}/{run_id}/"
    uploads: dict[str, Any] = {}
    try:
        protect = _remote(s3, bucket, prefix + MANIFEST) is not None  # a complete export is there
        target = stage if protect else prefix
        with create_transfer_manager(s3, _transfer_config()) as manager:

            def upload_if_changed(name: str, path: Path, entry: dict) -> None:
                if _check(s3, bucket, prefix + name, entry):
                    metadata = {"Metadata": {"sha256": entry["sha256"]}}
                    uploads[name] = manager.upload(str(path), bucket, target + name, extra_args=metadata)

            manifest = write_manifest(staging, kind, sources, on_hashed=upload_if_changed)
            for future in uploads.values():
                future.result()
        files, changed = manifest["files"], list(uploads)
        if protect:  # staged objects are checked before the complete export there is touched
            _raise_problems(_parallel(lambda name: _check(s3, bucket, target + name, files[name]), changed), uri, "upload")
            s3.delete_object(Bucket=bucket, Key=prefix + MANIFEST)
            _parallel(lambda name: _copy(s3, bucket, stage + name, prefix + name, files[name]["bytes"]), changed)
        ours = set(files) | {MANIFEST}
        stale = [
            k for k in _keys(s3, bucket, prefix) if not k.startswith(prefix + STAGING + "/") and k[len(prefix) :] not in ours
        ]
        _delete(s3, bucket, stale)
        _raise_problems(_parallel(lambda name: _check(s3, bucket, prefix + name, files[name]), list(files)), uri, "publish")
        s3.upload_file(str(staging / MANIFEST), bucket, prefix + MANIFEST)
    except (ClientError, BotoCoreError, S3UploadFailedError, S3TransferFailedError) as e:
        raise explain(e, uri) from None
    finally:  # best effort: a later run stages elsewhere, and no manifest points at this staging prefix
        with contextlib.suppress(ClientError, BotoCoreError):
            _delete(s3, bucket, _keys(s3, bucket, stage))
    return manifest, len(files) - len(changed)


def _copy(s3: Any, bucket: str, source: str, key: str, size: int) -> None:
    """Server-side copy keeping the checksum metadata: one request up to 5 GiB, multipart above."""
    if size < 5 * 2**30:
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source}, MetadataDirective="COPY")
    else:
        s3.copy(
            {"Bucket": bucket, "Key": source}, bucket, key, ExtraArgs={"MetadataDirective": "COPY"}, Config=_transfer_config()
        )


def _parallel(work, items: list) -> list:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(work, items))


def _raise_problems(problems: list[str | None], uri: str, stage: str) -> None:
    found = [p for p in problems if p]
    if found:
        raise KubetuneError([Problem(uri, p) for p in found], f"S3 {stage} did not verify; no manifest was written")


def verify_s3(uri: str) -> list[str]:
    """Problems with an export under ``uri``: no manifest, or an object whose size or checksum differs."""
    from botocore.exceptions import ClientError

    bucket, prefix = split_uri(uri)
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    s3 = client()
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read())
    except ClientError:
        return [f"s3://{bucket}/{prefix}{MANIFEST} is missing: the export is incomplete"]
    return [p for name, entry in manifest["files"].items() if (p := _check(s3, bucket, prefix + name, entry))]
