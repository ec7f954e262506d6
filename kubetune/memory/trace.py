"""What is measured rather than guessed: the model's parameters and the activations of one training step.

The model is built from its config with ``transformers.AutoModelForCausalLM.from_config`` (the real class, the real
attention and MLP) without weights: on the meta device to count parameters, under ``FakeTensorMode`` to run one
forward and backward pass on the real number of tokens, where ``torch.distributed._tools.mem_tracker.MemTracker``
records the peak of every live tensor. Parameter gradients are dropped as soon as they are accumulated (a sharded
backend reduce-scatters them away; the plan counts gradients apart), so the peak above the parameters is the
activations' (saved tensors, temporaries, the gradients of activations, the logits and the loss).

To stay within seconds for 8B and 70B models, copies with 1 and 2 decoder layers are traced, and everything is
extrapolated linearly in the layer count: ``x(L) = x(1) + (L - 1) * (x(2) - x(1))`` (decoder layers are identical;
a model whose layers differ, such as a hybrid or an interleaved-attention one, is approximated by its first ones).
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from typing import Any

from kubetune.memory.shape import ModelShape, ShapeUnavailable, transformers_config

TRACED_LAYERS = (1, 2)


@dataclass(frozen=True)
class Linear:
    """A linear layer of a decoder layer: its name inside the layer and its weight's shape."""

    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Counts:
    """Parameter counts of the whole model: ``layer`` per decoder layer, ``outside`` the rest (embeddings, final
    norm, output head; a tied head counted once), ``linears`` the linear layers of one decoder layer."""

    num_layers: int
    layer: int
    outside: int
    linears: tuple[Linear, ...]

    @property
    def total(self) -> int:
        return self.outside + self.num_layers * self.layer

    @property
    def linear_per_layer(self) -> int:
        return sum(x.in_features * x.out_features for x in self.linears)


@dataclass(frozen=True)
class ActivationTrace:
    """Peak activation bytes of one step: ``fixed + num_layers * per_layer`` (see the module's docstring)."""

    fixed: int
    per_layer: int
    num_layers: int

    @property
    def total(self) -> int:
        return max(0, self.fixed + self.num_layers * self.per_layer)


def with_layers(config: dict[str, Any], layers: int) -> dict[str, Any]:
    """``config`` with ``layers`` decoder layers (per-layer lists cut to match), as a dict."""
    return _config(json.dumps(config, sort_keys=True), layers).to_dict()


def _config(config_json: str, layers: int):
    """The transformers config of ``config_json`` with ``layers`` decoder layers and no KV cache."""
    config = transformers_config(json.loads(config_json), "config.json")
    text = config.get_text_config(decoder=True)  # the config itself, or a multimodal model's text part
    text.num_hidden_layers = layers  # through attribute_map: GPT-2's n_layer
    if isinstance(getattr(text, "layer_types", None), list):
        text.layer_types = text.layer_types[:layers]
    config.use_cache = text.use_cache = False
    return config


def _causal_lm(config, **options):
    """``AutoModelForCausalLM.from_config``; a config of another kind of model is ``ShapeUnavailable``."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_config(config, **options)
    except ValueError:
        raise ShapeUnavailable(f"model_type {config.model_type!r} has no causal LM class in transformers") from None


def _decoder_layers(model, count: int):
    """The ModuleList of the decoder layers: the one of ``count`` modules holding the most parameters."""
    from torch import nn

    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not lists:
        raise ValueError("no list of decoder layers found in the model")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def count_parameters(shape: ModelShape) -> Counts:
    """Parameter counts of the whole model, from a 1-layer copy built on the meta device."""
    return _count(json.dumps(shape.config, sort_keys=True), shape.num_layers)


@functools.lru_cache(maxsize=32)
def _count(config_json: str, num_layers: int) -> Counts:
    import torch
    from torch import nn

    with torch.device("meta"):
        model = _causal_lm(_config(config_json, 1))
    layer = _decoder_layers(model, 1)[0]
    per_layer = sum(p.numel() for p in layer.parameters())
    total = sum(p.numel() for p in model.parameters())
    linears = tuple(Linear(name, m.in_features, m.out_features) for name, m in layer.named_modules() if isinstance(m, nn.Linear))
    return Counts(num_layers, per_layer, total - per_layer, linears)


def trace_activations(
    shape: ModelShape, tokens: int, dtype: str, checkpointing: bool, fused_loss: bool, in_layers: bool = False
) -> ActivationTrace:
    """The activations of one forward and backward pass over ``tokens`` tokens (one packed sequence, as the
    backends' padding-free batches are) in ``dtype``; ``checkpointing``: each decoder layer recomputed in the
    backward pass (its input kept); ``fused_loss``: no logits materialised (the loss head is left to the caller);
    ``in_layers``: the peak while the decoder model (embeddings, layers, norm) runs backward, the loss head's done."""
    key, layers, pick = json.dumps(shape.config, sort_keys=True), shape.num_layers, int(in_layers)
    if layers in TRACED_LAYERS:  # traced whole: the one copy the extrapolation would end at
        whole = _peak(key, layers, tokens, dtype, checkpointing, fused_loss)[pick]
        return ActivationTrace(fixed=whole, per_layer=0, num_layers=layers)
    one, two = (_peak(key, n, tokens, dtype, checkpointing, fused_loss)[pick] for n in TRACED_LAYERS)
    return ActivationTrace(fixed=2 * one - two, per_layer=two - one, num_layers=layers)


def _drop_grad(param) -> None:
    param.grad = None


ATTENTION = "kubetune_trace"  # not "flash...": transformers would look for a flash-attn package


def flash_attention(module, query, key, value, _attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Causal attention through the flash kernel (memory linear in the tokens, as flash-attn on a GPU), which
    ``FakeTensorMode`` would not pick by itself (its sdpa takes the math path and materialises tokens x tokens).
    Grouped key/value heads are repeated: their copies are counted, a little over what flash-attn keeps."""
    import torch

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout, True, scale=scaling)[0]
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    """``flash_attention`` under the name ``ATTENTION``, with flash-attn's mask (none for one packed sequence)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, flash_attention)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"])


@functools.lru_cache(maxsize=64)
def _peak(config_json: str, layers: int, tokens: int, dtype: str, checkpointing: bool, fused_loss: bool) -> tuple[int, int]:
    """Peak bytes above the parameters of one traced step of a ``layers``-layer copy: over the whole step, and while
    the decoder model (``model.base_model``) runs backward."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker, _ModState

    config = _config(config_json, layers)
    _register_attention()
    with FakeTensorMode():
        model = _causal_lm(config, dtype=getattr(torch, dtype), attn_implementation=ATTENTION)
        if checkpointing:  # transformers 5.24 renamed it; 5.17 (the GPU image) has the old name only
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(_drop_grad)
        ids = torch.zeros((1, tokens), dtype=torch.long)
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MemTracker on a parameter without a gradient yet
            if fused_loss:
                model.base_model(input_ids=ids).last_hidden_state.sum().backward()
            else:
                model(input_ids=ids, labels=ids).loss.backward()
        peaks = tracker.get_tracker_snapshot("peak")
        in_layers = tracker.memory_tracking[model.base_model].snapshots.get(_ModState.PEAK_BW) or [peaks]
    kept = {"Parameter", "Buffer", "Gradient", "Total"}
    above = [
        sum(v for device in s.values() for k, v in device.items() if str(getattr(k, "value", k)) not in kept)
        for s in (peaks, in_layers[-1])
    ]
    return above[0], above[1]
