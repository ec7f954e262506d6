"""Small helpers shared by the backends' cross-field rules."""

from __future__ import annotations

from typing import Any

from kubetune.contract.catalog import Catalog
from kubetune.errors import Problem


def effective(kwargs: dict[str, Any], catalog: Catalog, name: str, default: Any = None) -> Any:
    """The value a backend field will have: the kwarg if given, else the backend's own default."""
    if name in kwargs:
        return kwargs[name]
    info = catalog.fields.get(name)
    return info.default if info is not None and info.default is not None else default


def torchrun_kwargs(params: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Single-node defaults for torchrun (all local GPUs), overridden by the spec's torchrun parameters."""
    out: dict[str, Any] = {"nproc_per_node": "gpu", "nnodes": 1, "node_rank": 0, "rdzv_id": 123}
    out.update({k: params[k] for k in names if params.get(k) is not None})
    if out["nproc_per_node"] == "auto":
        out["nproc_per_node"] = "gpu"
    if not out.get("rdzv_endpoint") and not out.get("master_addr"):
        out["rdzv_endpoint"] = "127.0.0.1:29500"
    return out


TORCHRUN_NAMES = ["nproc_per_node", "nnodes", "node_rank", "rdzv_id", "rdzv_endpoint", "master_addr", "master_port"]


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
