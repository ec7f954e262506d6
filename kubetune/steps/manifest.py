"""An export's manifest (``manifest.json``: SHA-256 and size of every file, written last) and the refusals that
the local and S3 publishers share. Read by export (local), publish (S3) and verify."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from kubetune.errors import KubetuneError, Problem

MANIFEST = "manifest.json"
OVERWRITE_HINT = "choose an empty or new destination, or pass overwrite to replace what it holds"
FOREIGN_SHOWN = 5  # foreign entries named in a refusal


def sha256(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_paths(directory: Path, external: dict[str, Path] | None = None) -> dict[str, Path]:
    """The files an export of ``directory`` (plus ``external`` files under their names) lists, by name."""
    paths = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    paths.update(external or {})
    return paths


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def write_manifest(
    directory: Path,
    kind: str,
    external: dict[str, Path] | None = None,
    on_hashed: Callable[[str, Path, dict], None] | None = None,
) -> dict:
    """Checksums of every file in ``directory`` and of ``external`` files exported under their names,
    written as ``manifest.json`` in ``directory`` (the last file of an export).

    ``on_hashed(name, path, entry)`` is called as each file's checksum is ready (from a worker thread), so
    that an upload can start while the other files are still being hashed."""
    paths = manifest_paths(directory, external)

    def entry(name: str) -> dict:
        found = {"sha256": sha256(paths[name]), "bytes": paths[name].stat().st_size}
        if on_hashed:
            on_hashed(name, paths[name], found)
        return found

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL: files hash in parallel
        entries = dict(zip(paths, pool.map(entry, paths), strict=True))
    files = {name: entries[name] for name in sorted(paths)}
    manifest = {"format": 1, "kind": kind, "files": files}
    (directory / MANIFEST).write_text(dump_manifest(manifest))
    return manifest


def load_manifest(data: bytes) -> dict:
    """A manifest's content, checked; ValueError says what is wrong (truncated, not JSON, a bad entry)."""
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"truncated or not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != 1:
        raise ValueError('not a kubetune manifest (expected {"format": 1, "files": {...}})')
    for name, entry in files.items():
        parts = PurePosixPath(name).parts
        normal = PurePosixPath(name).as_posix() == name and bool(parts)  # no "d/", "./d", "d//x", "."
        if not name or name.startswith("/") or ".." in parts or "\\" in name or not name.isprintable() or not normal:
            raise ValueError(f"lists {name!r}, which is not a path inside the export")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
            and type(entry.get("bytes")) is int
            and entry["bytes"] >= 0
        ):
            raise ValueError(f"has no valid sha256 and bytes for {name!r}")
    return manifest


def refuse(where: str, message: str, hint: str | None = None) -> KubetuneError:
    return KubetuneError([Problem(where, message, hint)], "cannot export")


def foreign_message(names: list[str], scanned_all: bool = True) -> str:
    count = f"{len(names)}" if scanned_all else f"{len(names)}+"
    shown = ", ".join(names[:FOREIGN_SHOWN]) + (", ..." if len(names) > FOREIGN_SHOWN else "")
    return f"holds {count} file(s) or folder(s) kubetune did not export ({shown})"
