"""OCI modelcar export against a real registry (docker-registry on 127.0.0.1): pushed, pulled back with skopeo,
unpacked, checked against the export's manifest and loaded with transformers; refusals; registration."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubetune.errors import KubetuneError
from kubetune.oci import skopeo
from kubetune.steps.export import ExportedModel, check_destination, export, verify
from tests.oci.conftest import BASE_FILE, free_port, needs_tools

pytestmark = needs_tools


@pytest.fixture(scope="module")
def pushed(tiny_model, registry, base_image):
    """The embedded tiny model exported once to ``oci://<registry>/kubetune/tiny:1`` on the test base image."""
    return export(tiny_model, f"oci://{registry}/kubetune/tiny:1", base_image=base_image)


@pytest.fixture(scope="module")
def pulled(pushed, registry, tmp_path_factory) -> Path:
    """The pushed image pulled back by tag with skopeo into an OCI layout, its layers unpacked in order."""
    root = tmp_path_factory.mktemp("pulled")
    layout, rootfs = root / "layout", root / "rootfs"
    source = f"docker://{registry}/kubetune/tiny:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{layout}:pulled"], check=True)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs" / "sha256" / layer["digest"][7:]) as tar:
            tar.extractall(rootfs, filter="data")  # leading "/" stripped
    return root


def test_the_pulled_modelcar_holds_the_export_under_models_and_loads(pushed, pulled):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = pulled / "rootfs" / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest == pushed.manifest and "model.safetensors" in manifest["files"]
    on_disk = {p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (models / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"]), name
    assert (pulled / "rootfs" / BASE_FILE).is_file()  # packed on the base image, whose layer comes first
    model = AutoModelForCausalLM.from_pretrained(models)
    assert model.config.model_type == "llama" and AutoTokenizer.from_pretrained(models).vocab_size > 0


def test_the_result_pins_the_pushed_digest_and_the_image_is_labelled(pushed, registry):
    raw = skopeo.inspect_raw(f"docker://{registry}/kubetune/tiny:1", registry, plain_http=True)
    digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    assert pushed.uri == f"oci://{registry}/kubetune/tiny@{digest}" and pushed.tag == f"oci://{registry}/kubetune/tiny:1"
    assert ExportedModel.from_metadata(pushed.metadata()).tag == pushed.tag
    manifest = json.loads(raw)
    assert manifest["annotations"]["io.kubetune.export"] == "modelcar"
    assert all(layer["mediaType"].endswith(".tar") for layer in manifest["layers"][1:-1])  # model files: uncompressed
    config = subprocess.run(
        ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{registry}/kubetune/tiny:1"],
        check=True,
        capture_output=True,
    )
    assert json.loads(config.stdout)["config"]["Labels"]["io.kubetune.export"] == "modelcar"
    check_destination(pushed.tag)  # a tag holding a kubetune modelcar is exported to again without overwrite


def test_a_tag_holding_another_image_is_refused_unless_overwrite(registry, base_image):
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{base_image}", f"docker://{registry}/kubetune/foreign:1"],
        check=True,
    )  # fmt: skip
    foreign = f"oci://{registry}/kubetune/foreign:1"
    with pytest.raises(KubetuneError, match=f"{foreign}: holds an image that kubetune did not push"):
        check_destination(foreign)
    check_destination(foreign, overwrite=True)
    check_destination(f"oci://{registry}/kubetune/new:1")  # an absent tag


def test_a_credential_in_the_reference_is_refused_without_being_shown(registry, tiny_model):
    with pytest.raises(KubetuneError) as info:
        export(tiny_model, f"oci://robot:s3cr3t-pass@{registry}/kubetune/tiny:2")
    text = str(info.value)
    assert "holds a credential" in text and "s3cr3t" not in text and "robot" not in text and registry in text


def test_an_unreachable_registry_is_one_line_naming_the_host(tiny_model):
    from kubetune.errors import outcome

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(KubetuneError) as info:
        export(tiny_model, f"oci://{host}/kubetune/tiny:1")
    code, text = outcome(info.value)
    assert code == 2 and text.startswith(f"{host}: is unreachable") and "\n" not in text and "connection refused" in text


def test_a_missing_base_image_is_refused_by_name(tiny_model, registry):
    with pytest.raises(KubetuneError, match=rf"modelcar_base_image: {registry}/base/absent:1 is not there"):
        export(tiny_model, f"oci://{registry}/kubetune/tiny:3", base_image=f"{registry}/base/absent:1")
    assert skopeo.inspect_raw(f"docker://{registry}/kubetune/tiny:3", registry, plain_http=True) is None


def test_kubetune_verify_checks_a_modelcar_by_tag_or_digest(pushed, registry):
    from typer.testing import CliRunner

    from kubetune.cli import app

    assert verify(pushed.tag) == [] and verify(pushed.uri) == []
    result = CliRunner().invoke(app, ["verify", pushed.uri])
    assert result.exit_code == 0 and result.stdout.strip() == f"{pushed.uri}: complete"
    absent = f"oci://{registry}/kubetune/never:1"
    assert verify(absent) == [f"{absent}: is not there (no such image or tag)"]


def test_verify_finds_a_modelcar_whose_files_do_not_match_its_manifest(registry, base_image, tmp_path):
    from olot.basics import oci_layers_on_top

    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{base_image}", f"oci:{layout}:latest"], check=True
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "config.json").write_text("{}")
    entry = {"sha256": hashlib.sha256(b"other").hexdigest(), "bytes": 2}
    (models / "manifest.json").write_text(json.dumps({"format": 1, "kind": "full", "files": {"config.json": entry}}))
    oci_layers_on_top(layout, sorted(models.iterdir()), root_dir=models, annotations={"io.kubetune.export": "modelcar"})
    target = f"oci://{registry}/kubetune/tampered:1"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", target.replace("oci://", "docker://")],
        check=True,
    )
    assert verify(target) == ["config.json does not match its checksum"]


