"""The one small interface every training backend implements, and the registry from algorithm to backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kubetune.errors import Problem

if TYPE_CHECKING:
    from kubetune.contract.catalog import Catalog
    from kubetune.contract.spec import TrainingSpec


@dataclass
class TrainResult:
    """What a backend leaves behind: the final model directory and every checkpoint it saved."""

    output_dir: Path
    final_model: Path
    checkpoints: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class Backend:
    """A training backend. Importing a subclass is cheap: heavy packages load inside ``build``/``train``."""

    algorithm: ClassVar[str]
    name: ClassVar[str]  # the Training Hub backend name, e.g. "mini-trainer"
    aliases: ClassVar[tuple[str, ...]] = ()  # other accepted values of the spec's "backend"
    catalog_name: ClassVar[str]  # which field catalogue backend kwargs are checked against
    # backend field name -> curated Training Hub name (the backend's own spelling of a curated parameter)
    renames: ClassVar[dict[str, str]] = {}
    # backend fields the training step sets itself, with the reason
    managed: ClassVar[dict[str, str]] = {}

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        """Backend rules that involve several fields (the backend's own checks, run before any GPU).

        ``pipeline``: the spec runs in the pipeline, which binds the paths and the validation split.
        """
        return []

    def config_problems(self, params: dict[str, Any], kwargs: dict[str, Any]) -> list[Problem]:
        """The backend's own configuration classes built from the spec (placeholder paths), where the backend
        is importable without a GPU: what they refuse is a problem naming the field, the value not shown."""
        return []

    def notes(self, params: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
        """Plain-language remarks the validation step prints (not errors)."""
        return []

    def by_class(self, spec: TrainingSpec) -> dict[str, dict[str, Any]]:
        """Curated parameters (under the backend's names) and backend kwargs, grouped by backend class."""
        from kubetune.contract.catalog import catalog

        fields = catalog(self.catalog_name).fields
        to_backend = {curated: field for field, curated in self.renames.items()}
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in [*((to_backend.get(k, k), v) for k, v in spec.params.items()), *spec.backend_kwargs.items()]:
            if key in fields:
                grouped.setdefault(fields[key].source, {})[key] = value
        return grouped

    def build(self, spec: TrainingSpec) -> Any:
        """The backend's own configuration objects for ``spec`` (paths must be bound)."""
        raise NotImplementedError

    def train(self, spec: TrainingSpec) -> TrainResult:
        raise NotImplementedError


def _registry() -> dict[str, type[Backend]]:
    from kubetune.backends.instructlab import InstructLabSFT
    from kubetune.backends.lora import LoRASFT
    from kubetune.backends.mini_trainer import MiniTrainerOSFT

    return {cls.algorithm: cls for cls in (InstructLabSFT, MiniTrainerOSFT, LoRASFT)}


def get_backend(algorithm: str) -> Backend:
    return _registry()[algorithm]()


def algorithms() -> list[str]:
    return sorted(_registry())
