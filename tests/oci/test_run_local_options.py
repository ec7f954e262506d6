"""kubetune run-local --destination oci://... --modelcar-base-image: checked with the other options, before anything runs."""

from __future__ import annotations

import pytest

from kubetune.errors import KubetuneError
from kubetune.runs.local_options import check_options
from tests.oci.conftest import needs_tools


@needs_tools
def test_the_base_image_becomes_the_pipelines_argument(registry, base_image, tmp_path, monkeypatch):
    destination = f"oci://{registry}/kubetune/local:1"
    arguments = check_options("lora_sft", "best", None, None, destination, False, tmp_path, modelcar_base_image=base_image)
    assert arguments["export_destination"] == destination and arguments["modelcar_base_image"] == base_image
    monkeypatch.chdir(tmp_path)
    (tmp_path / "layout").mkdir()
    (tmp_path / "layout" / "index.json").write_text("{}")
    layout = check_options("lora_sft", "best", None, None, destination, False, tmp_path, modelcar_base_image="oci-layout:layout")
    assert layout["modelcar_base_image"] == f"oci-layout:{tmp_path / 'layout'}"  # absolute: run.json keeps it for a resume


def test_a_base_image_without_an_oci_destination_or_with_a_credential_is_refused(tmp_path):
    with pytest.raises(KubetuneError, match="--modelcar-base-image: is the base image of an oci:// --destination"):
        check_options("lora_sft", "best", None, None, "", False, tmp_path, modelcar_base_image="busybox:1.36")
    with pytest.raises(KubetuneError) as info:
        check_options(
            "lora_sft",
            "best",
            None,
            None,
            "oci://127.0.0.1:1/x:1",
            False,
            tmp_path,
            modelcar_base_image="u:hunter2-pw@quay.io/b:1",
        )
    text = str(info.value)
    assert "--modelcar-base-image: docker://quay.io/b:1 holds a credential" in text and "hunter2" not in text


@needs_tools
def test_the_base_image_is_checked_before_anything_runs_and_a_foreign_tag_names_the_flag(registry, base_image, tmp_path):
    from tests.oci.conftest import free_port

    def problems(destination: str, image: str) -> list[str]:
        with pytest.raises(KubetuneError) as info:
            check_options("lora_sft", "best", None, None, destination, False, tmp_path, modelcar_base_image=image)
        return [str(problem) for problem in info.value.problems]

    destination = f"oci://{registry}/kubetune/local:2"
    assert problems(destination, f"{registry}/base/absent:1") == [
        f"--modelcar-base-image: {registry}/base/absent:1 is not there (no such image or tag)"
    ]
    host = f"127.0.0.1:{free_port()}"
    [unreachable] = problems(destination, f"{host}/base/tiny:1")
    assert unreachable.startswith(f"--modelcar-base-image {host}: is unreachable while reading the base image {host}/base/tiny:1")
    [foreign] = problems(f"oci://{base_image}", base_image)  # the tag holds an image kubetune did not push
    assert "holds an image that kubetune did not push" in foreign and "(run-local: --overwrite)" in foreign