class Artifact:
    """What kfp hands a component: a path and metadata (and metrics)."""

    def __init__(self, path: Path):
        self.path, self.metadata, self.metrics = str(path), {}, {}

    def log_metric(self, name, value):
        self.metrics[name] = value


def test_the_export_component_pushes_to_oci_on_its_base_image_and_registration_reads_its_metadata(
    tiny_model, registry, base_image, tmp_path, model_registry
):
    from kubetune.components.export.component import export_model
    from kubetune.components.register.component import register_model

    destination = f"oci://{registry}/kubetune/component:1"
    pointer = Artifact(tmp_path / "pointer")
    export_model.python_func(
        trained_model=Artifact(tiny_model),
        checkpoint=".",
        exported_model=pointer,
        metrics=Artifact(tmp_path / "metrics"),
        export_destination=destination,
        modelcar_base_image=base_image,
    )
    assert pointer.metadata["tag"] == destination and pointer.metadata["uri"].startswith(f"oci://{registry}/kubetune/component@")
    assert json.loads((tmp_path / "pointer" / "location.json").read_text())["uri"] == pointer.metadata["uri"]
    register_model.python_func(
        exported_model=pointer,
        registry_server=model_registry.url,
        registry_model_name="tiny",
        registry_model_version="component",
        registration=Artifact(tmp_path / "registration"),
    )
    (artifact,) = [r["body"] for r in model_registry.requests if r["method"] == "POST" and r["path"].endswith("/artifacts")]
    assert artifact["uri"] == pointer.metadata["uri"]
    (version,) = [r["body"] for r in model_registry.requests if r["method"] == "POST" and r["path"].endswith("/model_versions")]
    assert version["customProperties"]["oci_tag"]["string_value"] == destination


@pytest.fixture(scope="module")
def pushed_layout(pushed, registry, tmp_path_factory) -> Path:
    """The pushed modelcar pulled into an OCI layout, to be tampered with."""
    layout = tmp_path_factory.mktemp("tamper") / "layout"
    source = f"docker://{registry}/kubetune/tiny:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{layout}:latest"], check=True)
    return layout


def push_with_layer(layout: Path, members: list[tarfile.TarInfo], target: str, tmp_path: Path) -> str:
    """``layout``'s image with one more layer holding ``members`` (files hold ``GARBAGE``), pushed to ``target``."""
    import io
    import shutil

    copy = tmp_path / "layout"
    shutil.copytree(layout, copy)
    blobs = copy / "blobs" / "sha256"

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            member.size = len(b"GARBAGE") if member.isreg() else 0
            tar.addfile(member, io.BytesIO(b"GARBAGE") if member.isreg() else None)
    index = json.loads((copy / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    layer = put(buffer.getvalue())
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": buffer.tell()})
    config["rootfs"]["diff_ids"].append(layer)
    config_bytes = json.dumps(config).encode()
    manifest["config"].update(digest=put(config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    index["manifests"][0].update(digest=put(manifest_bytes), size=len(manifest_bytes))
    (copy / "index.json").write_text(json.dumps(index))
    docker = target.replace("oci://", "docker://")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{copy}:latest", docker], check=True)
    return target


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    ("members", "problems"),
    [
        ([member("./models/config.json")], ["config.json does not match its checksum"]),
        ([member("etc/../models/config.json")], ["config.json does not match its checksum"]),
        ([member("models/.wh.config.json")], ["config.json is missing"]),
        (
            [member("models/passwd", tarfile.SYMTYPE, "/etc/passwd"), member("models/null", tarfile.CHRTYPE)],
            [
                "layer {layer}: models/passwd cannot be unpacked: 'models/passwd' is a link to an absolute path",
                "layer {layer}: models/null cannot be unpacked: 'models/null' is a special file",
            ],
        ),
    ],
    ids=["dot-slash", "dot-dot", "whiteout", "link-and-device"],
)
def test_verify_applies_a_layer_as_a_runtime_does(members, problems, pushed_layout, registry, tmp_path):
    from typer.testing import CliRunner

    from kubetune.cli import app

    target = push_with_layer(pushed_layout, members, f"oci://{registry}/kubetune/tampered:{tmp_path.name[-20:]}", tmp_path)
    layers = len(json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", target.replace("oci", "docker", 1)],
                                           capture_output=True, check=True).stdout)["Layers"])  # fmt: skip
    result = CliRunner().invoke(app, ["verify", target])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"{target}: {problem.format(layer=layers)}" for problem in problems]
