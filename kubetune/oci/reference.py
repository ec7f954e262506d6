"""``oci://registry/repository:tag`` references: parsed, refused when they carry a credential, and whether the
registry may be reached over plain HTTP (loopback, or a host in ``KUBETUNE_OCI_INSECURE_REGISTRIES``)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from kubetune.errors import KubetuneError, Problem

SCHEME = "oci://"
INSECURE_ENV = "KUBETUNE_OCI_INSECURE_REGISTRIES"  # comma-separated host[:port] reached over plain HTTP
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")
FORMAT = "oci://registry/repository:tag"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SHOWN = re.compile(r"[A-Za-z0-9._:/@\[\]-]*")  # the characters of a reference: a message shows no others


@dataclass(frozen=True)
class OciReference:
    """An image in a registry: ``host`` (with its port), ``repository`` and ``tag`` (or, read only, ``digest``)."""

    host: str
    repository: str
    tag: str
    digest: str = ""

    @property
    def name(self) -> str:
        """``host/repository``: the image without its tag."""
        return f"{self.host}/{self.repository}"

    @property
    def version(self) -> str:
        """``:tag`` or ``@sha256:...``."""
        return f"@{self.digest}" if self.digest else f":{self.tag}"

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}{self.version}"

    def pinned(self, digest: str) -> str:
        """The ``oci://`` URI of the image by its manifest digest: what KServe and the Model Registry are given."""
        return f"{SCHEME}{self.name}@{digest}"

    @property
    def docker(self) -> str:
        """skopeo's name for it."""
        return f"docker://{self.name}{self.version}"

    @property
    def plain_http(self) -> bool:
        return plain_http(self.host)


def refuse(where: str, message: str, hint: str | None = None) -> KubetuneError:
    return KubetuneError([Problem(where, message, hint)], "cannot export")


def parse(uri: str, where: str = "export_destination", pinned: bool = False) -> OciReference:
    """``oci://host[:port]/repository[:tag]`` (``latest`` when no tag is given); a credential in it is refused
    without being shown, and so is a digest (a push needs a tag) unless ``pinned`` (an image to read:
    ``oci://host/repository@sha256:...`` is accepted too)."""
    rest = uri.removeprefix(SCHEME)
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        raise refuse(where, f"{public(SCHEME + authority)}/... holds a credential", CREDENTIALS_HINT)
    if "@" in rest:
        name, _, digest = rest.partition("@")
        if not DIGEST.fullmatch(digest):  # ``user:password@`` in the path: nothing after the host is shown
            raise refuse(where, f"{public(SCHEME + authority)}/... holds an @ that does not start a digest", CREDENTIALS_HINT)
        if not pinned:
            raise refuse(where, f"{public(uri)} names a digest: a modelcar is pushed to a tag", f"give {FORMAT}")
        pinned_ref = parse(f"{SCHEME}{name}", where)
        return OciReference(pinned_ref.host, pinned_ref.repository, "", digest)
    host, _, path = rest.partition("/")
    name, _, tag = path.rpartition(":") if ":" in path else (path, "", "latest")
    if not HOST.fullmatch(host) or not REPOSITORY.fullmatch(name) or not TAG.fullmatch(tag):
        raise refuse(where, f"{public(uri)} is not an image reference", f"give {FORMAT} (lower-case repository)")
    return OciReference(host, name, tag)


CREDENTIALS_HINT = (
    "never put credentials in the reference: log in to the registry in the registry auth file (REGISTRY_AUTH_FILE, "
    "${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json) or name a dockerconfigjson secret in "
    "registry_auth_secret"
)


def public(uri: str) -> str:
    """``uri`` as a message may show it: whatever precedes an ``@`` in its authority is dropped, a path with an ``@``
    that does not start a digest is ``...``, and so is everything from the first character no reference holds
    (a query, a fragment, a space)."""
    scheme, sep, rest = uri.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" in path and not DIGEST.fullmatch(path.partition("@")[2]):
        path = "..."
    shown = f"{scheme}{sep}{authority.rsplit('@', 1)[-1]}{slash}{path}"
    kept = SHOWN.match(shown).group()
    return shown if kept == shown else f"{kept}..."


def plain_http(host: str) -> bool:
    """Whether ``host`` (with its port) is reached without TLS verification: a loopback registry, or one listed
    in ``KUBETUNE_OCI_INSECURE_REGISTRIES`` by the user; never any other silently."""
    listed = {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}
    if host in listed:
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
