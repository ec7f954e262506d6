"""A model's shape from its ``config.json`` alone (no weights): a local file or directory, ``s3://bucket/prefix``
(only ``config.json`` is downloaded), the embedded ``kubetune://tiny-llama``, or a hub id.

The config is read as transformers reads it (``AutoConfig``: GPT-2's ``n_layer`` is ``num_hidden_layers``; a
multimodal model's language part is its text config), offline, from the dict.

A config that cannot be reached from here (a hub id offline, an s3:// model without credentials, a PVC path that is
not mounted in this step), or one this transformers cannot read (a custom model type, a malformed or nonsense shape),
is ``ShapeUnavailable``: the plan is skipped with a note, never a refusal: the training step may read it otherwise.
A file that is not JSON at all is a ``KubetuneError``: no backend loads it. Places are shown without credentials.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kubetune.errors import KubetuneError, Problem
from kubetune.runtime import TINY_MODEL_URI
from kubetune.s3 import public_uri

MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KiB


class ShapeUnavailable(Exception):
    """The model's config.json cannot be read from here; ``note`` says where it was looked for and why."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


@dataclass(frozen=True)
class ModelShape:
    """A causal LM's configuration (``config.json`` as a dict) and where it was read (shown without credentials)."""

    config: dict[str, Any] = field(repr=False)
    source: str

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @cached_property
    def text(self) -> Any:
        """The language model's own config, as transformers reads it (``PretrainedConfig.get_text_config``)."""
        return transformers_config(self.config, self.source).get_text_config(decoder=True)

    @property
    def num_layers(self) -> int:
        return self._positive("num_hidden_layers")

    @property
    def hidden_size(self) -> int:
        return self._positive("hidden_size")

    @property
    def vocab_size(self) -> int:
        return self._positive("vocab_size")

    def check(self) -> None:
        """Raise ``ShapeUnavailable`` naming the first of layers, width and vocabulary that is not a positive integer."""
        for name in ("num_hidden_layers", "hidden_size", "vocab_size"):
            self._positive(name)

    def _positive(self, name: str) -> int:
        value = getattr(self.text, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ShapeUnavailable(f"{self.source}: its config.json's {name} is {value!r}, not a positive integer")
        return value

    @property
    def dtype(self) -> str:
        """The checkpoint's dtype (``dtype``, formerly ``torch_dtype``); float32 where the config names none."""
        nested = self.config.get("text_config")
        text = nested if isinstance(nested, dict) else {}
        return str(self.config.get("dtype") or self.config.get("torch_dtype") or text.get("dtype") or "float32")


def transformers_config(config: dict[str, Any], source: str) -> Any:
    """``config`` as transformers' ``PretrainedConfig`` of its ``model_type`` (no download, no remote code); one it
    cannot build is ``ShapeUnavailable``."""
    import transformers
    from transformers import AutoConfig

    values = {k: v for k, v in config.items() if k != "model_type"}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its warnings about a config's values are not the plan's
    try:
        return AutoConfig.for_model(str(config.get("model_type")), **values)
    except Exception as e:  # noqa: BLE001 (custom code, a shape its validators refuse: the plan is advisory)
        raise ShapeUnavailable(
            f"{source}: transformers {transformers.__version__} cannot read its config.json as model_type "
            f"{config.get('model_type')!r} ({type(e).__name__})"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)


def read_model_shape(model: str) -> ModelShape:
    """The shape of ``model`` (see the module's docstring); raises ``ShapeUnavailable`` or ``KubetuneError``."""
    shown = public_uri(model)
    if model == TINY_MODEL_URI:
        return ModelShape(_tiny_config(), model)
    if model.startswith("s3://"):
        return _from_s3(model)
    path = Path(model)
    if path.is_file():
        return _from_file(path, shown)
    if (path / "config.json").is_file():
        return _from_file(path / "config.json", shown)
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        raise ShapeUnavailable(f"{shown}: no config.json there (a PVC path is read by the training step, not here)")
    return _from_hub(model)


def shape_of(config: dict[str, Any], source: str) -> ModelShape:
    """A ``ModelShape`` from a config dict, checked: transformers reads it, with positive layers, width and vocabulary."""
    if not isinstance(config, dict):
        raise KubetuneError([Problem(source, "is not a JSON object")], "invalid model config")
    shape = ModelShape(config, source)
    shape.check()
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
        return _from_file(path, public_uri(uri))


def _from_hub(repo_id: str) -> ModelShape:
    """One GET of the hub's ``config.json`` (``HF_ENDPOINT``, ``HF_TOKEN`` as huggingface_hub reads them), no retries:
    a validation step offline learns it at once and goes on without a plan."""
    import os
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN")
    request = urllib.request.Request(f"{endpoint}/{repo_id}/resolve/main/config.json")
    if token:  # to this request only: urllib does not copy it to a redirect (a CDN, another host)
        request.add_unredirected_header("Authorization", f"Bearer {token}")
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
