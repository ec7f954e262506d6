"""Every ``skopeo`` call: credentials come only from the registry auth file skopeo reads itself, and what it
says on failure becomes one line naming the registry, with URLs' user, password and query removed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from kubetune.errors import Failure, redact

# What a registry answered, read from skopeo's status text only: its message also names the host, repository, tag
# and digest (``reading manifest v1 in host:port/repo: manifest unknown: manifest unknown``), which may hold any
# of these words or numbers. A registry error code follows ``: `` and is followed by ``: `` (no reference part is
# preceded by ``: ``); an HTTP status follows skopeo's own words.
ABSENT = re.compile(r"(?:^|: )(?:manifest unknown|name unknown)(?::|$)|StatusCode: 404\b")
UNAUTHORIZED = re.compile(
    r"(?:^|: )unauthorized: |from registry 401\b|StatusCode: 401\b|HTTP status: 401\b|(?:^|: )401 \(Unauthorized\)"
)
DENIED = re.compile(r"(?:^|: )denied: |from registry 403\b|StatusCode: 403\b|HTTP status: 403\b|(?:^|: )403 \(Forbidden\)")
UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "network is unreachable", "no route to host",
               "connection reset", ": tls: ", ": x509: ", "http response to https client", ": eof")  # fmt: skip
AUTH_HINT = (
    "log in to it in the registry auth file (REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, "
    "~/.docker/config.json) or name a dockerconfigjson secret in registry_auth_secret"
)
INSPECT_TIMEOUT = "2m"  # a manifest read; copies have no limit (a large model takes long)


class Absent(Exception):
    """The image is not in the registry (its tag or repository is unknown)."""


def tls(plain_http: bool, *flags: str) -> list[str]:
    """``--…-tls-verify=false`` for a registry reached over plain HTTP (loopback or listed), else nothing."""
    return [f"{flag}=false" for flag in flags] if plain_http else []


def run(args: list[str], host: str, doing: str, timeout: str | None = None) -> str:
    """``skopeo args``; its output. A failure is one line naming ``host`` (``Absent`` where the image is not there)."""
    if shutil.which("skopeo") is None:
        raise Failure("skopeo", "is not installed", "the runtime image has it; elsewhere install the skopeo package")
    done = subprocess.run(
        ["skopeo", *(["--command-timeout", timeout] if timeout else []), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode == 0:
        return done.stdout
    said = said_by(done.stderr)
    low = said.lower()
    if UNAUTHORIZED.search(said):
        raise Failure(host, f"refused the credentials while {doing} (401 unauthorized)", AUTH_HINT)
    if DENIED.search(said):
        raise Failure(host, f"denied access while {doing} (403)", AUTH_HINT)
    if ABSENT.search(said):
        raise Absent(said)
    if any(word in low for word in UNREACHABLE):
        hint = "check the host and port" + (
            "; a registry over plain HTTP is allowed on loopback, or for hosts listed in KUBETUNE_OCI_INSECURE_REGISTRIES"
            if "https client" in low or "tls" in low or "x509" in low
            else ""
        )
        raise Failure(host, f"is unreachable while {doing}: {said}", hint)
    raise Failure(host, f"failed while {doing}: {said}")


def said_by(stderr: str) -> str:
    """skopeo's last message (``level=fatal msg="..."``), one line, with no credential."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()] or ["skopeo failed without a message"]
    line = lines[-1]
    if match := re.search(r'msg="((?:[^"\\]|\\.)*)"', line):
        line = match.group(1).replace('\\"', '"')
    line = re.sub(r'^Error parsing image name "[^"]*": ', "", line)  # the caller names the reference
    line = re.sub(r"(\w+://)[^/\s@\"]*@", r"\1", line)  # user:password@ in a URL
    line = re.sub(r"(https?://[^\s\"?]+)\?[^\s\"]*", r"\1", line)  # a query string (signed URLs)
    return redact(line)[:400]


def inspect_raw(reference: str, host: str, plain_http: bool, doing: str = "") -> bytes | None:
    """The manifest's bytes as the registry serves them, or None when the image is not there."""
    try:
        out = run(
            ["inspect", "--raw", *tls(plain_http, "--tls-verify"), reference],
            host,
            doing or f"reading {reference.replace('docker://', 'oci://')}",
            INSPECT_TIMEOUT,
        )
    except Absent:
        return None
    return out.encode()


def copy(source: str, destination: str, host: str, doing: str, plain_http: bool = False, digestfile: Path | None = None,
         pushing: bool = False) -> None:  # fmt: skip
    """``skopeo copy``; ``pushing``: to a registry, with its blobs and manifest exactly as they are (the digest kept)."""
    flags = tls(plain_http, "--dest-tls-verify" if pushing else "--src-tls-verify")
    if pushing:
        flags.append("--preserve-digests")  # no recompression: the pushed manifest is the local one
    if digestfile:
        flags += ["--digestfile", str(digestfile)]
    try:
        run(["copy", "--quiet", *flags, source, destination], host, doing)
    except Absent as absent:
        if not pushing:
            raise
        raise Failure(host, f"failed while {doing}: {absent}", "check that the registry serves this repository") from None
