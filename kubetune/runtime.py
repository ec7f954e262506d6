"""Where components run: the container images and the embedded URIs; where a step finds the model and data.

Component modules import only the standard library and kfp, so each repeats its image's default and environment
variable; components/tests/test_component_conventions.py keeps them equal to these."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubetune import __version__
from kubetune.embedded.sample_data import SAMPLE_DATA
from kubetune.errors import KubetuneError, Problem
from kubetune.files import staging_dir, swap_into_place
from kubetune.s3 import download, public_uri

# Images with the project installed (images/Containerfile.*). Override at compile time for your registry.
RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", f"ghcr.io/kubetune/kubetune-runtime:{__version__}")
TRAINING_IMAGE = os.environ.get("KUBETUNE_TRAINING_IMAGE", f"ghcr.io/kubetune/kubetune-cuda:{__version__}")

TINY_MODEL_URI = "kubetune://tiny-llama"
SAMPLE_DATA_URI = "kubetune://sample-chat"


def resolve_model(uri: str, workdir: str | Path) -> str:
    """A model path the backends can load: the embedded tiny model is generated on the spot (offline), an s3://
    prefix is downloaded into ``workdir``; a local path or a hub id is returned as is."""
    if uri == TINY_MODEL_URI:
        from kubetune.embedded.tiny_model import write_tiny_model

        return str(write_tiny_model(Path(workdir) / "tiny-llama"))
    if uri.startswith("s3://"):
        return str(download_model(uri, Path(workdir)))
    return uri


def download_model(uri: str, workdir: Path) -> Path:
    """The model directory under the s3:// prefix ``uri``, downloaded whole into ``workdir`` (credentials from the
    environment): it is built in a staging folder and renamed into place, so it is complete or absent."""
    staged = staging_dir(workdir, ".model-")
    try:
        path = download(uri, staged)
        if not (path / "config.json").is_file():
            problem = Problem(public_uri(uri), "holds no config.json: not a model directory", "give the prefix of a saved model")
            raise KubetuneError([problem], "invalid model")
        target = workdir / path.name
        swap_into_place(path, target)
        return target
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def resolve_data(uri: str) -> str:
    if uri == SAMPLE_DATA_URI:
        return str(SAMPLE_DATA)
    return uri
