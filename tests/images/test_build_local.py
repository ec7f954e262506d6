"""images/build-local.sh for real (opt-in: KUBETUNE_IMAGE_BUILD=1): a Debian bookworm base made by mmdebstrap, the
runtime image built from images/Containerfile.runtime with buildah, and three components run inside it. 9 to 17 minutes
on 2 shared cores (README, "Images"); it needs root, buildah, mmdebstrap, Debian's mirror and PyPI."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    os.environ.get("KUBETUNE_IMAGE_BUILD") != "1" or not (shutil.which("buildah") and shutil.which("mmdebstrap")),
    reason="builds the runtime image (9-17 min): KUBETUNE_IMAGE_BUILD=1 runs it, as root with buildah and mmdebstrap "
    "(apt-get install buildah mmdebstrap)",
)
def test_build_local_builds_the_runtime_image_and_runs_three_components_in_it(tmp_path):
    build_dir = tmp_path / "build"  # an empty storage: the base image is made too, as on a clean machine
    env = {**os.environ, "KUBETUNE_BUILD_DIR": str(build_dir), "IMAGE": "localhost/kubetune-runtime:test"}
    result = subprocess.run(
        ["bash", str(ROOT / "images" / "build-local.sh"), "--clean"], env=env, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("validate-kwargs: lora_sft on ") for line in lines), result.stdout
    assert any(line.startswith("prepare-data: train {'format': 'kubetune-tokenized', 'samples': 288") for line in lines)
    assert any(line.startswith("export-model: ") and line.endswith("verify: complete and intact") for line in lines)
    assert sorted(p.name for p in build_dir.iterdir()) == ["logs"]  # --clean: images and storage gone, the logs stay
