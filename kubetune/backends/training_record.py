"""Which backend trained a model folder: ``kubetune-training.json`` beside its checkpoints, written whole by the
training step once training has ended, read by the evaluation (its metrics files, its checkpoint naming)."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune.backends.base import Backend
from kubetune.backends.registry import BACKENDS
from kubetune.checkpoints import Position, PositionOf
from kubetune.contract import TrainingSpec
from kubetune.errors import KubetuneError, Problem
from kubetune.files import write_text_atomic

RECORD_FILE = "kubetune-training.json"


def write_training_record(output_dir: str | Path, spec: TrainingSpec) -> None:
    """``{"algorithm", "backend"}`` of the run that trained ``output_dir``, written whole or not at all."""
    document = {"algorithm": spec.algorithm, "backend": spec.backend}
    write_text_atomic(Path(output_dir) / RECORD_FILE, json.dumps(document, indent=2) + "\n")


def trained_by(output_dir: str | Path) -> Backend | None:
    """The backend the folder's record names; None where there is no record (a model kubetune did not train,
    such as the one the evaluate_export pipeline imports). A record that does not parse, or names an algorithm
    no registered backend trains, is one line."""
    path = Path(output_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise _refused(path, f"cannot be read ({type(error).__name__})") from None
    algorithm = record.get("algorithm") if isinstance(record, dict) else None
    if algorithm not in BACKENDS:
        raise _refused(path, f"names algorithm {algorithm!r}, which no registered backend trains")
    return BACKENDS[algorithm]()


def checkpoint_naming(output_dir: str | Path) -> PositionOf:
    """How the checkpoints under ``output_dir`` are named: by the recorded backend (``Backend.checkpoint_position``),
    else by the first registered backend that recognises a name (a folder kubetune did not train)."""
    if backend := trained_by(output_dir):
        return backend.checkpoint_position
    backends = [cls() for cls in BACKENDS.values()]

    def any_registered(path: Path) -> Position | None:
        return next((found for b in backends if (found := b.checkpoint_position(path)) is not None), None)

    return any_registered


def _refused(path: Path, message: str) -> KubetuneError:
    hint = "the training step writes it; remove it to evaluate the folder as a model kubetune did not train"
    return KubetuneError([Problem(str(path), message, hint)], "invalid training record")
