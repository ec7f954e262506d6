"""The memory plan: the peak GPU memory per rank of one training step, by part, and its verdict.

Peak per rank = parameters + optimizer states (the backend's storage, sharded where it shards) + the largest of three
moments of a step, + a stated allowance for the CUDA context and the caching allocator's fragmentation:

1. the activation peak (traced: at the loss, or inside the last decoder layer's recomputed backward, while every
   layer's saved activations are alive), with the FSDP units gathered for compute, OSFT's factored products or
   LoRA's own saved tensors, and only the gradients that exist by then: the output head's and one decoder layer's
   (gradients are made layer by layer, last layer first, as activations are freed);
2. the end of backward: every gradient, and what is left of the activations (the first layer's input and the
   gradient flowing into the embeddings);
3. the optimizer step: every gradient and AdamW's temporaries (about one state).

Between 1 and 2 the saved activations shrink as the gradients grow, one layer at a time, so the larger end bounds
the moments between. Which parts were traced and which computed is in ``MemoryPlan``.
"""

from __future__ import annotations

from dataclasses import replace

from kubetune.contract import TrainingSpec
from kubetune.memory.report import COMPUTED, FRAGMENTATION, GIB, TRACED, MemoryPlan, Part
from kubetune.memory.settings import Settings, settings_of
from kubetune.memory.shape import ModelShape
from kubetune.memory.suggest import suggestion
from kubetune.memory.trace import Counts, count_parameters, trace_activations

BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float64": 8, "double": 8}
CUDA_CONTEXT = GIB // 2  # CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator
ADAM_STATES = 2  # exp_avg and exp_avg_sq, in the dtype of the parameter they belong to (torch.optim.AdamW)
EMBEDDINGS = {"embed_tokens", "lm_head", "wte", "embed_in", "embed_out", "word_embeddings"}  # vocabulary x hidden each


def plan_memory(
    spec: TrainingSpec, shape: ModelShape, gpus_per_node: int = 1, nnodes: int = 1, compute_dtype: str | None = None
) -> MemoryPlan:
    """The memory plan of ``spec`` for the model ``shape`` on ``nnodes`` nodes of ``gpus_per_node`` GPUs;
    ``compute_dtype``: what forward and backward run in, when not the backend's on a GPU (float32 on a CPU)."""
    s = settings_of(spec, shape.dtype, gpus_per_node, nnodes)
    if compute_dtype:
        s = replace(s, compute_dtype=compute_dtype)
    saved = [name for name in s.lora_modules_to_save if name.rsplit(".", 1)[-1] in EMBEDDINGS]
    s = replace(s, lora_saved_params=len(saved) * shape.vocab_size * shape.hidden_size)
    counts = count_parameters(shape)
    rows, notes = _rows(s, shape, counts)
    if others := [name for name in s.lora_modules_to_save if name not in saved]:
        notes.append(f"modules_to_save {others!r}: not counted (only embeddings and output heads are)")
    rows.append(_allowance(sum(r.bytes for r in rows)))
    return MemoryPlan(
        spec.algorithm,
        shape.source,
        gpus_per_node,
        nnodes,
        s,
        rows,
        notes,
        spec,
        _replanner(spec, shape, gpus_per_node, nnodes, compute_dtype),
        suggestion,
    )


def _replanner(spec: TrainingSpec, shape: ModelShape, gpus_per_node: int, nnodes: int, compute_dtype: str | None):
    def replan(changed: TrainingSpec | None = None, gpus: int | None = None, nodes: int | None = None) -> MemoryPlan:
        return plan_memory(changed or spec, shape, gpus or gpus_per_node, nodes or nnodes, compute_dtype)

    return replan


def _allowance(allocated: int) -> Part:
    extra = CUDA_CONTEXT + int(FRAGMENTATION * allocated)
    return Part("allowance", extra, COMPUTED, f"CUDA context {CUDA_CONTEXT / GIB:.1f} GiB + {FRAGMENTATION:.0%} fragmentation")


