"""The memory plan: the peak GPU memory per rank of one training step, by part, and its verdict.

Peak per rank = parameters + gradients + optimizer states (the backend's storage, sharded where it shards) + the
larger of the two phases that come and go: forward/backward (activations, traced; the FSDP units gathered for
compute; OSFT's factor products) and the optimizer step (AdamW's temporaries), + a stated allowance for the CUDA
context and the caching allocator's fragmentation. Which parts were traced and which computed is in ``MemoryPlan``.
"""

from __future__ import annotations

from kubetune.contract import TrainingSpec
from kubetune.memory.report import COMPUTED, FRAGMENTATION, GIB, TRACED, MemoryPlan, Part
from kubetune.memory.settings import Settings, settings_of
from kubetune.memory.shape import ModelShape
from kubetune.memory.suggest import suggestion
from kubetune.memory.trace import Counts, count_parameters, trace_activations

BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float64": 8, "double": 8}
CUDA_CONTEXT = GIB // 2  # CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator
ADAM_STATES = 2  # exp_avg and exp_avg_sq, in the dtype of the parameter they belong to (torch.optim.AdamW)


def plan_memory(spec: TrainingSpec, shape: ModelShape, gpus_per_node: int = 1, nnodes: int = 1) -> MemoryPlan:
    """The memory plan of ``spec`` for the model ``shape`` on ``nnodes`` nodes of ``gpus_per_node`` GPUs."""
    s = settings_of(spec, shape.dtype, gpus_per_node, nnodes)
    counts = count_parameters(shape)
    rows, notes = _rows(s, shape, counts)
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
        _replanner(spec, shape, gpus_per_node, nnodes),
        suggestion,
    )


def _replanner(spec: TrainingSpec, shape: ModelShape, gpus_per_node: int, nnodes: int):
    def replan(changed: TrainingSpec | None = None, gpus: int | None = None, nodes: int | None = None) -> MemoryPlan:
        return plan_memory(changed or spec, shape, gpus or gpus_per_node, nodes or nnodes)

    return replan


def _allowance(allocated: int) -> Part:
    extra = CUDA_CONTEXT + int(FRAGMENTATION * allocated)
    return Part("allowance", extra, COMPUTED, f"CUDA context {CUDA_CONTEXT / GIB:.1f} GiB + {FRAGMENTATION:.0%} fragmentation")


def _rows(s: Settings, shape: ModelShape, counts: Counts) -> tuple[list[Part], list[str]]:
    store, compute = BYTES.get(s.storage_dtype, 4), BYTES.get(s.compute_dtype, 2)
    trace = trace_activations(shape, s.tokens, s.compute_dtype, s.checkpointing, s.liger)
    act = Part("activations", trace.total, TRACED, f"1- and 2-layer copies traced, extrapolated to {counts.num_layers} layers")
    notes: list[str] = []
    head = _liger_head(s, shape, compute) if s.liger else None
    if s.algorithm == "lora_sft":
        rows, phase = _lora_rows(s, counts, store, compute, notes)
    elif s.osft:
        rows, phase = _osft_rows(s, counts, store, compute)
    else:
        trainable = counts.total
        rows = [
            Part("parameters", _shard(counts.total * store, s.param_shards), COMPUTED, f"{counts.total / 1e9:.2f}B x {store} B"),
            Part("gradients", _shard(trainable * store, s.state_shards), COMPUTED, f"{s.storage_dtype}, sharded"),
            Part("optimizer", _shard(trainable * store * ADAM_STATES, s.state_shards), COMPUTED, "AdamW: 2 states"),
        ]
        phase = [_gathered(s, counts, store, compute)]
    forward_backward = act.bytes + sum(p.bytes for p in phase) + (head.bytes if head else 0)
    state = 4 if s.algorithm == "lora_sft" else store  # LoRA adapters are float32
    step = _shard(_trainable(s, counts) * state, s.state_shards)  # AdamW's foreach temporaries: about one state
    rows += [act, *([head] if head else []), *phase]
    if step > forward_backward:
        rows.append(Part("optimizer_step", step - forward_backward, COMPUTED, "AdamW temporaries beyond the backward pass"))
    return [r for r in rows if r.bytes or r.name in ("parameters", "activations")], notes


def _shard(nbytes: int, shards: int) -> int:
    return -(-nbytes // max(1, shards))


def _trainable(s: Settings, counts: Counts) -> int:
    if s.algorithm == "lora_sft":
        return _lora_params(s, counts)
    if s.osft:
        return counts.outside + counts.num_layers * (counts.layer - _osft_dense(s, counts) + _osft_low(s, counts))
    return counts.total


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
    trainable = _trainable(s, counts)
    rows = [
        Part(
            "parameters", _shard(stored * store, s.param_shards), COMPUTED, f"{stored / 1e9:.2f}B incl. SVD factors x {store} B"
        ),
        Part("gradients", _shard(trainable * store, s.state_shards), COMPUTED, f"{trainable / 1e9:.2f}B trained"),
        Part("optimizer", _shard(trainable * store * ADAM_STATES, s.state_shards), COMPUTED, "AdamW: 2 states"),
    ]
    gathered_counts = Counts(counts.num_layers, per_layer, counts.outside, counts.linears)
    # the factored forward of one recomputed layer: x V_high^T, x V_low^T (tokens x k) and both products (tokens x out)
    extra = sum(s.tokens * (2 * min(x.in_features, x.out_features) + 2 * x.out_features) for x in _osft_targets(s, counts))
    phase = [
        _gathered(s, gathered_counts, store, compute),
        Part("osft_products", extra * compute, COMPUTED, "one layer's x V^T and U S products"),
    ]
    return rows, phase


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
        notes.append(f"no linear layer matches target_modules {list(s.lora_targets)}: no adapter planned")
    rows = [
        Part("parameters", base + adapters * 4, COMPUTED, f"base: {how}; adapters float32"),
        Part("gradients", adapters * 4, COMPUTED, f"adapters only ({adapters / 1e6:.1f}M, float32)"),
        Part("optimizer", adapters * 4 * ADAM_STATES, COMPUTED, "AdamW: 2 states"),
    ]
    layers = 1 if s.checkpointing else counts.num_layers
    extra = layers * len(_lora_linears(s, counts)) * s.tokens * s.lora_r * compute * 2  # A x and its dropout input
    phase = [Part("lora_activations", extra, COMPUTED, "the adapters' own (tokens x r per target)")]
    return rows, phase
