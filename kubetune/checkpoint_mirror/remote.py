"""The mirror's side in S3: keys under its prefix, markers, uploads of one file (hashed as sent), deletions, and the
probe before training (access; no other mirror above or below; no other writer's save)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune import s3
from kubetune.checkpoint_mirror.layout import MARKER, WRITER, in_layout
from kubetune.console import say
from kubetune.errors import KubetuneError, Problem

ATTEMPTS = 3  # per file, on top of boto3's own retries
IDENTITY = ".kubetune-mirror"  # written at a mirror's root: another mirror above or below it is refused
OWN_PREFIX = "give checkpoint_storage a prefix of its own"
Say = Callable[[str], None]


def refuse(where: str, message: str, hint: str) -> KubetuneError:
    return KubetuneError([Problem(where, message, hint)], "checkpoint mirror failed")


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


class Remote:
    """A training output (``root``: the backend's ``ckpt_output_dir``) and its mirror at ``uri`` (never a bucket root).
    ``run``: this run's identity (``identity.run_identity``), recorded in each marker and checked by a restore."""

    def __init__(self, uri: str, root: Path, say: Say = say, run: dict[str, str] | None = None):
        self.uri, self.root, self.say, self.run = uri.rstrip("/"), Path(root), say, run
        self.bucket, key = s3.split_uri(self.uri)
        self.base = key.strip("/")
        if not self.base:
            raise refuse(self.uri, "is a bucket root", "give checkpoint_storage a prefix of its own: s3://bucket/run-name")
        self.s3 = s3.client()
        self.done: dict[str, str] = {}  # prefix (or log file) -> fingerprint mirrored (or restored) by this process
        self.lock = threading.Lock()

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def where(self, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(rel)}".rstrip("/")

    def relative(self, key: str) -> str:
        return key[len(self.base) + 1 :]

    def failure(self, error: Exception, rel: str) -> KubetuneError:
        return error if isinstance(error, KubetuneError) else s3.explain(error, self.where(rel))

    def check_access(self) -> None:
        """Write and delete a probe object (a bad bucket, endpoint or credential fails before training starts), then
        refuse a prefix another mirror sits above or below (its retention would prune this one's saves, or the reverse)
        or that holds a save another writer marked, and mark this prefix as a mirror."""
        probe = self.key(f".kubetune-access-probe-{uuid.uuid4().hex}")
        try:
            self.s3.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.s3.delete_object(Bucket=self.bucket, Key=probe)
            self._refuse_shared()
            self.s3.put_object(Bucket=self.bucket, Key=self.key(IDENTITY), Body=json.dumps({"writer": WRITER}).encode())
        except Exception as error:  # noqa: BLE001 - boto3's and the network's errors, explained in one line
            raise self.failure(error, "") from None

    def _refuse_shared(self) -> None:
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

    def keys(self) -> list[str]:
        """Every object key under the mirror's prefix."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.base + "/")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

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
        """Every marked save folder of the layout under the mirror and its marker (``{}``: not kubetune's)."""
        found = {}
        for key in self.keys():
            rel = self.relative(key)
            if rel.endswith("/" + MARKER) and in_layout(prefix := rel[: -len(MARKER) - 1]):
                found[prefix] = self.marker(prefix) or {}
        return found

    def write_marker(self, rel: str, document: dict) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"), Body=json.dumps(document).encode())

    def put(self, path: Path, rel: str) -> str:
        """Upload one file; returns the SHA-256 of what was sent (hashed as it is read: one read of the file)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(max_concurrency=4)  # parts of one file at once; 2 saves at once: within botocore's pool of 10
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

    def delete(self, rel: str, files: dict[str, int]) -> None:
        """Unmark ``rel`` (marker first), then delete the files kubetune wrote there (its manifest)."""
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(f"{rel}/{MARKER}"))
        self.delete_files(rel, list(files))

    def delete_files(self, rel: str, files: list[str]) -> None:
        names = [self.key(f"{rel}/{name}") for name in files]
        for start in range(0, len(names), 1000):
            chunk = [{"Key": k} for k in names[start : start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
