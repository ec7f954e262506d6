import json

import pytest
from kubetune.components.export.core import MANIFEST, export_local, verify

from kubetune.errors import KubetuneError


def test_export_writes_manifest_last_and_verifies(tmp_path, tiny_model):
    result = export_local(tiny_model, tmp_path / "exported")
    assert result["kind"] == "full" and verify(tmp_path / "exported") == []
    manifest = json.loads((tmp_path / "exported" / MANIFEST).read_text())
    assert "model.safetensors" in manifest["files"]
    (tmp_path / "exported" / "config.json").write_text("{}")
    assert verify(tmp_path / "exported") == ["config.json does not match its checksum"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_re_export_replaces_atomically(tmp_path, tiny_model):
    export_local(tiny_model, tmp_path / "exported")
    (tmp_path / "exported" / "stale.bin").write_text("from an older run")
    export_local(tiny_model, tmp_path / "exported")
    assert not (tmp_path / "exported" / "stale.bin").exists() and verify(tmp_path / "exported") == []


def test_missing_manifest_means_incomplete(tmp_path, tiny_model):
    export_local(tiny_model, tmp_path / "exported")
    (tmp_path / "exported" / MANIFEST).unlink()
    assert "incomplete" in verify(tmp_path / "exported")[0]


def test_unwritable_destination_fails_before_copying(tmp_path, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KubetuneError, match="not writable"):
        export_local(tiny_model, blocker / "model")
