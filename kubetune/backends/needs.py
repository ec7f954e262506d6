"""Backend options that need a package (and a CUDA GPU) the training image may lack: the training step checks
them before it launches, and refuses in one line naming the field, instead of failing deep inside the backend.
Validation runs on another image and cannot know what the training image holds, so the check lives here.
Each backend declares its own (``Backend.needs``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, NamedTuple

from kubetune.errors import Problem


class Need(NamedTuple):
    """What one option (a field as the spec gives it) needs when it asks for it."""

    asks: Callable[[Any], bool]  # whether the value asks for it (``bool``: a true flag or a non-empty value)
    module: str  # the module to import
    package: str  # its pip name
    cuda: bool  # needs a CUDA GPU too


LIGER = Need(bool, "liger_kernel", "liger-kernel", True)
DEEPSPEED = Need(bool, "deepspeed", "deepspeed", True)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def environment_problems(needs: dict[str, Need], given: dict[str, Any]) -> list[Problem]:
    """The options in ``given`` (curated parameters and backend kwargs) this environment cannot honour."""
    problems = []
    for field, (asks, module, package, cuda) in needs.items():
        if not asks(given.get(field)):
            continue
        if importlib.util.find_spec(module) is None:
            problems.append(Problem(field, f"needs {package}, which is not installed in this training image", "remove it"))
        elif cuda and not cuda_available():
            problems.append(Problem(field, "needs a CUDA GPU, and there is none here", "remove it to train on this machine"))
    return problems
