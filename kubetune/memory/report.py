"""A memory plan as a person and KFP read it: its parts, the Markdown table, the Metrics, the verdict and the refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.memory.accelerators import UNKNOWN
from kubetune.memory.settings import Settings

GIB = 2**30
FRAGMENTATION = 0.05  # the caching allocator's slack over what tensors hold (the plan's allowance)
TRACED, COMPUTED = "traced", "computed"


def shown_gib(value: float) -> str:
    """GiB as a message shows them: one decimal, three below 10 GiB (a tiny model's plan is a fraction of one)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    how: str  # TRACED or COMPUTED
    note: str = ""


@dataclass
class MemoryPlan:
    """Peak GPU memory per rank of one training step; ``parts`` in bytes, ``total_bytes`` with the allowance."""

    algorithm: str
    model: str
    gpus_per_node: int
    nnodes: int
    settings: Settings
    rows: list[Part]
    notes: list[str] = field(default_factory=list)
    spec: TrainingSpec | None = field(default=None, repr=False)
    replan: Callable[..., MemoryPlan] | None = field(default=None, repr=False)  # (spec, gpus, nodes): this plan changed
    suggest: Callable[[MemoryPlan, float], str] | None = field(default=None, repr=False)

    @property
    def parts(self) -> dict[str, int]:
        return {p.name: p.bytes for p in self.rows}

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def allocated_bytes(self) -> int:
        """What torch's allocator peaks at (``torch.cuda.max_memory_allocated``): the total without the allowance."""
        return self.total_bytes - self.parts.get("allowance", 0)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def metrics(self) -> dict[str, float]:
        """Flat numbers for KFP's Metrics, in GiB."""
        found = {f"memory_{name}_gib": round(b / GIB, 3) for name, b in self.parts.items()}
        total = {"memory_total_gib": round(self.total_gib, 3), "memory_allocated_gib": round(self.allocated_bytes / GIB, 3)}
        return {**found, **total, "memory_tokens_per_gpu": float(self.settings.tokens)}

    def markdown(self, gpu_memory_gib: float | None = None) -> str:
        s = self.settings
        world = self.gpus_per_node * self.nnodes
        lines = [
            f"### Memory plan: {self.algorithm} of {self.model} on {self.nnodes} x {self.gpus_per_node} GPU(s)",
            "",
            f"Peak GPU memory per rank of one training step, {s.tokens} tokens per GPU micro-batch, "
            f"parameters sharded over {s.param_shards} of {world} rank(s), gradients and optimizer states over "
            f"{s.state_shards}; stored {s.storage_dtype}, computed {s.compute_dtype}, "
            f"gradient checkpointing {'on' if s.checkpointing else 'off'}, Liger {'on' if s.liger else 'off'}.",
            "",
            "| part | GiB | how | what |",
            "|---|---:|---|---|",
        ]
        lines += [f"| {p.name} | {p.bytes / GIB:.2f} | {p.how} | {p.note} |" for p in self.rows]
        lines.append(f"| **total per GPU** | **{self.total_gib:.2f}** | | |")
        lines.append("")
        lines.append(self.verdict(gpu_memory_gib))
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def verdict(self, gpu_memory_gib: float | None) -> str:
        if not gpu_memory_gib:
            return UNKNOWN[0].upper() + UNKNOWN[1:] + "."
        fits = "Fits" if self.total_gib <= gpu_memory_gib else "Does not fit"
        return f"{fits}: {self.need(gpu_memory_gib)}."

    def need(self, gpu_memory_gib: float) -> str:
        return f"needs {shown_gib(self.total_gib)} GiB per GPU, has {shown_gib(gpu_memory_gib)} GiB"

    def check(self, gpu_memory_gib: float | None) -> None:
        """Raise the refusal when the plan exceeds ``gpu_memory_gib`` (None or 0: unknown, nothing to check)."""
        if not gpu_memory_gib or self.total_gib <= gpu_memory_gib:
            return
        message = f"{self.need(gpu_memory_gib)} ({self.algorithm} of {self.model})"
        try:
            hint = self.suggest(self, gpu_memory_gib) if self.suggest else None
        except Exception as e:  # noqa: BLE001 (a setting it tried could not be traced: the refusal stands, without a proposal)
            hint = f"no suggestion: planning another setting failed ({type(e).__name__})"
        raise KubetuneError([Problem("memory plan", message, hint)], "does not fit the GPU")
