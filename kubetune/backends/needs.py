"""Backend options that need a package (and a CUDA GPU) the training image may lack: the training step checks
them before it launches, and refuses in one line naming the field, instead of failing deep inside the backend.
Validation runs on another image and cannot know what the training image holds, so the check lives here."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from kubetune.errors import KubetuneError, Problem

_ON: Callable[[Any], bool] = bool  # a true flag or a non-empty value
# (algorithm, field as the spec gives it) -> (when it asks, module to import, pip name, needs CUDA)
NEEDS: dict[tuple[str, str], tuple[Callable[[Any], bool], str, str, bool]] = {
    ("sft", "use_liger"): (_ON, "liger_kernel", "liger-kernel", True),
    ("sft", "distributed_backend"): (lambda v: v == "deepspeed", "deepspeed", "deepspeed", True),
    ("osft", "use_liger"): (_ON, "liger_kernel", "liger-kernel", True),
    ("lora_sft", "use_liger_kernel"): (_ON, "liger_kernel", "liger-kernel", True),
    ("lora_sft", "deepspeed"): (_ON, "deepspeed", "deepspeed", True),
}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def environment_problems(algorithm: str, given: dict[str, Any]) -> list[Problem]:
    """The options in ``given`` (curated parameters and backend kwargs) this environment cannot honour."""
    problems = []
    for (owner, field), (asks, module, package, cuda) in NEEDS.items():
        if owner != algorithm or not asks(given.get(field)):
            continue
        if importlib.util.find_spec(module) is None:
            problems.append(Problem(field, f"needs {package}, which is not installed in this training image", "remove it"))
        elif cuda and not cuda_available():
            problems.append(Problem(field, "needs a CUDA GPU, and there is none here", "remove it to train on this machine"))
    return problems


def require_environment(spec) -> None:
    """Refuse, before any launch, an option the training image or machine cannot honour (exit 2, one line)."""
    if problems := environment_problems(spec.algorithm, {**spec.params, **spec.backend_kwargs}):
        raise KubetuneError(problems, f"cannot train {spec.algorithm} here")
