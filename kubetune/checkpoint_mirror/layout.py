"""The saves a mirror holds: the layouts of the backends' outputs, which saves are complete, their files."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kubetune.backends.resume import instructlab_skip, mini_trainer_skip
from kubetune.checkpoints import accelerate_state_problem, full_state_problem, hf_save_problem, resume_problem, samples_position

MARKER = ".upload_complete"  # Training Hub's name
WRITER = "kubetune"
LOGS = ("training_metrics_*.jsonl", "training_params_and_metrics_global*.jsonl")
# the resumable layout each algorithm's backend consumes: (folder, name pattern)
RESUMABLE = {"sft": ("full_state", r"epoch_(\d+)"), "osft": ("full_state_checkpoints", r"step_(\d+)")}
TRL = ("", r"checkpoint-(\d+)")
# the save folders a mirror holds, directly under its prefix (folder -> name pattern): nothing else is ever pruned
LAYOUT = {"": TRL[1], **dict(RESUMABLE.values()), "hf_format": r"[^.].*"}


@dataclass(frozen=True)
class Save:
    """A complete save in the output: its path relative to it (posix), its folder, and its place in that folder."""

    prefix: str
    folder: str
    order: tuple[int, str]
    resumable: bool


def number(name: str, pattern: str) -> int | None:
    found = re.fullmatch(pattern, name)
    return int(found.group(1)) if found else None


def folder_of(rel: str) -> str:
    """The folder of a save's prefix (``""`` for TRL's ``checkpoint-N`` at the top)."""
    parent = str(PurePosixPath(rel).parent)
    return "" if parent == "." else parent


def order_of(rel: str) -> tuple[int, str]:
    """A save's place in its folder: samples seen (``hf_format``), else the number in its name."""
    name = PurePosixPath(rel).name
    at = samples_position(Path(name)) if folder_of(rel) == "hf_format" else None
    found = at.samples if at else number(name, r"\D*(\d+)")
    return (-1 if found is None else found, name)


def in_layout(rel: str) -> bool:
    """Whether ``rel`` (relative to the mirror) is a save folder of a layout kubetune mirrors."""
    pattern = LAYOUT.get(folder_of(rel))
    return pattern is not None and re.fullmatch(pattern, PurePosixPath(rel).name) is not None


def state_problem(path: Path) -> str | None:
    """Why a resumable save cannot be resumed (incomplete, or a full state its backend resumes wrongly), else None."""
    if path.parent.name == "full_state":
        return accelerate_state_problem(path) or instructlab_skip(path)
    if path.parent.name == "full_state_checkpoints":
        return full_state_problem(path) or mini_trainer_skip(path)
    return resume_problem(path)


def candidates(root: Path) -> list[tuple[Path, str, tuple[int, str], bool]]:
    """Every save folder of the layouts kubetune knows under ``root``: (path, folder, order, resumable)."""
    found = []
    for folder, pattern in (TRL, *RESUMABLE.values()):
        for path in (root / folder).glob("*") if (root / folder).is_dir() else []:
            if path.is_dir() and (n := number(path.name, pattern)) is not None:
                found.append((path, folder, (n, path.name), True))
    for path in (root / "hf_format").glob("*") if (root / "hf_format").is_dir() else []:
        if path.is_dir() and not path.name.startswith("."):
            at = samples_position(path)
            found.append((path, "hf_format", (at.samples if at else -1, path.name), False))
    return found


def complete_saves(root: Path) -> list[Save]:
    """The complete saves under ``root`` (resumable ones only where their backend resumes them correctly)."""
    saves = []
    for path, folder, order, resumable in candidates(root):
        if (state_problem(path) if resumable else hf_save_problem(path)) is None:
            saves.append(Save(path.relative_to(root).as_posix(), folder, order, resumable))
    return sorted(saves, key=lambda s: (s.folder, s.order))


def manifest(path: Path) -> dict[str, int]:
    """Every file of a save (relative posix path -> size)."""
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def fingerprint(path: Path) -> str:
    """Files, sizes and modification times of a save: it changes when the save is written again."""
    files = sorted(
        (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()
