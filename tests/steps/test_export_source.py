"""An export never follows a symbolic link out of the model folder (to a host file, or a folder elsewhere): it is
refused before anything is written, whatever the destination (local, S3, OCI); a link inside the folder is exported
as the file it points to. A file name no manifest may list is refused alike."""

from __future__ import annotations

import pytest

from kubetune.errors import KubetuneError
from kubetune.steps.export import export, verify
from tests.adversarial.test_adv_export import make_model

SECRET = "host secret 7f3a"


@pytest.mark.parametrize("destination", ["local", "s3", "oci"])
def test_a_link_out_of_the_model_folder_is_refused_before_anything_is_written(destination, tmp_path, request):
    model = make_model(tmp_path, 1)
    (tmp_path / "hostsecret.txt").write_text(SECRET)
    (tmp_path / "elsewhere").mkdir()
    (model / "notes.txt").symlink_to(tmp_path / "hostsecret.txt")
    (model / "assets" / "more").symlink_to(tmp_path / "elsewhere")
    uri = {"local": str(tmp_path / "out"), "s3": "s3://models/chat", "oci": "oci://127.0.0.1:9/kubetune/chat:1"}[destination]
    s3 = request.getfixturevalue("s3") if destination == "s3" else None
    if s3:
        s3.create_bucket(Bucket="models")
    with pytest.raises(KubetuneError) as info:
        export(model, uri)
    outside = "outside the model folder: an export never follows one"
    assert [(p.where, p.message) for p in info.value.problems] == [
        (f"{model}/assets/more", f"is a symbolic link to {tmp_path}/elsewhere, {outside}"),
        (f"{model}/notes.txt", f"is a symbolic link to {tmp_path}/hostsecret.txt, {outside}"),
    ]
    assert SECRET not in str(info.value) and not (tmp_path / "out").exists()
    assert s3 is None or "Contents" not in s3.list_objects_v2(Bucket="models")


def test_a_link_inside_the_model_folder_is_exported_as_its_file(tmp_path):
    model = make_model(tmp_path, 1)
    (model / "tokenizer_config.json").symlink_to("assets/vocab.txt")
    result = export(model, tmp_path / "out")
    assert "tokenizer_config.json" in result.manifest["files"] and verify(tmp_path / "out") == []
    assert not (tmp_path / "out" / "tokenizer_config.json").is_symlink()


def test_a_name_no_manifest_can_list_is_refused_before_anything_is_written(tmp_path):
    model = make_model(tmp_path, 1)
    (model / "notes\nx.txt").write_text("{}")
    with pytest.raises(KubetuneError) as info:
        export(model, tmp_path / "out")
    [problem] = info.value.problems
    assert problem.where == repr(f"{model}/notes\nx.txt") and "a manifest cannot list" in problem.message
    assert not (tmp_path / "out").exists()
