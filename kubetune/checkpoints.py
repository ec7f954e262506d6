"""Checkpoints in the backends' layouts, shared by training (resume), evaluation and export.

``hf_format/samples_N`` (instructlab-training, mini-trainer; N samples seen), ``checkpoint-N`` (TRL; step N),
and unnamed model directories such as ``final``. Optimizer state and the base model copy are not checkpoints.
Each backend says how it names its checkpoints (``Backend.checkpoint_position``, found through the training record
``kubetune-training.json``); ``position`` knows both built-in namings, for a folder without that record.

A checkpoint counts only when it is complete. Completeness is a check of each layout's files, not a marker:
every backend writes one file last (TRL ``trainer_state.json``, mini-trainer ``training_state.pt``; a
transformers ``save_pretrained`` writes a sharded model's index after its shards), and a check also covers
directories written by tools kubetune does not drive (a TrainJob's nodes, a user's own checkpoints).

- a model directory (every layout): ``config.json`` or ``adapter_config.json`` parses; its weights are there
  (``model.safetensors``, the shards an index lists, ``adapter_model.safetensors``, or ``*.bin``), each
  safetensors file's header parses and its size is exactly what the header says, each ``.bin`` is a whole zip;
  a ``trainer_state.json``, where present, parses;
- resuming TRL (``checkpoint-N``): the same, plus ``trainer_state.json`` (TRL writes it last) and whole
  optimizer, scheduler and RNG files;
- mini-trainer (``full_state_checkpoints/step_N``; it writes the model's ``distributed/`` (DCP: each rank's
  ``__R_*.distcp``, then ``.metadata``), then each rank's ``optimizer_rank_R.pt`` and ``rng_state_rank_R.pt``,
  ``config.json``, and ``training_state.pt`` last): ``training_state.pt``, ``distributed/.metadata``, and for each
  rank in ``distributed/`` its optimizer file, all whole; every ``.pt`` whole;
- instructlab-training (``full_state/epoch_N``; accelerate's ``save_state`` writes the model (``model.safetensors``
  or ``pytorch_model*.bin``, FSDP's ``pytorch_model_fsdp_*``), ``optimizer*.bin``, ``scheduler*.bin``,
  ``sampler*.bin``, ``random_states_R.pkl``; instructlab then writes ``training_metadata.json`` last):
  ``training_metadata.json`` and the model there and whole, every other state file whole (FSDP's sharded
  ``pytorch_model_fsdp_*/`` and ``optimizer_*/`` folders: their ``.metadata``, which DCP writes last);
- a full state's last file is at least as new as every other file in it: a save into a folder that already held
  one (the same epoch or step saved again) that stopped halfway left a mix of two saves;
- an ``hf_format`` save of either backend: a complete model directory with ``tokenizer_config.json`` (mini-trainer
  writes the tokenizer after the weights and ``config.json``; instructlab-training before the weights).

Incomplete checkpoints in kubetune's own training output are moved to ``incomplete/`` beside them (never
deleted); elsewhere they are only skipped. Before a torchrun backend starts, ``set_aside_incomplete`` moves
every incomplete save it would resume from or report (``full_state/``, ``full_state_checkpoints/``,
``hf_format/``) to ``incomplete/<folder>/<name>``.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from kubetune.errors import KubetuneError, Problem

# "not-resumable": saves kubetune/backends/resume.py set aside (a backend would resume them wrongly)
SKIPPED_DIRS = {"base", "full_state", "full_state_checkpoints", ".datasets-cache", "incomplete", "not-resumable", ".restore-tmp"}
INCOMPLETE_DIR = "incomplete"
# files of a checkpoint that only resuming needs (an export or a copy leaves them out)
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin")
MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one


class Position(NamedTuple):
    """Where a checkpoint stands in its training run: the optimizer step and/or the samples seen."""

    step: int | None = None
    samples: int | None = None


PositionOf = Callable[[Path], Position | None]


def step_position(path: Path) -> Position | None:
    """TRL's ``checkpoint-N``: step N."""
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return Position(step=int(match.group(1))) if match else None


