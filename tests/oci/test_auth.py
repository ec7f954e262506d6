"""Credentials come only from the registry auth file (REGISTRY_AUTH_FILE, as the pipeline mounts the
registry_auth_secret), against a real registry that asks for them (htpasswd); a refusal is one line, no password."""

from __future__ import annotations

import base64
import json
import warnings

import pytest

from kubetune.errors import KubetuneError, outcome
from kubetune.steps.export import check_destination, export
from tests.oci.conftest import needs_tools, serving

pytestmark = needs_tools
PASSWORD = "s3cr3t-pass-9f2c"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """A registry whose one user is robot (bcrypt, as docker-registry's htpasswd wants it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the standard library's until Python 3.13: bcrypt without a package

        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    root = tmp_path_factory.mktemp("locked")
    (root / "htpasswd").write_text(f"robot:{hashed}\n")
    with serving(root, root / "htpasswd") as host:
        yield host


def auth_file(path, host: str, password: str):
    token = base64.b64encode(f"robot:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_without_credentials_the_refusal_is_one_line_naming_the_host(locked, tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file(tmp_path / "auth.json", locked, "wrong-password-77")))
    with pytest.raises(KubetuneError) as info:
        check_destination(f"oci://{locked}/kubetune/tiny:1")
    code, text = outcome(info.value)
    assert code == 2 and "\n" not in text and text.startswith(f"{locked}: refused the credentials while reading oci://")
    assert "REGISTRY_AUTH_FILE" in text and "wrong-password-77" not in text


def test_the_auth_file_credentials_push_and_appear_nowhere(locked, tiny_model, base_image, tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file(tmp_path / "auth.json", locked, PASSWORD)))
    result = export(tiny_model, f"oci://{locked}/kubetune/tiny:1", base_image=base_image)
    assert result.uri.startswith(f"oci://{locked}/kubetune/tiny@sha256:")
    assert PASSWORD not in json.dumps(result.metadata()) + result.card