def _rows(s: Settings, shape: ModelShape, counts: Counts) -> tuple[list[Part], list[str]]:
    store, compute = BYTES.get(s.storage_dtype, 4), BYTES.get(s.compute_dtype, 2)
    notes: list[str] = []
    state = 4 if s.algorithm == "lora_sft" else store  # gradients and AdamW states: LoRA adapters are float32
    if s.algorithm == "lora_sft":
        rows, phase = _lora_rows(s, counts, store, compute, notes)
    elif s.osft:
        rows, phase = _osft_rows(s, counts, store, compute)
    else:
        rows = [
            Part("parameters", _shard(counts.total * store, s.param_shards), COMPUTED, f"{counts.total / 1e9:.2f}B x {store} B"),
            Part("optimizer", _shard(counts.total * store * ADAM_STATES, s.state_shards), COMPUTED, "AdamW: 2 states"),
        ]
        phase = [_gathered(s, counts, store, compute)]
    gathered = [p for p in phase if p.name == "gathered"]
    own = [p for p in phase if p.name != "gathered"]  # OSFT's products, LoRA's saved tensors: inside a decoder layer
    every = _shard(trainable_parameters(s, counts) * state, s.state_shards)
    head_grads = min(every, _shard(_trained_outside(s, counts) * state, s.state_shards))
    moments = [_at_the_loss(s, shape, counts, compute, head_grads), _in_the_layers(s, shape, counts, compute, every, own)]
    step = [Part("gradients", every, COMPUTED, "every gradient"), Part("activations", 0, TRACED, "none left")]
    step.append(Part("optimizer_step", every, COMPUTED, "AdamW's foreach temporaries: about one state"))
    moments.append(step)
    worst = max(moments, key=lambda parts: sum(p.bytes for p in parts))
    rows[1:1] = worst[:1]
    rows += worst[1:] + gathered
    return [r for r in rows if r.bytes or r.name in ("parameters", "activations")], notes


def _at_the_loss(s: Settings, shape: ModelShape, counts: Counts, compute: int, head_grads: int) -> list[Part]:
    """The start of backward: every layer's saved activations and the loss head's (the logits, or Liger's chunks),
    and no gradient but the output head's (counted with the embeddings and the final norm)."""
    trace = trace_activations(shape, s.tokens, s.compute_dtype, s.checkpointing, s.liger)
    how = f"at the loss: 1- and 2-layer copies traced, extrapolated to {counts.num_layers} layers"
    parts = [Part("gradients", head_grads, COMPUTED, "the output head's"), Part("activations", trace.total, TRACED, how)]
    return parts + ([_liger_head(s, shape, compute)] if s.liger else [])


def _in_the_layers(s: Settings, shape: ModelShape, counts: Counts, compute: int, every: int, own: list[Part]) -> list[Part]:
    """The decoder layers' backward, last layer first: the logits are gone; each layer's saved activations are freed
    as its gradients are made, so the activations traced while the decoder model runs backward (at their peak) and
    every gradient (as at the end) bound each moment, with what the backend's own layers save (OSFT, LoRA)."""
    trace = trace_activations(shape, s.tokens, s.compute_dtype, s.checkpointing, s.liger, in_layers=True)
    how = f"in the layers' backward: traced, extrapolated to {counts.num_layers} layers"
    return [Part("gradients", every, COMPUTED, "every gradient"), Part("activations", trace.total, TRACED, how), *own]


