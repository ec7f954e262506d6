"""S3 access shared by data preparation and export: boto3 with retries, credentials from the environment only.

The endpoint comes from boto3's own settings (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for
MinIO, Ceph or ODF; ``AWS_REGION``), credentials from the environment, a mounted Kubernetes secret
exported as environment variables, or the pod's web identity — never from a pipeline parameter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.files import replaced
from kubetune.secrets import redact

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/+")  # also a URL whose "//" a Path() made one "/"
NO_USERINFO = "holds a user or password: credentials come from the environment only"
NO_QUERY = "holds a ?query or #fragment, which an s3:// URI may not (S3 keys holding '?' or '#' are rare: rename the object)"
CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3://) or HF_TOKEN (hf://) from a Kubernetes secret"


def url_scheme(text: str) -> str | None:
    """The scheme of ``text`` if it looks like a URL (``scheme://...``, or ``scheme:/...`` once a Path collapsed it)."""
    match = _URL.match(text)
    return match.group(1) if match else None


def _parts(uri: str) -> tuple[str, str] | None:
    """The scheme, and what follows it up to a query or fragment; None when ``uri`` is no URL."""
    match = _URL.match(uri)
    return (match.group(1), re.split(r"[?#]", uri[match.end() :], maxsplit=1)[0]) if match else None


def has_userinfo(uri: str) -> bool:
    """Whether a URL carries a user or password before its host (``scheme://user:password@host/...``)."""
    parts = _parts(uri)
    if parts is None:
        return False
    rest = parts[1]
    authority = rest.split("/", 1)[0]
    return "@" in authority or (":" in authority and "@" in rest)


def public_uri(uri: str) -> str:
    """``uri`` as a message may show it: scheme, host and path; no user, password, query or fragment."""
    parts = _parts(uri)
    if parts is None:
        return uri
    scheme, rest = parts
    return f"{scheme}://{rest.rpartition('@')[2] if has_userinfo(uri) else rest}"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); a user or password, a query or a fragment is refused."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {public_uri(uri)}")
    if has_userinfo(uri):
        raise KubetuneError([Problem(public_uri(uri), NO_USERINFO, CREDENTIALS_HINT)], "invalid S3 URI")
    if "?" in uri or "#" in uri:
        raise KubetuneError([Problem(public_uri(uri), NO_QUERY)], "invalid S3 URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise KubetuneError([Problem(uri, "names no bucket (expected s3://bucket/key)")], "invalid S3 URI")
    return bucket, key


def client() -> Any:
    """An S3 client that retries with backoff; fails clearly when no credentials are configured."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise KubetuneError([Problem("s3://", "needs boto3: install kubetune[s3]")], "cannot reach S3") from None
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise KubetuneError(
            [
                Problem(
                    "credentials",
                    "no S3 credentials found",
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a Kubernetes secret",
                )
            ],
            "cannot reach S3",
        )
    # AWS_MAX_ATTEMPTS is boto3's own setting: attempts in all, the first one included
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "10"))
    return session.client("s3", config=Config(retries={"total_max_attempts": max(attempts, 1), "mode": "standard"}))


def explain(error: Exception, uri: str) -> KubetuneError:
    """A boto3/botocore error as a one-line user-facing problem that names the URI (never the credentials)."""
    problem = _explained(error)
    return KubetuneError([Problem(public_uri(uri), redact(" ".join(problem.split())))], "S3 request failed")


def _explained(error: Exception) -> str:
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import ClientError

    if isinstance(error, (S3UploadFailedError, S3TransferFailedError)):
        cause = str(error).split(": ", 1)[-1]  # "Failed to upload A to B: <the S3 error>"
        return f"transfer failed after retries ({cause})"
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        messages = {
            "NoSuchBucket": "the bucket does not exist",
            "404": "no such object",
            "NoSuchKey": "no such object",
            "403": "access denied for these credentials",
            "AccessDenied": "access denied for these credentials",
            "InvalidAccessKeyId": "the access key is not valid for this endpoint",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
        }
        return messages.get(code, str(error))
    from kubetune.errors import explain as explain_failure

    failure = explain_failure(error)  # a network error: the endpoint and what happened, never a signed URL
    return failure.report() if failure else str(error)


def download(uri: str, destination: str | Path) -> Path:
    """Download an object, or every object under a prefix (``s3://bucket/dir/``), into ``destination``.

    Returns the local path that stands for ``uri``: the file, or the directory of the prefix.
    Each file is written under a temporary name and renamed, so no half file is ever left.
    """
    from boto3.exceptions import S3TransferFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(uri)
    s3 = client()
    destination = Path(destination)
    config = TransferConfig(max_concurrency=8)

    def fetch(k: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced(target) as partial:
            s3.download_file(bucket, k, str(partial), Config=config)

    try:
        if key and not key.endswith("/") and head(s3, bucket, key) is not None:
            fetch(key, destination / Path(key).name)
            return destination / Path(key).name
        prefix = key.rstrip("/") + "/" if key else ""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        if not keys:
            raise KubetuneError([Problem(uri, "no such object or prefix")], "S3 request failed")
        root = destination / (Path(prefix.rstrip("/")).name or bucket)
        for k in keys:
            fetch(k, root / k[len(prefix) :])
        return root
    except (ClientError, BotoCoreError, S3TransferFailedError) as e:
        raise explain(e, uri) from None


def head(s3: Any, bucket: str, key: str) -> dict | None:
    """The object's metadata (``head_object``); None when ``key`` is no object (or only a prefix)."""
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise
