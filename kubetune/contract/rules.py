"""Rules every algorithm shares, on curated parameters (the backends' own rules live in ``kubetune/backends``)."""

from __future__ import annotations

from typing import Any

from kubetune.errors import Problem


def checkpoint_problems(params: dict[str, Any], kwargs: dict[str, Any]) -> list[Problem]:
    """Training Hub's checkpointing switches (every algorithm): object storage is not built yet, and
    ``enable_jit_checkpoint`` must not contradict the backend's own ``on_demand_checkpointing``."""
    problems = []
    if params.get("checkpoint_storage", "pvc") != "pvc":
        problems.append(
            Problem(
                "checkpoint_storage",
                "is not yet supported: kubetune does not mirror checkpoints to object storage yet",
                'leave it out (or "pvc"): checkpoints stay on the step\'s disk, or on a PVC with the finetune-workspace pipeline',
            )
        )
    jit, native = params.get("enable_jit_checkpoint"), kwargs.get("on_demand_checkpointing")
    if isinstance(native, bool) and jit is not None and jit != native:
        problems.append(
            Problem("on_demand_checkpointing", f"contradicts enable_jit_checkpoint ({str(jit).lower()})", "give one of them")
        )
    return problems
