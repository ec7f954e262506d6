"""Checkpoints in the backends' layouts, shared by evaluation and export.

``hf_format/samples_N`` (instructlab-training, mini-trainer; N samples seen), ``checkpoint-N`` (TRL; step N),
and unnamed model directories such as ``final``. Optimizer state and the base model copy are not checkpoints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kubetune.errors import KubetuneError, Problem

SKIPPED_DIRS = {"base", "full_state", "full_state_checkpoints", ".datasets-cache"}
# files of a checkpoint that only resuming needs (an export or a copy leaves them out)
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin")


def position(path: Path) -> tuple[int | None, int | None]:
    """(step, samples) from a checkpoint's name: TRL counts steps, the others samples seen."""
    if match := re.fullmatch(r"checkpoint-(\d+)", path.name):
        return int(match.group(1)), None
    if match := re.match(r"samples_(\d+)", path.name):
        return None, int(match.group(1))
    return None, None


def find_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every model directory under ``output_dir`` in training order, unnamed ones (``final``) last."""
    root = Path(output_dir)
    found = {p.parent for name in ("config.json", "adapter_config.json") for p in root.rglob(name)}
    found = {p for p in found if not SKIPPED_DIRS & set(p.relative_to(root).parts)}
    found = {p for p in found if not any(q != p and p in q.parents for q in found)}

    def order(path: Path) -> tuple:
        step, samples = position(path)
        known = step if step is not None else samples
        return (known is None, known or 0, str(path))

    return sorted(found, key=order)


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(adapter: Path, training_root: Path | None = None, base_model: str | None = None) -> str:
    """The base model of a LoRA adapter: its recorded path if readable here, else ``base_model``, else the
    training output's ``base/`` copy. The recorded path is often another pod's; a hub id is returned as is."""
    named = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    local = [p.parent for p in Path(training_root).glob("base/*/config.json")] if training_root else []
    for candidate in (named, base_model, *map(str, local)):
        if candidate and Path(candidate, "config.json").is_file():
            return candidate
    if base_model or (named and not named.startswith("/")):
        return base_model or named
    raise KubetuneError(
        [Problem(str(adapter), f"is a LoRA adapter whose base model {named!r} is not readable here")], "no base model"
    )


def latest_full_state(output_dir: str | Path) -> str | None:
    """mini-trainer's newest full-state checkpoint (``full_state_checkpoints/step_N`` with its
    ``training_state.pt``) under ``output_dir``, for ``resume_from_full_state_checkpoint``."""
    found = [
        (int(d.name.removeprefix("step_")), d)
        for d in Path(output_dir, "full_state_checkpoints").glob("step_*")
        if d.name.removeprefix("step_").isdigit() and (d / "training_state.pt").is_file()
    ]
    return str(max(found)[1]) if found else None