def samples_position(path: Path) -> Position | None:
    """instructlab-training's and mini-trainer's ``samples_N`` (``samples_N.0``, ``samples_N.0_best_val_loss``): N samples."""
    match = re.fullmatch(r"samples_(\d+)(?:\.\d+)?(?:_best_val_loss)?", path.name)
    return Position(samples=int(match.group(1))) if match else None


def position(path: Path) -> Position | None:
    """A checkpoint's place from its name in either built-in naming (a folder no backend is recorded for), else None."""
    return step_position(path) or samples_position(path)


def _order(path: Path, position_of: PositionOf) -> tuple:
    step, samples = position_of(path) or Position()
    known = step if step is not None else samples
    return (known is None, known or 0, str(path))


def find_checkpoints(output_dir: str | Path, named: bool = False, position_of: PositionOf = position) -> list[Path]:
    """Every model directory under ``output_dir`` in training order, unnamed ones (``final``) last.

    ``position_of``: the backend's naming of its checkpoints (``Backend.checkpoint_position``); ``named``: also
    directories so named that hold no model at all (an empty or half-written one), so that a caller can say why it
    skips them.
    """
    root = Path(output_dir)
    found = {p.parent for name in ("config.json", "adapter_config.json") for p in root.rglob(name)}
    if named:
        found |= {p for p in root.rglob("*") if p.is_dir() and position_of(p) is not None}
    found = {p for p in found if not SKIPPED_DIRS & set(p.relative_to(root).parts)}
    found = {p for p in found if not any(q != p and p in q.parents for q in found)}
    return sorted(found, key=lambda p: _order(p, position_of))


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


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (header parses, size matches the header), else None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER, size - 8):
                return f"{path.name} is truncated (header of {length} bytes in a file of {size})"
            header = json.loads(f.read(length))
    except OSError as error:
        return f"{path.name} is unreadable ({error.strerror or error})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} has a header that does not parse"
    if not isinstance(header, dict):
        return f"{path.name} has a header that does not parse"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        return f"{path.name} has a header that does not parse"
    if size != 8 + length + end:
        return f"{path.name} is truncated ({size} bytes, its header says {8 + length + end})"
    return None


