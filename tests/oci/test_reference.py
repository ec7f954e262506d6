"""oci:// references and base images as given by a user: parsed, or refused without echoing a credential; plain
HTTP only for loopback registries or those the user lists; the runtime image carries skopeo and olot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubetune.errors import KubetuneError
from kubetune.oci.modelcar import DEFAULT_BASE_IMAGE, base_image
from kubetune.oci.reference import INSECURE_ENV, OciReference, parse, plain_http

ROOT = Path(__file__).resolve().parents[2]


def test_a_reference_is_parsed_with_latest_as_its_default_tag():
    assert parse("oci://quay.io/org/models/chat:v1") == OciReference("quay.io", "org/models/chat", "v1")
    ref = parse("oci://127.0.0.1:5000/chat")
    assert (ref.tag, ref.docker, ref.pinned("sha256:ab")) == (
        "latest",
        "docker://127.0.0.1:5000/chat:latest",
        "oci://127.0.0.1:5000/chat@sha256:ab",
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("oci://robot:hunter2-pw@quay.io/org/chat:v1", "oci://quay.io/... holds a credential"),
        ("oci://hunter2-token@quay.io/org/chat:v1", "oci://quay.io/... holds a credential"),
        ("oci://quay.io/org/chat@sha256:" + "0" * 64, "names a digest: a modelcar is pushed to a tag"),
        ("oci://quay.io/Org/Chat:v1", "is not an image reference"),
        ("oci://quay.io/org/chat:bad tag", "is not an image reference"),
        ("oci://quay.io", "is not an image reference"),
        ("oci://quay.io/robot:hunter2-pw@chat:v1", "oci://quay.io/... holds an @ that does not start a digest"),
        ("oci://quay.io/org/robot:hunter2@chat@sha256:" + "0" * 64, "oci://quay.io/... holds an @ that does not start"),
        ("oci://quay.io/org/chat:v1?access_token=hunter2-tok", "oci://quay.io/org/chat:v1... is not an image reference"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_field_and_never_the_credential(uri, message):
    pinned = "digest" not in message  # an image to read (kubetune verify) is refused alike
    for given in {False, pinned}:
        with pytest.raises(KubetuneError) as info:
            parse(uri, pinned=given)
        text = str(info.value)
        assert "export_destination: " in text and message in text
        assert "hunter2" not in text and "robot" not in text


def test_kubetune_verify_never_shows_a_credential_in_the_reference():
    from typer.testing import CliRunner

    from kubetune.cli import app

    result = CliRunner().invoke(app, ["verify", "oci://reg.io/robot:hunter2-pw@chat:v1"])
    assert result.exit_code == 2 and "oci://reg.io/... holds an @" in result.output
    assert "hunter2" not in result.output and "robot" not in result.output


def test_plain_http_only_for_loopback_or_listed_registries(monkeypatch):
    monkeypatch.delenv(INSECURE_ENV, raising=False)
    assert all(plain_http(h) for h in ("127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.0.0.2"))
    assert not any(plain_http(h) for h in ("quay.io", "registry.internal:5000", "10.0.0.5:5000", "localhost.example.com"))
    monkeypatch.setenv(INSECURE_ENV, "registry.internal:5000, other:80")
    assert plain_http("registry.internal:5000") and not plain_http("registry.internal")


def test_base_images_registry_reference_or_oci_layout(tmp_path):
    assert base_image("").source == f"docker://{DEFAULT_BASE_IMAGE}" and base_image("").host == "registry.access.redhat.com"
    assert base_image("busybox:1.36").host == "docker.io"
    assert base_image("docker://127.0.0.1:5000/base:1").plain_http
    with pytest.raises(KubetuneError, match="modelcar_base_image: docker://quay.io/base:1 holds a credential") as info:
        base_image("robot:hunter2-pw@quay.io/base:1")
    assert "hunter2" not in str(info.value)
    with pytest.raises(KubetuneError, match=r"docker://quay.io/\.\.\. holds an @ that does not start a digest") as info:
        base_image("quay.io/robot:hunter2-pw@base:1")
    assert "hunter2" not in str(info.value)
    assert base_image(f"quay.io/base@sha256:{'0' * 64}").source == f"docker://quay.io/base@sha256:{'0' * 64}"
    with pytest.raises(KubetuneError, match=r"docker://quay.io/base:1\.\.\. is not an image reference") as info:
        base_image("quay.io/base:1?access_token=hunter2-tok")
    assert "hunter2" not in str(info.value)
    with pytest.raises(KubetuneError, match="is not an OCI image layout"):
        base_image(f"oci-layout:{tmp_path}")
    (tmp_path / "index.json").write_text("{}")
    assert base_image(f"oci-layout:{tmp_path}").source == f"oci:{tmp_path}"


def test_the_runtime_image_installs_skopeo_and_the_oci_and_eval_extras():
    text = re.sub(r"\\\n", " ", (ROOT / "images" / "Containerfile.runtime").read_text())
    assert re.search(r"^RUN apt-get .*install .*\bskopeo\b", text, re.MULTILINE)
    (extras,) = re.findall(r'"\.\[([a-z0-9_,-]+)\]"', text)
    assert {"oci", "eval"} <= set(extras.split(","))
    assert "olot==" in (ROOT / "images" / "runtime-constraints.txt").read_text()
