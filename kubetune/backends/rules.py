"""Small helpers shared by the backends' cross-field rules."""

from __future__ import annotations

import os
from typing import Any

from kubetune.backends.cpu_mode import wanted
from kubetune.contract.catalog import Catalog
from kubetune.errors import KubetuneError, Problem


def effective(kwargs: dict[str, Any], catalog: Catalog, name: str, default: Any = None) -> Any:
    """The value a backend field will have: the kwarg if given, else the backend's own default."""
    if name in kwargs:
        return kwargs[name]
    info = catalog.fields.get(name)
    return info.default if info is not None and info.default is not None else default


def pretraining_problems(params: dict[str, Any]) -> list[Problem]:
    """Document-style pretraining (sft, osft) cuts documents into blocks: it needs their size."""
    if params.get("is_pretraining") and params.get("block_size") is None:
        return [Problem("block_size", "is required when is_pretraining is true")]
    return []


def torchrun_kwargs(params: dict[str, Any], names: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """torchrun's settings as Training Hub 0.11.2 reads them (``utils.get_torchrun_params``): the spec's parameter,
    else its ``PET_*`` variable (``MASTER_ADDR``/``MASTER_PORT`` too), else one node, rank 0, rendezvous id 0 and
    torchrun's own local rendezvous. One deliberate difference: ``nproc_per_node`` left out is every GPU of the
    pod (the pipeline's ``gpus``), where Training Hub starts one process."""
    env = os.environ if env is None else env
    given = {k: params[k] for k in names if params.get(k) is not None}
    unprefixed = ("master_addr", "master_port")  # Training Hub also reads MASTER_ADDR and MASTER_PORT
    found = {k: env.get(pet_variable(k)) or (env.get(k.upper()) if k in unprefixed else None) for k in names}
    found = {k: v.strip() for k, v in found.items() if v and v.strip() and k not in given}
    out: dict[str, Any] = {"nproc_per_node": "gpu", "nnodes": 1, "node_rank": 0, "rdzv_id": 0, **found, **given}
    for name in ("nnodes", "node_rank", "master_port"):
        if name in found:
            out[name] = _integer(name, found[name])
    if isinstance(out["nproc_per_node"], str):
        word = out["nproc_per_node"].strip().lower()
        out["nproc_per_node"] = _integer("nproc_per_node", word) if word not in ("auto", "gpu") else "gpu"
    if "master_addr" in out and "rdzv_endpoint" in out:  # the one given at the higher level wins, as in Training Hub
        if ("master_addr" in given) == ("rdzv_endpoint" in given):
            raise KubetuneError([Problem("master_addr", "and rdzv_endpoint exclude each other; give one")], "torchrun")
        out.pop("rdzv_endpoint" if "master_addr" in given else "master_addr")
    if "master_addr" not in out:  # a port without its address: Training Hub drops it too
        out.pop("master_port", None)
    return out


def nproc_notice(params: dict[str, Any], env: dict[str, str] | None = None) -> str | None:
    """The line the training step prints where our default for ``nproc_per_node`` differs from Training Hub's."""
    env = os.environ if env is None else env
    if params.get("nproc_per_node") is not None or (env.get(pet_variable("nproc_per_node")) or "").strip() or wanted():
        return None
    return (
        "[kubetune] nproc_per_node is not given: one process per GPU of this pod (the pipeline's gpus), "
        "where Training Hub 0.11.2 starts one process; give nproc_per_node to choose"
    )


def _integer(name: str, value: Any) -> int:
    try:
        return int(value)
    except ValueError:
        problem = Problem(name, f"must be an integer, got {value!r} (from {pet_variable(name)})")
        raise KubetuneError([problem], "torchrun") from None


TORCHRUN_NAMES = ["nproc_per_node", "nnodes", "node_rank", "rdzv_id", "rdzv_endpoint", "master_addr", "master_port"]
# what a TrainJob decides for every node: a spec that sets one contradicts it
PLACED_BY_TRAINJOB = tuple(name for name in TORCHRUN_NAMES if name != "nproc_per_node")


def pet_variable(name: str) -> str:
    """The variable a torchrun parameter is read from (``PET_NNODES``): a Kubeflow Trainer torch runtime sets them
    on every node, Training Hub reads them."""
    return f"PET_{name.upper()}"
