"""A model's shape from its ``config.json`` alone (no weights): a local file or directory, ``s3://bucket/prefix``
(only ``config.json`` is downloaded), the embedded ``kubetune://tiny-llama``, or a hub id.

A config that cannot be reached from here (a hub id offline, an s3:// model without credentials, a PVC path that is
not mounted in this step) is ``ShapeUnavailable``: the plan is skipped with a note naming the place, never a refusal.
A config that is there but is not a model's config is a ``KubetuneError``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.s3 import public_uri

TINY_MODEL_URI = "kubetune://tiny-llama"  # kubetune.runtime.TINY_MODEL_URI (runtime sits above this layer)
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KiB


class ShapeUnavailable(Exception):
    """The model's config.json cannot be read from here; ``note`` says where it was looked for and why."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


@dataclass(frozen=True)
class ModelShape:
    """A causal LM's configuration (``config.json`` as a dict) and where it was read."""

    config: dict[str, Any] = field(repr=False)
    source: str

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def text(self) -> dict[str, Any]:
        """The language model's own config (a multimodal config nests it under ``text_config``)."""
        nested = self.config.get("text_config")
        return nested if isinstance(nested, dict) and nested.get("num_hidden_layers") else self.config

    @property
    def num_layers(self) -> int:
        return int(self.text["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.text["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.text["vocab_size"])

    @property
    def dtype(self) -> str:
        """The checkpoint's dtype (``dtype``, formerly ``torch_dtype``); float32 where the config names none."""
        return str(self.config.get("dtype") or self.config.get("torch_dtype") or self.text.get("dtype") or "float32")


def read_model_shape(model: str) -> ModelShape:
    """The shape of ``model`` (see the module's docstring); raises ``ShapeUnavailable`` or ``KubetuneError``."""
    if model == TINY_MODEL_URI:
        return ModelShape(_tiny_config(), model)
    if model.startswith("s3://"):
        return _from_s3(model)
    path = Path(model)
    if path.is_file():
        return _from_file(path, model)
    if (path / "config.json").is_file():
        return _from_file(path / "config.json", model)
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        raise ShapeUnavailable(f"{model}: no config.json there (a PVC path is read by the training step, not here)")
    return _from_hub(model)


def shape_of(config: dict[str, Any], source: str) -> ModelShape:
    """A ``ModelShape`` from a config dict, checked: a causal LM's config names its type, layers, width and vocabulary."""
    if not isinstance(config, dict):
        raise KubetuneError([Problem(source, "is not a JSON object")], "invalid model config")
    shape = ModelShape(config, source)
    missing = [k for k in ("num_hidden_layers", "hidden_size", "vocab_size") if not isinstance(shape.text.get(k), int)]
    if not shape.model_type or missing:
        what = ", ".join((["model_type"] if not shape.model_type else []) + missing)
        raise KubetuneError([Problem(source, f"is not a causal LM's config.json (no {what})")], "invalid model config")
    return shape


def _from_file(path: Path, source: str) -> ModelShape:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise KubetuneError(
            [Problem(str(path), f"cannot be read as JSON ({type(e).__name__})")], "invalid model config"
        ) from None
    return shape_of(config, source)


def _from_s3(uri: str) -> ModelShape:
    from kubetune.s3 import download

    key = uri if uri.endswith(".json") else uri.rstrip("/") + "/config.json"
    with tempfile.TemporaryDirectory(prefix="kubetune-config-") as workdir:
        try:
            path = download(key, workdir)
        except KubetuneError as e:  # no credentials in this step, no such object, an endpoint down: say so, plan skipped
            raise ShapeUnavailable(f"{public_uri(key)}: {e.problems[0].message}") from None
        return _from_file(path, uri)


def _from_hub(repo_id: str) -> ModelShape:
    """One GET of the hub's ``config.json`` (``HF_ENDPOINT``, ``HF_TOKEN`` as huggingface_hub reads them), no retries:
    a validation step offline learns it at once and goes on without a plan."""
    import os
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN")
    request = urllib.request.Request(
        f"{endpoint}/{repo_id}/resolve/main/config.json", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            config = json.loads(answer.read(MAX_CONFIG_BYTES))
    except urllib.error.HTTPError as e:  # gated, private, unknown: the training step may have the token; no plan here
        raise ShapeUnavailable(f"{repo_id}: config.json not readable from {endpoint} (HTTP {e.code})") from None
    except (OSError, ValueError) as e:  # offline, a proxy, not JSON
        raise ShapeUnavailable(f"{repo_id}: config.json not readable from {endpoint} ({type(e).__name__})") from None
    return shape_of(config, repo_id)


def _tiny_config() -> dict[str, Any]:
    """The embedded tiny model's config, built on the meta device (no weights, no files)."""
    import inspect

    import torch

    from kubetune.embedded.tiny_model import build_model, build_tokenizer

    vocab = inspect.signature(build_tokenizer).parameters["vocab_size"].default  # the tokenizer's size, as trained
    with torch.device("meta"):
        config = build_model(vocab).config.to_dict()
    return config
