"""Where components run: the container images and the embedded URIs.

Component modules import only the standard library and kfp, so each repeats its image's default and environment
variable; components/tests/test_component_conventions.py keeps them equal to these."""

from __future__ import annotations

import os
from pathlib import Path

from kubetune import __version__
from kubetune.embedded.sample_data import SAMPLE_DATA

# Images with the project installed (images/Containerfile.*). Override at compile time for your registry.
RUNTIME_IMAGE = os.environ.get("KUBETUNE_RUNTIME_IMAGE", f"ghcr.io/kubetune/kubetune-runtime:{__version__}")
TRAINING_IMAGE = os.environ.get("KUBETUNE_TRAINING_IMAGE", f"ghcr.io/kubetune/kubetune-cuda:{__version__}")

TINY_MODEL_URI = "kubetune://tiny-llama"
SAMPLE_DATA_URI = "kubetune://sample-chat"


def resolve_model(uri: str, workdir: str | Path) -> str:
    """A model path the backends can load: the embedded tiny model is generated on the spot (offline)."""
    if uri == TINY_MODEL_URI:
        from kubetune.embedded.tiny_model import write_tiny_model

        return str(write_tiny_model(Path(workdir) / "tiny-llama"))
    return uri


def resolve_data(uri: str) -> str:
    if uri == SAMPLE_DATA_URI:
        return str(SAMPLE_DATA)
    return uri
