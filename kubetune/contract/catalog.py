"""Field catalogues: the real configuration fields of each backend, read from the backend's own classes.

When a backend is installed at the version a snapshot was generated from, the snapshot is used (it is
identical, which ``tests/contract/test_catalog.py`` proves, and avoids importing torch in the cheap validation
step). When a different version is installed, the classes are read live. When the backend is not
installed (the CPU validation image), the snapshot is used. Regenerate the snapshots with
``python -m kubetune.contract.catalog``.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import types
import typing
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from kubetune.errors import Problem

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshots"

# backend name -> the classes whose fields are its kwargs, and the distributions that define them.
BACKEND_CLASSES: dict[str, list[tuple[str, str]]] = {
    "instructlab-training": [
        ("instructlab.training.config", "TrainingArgs"),
        ("instructlab.training.config", "TorchrunArgs"),
    ],
    "mini-trainer": [
        ("mini_trainer.training_types", "TrainingArgs"),
        ("mini_trainer.training_types", "TorchrunArgs"),
    ],
    "trl": [("trl", "SFTConfig"), ("peft", "LoraConfig")],
}
BACKEND_DISTRIBUTIONS: dict[str, list[str]] = {
    "instructlab-training": ["instructlab-training"],
    "mini-trainer": ["rhai-innovation-mini-trainer"],
    "trl": ["trl", "transformers", "peft"],
}

@dataclass(frozen=True)
class FieldInfo:
    """One backend field: the JSON types it accepts, its fixed choices if any, and its JSON default."""

    name: str
    source: str
    types: tuple[str, ...]  # JSON types accepted freely ("string", "integer", "number", ...), or ("any",)
    choices: tuple | None = None
    required: bool = False
    default: typing.Any = None
    item_choices: tuple | None = None  # the strings a string value, or each item of a list value, must be

    def accepts(self, value: typing.Any) -> bool:
        if "any" in self.types or (self.choices is not None and value in self.choices):
            return True
        kind = json_kind(value)
        return kind in self.types or (kind == "integer" and "number" in self.types)

    def describe(self) -> str:
        parts = [t for t in self.types if t != "null"]
        if self.choices is not None:
            parts.append("one of " + ", ".join(json.dumps(c) for c in self.choices))
        if "null" in self.types:
            parts.append("null")
        return " or ".join(parts)


@dataclass(frozen=True)
class Catalog:
    backend: str
    versions: dict[str, str]
    fields: dict[str, FieldInfo]
    origin: str  # "snapshot" or "live"

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "versions": self.versions,
            "fields": {
                name: {k: v for k, v in dataclasses.asdict(f).items() if k != "name" and (k != "item_choices" or v)}
                for name, f in sorted(self.fields.items())
            },
        }


def json_kind(value: typing.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "any"


def describe_annotation(tp: typing.Any) -> tuple[set[str], tuple | None]:
    """Map a Python annotation to (JSON types accepted freely, fixed choices from Literal/Enum members)."""
    if tp is typing.Any or tp is object or isinstance(tp, (str, typing.ForwardRef, typing.TypeVar)):
        return {"any"}, None
    if tp is type(None):
        return {"null"}, None
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return describe_annotation(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        kinds: set[str] = set()
        choices: list = []
        args = typing.get_args(tp)
        for arg in args:
            arg_kinds, arg_choices = describe_annotation(arg)
            kinds |= arg_kinds
            choices.extend(arg_choices or ())
        if str in args and any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
            kinds.discard("string")  # `SomeEnum | str` (transformers' style): the string is converted to the enum
        if "any" in kinds:
            return {"any"}, None
        return kinds, tuple(choices) or None
    if origin is typing.Literal:
        return set(), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return set(), tuple(m.value for m in tp)
    base = origin or tp
    if isinstance(base, type):
        if issubclass(base, bool):
            return {"boolean"}, None
        if issubclass(base, int):
            return {"integer"}, None
        if issubclass(base, float):
            return {"number"}, None
        if issubclass(base, str):
            return {"string"}, None
        if issubclass(base, (list, tuple, set, frozenset)) or base is typing.Sequence:
            return {"array"}, None
        if issubclass(base, dict) or dataclasses.is_dataclass(base) or hasattr(base, "model_fields"):
            return {"object"}, None
    return {"any"}, None


def _json_default(value: typing.Any) -> typing.Any:
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _class_fields(cls: type) -> list[tuple[str, typing.Any, bool, typing.Any]]:
    """(name, annotation, required, default) for a dataclass or a pydantic model."""
    if hasattr(cls, "model_fields"):  # pydantic v2
        return [
            (name, f.annotation, f.is_required(), None if f.is_required() else f.get_default(call_default_factory=True))
            for name, f in cls.model_fields.items()
        ]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append((f.name, hints.get(f.name, f.type), required, default))
    return out


def read_live(backend: str) -> Catalog:
    """Read the catalogue from the installed backend's classes (raises ImportError when absent)."""
    fields: dict[str, FieldInfo] = {}
    for module_name, class_name in BACKEND_CLASSES[backend]:
        cls = getattr(importlib.import_module(module_name), class_name)
        for name, annotation, required, default in _class_fields(cls):
            if name in fields:  # first class wins (TrainingArgs before TorchrunArgs)
                continue
            kinds, choices = describe_annotation(annotation)
            fields[name] = FieldInfo(
                name=name,
                source=f"{module_name.split('.')[0]}.{class_name}",
                types=tuple(sorted(kinds)),
                choices=choices,
                required=required,
                default=_json_default(default),
            )
    for name, read in ITEM_CHOICES.get(backend, {}).items():
        fields[name] = dataclasses.replace(fields[name], item_choices=read())
    return Catalog(backend, installed_versions(backend), fields, origin="live")


