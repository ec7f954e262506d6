"""Model export to a local directory or PVC path: staged, checksummed, then published atomically.

The model is written to a staging directory beside the destination, a ``manifest.json`` with the
SHA-256 of every file is written last, and the staging directory is renamed into place. A reader treats
the model as present only when the manifest exists and matches (``verify``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from kubetune.errors import KubetuneError, Problem

MANIFEST = "manifest.json"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> dict:
    files = {
        str(p.relative_to(directory)): {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": 1, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(directory: str | Path) -> list[str]:
    """Problems with an exported model; an empty list means complete and intact."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing: the export is incomplete"]
    problems = []
    for name, entry in json.loads(manifest_path.read_text())["files"].items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{name} does not match its checksum")
    return problems


def _materialize(source: Path, staging: Path, merge: bool) -> str:
    """Write the model into ``staging``; returns what was exported ("full", "adapter" or "merged")."""
    if not (source / "adapter_config.json").exists():
        shutil.copytree(
            source,
            staging,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(
                "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin"
            ),
        )
        return "full"
    if not merge:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(source / name, staging / name)
        for tokenizer_file in source.glob("tokenizer*"):
            shutil.copy2(tokenizer_file, staging / tokenizer_file.name)
        if (source / "chat_template.jinja").exists():
            shutil.copy2(source / "chat_template.jinja", staging / "chat_template.jinja")
        return "adapter"
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()
    model.save_pretrained(str(staging))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(staging))
    return "merged"


def export_local(
    source: str | Path, destination: str | Path, merge: bool = True, extra_files: dict[str, str | Path] | None = None
) -> dict:
    """Export ``source`` to ``destination`` atomically; returns the manifest plus what was exported."""
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise KubetuneError([Problem(str(source), "is not a model directory")], "cannot export")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.staging-", dir=destination.parent))
    except OSError as e:
        raise KubetuneError([Problem(str(destination), f"is not writable: {e.strerror}")], "cannot export") from None
    try:
        kind = _materialize(source, staging, merge)
        for name, path in (extra_files or {}).items():
            shutil.copy2(path, staging / name)
        manifest = write_manifest(staging)
        old = None
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{staging.name[-8:]}")
            destination.rename(old)
        staging.rename(destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"kind": kind, **manifest}
