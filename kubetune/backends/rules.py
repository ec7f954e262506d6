"""Small helpers shared by the backends' cross-field rules."""

from __future__ import annotations

from typing import Any

from kubetune.contract.catalog import Catalog


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
