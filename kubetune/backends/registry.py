"""The registry from algorithm to backend: adding a backend is one module plus one entry here."""

from __future__ import annotations

from kubetune.backends.base import Backend
from kubetune.backends.instructlab import InstructLabSFT
from kubetune.backends.lora import LoRASFT
from kubetune.backends.mini_trainer import MiniTrainerOSFT

BACKENDS: dict[str, type[Backend]] = {cls.algorithm: cls for cls in (InstructLabSFT, MiniTrainerOSFT, LoRASFT)}
DEFAULT_ALGORITHM = LoRASFT.algorithm  # the pipelines' and run-local's default: it trains on a CPU


def get_backend(algorithm: str) -> Backend:
    return BACKENDS[algorithm]()


def algorithms() -> list[str]:
    return sorted(BACKENDS)
