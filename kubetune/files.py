"""Writing outputs so that a reader never sees half of one: stage, then rename into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_into_place(staged: Path, destination: Path) -> None:
    """Rename the directory ``staged`` to ``destination``; an existing one is swapped out whole, never mixed."""
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{staged.name[-8:]}")
        destination.rename(old)
    staged.rename(destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