def zip_problem(path: Path) -> str | None:
    """Why ``path`` (a ``torch.save`` file: a zip) is not whole, else None; an older non-zip pickle only needs bytes."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if not magic:
            return f"{path.name} is empty"
        if magic[:2] == b"PK":
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
    except OSError as error:
        return f"{path.name} is unreadable ({error.strerror or error})"
    except zipfile.BadZipFile:
        return f"{path.name} is truncated (not a whole zip)"
    return None


def json_problem(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as error:
        return f"{path.name} is unreadable ({error.strerror or error})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} does not parse as JSON"
    return None if isinstance(value, dict) else f"{path.name} is not a JSON object"


def _weights_problem(path: Path, stem: str) -> str | None:
    """``stem``: ``model`` or ``adapter_model``; single file, sharded with an index, or ``.bin``."""
    single = path / f"{stem}.safetensors"
    index = path / f"{stem}.safetensors.index.json"
    if single.is_file():
        return safetensors_problem(single)
    if index.is_file():
        if problem := json_problem(index):
            return problem
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        if not shards:
            return f"{index.name} lists no weight file"
        for shard in shards:
            if not (path / shard).is_file():
                return f"{shard} is missing (listed in {index.name})"
            if problem := safetensors_problem(path / shard):
                return problem
        return None
    bins = sorted(path.glob(f"{'pytorch_model' if stem == 'model' else stem}*.bin"))
    if bins:
        return next(filter(None, map(zip_problem, bins)), None)
    return f"holds no weights ({single.name} is missing)"


def problem(path: str | Path) -> str | None:
    """Why the model directory ``path`` is not a complete checkpoint (evaluation, export), else None."""
    path = Path(path)
    if not path.is_dir():
        return "is not a directory"
    if not any(path.iterdir()):
        return "is empty"
    if (path / "adapter_config.json").exists():
        config, stem = path / "adapter_config.json", "adapter_model"
    elif (path / "config.json").exists():
        config, stem = path / "config.json", "model"
    else:
        return "holds no config.json or adapter_config.json"
    if found := json_problem(config) or _weights_problem(path, stem):
        return found
    if (path / "trainer_state.json").exists():
        return json_problem(path / "trainer_state.json")
    return None


def resume_problem(path: str | Path) -> str | None:
    """Why the TRL checkpoint ``path`` cannot be resumed from, else None."""
    path = Path(path)
    if found := problem(path):
        return found
    if not (path / "trainer_state.json").exists():
        return "trainer_state.json is missing (TRL writes it last: the save did not finish)"
    state = [path / "optimizer.pt", path / "scheduler.pt", *sorted(path.glob("rng_state*.pth"))]
    return next(filter(None, (zip_problem(p) for p in state if p.exists())), None)


def full_state_problem(path: str | Path) -> str | None:
    """Why mini-trainer's ``full_state_checkpoints/step_N`` cannot be resumed from, else None."""
    path = Path(path)
    if not (path / "training_state.pt").is_file():
        return "training_state.pt is missing (mini-trainer writes it last: the save did not finish)"
    if not (path / "distributed" / ".metadata").is_file():
        return "distributed/.metadata is missing (the model's state was not saved whole)"
    for rank in sorted({p.name[2:].split("_")[0] for p in (path / "distributed").glob("__*_*.distcp")}):
        if not (path / f"optimizer_rank_{rank}.pt").is_file():
            return f"optimizer_rank_{rank}.pt is missing (rank {rank} saved its model shard, not its optimizer)"
    files = [path / "training_state.pt", *sorted(path.glob("optimizer_rank_*.pt")), *sorted(path.glob("rng_state_rank_*.pt"))]
    return next(filter(None, map(zip_problem, files)), None) or _written_last(path, "training_state.pt")


def accelerate_state_problem(path: str | Path) -> str | None:
    """Why instructlab-training's ``full_state/epoch_N`` (accelerate ``save_state`` + ``training_metadata.json``)
    cannot be resumed from, else None."""
    path = Path(path)
    if not (path / "training_metadata.json").is_file():
        return "training_metadata.json is missing (instructlab-training writes it last: the save did not finish)"
    safetensors = sorted(path.glob("model*.safetensors"))
    zips = sorted({*path.glob("pytorch_model*.bin"), *path.glob("optimizer*.bin"), *path.glob("scheduler*.bin")})
    zips += [*sorted(path.glob("sampler*.bin")), *sorted(path.glob("random_states_*.pkl")), path / "training_metadata.json"]
    dcp = [d for pattern in ("pytorch_model_fsdp_*", "optimizer_*") for d in sorted(path.glob(pattern)) if d.is_dir()]
    if not (safetensors or dcp or any(p.name.startswith("pytorch_model") for p in zips)):
        return "holds no model state (model.safetensors is missing)"
    if missing := next((d.name for d in dcp if not (d / ".metadata").is_file()), None):
        return f"{missing}/.metadata is missing (the model's state was not saved whole)"
    found = next(filter(None, map(safetensors_problem, safetensors)), None) or next(filter(None, map(zip_problem, zips)), None)
    return found or _written_last(path, "training_metadata.json")


def _written_last(path: Path, last: str) -> str | None:
    """``last`` (the file a save writes last) is at least as new as every other file of the save."""
    stamp = (path / last).stat().st_mtime_ns
    newer = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.stat().st_mtime_ns > stamp)
    if newer:
        return f"{newer[0]} is newer than {last} (a second save into this folder did not finish)"
    return None


