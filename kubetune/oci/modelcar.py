"""A modelcar: the exported model's files under ``/models`` on a small base image, pushed and verified.

``push_modelcar``: ``skopeo copy`` pulls the base image (a registry reference, or ``oci-layout:<dir>``) into an
OCI layout, ``olot`` adds one uncompressed layer per file (the model card as its gzipped last layer, as OpenShift
AI's Model Registry does), the image is labelled ``io.kubetune.export=modelcar`` (config label and manifest
annotation), ``skopeo copy --preserve-digests`` pushes it (blobs first, the manifest under its tag last: a push
that is killed leaves the tag as it was), and the manifest the registry then serves must have the digest of the
local one (and of ``--digestfile``). ``check_tag`` refuses, before anything is built, a tag holding an image
kubetune did not push, unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kubetune.errors import Failure, KubetuneError, Problem
from kubetune.oci import skopeo
from kubetune.oci.reference import CREDENTIALS_HINT, DIGEST, SHOWN, OciReference, parse, plain_http, public, refuse

LABEL = "io.kubetune.export"
MODELCAR = "modelcar"
MODEL_CARD = "README.md"
DEFAULT_BASE_IMAGE = "registry.access.redhat.com/ubi9/ubi-micro:latest"  # KServe's modelcar container runs a shell
LAYOUT_PREFIX = "oci-layout:"
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"  # OCI layer whiteouts: <dir>/.wh.<name> hides <name>, .wh..wh..opq all


@dataclass(frozen=True)
class Pushed:
    """A pushed modelcar: ``uri`` pins it by digest (``oci://host/repo@sha256:...``), ``tag`` is where it was pushed."""

    uri: str
    tag: str


@dataclass(frozen=True)
class BaseImage:
    """``modelcar_base_image`` as skopeo reads it, the host its errors name, and whether that host is plain HTTP."""

    source: str
    host: str
    plain_http: bool


def base_image(image: str) -> BaseImage:
    """``registry/repository:tag`` (``docker://`` optional) or ``oci-layout:<dir>``; a credential in it is refused."""
    where = "modelcar_base_image"
    image = image.strip() or DEFAULT_BASE_IMAGE
    if image.startswith(LAYOUT_PREFIX):
        directory = image.removeprefix(LAYOUT_PREFIX)
        if not Path(directory, "index.json").is_file():
            raise refuse(where, f"{directory} is not an OCI image layout (no index.json)")
        return BaseImage(f"oci:{directory}", directory, False)
    name = image.removeprefix("docker://")
    first, slash, _ = name.partition("/")
    if slash and "@" in first:
        raise refuse(where, f"{public('docker://' + name)} holds a credential", CREDENTIALS_HINT)
    if "@" in name and not DIGEST.fullmatch(name.partition("@")[2]):  # ``user:password@`` after the host
        raise refuse(where, f"{public('docker://' + name)} holds an @ that does not start a digest", CREDENTIALS_HINT)
    if not SHOWN.fullmatch(name):  # a query, a space...: not shown, not given to skopeo
        raise refuse(where, f"{public('docker://' + name)} is not an image reference", "give registry/repository:tag")
    host = first if slash and ("." in first or ":" in first or first == "localhost") else "docker.io"
    return BaseImage(f"docker://{name}", host, plain_http(host))


def check_base_image(image: str) -> None:
    """Refuse, before anything runs, a registry base image that is not there or cannot be read (its registry
    unreachable, the credentials refused): one line naming it. An ``oci-layout:`` is checked by ``base_image``."""
    base, image = base_image(image), image.strip() or DEFAULT_BASE_IMAGE
    if base.source.startswith("docker://"):
        doing = f"reading the base image {image}"
        if skopeo.inspect_raw(base.source, base.host, base.plain_http, doing) is None:
            raise refuse("modelcar_base_image", f"{image} is not there (no such image or tag)")


def check_tag(ref: OciReference, overwrite: bool) -> None:
    """Refuse a tag that holds an image kubetune did not push (its manifest lacks our annotation), unless
    ``overwrite``. The registry's being unreachable or refusing the credentials is said here, before any work."""
    raw = skopeo.inspect_raw(ref.docker, ref.host, ref.plain_http)
    if raw is None or overwrite:
        return
    try:
        annotations = json.loads(raw).get("annotations") or {}
    except (ValueError, AttributeError):
        annotations = {}
    if annotations.get(LABEL) != MODELCAR:
        raise refuse(
            ref.uri,
            "holds an image that kubetune did not push (no io.kubetune.export=modelcar annotation)",
            "choose another tag, or pass export_overwrite (run-local: --overwrite) to move the tag "
            "(the image stays in the registry by its digest)",
        )


def push_modelcar(staging: Path, ref: OciReference, image: str = "") -> Pushed:
    """Pack every file of the export in ``staging`` under ``/models`` on the base ``image``, push it to ``ref``, and
    check the registry serves exactly the manifest built here. ``staging``'s model files are removed as they are packed."""
    from olot.basics import oci_layers_on_top
    from olot.enums import RemoveOriginals

    base, image = base_image(image), image.strip() or DEFAULT_BASE_IMAGE
    card = staging / MODEL_CARD
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p != card)
    with tempfile.TemporaryDirectory(prefix="kubetune-modelcar-") as workdir:
        layout = Path(workdir, "layout")
        try:
            skopeo.copy(base.source, f"oci:{layout}:latest", base.host, f"pulling the base image {image}", base.plain_http)
        except skopeo.Absent:
            raise refuse("modelcar_base_image", f"{image} is not there (no such image or tag)") from None
        try:
            oci_layers_on_top(
                layout,
                files,
                card if card.is_file() else None,
                labels={LABEL: MODELCAR},
                annotations={LABEL: MODELCAR},
                root_dir=staging,
                remove_originals=RemoveOriginals.DEFAULT,
            )
        except ValueError as error:  # e.g. a base image whose history does not list its layers
            raise refuse("modelcar_base_image", f"{image} cannot be extended: {error}") from None
        local = json.loads(Path(layout, "index.json").read_text())["manifests"][0]["digest"]
        digestfile = Path(workdir, "digest")
        skopeo.copy(
            f"oci:{layout}:latest", ref.docker, ref.host, f"pushing to {ref.uri}", ref.plain_http, digestfile, pushing=True
        )
        written = digestfile.read_text().strip() if digestfile.is_file() else ""
    raw = skopeo.inspect_raw(ref.docker, ref.host, ref.plain_http)
    served = f"sha256:{hashlib.sha256(raw).hexdigest()}" if raw is not None else "nothing"
    if served != local or written != local:
        raise Failure(ref.host, f"{ref.uri} serves {served} after the push of {local} (skopeo wrote {written or 'no digest'})")
    return Pushed(ref.pinned(local), ref.uri)