def _shard(nbytes: int, shards: int) -> int:
    return -(-nbytes // max(1, shards))


def trainable_parameters(s: Settings, counts: Counts) -> int:
    """The parameters trained (and given a gradient and AdamW states) under ``s``."""
    if s.algorithm == "lora_sft":
        return _lora_params(s, counts) + s.lora_saved_params
    if s.osft:
        return counts.outside + counts.num_layers * (counts.layer - _osft_dense(s, counts) + _osft_low(s, counts))
    return counts.total


def _trained_outside(s: Settings, counts: Counts) -> int:
    """The trained parameters outside the decoder layers: embeddings, final norm and output head."""
    return s.lora_saved_params if s.algorithm == "lora_sft" else counts.outside


def _gathered(s: Settings, counts: Counts, store: int, compute: int) -> Part:
    """FSDP's units gathered for compute: the root (embeddings, head) and two decoder layers (the one computing and
    the one prefetched) in the compute dtype, plus one unit's unsharded gradients before the reduce-scatter."""
    if s.param_shards <= 1 and store == compute:
        return Part("gathered", 0, COMPUTED, "")
    params = (counts.outside + 2 * counts.layer) * compute
    grads = max(counts.outside, counts.layer) * (4 if s.algorithm == "osft" else store)  # mini-trainer reduces in fp32
    return Part("gathered", params + grads, COMPUTED, "FSDP: root + 2 layers unsharded, one unit's gradients")


def _liger_head(s: Settings, shape: ModelShape, compute: int) -> Part:
    """Liger's fused linear cross-entropy: logits in chunks of about tokens x hidden elements (float32), the input's
    gradient, and the head's weight gradient; never the full logits."""
    h, v, t = shape.hidden_size, shape.vocab_size, s.tokens
    nbytes = t * h * (compute + 2 * 4) + v * h * compute
    return Part("loss_head", nbytes, COMPUTED, "fused linear cross-entropy: chunked logits")


# -- OSFT (mini-trainer osft_utils.py: SVD of each target matrix, top-k frozen, the rest trained) ----------------


def _osft_targets(s: Settings, counts: Counts):
    patterns = s.osft_patterns or _default_patterns()
    return [x for x in counts.linears if any(pat in x.name for pat in patterns)]


def _default_patterns() -> tuple[str, ...]:
    """mini-trainer's own default target patterns (osft_utils.MODEL_CONFIGS["default"]), else Llama's."""
    try:
        from mini_trainer.osft_utils import MODEL_CONFIGS

        return tuple(MODEL_CONFIGS["default"]["patterns"])
    except ImportError:
        return ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.down_proj", "mlp.up_proj")  # fmt: skip


def _top_k(s: Settings, m: int, n: int) -> int:
    """auto_generate_target_osft_config: floor(min(m, n) * (1 - unfreeze_rank_ratio)), below the full rank."""
    import math

    return min(math.floor(min(m, n) * (1.0 - s.unfreeze_rank_ratio)), min(m, n) - 1)


def _osft_dense(s: Settings, counts: Counts) -> int:
    return sum(x.in_features * x.out_features for x in _osft_targets(s, counts))


def _osft_factors(s: Settings, counts: Counts) -> int:
    """U (m x k), S (k), V (k x n), k = min(m, n), per target of one layer: they replace the dense weight."""
    return sum(min(x.in_features, x.out_features) * (x.in_features + x.out_features + 1) for x in _osft_targets(s, counts))


def _osft_low(s: Settings, counts: Counts) -> int:
    """The trained factors U_low, S_low, V_low of one layer."""
    total = 0
    for x in _osft_targets(s, counts):
        low = min(x.in_features, x.out_features) - _top_k(s, x.in_features, x.out_features)
        total += low * (x.in_features + x.out_features + 1)
    return total


def _osft_rows(s: Settings, counts: Counts, store: int, compute: int) -> tuple[list[Part], list[Part]]:
    per_layer = counts.layer - _osft_dense(s, counts) + _osft_factors(s, counts)
    stored = counts.outside + counts.num_layers * per_layer
    trainable = trainable_parameters(s, counts)
    rows = [
        Part(
            "parameters", _shard(stored * store, s.param_shards), COMPUTED, f"{stored / 1e9:.2f}B incl. SVD factors x {store} B"
        ),
        Part("optimizer", _shard(trainable * store * ADAM_STATES, s.state_shards), COMPUTED, f"{trainable / 1e9:.2f}B trained"),
    ]
    gathered_counts = Counts(counts.num_layers, per_layer, counts.outside, counts.linears)
    phase = [
        _gathered(s, gathered_counts, store, compute),
        Part("osft_products", _osft_products(s, counts) * compute, COMPUTED, "the factored matmuls beyond a dense linear's"),
    ]
    return rows, phase


def _osft_products(s: Settings, counts: Counts) -> int:
    """Elements OSFT's factored linear (osft_utils._factorized_linear) holds beyond the dense linear the trace saw.

    ``(x V_high^T) S_high U_high^T + (x V_low^T) S_low U_low^T``: the frozen high path saves nothing of its own (its
    factors need no gradient), the trained low path saves ``x V_low^T`` and ``x V_low^T S_low`` (tokens x k_low
    each) for every target of a recomputed layer (of every layer without checkpointing). One target at a time also
    holds, in forward, ``x V_high^T`` and both paths' outputs besides the sum (tokens x (k_high + 2 out)), or, in
    backward, the high path's two tokens x k_high gradients and the two paths' input gradients and their sum beyond
    the dense one (tokens x (2 k_high + k_low + 2 in)); the larger of the two is counted once."""
    layers = 1 if s.checkpointing else counts.num_layers
    saved = transient = 0
    for x in _osft_targets(s, counts):
        rank = min(x.in_features, x.out_features)
        high = _top_k(s, x.in_features, x.out_features)
        saved += 2 * (rank - high)
        transient = max(transient, high + 2 * x.out_features, 2 * high + (rank - high) + 2 * x.in_features)
    return s.tokens * (layers * saved + transient)


# -- LoRA (PEFT LoraConfig; bitsandbytes for 4/8-bit) ------------------------------------------------------------------


def _lora_linears(s: Settings, counts: Counts):
    if s.lora_targets == "all-linear":
        return list(counts.linears)  # PEFT's "all-linear": every linear but the output head
    return [x for x in counts.linears if x.name.rsplit(".", 1)[-1] in s.lora_targets or x.name in s.lora_targets]


def _lora_params(s: Settings, counts: Counts) -> int:
    return counts.num_layers * sum(s.lora_r * (x.in_features + x.out_features) for x in _lora_linears(s, counts))


def _lora_rows(s: Settings, counts: Counts, store: int, compute: int, notes: list[str]) -> tuple[list[Part], list[Part]]:
    adapters = _lora_params(s, counts)
    if s.quant_bits < 16:
        quantized = counts.num_layers * counts.linear_per_layer
        per = 0.5 + 4 / 64 if s.quant_bits == 4 else 1.0 + 4 / 4096  # 4-bit: absmax per 64 weights; 8-bit: per row
        rest = (counts.total - quantized) * (4 if s.upcast_unquantized else store)
        base = int(quantized * per) + rest
        how = f"{s.quant_bits}-bit linears" + (", the rest upcast to float32 (PEFT)" if s.upcast_unquantized else "")
    else:
        base, how = counts.total * store, f"{counts.total / 1e9:.2f}B x {store} B"
    if not _lora_linears(s, counts):
        targets = s.lora_targets if isinstance(s.lora_targets, str) else list(s.lora_targets)
        notes.append(f"no linear layer matches target_modules {targets!r}: no adapter planned")
    saved = s.lora_saved_params  # modules_to_save: a trained copy beside the frozen original (float32: an upper bound)
    copies = f"; modules_to_save copies {saved / 1e6:.1f}M" if saved else ""
    rows = [
        Part("parameters", base + adapters * 4 + saved * 4, COMPUTED, f"base: {how}; adapters float32{copies}"),
        Part("optimizer", (adapters + saved) * 4 * ADAM_STATES, COMPUTED, f"AdamW: adapters {adapters / 1e6:.1f}M{copies}"),
    ]
    phase = [Part("lora_activations", _lora_saved(s, counts, compute), COMPUTED, "the adapters' own saved tensors")]
    return rows, phase


def _lora_saved(s: Settings, counts: Counts, compute: int) -> int:
    """Bytes PEFT's LoRA linear (``result + lora_B(lora_A(dropout(x.to(float32)))) * scaling``) holds beyond the
    dense linear the trace saw: ``lora_A``'s output (tokens x r, kept for B's gradient) for every target of a
    recomputed layer (of every layer without checkpointing), and its input where it is a new tensor: x cast to the
    adapters' float32 when the compute dtype is not float32, the dropout's output and its mask when dropout is on.
    One target at a time also holds B's scaled output and the sum besides the base output (tokens x 2 out)."""
    layers = 1 if s.checkpointing else counts.num_layers
    cast = 4 if compute != 4 else 0
    dropout = compute + 1 if s.lora_dropout else 0
    targets = _lora_linears(s, counts)
    saved = sum(s.lora_r * compute + x.in_features * (cast + dropout) for x in targets)
    transient = max((2 * x.out_features * compute for x in targets), default=0)
    return s.tokens * (layers * saved + transient)