def _integrations() -> tuple[str, ...]:
    """The values transformers' ``report_to`` takes: its integrations, plus "all" and "none"."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return tuple(sorted({*INTEGRATION_TO_CALLBACK, "all", "none"}))


def _members(module: str, name: str) -> typing.Callable[[], tuple[str, ...]]:
    """The values of an enum the backend converts a string to only when it runs (not in its field's type)."""
    return lambda: tuple(m.value for m in getattr(importlib.import_module(module), name))


def _dtype_names(module: str, function: str) -> typing.Callable[[], tuple[str, ...]]:
    """The dtype strings a mini-trainer function maps to torch dtypes (its own ``dtype_map`` literal)."""

    def read() -> tuple[str, ...]:
        import inspect
        import re

        source = inspect.getsource(getattr(importlib.import_module(module), function))
        return tuple(sorted(set(re.findall(r'"(\w+)": torch\.', source))))

    return read


# fields whose string values (or list items) come from a fixed list the backend keeps elsewhere
ITEM_CHOICES: dict[str, dict[str, typing.Callable[[], tuple[str, ...]]]] = {
    "trl": {"report_to": _integrations, "fsdp": _members("transformers.trainer_utils", "FSDPOption")},
    "mini-trainer": {
        # passed to mini-trainer's torchrun command as they are; its training process converts them
        "lr_scheduler": _members("transformers.trainer_utils", "SchedulerType"),
        "train_dtype": _dtype_names("mini_trainer.train", "parse_dtype"),
        "osft_upcast_dtype": _dtype_names("mini_trainer.train", "parse_dtype"),
        "save_dtype": _dtype_names("mini_trainer.setup_model_for_training", "get_model_save_dtype"),
    },
}
WORDS = {"fsdp"}  # string fields holding space-separated option words ("full_shard auto_wrap")


@dataclass(frozen=True)
class Range:
    """The numbers a backend field takes (its class only says "int" or "float")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def describe(self) -> str:
        low, high = (repr(x) if isinstance(x, float) and not x.is_integer() else f"{int(x)}" for x in (self.low, self.high or 0))
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
POSITIVE, NON_NEGATIVE, PROBABILITY = Range(0, low_open=True), Range(0), Range(0, 1, high_open=True)
COUNT = Range(1)
SEED = Range(0, SEED_MAX)
PORT = Range(1, 65535)
# backend field -> the numbers it takes; a field not listed is type-checked only
RANGES: dict[str, dict[str, Range]] = {
    "trl": {
        "adam_beta1": PROBABILITY, "adam_beta2": PROBABILITY, "adam_epsilon": NON_NEGATIVE, "data_seed": SEED,
        "seed": SEED, "dataloader_num_workers": NON_NEGATIVE, "dataloader_prefetch_factor": COUNT,
        "dataset_num_proc": COUNT, "ddp_bucket_cap_mb": COUNT, "ddp_timeout": COUNT, "eval_accumulation_steps": COUNT,
        "eval_delay": NON_NEGATIVE, "eval_steps": POSITIVE, "gradient_accumulation_steps": COUNT,
        "label_smoothing_factor": PROBABILITY, "learning_rate": POSITIVE, "logging_steps": POSITIVE,
        "max_grad_norm": NON_NEGATIVE, "max_length": COUNT, "max_steps": Range(-1), "neftune_noise_alpha": POSITIVE,
        "num_train_epochs": POSITIVE, "per_device_eval_batch_size": COUNT, "per_device_train_batch_size": COUNT,
        "qalora_group_size": COUNT, "r": COUNT, "lora_alpha": POSITIVE, "lora_dropout": PROBABILITY,
        "router_aux_loss_coef": NON_NEGATIVE, "save_steps": POSITIVE, "save_total_limit": COUNT,
        "torch_empty_cache_steps": COUNT, "warmup_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
        "layers_to_transform": NON_NEGATIVE,
    },
    "mini-trainer": {
        "batch_size": COUNT, "beta1": PROBABILITY, "beta2": PROBABILITY, "eps": NON_NEGATIVE, "master_port": PORT,
        "learning_rate": POSITIVE, "max_epochs": COUNT, "max_steps": NON_NEGATIVE, "max_tokens": NON_NEGATIVE,
        "max_tokens_per_gpu": COUNT, "min_samples_per_checkpoint": COUNT, "min_samples_per_validation": COUNT,
        "nnodes": COUNT, "node_rank": NON_NEGATIVE, "nproc_per_node": COUNT, "num_warmup_steps": NON_NEGATIVE,
        "osft_unfreeze_rank_ratio": Range(0, 1, low_open=True), "seed": SEED, "val_loss_improvement_threshold": NON_NEGATIVE,
        "validation_frequency": COUNT, "validation_split": PROBABILITY, "weight_decay": NON_NEGATIVE,
    },
    "instructlab-training": {
        "adamw_eps": NON_NEGATIVE, "adamw_weight_decay": NON_NEGATIVE, "data_process_num_cpu_procs": COUNT,
        "effective_batch_size": COUNT, "learning_rate": POSITIVE, "master_port": PORT, "max_batch_len": COUNT,
        "max_seq_len": COUNT, "mock_data_len": NON_NEGATIVE, "nnodes": COUNT, "node_rank": NON_NEGATIVE,
        "nproc_per_node": COUNT, "num_epochs": COUNT, "random_seed": SEED, "save_samples": NON_NEGATIVE,
        "validation_frequency": COUNT, "validation_split": PROBABILITY, "warmup_steps": NON_NEGATIVE,
    },
}  # fmt: skip


def value_problems(backend: str, name: str, value: typing.Any) -> list:
    """Range and fixed-list checks of one backend kwarg already of an accepted type (values never shown)."""
    allowed = RANGES.get(backend, {}).get(name)
    items = value if isinstance(value, list) else [value]
    problems = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        number = isinstance(item, (int, float)) and not isinstance(item, bool)
        if allowed is not None and number and not allowed.holds(item):
            problems.append(Problem(where, f"must be {allowed.describe()}"))
    return problems + choice_problems(backend, name, value)


def choice_problems(backend: str, name: str, value: typing.Any, shown_as: str | None = None) -> list:
    """The fixed-list checks of backend field ``name`` for ``value`` (shown as ``shown_as``, the curated name
    when the spec used it): its choices when it has no free type, and the list its strings come from."""
    info = catalog(backend).fields.get(name)
    shown_as = shown_as or name
    if info is None:
        return []
    if info.choices is not None and isinstance(value, str) and not info.accepts(value):
        return [Problem(shown_as, f"must be {info.describe()}")]
    if not info.item_choices:
        return []
    problems = []
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        where = f"{shown_as}[{i}]" if isinstance(value, list) else shown_as
        words = item.split() if isinstance(item, str) and name in WORDS else [item]
        if any(isinstance(w, str) and w not in info.item_choices for w in words):
            known = ", ".join(info.item_choices)
            if name == "report_to":
                message = f"is not a known integration; known: {known}"
            elif name in WORDS:
                message = f"holds an option word that is not known; known (space-separated): {known}"
            else:
                message = f"must be one of {known}"
            problems.append(Problem(where, message))
    return problems


def installed_versions(backend: str) -> dict[str, str]:
    versions = {}
    for dist in BACKEND_DISTRIBUTIONS[backend]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = ""
    return versions


def snapshot_path(backend: str) -> Path:
    return SNAPSHOT_DIR / f"{backend}.json"


def load_snapshot(backend: str) -> Catalog:
    data = json.loads(snapshot_path(backend).read_text())
    fields = {
        name: FieldInfo(
            name=name,
            source=f["source"],
            types=tuple(f["types"]),
            choices=None if f["choices"] is None else tuple(f["choices"]),
            required=f["required"],
            default=f["default"],
            item_choices=tuple(f["item_choices"]) if f.get("item_choices") else None,
        )
        for name, f in data["fields"].items()
    }
    return Catalog(backend, data["versions"], fields, origin="snapshot")


@cache
def catalog(backend: str) -> Catalog:
    """The backend's field catalogue: the snapshot if it matches what is installed, else the live classes."""
    snapshot = load_snapshot(backend)
    installed = installed_versions(backend)
    if installed == snapshot.versions or not all(installed.values()):
        return snapshot
    try:
        return read_live(backend)
    except ImportError:
        return snapshot


def write_snapshots() -> list[Path]:
    """Regenerate every snapshot from the installed backends (run after upgrading one)."""
    SNAPSHOT_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for backend in BACKEND_CLASSES:
        path = snapshot_path(backend)
        path.write_text(json.dumps(read_live(backend).to_json(), indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_snapshots():
        print(p)