def pull_models(uri: str, workdir: Path) -> Path:
    """The ``/models`` folder of the image ``uri`` (by tag or digest), pulled with skopeo and unpacked into ``workdir``
    layer by layer as a container runtime applies them (see ``unpack``); ``refuse`` when the image is not there or
    a layer holds under ``/models`` what cannot be unpacked safely (one problem each)."""
    ref = parse(uri, "destination", pinned=True)
    layout, rootfs = workdir / "layout", workdir / "rootfs"
    try:
        skopeo.copy(ref.docker, f"oci:{layout}:pulled", ref.host, f"pulling {ref.uri}", ref.plain_http)
    except skopeo.Absent:
        raise refuse(ref.uri, "is not there (no such image or tag)") from None
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_text())
    problems = []
    for number, layer in enumerate(manifest["layers"], 1):
        with tarfile.open(blobs / layer["digest"].removeprefix("sha256:")) as tar:
            problems += [Problem(f"layer {number}", message) for message in unpack(tar, rootfs)]
    if problems:
        raise KubetuneError(problems, f"{ref.uri} cannot be checked")
    return rootfs / "models"


def unpack(tar: tarfile.TarFile, rootfs: Path) -> list[str]:
    """Apply one layer's members under ``/models`` to ``rootfs`` as a runtime does: each name cleaned from the root
    (``./models/x``, ``models/./x``, ``/models/x`` and ``a/../models/x`` all are ``models/x``), whiteouts
    (``.wh.<name>``, ``.wh..wh..opq``) first, removing what lower layers put there. What the ``data`` filter refuses
    (an absolute or escaping link, a device file) or cannot unpack is not written: one line each is returned."""
    members, whiteouts, problems = [], [], []
    for member in tar.getmembers():
        name = clean(member.name)
        if name.split("/", 1)[0] != "models":
            continue
        if member.islnk():
            member = member.replace(linkname=clean(member.linkname), deep=False)
        member = member.replace(name=name, deep=False)
        (whiteouts if PurePosixPath(name).name.startswith(WHITEOUT) else members).append(member)
    for member in whiteouts:
        path = PurePosixPath(member.name)
        folder, hidden = rootfs / path.parent, path.name.removeprefix(WHITEOUT)
        if path.name == OPAQUE:
            gone = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
        else:
            gone = [folder / hidden] if hidden not in ("", ".", "..") else []
        for entry in gone:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif os.path.lexists(entry):
                entry.unlink()
    for member in members:
        try:
            tar.extract(member, rootfs, filter="data")  # no path outside rootfs, no device, no set-uid
        except (tarfile.TarError, KeyError, OSError) as error:
            problems.append(f"{member.name} cannot be unpacked: {error}")
    return problems


def clean(name: str) -> str:
    """A member's path as a runtime applies it: cleaned from the root, without its leading ``/``."""
    return posixpath.normpath("/" + name).lstrip("/")
