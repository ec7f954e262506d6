"""What to change when a plan does not fit, each proposal planned again before it is made: the largest
``max_tokens_per_gpu`` (LoRA: micro-batch, then ``max_seq_len``) that fits, else the GPUs that would (sharded
backends), else a method that needs less memory (LoRA on a 4-bit base)."""

from __future__ import annotations

from collections.abc import Callable

from kubetune.contract import TrainingSpec
from kubetune.memory.report import MemoryPlan, shown_gib

MAX_GPUS_PER_NODE = 8
MAX_NODES = 64


def suggestion(plan: MemoryPlan, gib: float) -> str:
    """One line: what fits, with its planned peak; every value named was planned again and fits ``gib``."""
    for propose in (_fewer_tokens, _more_gpus, _less_memory):
        found = propose(plan, gib)
        if found:
            return found
    return "no setting of this method fits: use GPUs with more memory"


def _spec(spec: TrainingSpec, **values) -> TrainingSpec:
    """``spec`` with some parameters set (``None`` removes one)."""
    params = {**spec.params, **values}
    return spec.model_copy(update={"params": {k: v for k, v in params.items() if v is not None}})


def _replan(plan: MemoryPlan, spec: TrainingSpec | None = None, gpus: int | None = None, nnodes: int | None = None) -> MemoryPlan:
    assert plan.replan is not None
    return plan.replan(spec, gpus, nnodes)


def largest_fitting(total_gib: Callable[[int], float], low: int, high: int, gib: float) -> int | None:
    """About the largest integer in [low, high) whose plan fits ``gib``, None when even ``low`` does not fit.
    Plans grow about linearly with it (activations are linear in the tokens with flash attention): the value
    is read off the line through the plans at ``low`` and ``high``, then planned again, and lowered by 2% of the
    range until it fits."""
    f_low = total_gib(low)
    if f_low > gib:
        return None
    f_high = total_gib(high)
    guess = low + int((high - low) * (gib - f_low) / max(f_high - f_low, 1e-9))
    guess = min(max(guess, low), high - 1)
    step = max(1, (high - low) // 50)
    while guess > low and total_gib(guess) > gib:
        guess = max(low, guess - step)
    return guess


def _round_down(value: int, low: int) -> int:
    """A round number of tokens (a multiple of 256 from 1024 up), not below ``low``."""
    rounded = value - value % 256 if value >= 1024 else value
    return max(rounded, low)


def _fewer_tokens(plan: MemoryPlan, gib: float) -> str | None:
    spec, s = plan.spec, plan.settings
    if s.algorithm == "lora_sft":
        return _smaller_batch(plan, gib)
    low = spec.params.get("max_seq_len") or 1  # one sample must fit in a micro-batch
    if s.tokens <= low:
        return None

    def total(tokens: int) -> float:
        return _replan(plan, _spec(spec, max_tokens_per_gpu=tokens)).total_gib

    found = largest_fitting(total, low, s.tokens, gib)
    if found is None:
        return None
    found = _round_down(found, low)
    return f"set max_tokens_per_gpu to {found} (plan: {shown_gib(total(found))} GiB per GPU)"


def _smaller_batch(plan: MemoryPlan, gib: float) -> str | None:
    spec, s = plan.spec, plan.settings
    if s.micro_batch > 1:

        def with_micro(micro: int) -> float:
            return _replan(plan, _spec(spec, micro_batch_size=micro, effective_batch_size=None)).total_gib

        micro = largest_fitting(with_micro, 1, s.micro_batch, gib)
        if micro is not None:
            return (
                f"use a micro-batch of {micro} sample(s): micro_batch_size {micro}, or effective_batch_size / "
                f"(gradient_accumulation_steps x GPUs) = {micro} (plan: {shown_gib(with_micro(micro))} GiB per GPU)"
            )

    def with_len(seq_len: int) -> float:
        return _replan(plan, _spec(spec, micro_batch_size=1, effective_batch_size=None, max_seq_len=seq_len)).total_gib

    seq_len = largest_fitting(with_len, min(256, s.seq_len), s.seq_len, gib) if s.seq_len > 1 else None
    if seq_len is None:
        return None
    seq_len = _round_down(seq_len, min(256, s.seq_len))
    return f"use micro_batch_size 1 and max_seq_len {seq_len} (plan: {shown_gib(with_len(seq_len))} GiB per GPU)"


def _more_gpus(plan: MemoryPlan, gib: float) -> str | None:
    if plan.settings.algorithm == "lora_sft":
        return None  # one full copy per process: more GPUs do not lower the peak
    for gpus in range(plan.gpus_per_node + 1, MAX_GPUS_PER_NODE + 1):
        bigger = _replan(plan, gpus=gpus)
        if bigger.total_gib <= gib:
            return f"use {gpus} GPUs per node (plan: {shown_gib(bigger.total_gib)} GiB per GPU)"
    for nodes in range(plan.nnodes + 1, MAX_NODES + 1):
        bigger = _replan(plan, nnodes=nodes)
        if bigger.total_gib <= gib:
            return f"use {nodes} nodes of {plan.gpus_per_node} GPUs (plan: {shown_gib(bigger.total_gib)} GiB per GPU)"
        if (bigger.settings.param_shards, bigger.settings.state_shards) == (
            plan.settings.param_shards,
            plan.settings.state_shards,
        ):
            break  # sharded within a node only (HYBRID_SHARD, NO_SHARD): more nodes change nothing
    return None


def _less_memory(plan: MemoryPlan, gib: float) -> str | None:
    spec, s = plan.spec, plan.settings
    if s.algorithm == "lora_sft" and s.quant_bits == 4:
        return None
    seq_len = min(spec.params.get("max_seq_len") or s.tokens, s.tokens)
    lora = TrainingSpec(
        algorithm="lora_sft",
        backend=spec.backend if s.algorithm == "lora_sft" else "unsloth",
        params={**_lora_kept(spec), "load_in_4bit": True, "micro_batch_size": 1, "max_seq_len": seq_len},
    )
    planned = _replan(plan, lora)
    if planned.total_gib > gib:
        return None
    return f"or a method that needs less memory: lora_sft with load_in_4bit (plan: {shown_gib(planned.total_gib)} GiB per GPU)"


def _lora_kept(spec: TrainingSpec) -> dict:
    return {k: v for k, v in spec.params.items() if k in ("lora_r", "target_modules")} if spec.algorithm == "lora_sft" else {}
