"""What to change when a plan does not fit, each proposal planned again (traced) before it is made.

Sharded backends (sft, osft): on the GPUs given, else on more GPUs per node, else on more nodes (sft: also
FULL_SHARD across nodes), the largest ``max_tokens_per_gpu`` that fits. LoRA: a smaller micro-batch, then a shorter
``max_seq_len``. Else a method that needs less memory (LoRA on a 4-bit base).

The parts that grow with the tokens (activations, Liger's chunks, OSFT's and LoRA's products, and the fragmentation
allowance on them) grow linearly with flash attention, so the value is read off the plan in hand, planned again,
and lowered by 3% until it fits: two traces, not a search.
"""

from __future__ import annotations

from collections.abc import Callable

from kubetune.contract import TrainingSpec
from kubetune.memory.report import FRAGMENTATION, GIB, MemoryPlan, shown_gib

MAX_GPUS_PER_NODE = 8
MAX_NODES = 64
PER_TOKEN = ("activations", "loss_head", "osft_products", "lora_activations")


def suggestion(plan: MemoryPlan, gib: float) -> str:
    """One line: what fits, with its planned peak; every value named was planned again and fits ``gib``."""
    for propose in (_sharded, _smaller_batch, _less_memory):
        found = propose(plan, gib)
        if found:
            return found
    return "no setting of this method fits: use GPUs with more memory"


def fitting(
    plan: MemoryPlan, gib: float, low: int, unit: int, make: Callable[[int], MemoryPlan]
) -> tuple[int, MemoryPlan] | None:
    """The largest value >= ``low`` (of ``unit`` tokens each) whose plan, ``make(value)``, fits ``gib``; None if none
    is found. The first guess comes from ``plan``'s bytes per token; each guess is planned again."""
    per_value = sum(plan.parts.get(name, 0) for name in PER_TOKEN) * (1 + FRAGMENTATION) / plan.settings.tokens * unit
    if per_value <= 0:
        return None
    value = int(plan.settings.tokens / unit - (plan.total_bytes - gib * GIB) / per_value)
    for _ in range(6):
        value = value - value % 256 if unit == 1 and value >= 1024 else value  # a round number of tokens
        if value < low:
            return None
        planned = make(value)
        if planned.total_gib <= gib:
            return value, planned
        value = min(value - 1, int(value * 0.97))
    return None


def _spec(spec: TrainingSpec, **values) -> TrainingSpec:
    """``spec`` with some parameters set (``None`` removes one)."""
    params = {**spec.params, **values}
    return spec.model_copy(update={"params": {k: v for k, v in params.items() if v is not None}})


def _replan(plan: MemoryPlan, spec: TrainingSpec | None = None, gpus: int | None = None, nnodes: int | None = None) -> MemoryPlan:
    if plan.replan is None:  # a plan made by plan_memory always has one
        raise ValueError("this memory plan cannot be planned again (it has no replan)")
    return plan.replan(spec, gpus, nnodes)


def _sharded(plan: MemoryPlan, gib: float) -> str | None:
    """The first GPU layout on which some ``max_tokens_per_gpu`` fits, with the largest such value."""
    s = plan.settings
    if s.algorithm == "lora_sft":
        return None
    low = min(plan.spec.params.get("max_seq_len") or 1, s.tokens)  # one sample must fit in a micro-batch
    for change, spec, gpus, nodes in _layouts(plan):
        at_layout = _replan(plan, spec, gpus, nodes)
        if at_layout.total_gib <= gib:
            return f"{change}, planned at {shown_gib(at_layout.total_gib)} GiB per GPU"
        found = fitting(
            at_layout, gib, low, 1, lambda t, spec=spec, g=gpus, n=nodes: _replan(plan, _spec(spec, max_tokens_per_gpu=t), g, n)
        )
        if found:
            tokens, planned = found
            then = f"{change} and " if change else ""
            return f"{then}set max_tokens_per_gpu to {tokens}, planned at {shown_gib(planned.total_gib)} GiB per GPU"
    return None


def _layouts(plan: MemoryPlan):
    """(what changes, spec, GPUs per node, nodes): the given layout, more GPUs per node, more nodes."""
    spec, gpus, nodes = plan.spec, plan.gpus_per_node, plan.nnodes
    yield "", spec, gpus, nodes
    for more in range(gpus + 1, MAX_GPUS_PER_NODE + 1):
        yield f"use {more} GPUs per node", spec, more, nodes
    if _replan(plan, nnodes=nodes + 1).settings.state_shards > plan.settings.state_shards:
        for more in range(nodes + 1, MAX_NODES + 1):
            yield f"use {more} nodes of {gpus} GPUs", spec, gpus, more
    elif plan.settings.algorithm == "sft":  # instructlab-training's HYBRID_SHARD shards within a node only
        options = spec.backend_kwargs.get("fsdp_options")
        options = {**(options if isinstance(options, dict) else {}), "sharding_strategy": "FULL_SHARD"}
        full = spec.model_copy(update={"backend_kwargs": {**spec.backend_kwargs, "fsdp_options": options}})
        for more in range(nodes, MAX_NODES + 1):
            yield f"use fsdp_options.sharding_strategy FULL_SHARD on {more} node(s) of {gpus} GPUs", full, gpus, more


def _smaller_batch(plan: MemoryPlan, gib: float) -> str | None:
    spec, s = plan.spec, plan.settings
    if s.algorithm != "lora_sft":
        return None
    if s.micro_batch > 1:
        found = fitting(
            plan, gib, 1, s.seq_len, lambda m: _replan(plan, _spec(spec, micro_batch_size=m, effective_batch_size=None))
        )
        if found:
            micro, planned = found
            return (
                f"use a micro-batch of {micro} sample(s): micro_batch_size {micro}, or effective_batch_size / "
                f"gradient_accumulation_steps / GPUs = {micro}, planned at {shown_gib(planned.total_gib)} GiB per GPU"
            )
    one = _replan(plan, _spec(spec, micro_batch_size=1, effective_batch_size=None))
    low = min(256, s.seq_len)
    found = fitting(
        one, gib, low, 1, lambda n: _replan(plan, _spec(spec, micro_batch_size=1, effective_batch_size=None, max_seq_len=n))
    )
    if not found:
        return None
    seq_len, planned = found
    return f"use micro_batch_size 1 and max_seq_len {seq_len}, planned at {shown_gib(planned.total_gib)} GiB per GPU"


def _less_memory(plan: MemoryPlan, gib: float) -> str | None:
    spec, s = plan.spec, plan.settings
    if s.algorithm == "lora_sft" and s.quant_bits == 4:
        return None
    kept = {k: v for k, v in spec.params.items() if k in ("lora_r", "target_modules")} if s.algorithm == "lora_sft" else {}
    lora = TrainingSpec(
        algorithm="lora_sft",
        backend=spec.backend if s.algorithm == "lora_sft" else "unsloth",
        params={
            **kept,
            "load_in_4bit": True,
            "micro_batch_size": 1,
            "max_seq_len": min(spec.params.get("max_seq_len") or s.tokens, s.tokens),
        },
    )
    planned = _replan(plan, lora)
    if planned.total_gib > gib:
        return None
    return f"a method that needs less memory: lora_sft with load_in_4bit, planned at {shown_gib(planned.total_gib)} GiB per GPU"
