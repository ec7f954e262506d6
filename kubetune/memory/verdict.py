"""The memory plan of a validated spec as ``kubetune plan``, ``kubetune validate --model`` and the pipeline's validation
step show it: the Markdown a person reads, and the refusal (one line, exit code 2) when it does not fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.contract import TrainingSpec
from kubetune.errors import Failure, KubetuneError
from kubetune.memory.accelerators import gpu_memory_gib
from kubetune.memory.plan import plan_memory
from kubetune.memory.report import MemoryPlan
from kubetune.memory.shape import ShapeUnavailable, read_model_shape
from kubetune.secrets import redact


@dataclass(frozen=True)
class Verdict:
    """A plan (None when the model's config was not reachable: ``markdown`` says why) against a GPU's memory."""

    plan: MemoryPlan | None
    gpu_memory_gib: float | None
    markdown: str

    def refuse(self) -> None:
        """Raise the one-line refusal (``Failure``) when the plan exceeds the GPU's memory."""
        if self.plan is None:
            return
        try:
            self.plan.check(self.gpu_memory_gib)
        except KubetuneError as e:
            problem = e.problems[0]
            raise Failure(problem.where, problem.message, problem.hint) from None


def plan_spec(
    spec: TrainingSpec,
    model: str,
    gpus_per_node: int = 1,
    nnodes: int = 1,
    gpu_memory: float | None = None,
    accelerator_type: str = "",
    node_selector: dict[str, Any] | None = None,
) -> Verdict:
    """The plan of ``spec`` for ``model`` and the GPU memory it is judged against (see ``gpu_memory_gib``)."""
    memory = gpu_memory_gib(gpu_memory, accelerator_type, node_selector)
    try:
        shape = read_model_shape(model)  # a file that is not JSON at all is refused (KubetuneError): no backend loads it
    except ShapeUnavailable as e:  # not reachable from here, or not a config transformers can read here
        return skipped(memory, e.note)
    try:
        plan = plan_memory(spec, shape, gpus_per_node, nnodes)
    except ShapeUnavailable as e:  # a config transformers reads but cannot build a causal LM of
        return skipped(memory, e.note)
    except Exception as e:  # noqa: BLE001 (a model the trace cannot run, say a multimodal one: advisory, never a crash)
        return skipped(memory, f"{shape.source}: model_type {shape.model_type!r} cannot be traced here ({type(e).__name__})")
    return Verdict(plan, memory, redact(plan.markdown(memory)))


def skipped(memory: float | None, note: str) -> Verdict:
    """No plan: the Markdown says why (credentials redacted), no verdict."""
    return Verdict(None, memory, redact(f"### Memory plan\n\nSkipped: {note}.\n"))
