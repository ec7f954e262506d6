"""A real OCI registry (Debian's ``docker-registry``, the CNCF distribution server) on 127.0.0.1, and a tiny base
image pushed to it.

The base image is built offline: an OCI layout whose one layer holds a single file, with a config whose history
lists that layer (olot requires it). No shell is in it: KServe's modelcar container runs ``sh`` from the base
image, which a cluster gets from ``modelcar_base_image`` (ubi-micro by default); here no container runs, so what
the tests check is the image's layout and the model files under ``/models``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

needs_tools = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("docker-registry") is None,
    reason="needs skopeo and docker-registry (Debian packages): bash tests/system-tools.sh installs them",
)
BASE_FILE = "etc/kubetune-test-base"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(root: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """``host:port`` of a docker-registry serving plain HTTP on loopback, its storage under ``root``; with
    ``htpasswd``, every request needs one of its users (HTTP basic auth)."""
    port = free_port()
    auth = f"auth:\n  htpasswd:\n    realm: kubetune-tests\n    path: {htpasswd}\n" if htpasswd else ""
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:  # 401: up, and asking for credentials
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("docker-registry did not start") from None
            time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A registry without authentication."""
    with serving(tmp_path_factory.mktemp("registry")) as host:
        yield host


def write_layout(root: Path) -> Path:
    """An OCI image layout of one image (tag ``latest``): one uncompressed layer holding ``BASE_FILE``."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        content = b"the tests' base image\n"
        info = tarfile.TarInfo(BASE_FILE)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer_descriptor = blob(layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]},
        "history": [{"created_by": "tests/oci/conftest.py"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [layer_descriptor],
    }
    entry = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    entry["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return root


@pytest.fixture(scope="session")
def base_image(registry, tmp_path_factory) -> str:
    """The tiny base image, pushed to the test registry: ``127.0.0.1:PORT/base/tiny:1``."""
    layout = write_layout(tmp_path_factory.mktemp("base") / "layout")
    reference = f"{registry}/base/tiny:1"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{reference}"], check=True
    )
    return reference