def hf_save_problem(path: Path) -> str | None:
    """``problem``, and the tokenizer both backends save with every ``hf_format`` model (mini-trainer writes it
    last, instructlab-training before the weights): ``tokenizer_config.json`` there, its JSON files whole."""
    if found := problem(path):
        return found
    jsons = [path / "tokenizer_config.json", *[p for p in (path / "tokenizer.json",) if p.exists()]]
    return next(filter(None, map(json_problem, jsons)), None)


# folders of a torchrun backend's output: (folder, which saves count, why one is incomplete)
LAYOUTS: tuple[tuple[str, str, Callable[[Path], str | None]], ...] = (
    ("full_state", "*_*", lambda p: accelerate_state_problem(p) if p.name.rsplit("_", 1)[-1].isdigit() else None),
    ("full_state_checkpoints", "step_*", lambda p: full_state_problem(p) if p.name[5:].isdigit() else None),
    ("hf_format", "*", lambda p: hf_save_problem(p) if not p.name.startswith(".") else None),
)


def set_aside_incomplete(output_dir: str | Path, say: Say = print) -> list[Path]:
    """Move every incomplete save in a torchrun backend's ``output_dir`` (instructlab-training's ``full_state/``,
    mini-trainer's ``full_state_checkpoints/``, both's ``hf_format/``) to ``output_dir/incomplete/<folder>/``, one
    line each; the backend then resumes from the newest complete full state (or starts afresh) and nothing reports
    a half-written model. Called before the backend starts, on the node that owns ``output_dir``."""
    root = Path(output_dir)
    moved = []
    for folder, pattern, check in LAYOUTS:
        for path in sorted(p for p in (root / folder).glob(pattern) if p.is_dir()):
            if reason := check(path):
                target = set_aside(path, root / INCOMPLETE_DIR / folder)
                say(f"[kubetune] set aside incomplete {folder}/{path.name} ({reason}); moved to {target}")
                moved.append(target)
    return moved


Say = Callable[[str], None]


def _newest_complete(candidates: list[tuple[int, Path]], check: Callable[[Path], str | None], say: Say, aside: Path | None):
    """The newest candidate that passes ``check``; every failing one newer than it is noted and set aside."""
    for _, path in sorted(candidates, reverse=True):
        reason = check(path)
        if reason is None:
            return path
        where = f"; moved to {set_aside(path, aside)}" if aside is not None else ""
        say(f"[kubetune] skipped incomplete checkpoint {path.name}: {reason}{where}")
    return None


def set_aside(path: Path, incomplete: Path) -> Path:
    """Move ``path`` (an incomplete checkpoint kubetune's training wrote) into ``incomplete/``, replacing an
    older copy of the same name there (itself set aside by kubetune)."""
    target = incomplete / path.name
    incomplete.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    path.rename(target)
    return target


def resume_checkpoint(output_dir: str | Path, say: Say = print, own: bool = True) -> Path | None:
    """The newest complete TRL ``checkpoint-N`` under ``output_dir`` to resume from.

    ``own``: ``output_dir`` is kubetune's training output, so incomplete checkpoints found on the way are moved
    to ``output_dir/incomplete`` (TRL would otherwise save into them again, or count them when rotating)."""
    root = Path(output_dir)
    found = [(at.step, p) for p in root.glob("checkpoint-*") if p.is_dir() and (at := step_position(p)) is not None]
    return _newest_complete(found, resume_problem, say, root / INCOMPLETE_DIR if own else None)


def latest_full_state(output_dir: str | Path, say: Say = print, own: bool = False) -> str | None:
    """mini-trainer's newest complete full-state checkpoint (``full_state_checkpoints/step_N``) under
    ``output_dir``, for ``resume_from_full_state_checkpoint``; incomplete ones are noted (and set aside if ``own``)."""
    states = Path(output_dir, "full_state_checkpoints")
    found = [
        (int(d.name.removeprefix("step_")), d)
        for d in states.glob("step_*")
        if d.is_dir() and d.name.removeprefix("step_").isdigit()
    ]
    newest = _newest_complete(found, full_state_problem, say, Path(output_dir, INCOMPLETE_DIR) if own else None)
    return str(newest) if newest else None
