"""The output file a command writes (``-o``): refused before any work when it cannot be written, written whole."""

from __future__ import annotations

import os
from pathlib import Path

from kubetune.errors import Failure
from kubetune.files import replaced


def check_output(path: Path, option: str = "-o", ours: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output file that cannot be written: its folder must exist and take a file.

    An existing file is replaced only when it is one kubetune writes (it holds every marker of ``ours``):
    never a user's file, nor the command's own input."""
    if path.is_dir():
        raise Failure(f"{option} {path}", "is a folder; give a file path")
    if path.exists():
        try:
            with path.open("rb") as f:  # a regular file's first MiB is enough to recognise ours
                head = f.read(1 << 20).decode("utf-8", "replace") if path.is_file() else ""
        except OSError as e:
            raise Failure(f"{option} {path}", f"cannot be read: {e.strerror or e}") from None
        if not ours or not all(marker in head for marker in ours):
            raise Failure(f"{option} {path}", "exists and was not written by this command; remove it or choose another path")
    parent = path.parent
    if not parent.is_dir():
        raise Failure(f"{option} {path}", f"{parent} is not an existing folder")
    probe = parent / f".{path.name}.probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as e:
        raise Failure(f"{option} {path}", f"cannot be written: {e.strerror or e}") from None


def write_output(path: Path, text: str, option: str = "-o") -> None:
    """Write ``text`` beside ``path`` and rename it into place: ``path`` is whole or untouched, never half."""
    try:
        with replaced(path) as partial:
            partial.write_text(text, encoding="utf-8")
    except OSError as e:
        raise Failure(f"{option} {path}", f"cannot be written: {e.strerror or e}") from None
