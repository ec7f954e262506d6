"""The one small interface every training backend implements (the registry is ``registry.py``)."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from kubetune.backends.metrics import BackendSeries
from kubetune.backends.needs import Need, environment_problems
from kubetune.checkpoints import Position, position
from kubetune.contract.catalog import Catalog, catalog
from kubetune.contract.spec import TrainingSpec
from kubetune.errors import KubetuneError, Problem


@dataclass
class TrainResult:
    """What a backend leaves behind: the final model directory and every checkpoint it saved."""

    output_dir: Path
    final_model: Path
    checkpoints: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRun:
    """What the training step hands a backend besides the bound spec, the same for every backend."""

    validation_data: Path | None = None  # the pipeline's prepared validation split (folder or file), where it made one
    callbacks: tuple[Any, ...] = ()  # in-process observers of the training loop (TRL ``TrainerCallback``s); others ignore them


class Backend:
    """A training backend: everything that differs per algorithm (parameters, rules, configuration, data binding,
    launch, metrics files). Importing a subclass is cheap: heavy packages load inside ``build``/``train``.
    Adding one is a module with a subclass plus an entry in ``registry.BACKENDS``."""

    algorithm: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]  # the curated parameters (``kubetune.contract.params``'s model for the built-ins)
    required_params: ClassVar[tuple[str, ...]] = ()  # curated parameters a spec must give (paths are bound later)
    # (the module it trains with, kubetune's pip extra that installs it): run-local checks it before anything runs
    installs: ClassVar[tuple[str, str] | None] = None
    spawns_torchrun: ClassVar[bool] = False  # True: its own launch starts torchrun; else a TrainJob node wraps it in torchrun
    name: ClassVar[str]  # the Training Hub backend name, e.g. "mini-trainer"
    aliases: ClassVar[tuple[str, ...]] = ()  # other accepted values of the spec's "backend"
    catalog_name: ClassVar[str]  # which field catalogue backend kwargs are checked against
    # backend field name -> curated Training Hub name (the backend's own spelling of a curated parameter)
    renames: ClassVar[dict[str, str]] = {}
    # backend fields the training step sets itself, with the reason
    managed: ClassVar[dict[str, str]] = {}
    # options that need a package (and a CUDA GPU) the training image may lack, by field
    needs: ClassVar[dict[str, Need]] = {}
    # (package, module) holding the backend's configuration classes; ``configs`` builds them from it
    config_source: ClassVar[tuple[str, str] | None] = None

    def check(self, params: dict[str, Any], kwargs: dict[str, Any], catalog: Catalog, pipeline: bool = False) -> list[Problem]:
        """Backend rules that involve several fields (the backend's own checks, run before any GPU).

        ``pipeline``: the spec runs in the pipeline, which binds the paths and the validation split.
        """
        return []

    def config_problems(self, params: dict[str, Any], kwargs: dict[str, Any]) -> list[Problem]:
        """The backend's own configuration classes built from the spec (placeholder paths), where the backend
        is importable without a GPU: what they refuse is a problem naming the field, the value not shown.
        What cannot be judged here (the backend or an optional package missing, no GPU) is left to the
        training step."""
        bound = {**PLACEHOLDER_PATHS, **params}
        spec = TrainingSpec(algorithm=self.algorithm, backend=self.name, params=bound, backend_kwargs=kwargs)
        try:
            with warnings.catch_warnings():  # a backend's deprecation notices are not the user's business
                warnings.simplefilter("ignore")
                self.validation_configs(spec)
        except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
            return self._refusals(e, {**params, **kwargs})
        except Exception:  # noqa: BLE001 - an environment's limit, not the spec's mistake
            return []
        return []

    def validation_configs(self, spec: TrainingSpec) -> None:
        """Build the backend's configuration objects for ``spec`` as cheaply as possible: from its configuration
        module loaded alone (no torch), when the backend is installed here."""
        if self.config_source and (module := config_module(*self.config_source)) is not None:
            self.configs(spec, module)

    def configs(self, spec: TrainingSpec, module: types.ModuleType) -> Any:
        """The configuration objects for ``spec``, from the backend's configuration ``module``."""
        raise NotImplementedError

    def _refusals(self, error: Exception, given: dict[str, Any]) -> list[Problem]:
        source = type(error).__module__.split(".")[0]
        errors = error.errors(include_input=False) if hasattr(error, "errors") else [{"loc": (), "msg": str(error)}]
        problems = []
        for e in errors:
            message = _without_values(str(e["msg"]).splitlines()[0][:200] if e["msg"] else type(error).__name__, given)
            field = str(e["loc"][0]) if e["loc"] else self._named(str(e["msg"]), given)
            field = self.renames.get(field, field)
            for part in e["loc"][1:]:
                field += f"[{part}]" if isinstance(part, int) else f".{part}"
            problems.append(Problem(field, f"is refused by {self.name}'s configuration: {message}"))
        return problems or [Problem("spec", f"is refused by {self.name}'s configuration ({source})")]

    def _named(self, message: str, given: dict[str, Any]) -> str:
        """The field a backend's plain error message is about: the one it names (under the backend's own name
        or the curated one), else the one whose value it quotes ("bogus is not a valid SchedulerType")."""
        to_backend = {curated: field for field, curated in self.renames.items()}
        for key in sorted(given, key=len, reverse=True):
            if any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", message) for n in (key, to_backend.get(key, key))):
                return key
        quoted = [(str(v), k) for k, v in given.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
        for value, key in sorted(quoted, key=lambda q: len(q[0]), reverse=True):
            if len(value) >= 2 and re.search(rf"(?<![\w.]){re.escape(value)}(?!\w)", message):
                return key
        return "spec"

    def notes(self, params: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
        """Plain-language remarks the validation step prints (not errors)."""
        return []

    def catalog(self) -> Catalog:
        """The backend's configuration fields: what its backend kwargs are checked against."""
        return catalog(self.catalog_name)

    def by_class(self, spec: TrainingSpec) -> dict[str, dict[str, Any]]:
        """Curated parameters (under the backend's names) and backend kwargs, grouped by backend class."""
        fields = self.catalog().fields
        to_backend = {curated: field for field, curated in self.renames.items()}
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in [*((to_backend.get(k, k), v) for k, v in spec.params.items()), *spec.backend_kwargs.items()]:
            if key in fields:
                grouped.setdefault(fields[key].source, {})[key] = value
        return grouped

    def require_environment(self, spec: TrainingSpec) -> None:
        """Refuse, before any launch, an option the training image or machine cannot honour (exit 2, one line)."""
        if problems := environment_problems(self.needs, {**spec.params, **spec.backend_kwargs}):
            raise KubetuneError(problems, f"cannot train {spec.algorithm} here")

    def bind_data(self, spec: TrainingSpec, train_data: Path, output_dir: Path, validation_data: Path | None) -> dict[str, Any]:
        """What the pipeline binds for this backend beyond model, data and output paths (curated parameters or
        backend kwargs): ``train_data``/``validation_data`` are the prepared splits, ``output_dir`` the step's."""
        return {}

    def build(self, spec: TrainingSpec, run: TrainingRun | None = None) -> Any:
        """The backend's own configuration objects for ``spec`` (paths must be bound)."""
        if self.config_source is None:
            raise NotImplementedError
        return self.configs(spec, importlib.import_module(".".join(self.config_source)))

    def train(self, spec: TrainingSpec, run: TrainingRun | None = None) -> TrainResult:
        """Train on the bound ``spec``; what was saved, read back."""
        raise NotImplementedError

    def read_metrics(self, output_dir: Path) -> BackendSeries | None:
        """The loss series this backend logged under ``output_dir`` (its own files, rank 0's), or None where
        ``output_dir`` holds none of its metrics files (another backend wrote it)."""
        return None

    def checkpoint_position(self, path: Path) -> Position | None:
        """Where the checkpoint ``path`` stands in the run (step and/or samples seen), from the name this backend
        gives its checkpoints; None for a folder it does not name so (``final``). The default knows both
        built-in namings (TRL's ``checkpoint-N``, ``samples_N``)."""
        return position(path)


PLACEHOLDER_PATHS = {
    "model_path": "/placeholder/model",
    "data_path": "/placeholder/data.jsonl",
    "ckpt_output_dir": "/placeholder/out",
}


def _without_values(message: str, given: dict[str, Any]) -> str:
    """``message`` with the spec's values in it replaced by ``<value>`` (a backend's error may quote them)."""
    values = [v for v in given.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    for value in sorted({str(v) for v in values}, key=len, reverse=True):
        if len(value) >= 2 or value.isdigit():
            message = re.sub(rf"(?<![\w.]){re.escape(value)}(?![\w])", "<value>", message)
    return message


@cache
def config_module(package: str, module: str) -> types.ModuleType | None:
    """A backend's configuration module (plain pydantic models or dataclasses), loaded by itself: the
    package's ``__init__`` imports torch and the training code, seconds that validation need not spend.
    None when the backend is not installed here or its module cannot stand alone."""
    name = f"{package}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(next(iter(found.submodule_search_locations))) / f"{module.replace('.', '/')}.py"
        spec = importlib.util.spec_from_file_location(f"_kubetune_config.{name}", path)
        if spec is None or spec.loader is None:
            return None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded  # pydantic and dataclasses look their module up here
        spec.loader.exec_module(loaded)
    except Exception:  # noqa: BLE001 - not installed, or not loadable alone: the catalogue's checks remain
        sys.modules.pop(f"_kubetune_config.{name}", None)
        return None
    return loaded
