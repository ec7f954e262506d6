"""Writing outputs so that a reader never sees half of one: stage, then rename into place.

Staged directories are created with the modes the process umask gives (0755 under the usual 022), not
``tempfile``'s private 0700: an export read by a serving pod running as another user must be readable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SYSTEM_FOLDERS = {  # top-level folders an output never replaces (one inside them is fine, e.g. /tmp/model)
    *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc"),
    *("/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/var"),
    *("/Applications", "/Library", "/System", "/Users", "/Volumes", "/private"),
}


def umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)  # elsewhere: the classic read-by-setting (not thread-safe, only as a fallback)
    os.umask(current)
    return current


def staging_dir(parent: str | Path, prefix: str) -> Path:
    """A new, uniquely named directory in ``parent`` with the umask's modes (0755 by default)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o777 & ~umask())
    return path


def swap_into_place(staged: Path, destination: Path) -> None:
    """Rename the directory ``staged`` to ``destination``; an existing one is swapped out whole, never mixed."""
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{staged.name[-8:]}")
        destination.rename(old)
    staged.rename(destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def replaced(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A partial file beside ``path`` for the block to write; renamed over ``path`` when the block ends, removed
    when it fails: a reader finds the old file or the whole new one, never half of one. ``suffix`` ends the
    partial's name, for a writer that insists on one (KFP's compiler writes only ``.yaml``/``.json`` files)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.part-{os.getpid()}{suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        with suppress(OSError):
            partial.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (``replaced``), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as partial:
        partial.write_text(text, encoding="utf-8")


def umask_modes(root: str | Path) -> None:
    """Give ``root`` and everything under it the modes a new file or directory gets from the umask
    (0644 files, 0755 directories under 022): copies keep their source's modes, which may be private."""
    mask = umask()
    for directory, _subdirectories, filenames in os.walk(root):
        os.chmod(directory, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
