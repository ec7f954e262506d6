"""Model export to a local/PVC directory or to S3: staged, checksummed, then published.

The model is written to a local staging directory (full model; LoRA adapter alone or merged into its
base, in safetensors; tokenizer and chat template; the training spec, loss curve and a model card), then
``manifest.json`` with the SHA-256 and size of every file is written last. Publishing:

- local/PVC: the staging directory sits beside the destination and is renamed into place;
- S3 (``publish.py``): files go under a run-specific staging prefix, are verified, then copied into the
  destination prefix, stale files are removed, and the manifest is written last.

A reader treats the model as present only when the manifest exists and matches (``verify``). Everything
that can fail cheaply (credentials, bucket, writable directory) is checked before any bytes move.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetune.checkpoints import TRAINING_STATE, adapter_base, is_adapter
from kubetune.errors import KubetuneError, Problem
from kubetune.files import swap_into_place

MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_", "tokenizer", "special_tokens", "chat_template")  # what an adapter-only export keeps
WEIGHTS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth")  # minus training state below


def sha256(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
    paths = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    paths.update(external or {})

    def entry(name: str) -> dict:
        found = {"sha256": sha256(paths[name]), "bytes": paths[name].stat().st_size}
        if on_hashed:
            on_hashed(name, paths[name], found)
        return found

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL: files hash in parallel
        entries = dict(zip(paths, pool.map(entry, paths), strict=True))
    files = {name: entries[name] for name in sorted(paths)}
    manifest = {"format": 1, "kind": kind, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(destination: str | Path) -> list[str]:
    """Problems with an exported model (local path or s3:// URI); an empty list means complete and intact."""
    if str(destination).startswith("s3://"):
        from kubetune.components.export.publish import verify_s3

        return verify_s3(str(destination))
    directory = Path(destination)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing: the export is incomplete"]
    problems = []
    for name, entry in json.loads(manifest_path.read_text())["files"].items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            problems.append(f"{name} does not match its checksum")
    return problems


def materialize(source: Path, staging: Path, merge: bool, base: str | None = None) -> str:
    """Write the model into ``staging``; returns what was exported: "full", "adapter" or "merged".

    ``base``: the base model of an adapter that is merged."""
    if not is_adapter(source):
        # weights are added by the caller from the checkpoint itself (see weight_files)
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*TRAINING_STATE, *WEIGHTS))
        return "full"
    if not merge:
        for path in source.iterdir():
            if path.is_file() and (
                path.name.startswith(("adapter_", "tokenizer", "special_tokens")) or path.name == "chat_template.jinja"
            ):
                shutil.copy2(path, staging / path.name)
        return "adapter"
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(source)).merge_and_unload()
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer_source = source if (source / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(staging))
    return "merged"


def weight_files(source: Path) -> dict[str, Path]:
    """A full checkpoint's weight files: exported as they are, so they are read from the checkpoint (for S3,
    uploaded from there) instead of being copied to the staging directory first."""
    if is_adapter(source):
        return {}
    return {p.name: p for pattern in WEIGHTS for p in sorted(source.glob(pattern)) if p.is_file()}


def model_card(info: dict[str, Any]) -> str:
    """A README.md for the exported model: where it came from, on what data, how well it does."""
    spec, curve, data = info.get("spec") or {}, info.get("curve") or {}, info.get("data") or {}
    best = curve.get("best") or {}
    lines = [
        "---",
        f"base_model: {info.get('base_model', 'unknown')}",
        f"library_name: {'peft' if info['kind'] == 'adapter' else 'transformers'}",
        f"tags: [kubetune, {spec.get('algorithm', 'fine-tuned')}]",
        "---",
        "",
        f"# Fine-tuned {info.get('base_model', 'model')}",
        "",
        f"Trained with kubetune: `{spec.get('algorithm', '?')}` through {spec.get('backend', '?')}; exported "
        f"{datetime.now(UTC).date().isoformat()} ({info['kind']} model, checkpoint `{info.get('checkpoint', '?')}`).",
        "",
        "| | |",
        "|---|---|",
    ]
    if best:
        lines.append(f"| best validation loss | {best['loss']:.4f} at `{best['checkpoint']}` |")
    if data:
        lines.append(f"| training data | {data.get('train_samples', '?')} samples, {data.get('train_tokens', '?')} tokens |")
        lines.append(f"| validation data | {data.get('validation_samples', '?')} samples |")
    for key in ("learning_rate", "num_epochs", "effective_batch_size", "max_seq_len", "lora_r", "unfreeze_rank_ratio"):
        if spec.get(key) is not None:
            lines.append(f"| {key} | {spec[key]} |")
    if curve.get("points"):
        lines += ["", "## Validation loss per checkpoint", "", "| checkpoint | loss | perplexity |", "|---|---|---|"]
        lines += [f"| {p['checkpoint']} | {p['loss']:.4f} | {p['perplexity']:.2f} |" for p in curve["points"]]
    lines += ["", f"`{MANIFEST}` lists the SHA-256 of every file; the model is complete only when it matches."]
    return "\n".join(lines) + "\n"


def preflight(destination: str) -> None:
    """Fail before any bytes move: S3 credentials and bucket, or a writable local directory."""
    if destination.startswith("s3://"):
        from kubetune.components.export.publish import check_bucket

        check_bucket(destination)
        return
    parent = Path(destination).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise KubetuneError([Problem(destination, f"is not writable: {e.strerror}")], "cannot export") from None


def export(
    source: str | Path,
    destination: str | Path,
    merge: bool = True,
    extra_files: dict[str, str | Path] | None = None,
    card: dict[str, Any] | None = None,
    base_model: str | None = None,
    training_root: str | Path | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Export the checkpoint ``source`` to ``destination`` (a directory or ``s3://bucket/prefix``).

    A LoRA adapter that is merged needs its base model: its recorded path, ``base_model``, or the
    ``base/`` copy in ``training_root``.
    """
    source, destination = Path(source), str(destination)
    if not source.is_dir():
        raise KubetuneError([Problem(str(source), "is not a model directory")], "cannot export")
    base = (
        adapter_base(source, Path(training_root) if training_root else None, base_model) if merge and is_adapter(source) else None
    )
    preflight(destination)
    start = time.perf_counter()
    to_s3 = destination.startswith("s3://")
    staging = Path(tempfile.mkdtemp(prefix=".export-staging-", dir=None if to_s3 else Path(destination).parent))
    try:
        kind = materialize(source, staging, merge, base)
        for name, path in (extra_files or {}).items():
            if path and Path(path).is_file():
                shutil.copy2(path, staging / name)
        card_text = model_card({**(card or {}), "kind": kind, "checkpoint": source.name})
        (staging / "README.md").write_text(card_text)
        weights = weight_files(source) if kind == "full" else {}
        weights = {name: path for name, path in weights.items() if not any(Path(name).match(t) for t in TRAINING_STATE)}
        if to_s3:
            from kubetune.components.export.publish import publish_s3

            manifest, skipped = publish_s3(staging, destination, run_id or staging.name.rsplit("-", 1)[-1], weights, kind)
        else:
            manifest = write_manifest(staging, kind, weights)
            for name, path in weights.items():
                shutil.copy2(path, staging / name)
            swap_into_place(staging, Path(destination))
            skipped = 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - start
    size = sum(f["bytes"] for f in manifest["files"].values())
    return {
        "uri": destination,
        "kind": kind,
        "files": len(manifest["files"]) + 1,
        "bytes": size,
        "skipped_files": skipped,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 2) if seconds else 0.0,
        "manifest": manifest,
        "card": card_text,
    }


def export_step(
    trained_model: str | Path,
    checkpoint: str,
    destination: str,
    select: str = "best",
    pointer_dir: str | Path | None = None,
    merge: bool = True,
    spec_path: str | Path | None = None,
    curve_path: str | Path | None = None,
    train_metadata: dict | None = None,
    validation_metadata: dict | None = None,
    base_model_uri: str | None = None,
) -> dict[str, Any]:
    """The pipeline's export step: pick the checkpoint, gather the card's facts, export, leave a pointer."""
    from kubetune.checkpoints import find_checkpoints
    from kubetune.runtime import resolve_model

    if select not in ("best", "final"):
        raise KubetuneError([Problem("select", f'must be "best" or "final", got {select!r}')], "cannot export")
    root = Path(trained_model)
    source = root / checkpoint if select == "best" else (find_checkpoints(root) or [root])[-1]
    spec = json.loads(Path(spec_path).read_text()) if spec_path else {}
    curve = json.loads(Path(curve_path).read_text()) if curve_path and Path(curve_path).is_file() else None
    train, validation = train_metadata or {}, validation_metadata or {}
    card = {
        "spec": spec,
        "curve": curve,
        "base_model": spec.get("model_path") or base_model_uri or "unknown",
        "data": {
            "train_samples": train.get("samples"),
            "train_tokens": train.get("tokens"),
            "validation_samples": validation.get("samples"),
        }
        if train
        else None,
    }
    extra = {"kubetune-spec.json": spec_path, "loss_curve.json": curve_path}
    with tempfile.TemporaryDirectory(prefix="kubetune-base-") as workdir:
        base = resolve_model(base_model_uri, workdir) if base_model_uri else None
        result = export(source, destination, merge, extra, card, base_model=base, training_root=root)
    result["checkpoint"] = str(source.relative_to(root)) if source != root else "."
    if pointer_dir:  # the model lives at the destination; this artifact says where, and what it is
        pointer = Path(pointer_dir)
        pointer.mkdir(parents=True, exist_ok=True)
        (pointer / "README.md").write_text(result["card"])
        (pointer / "location.json").write_text(json.dumps({"uri": result["uri"], "manifest": result["manifest"]}, indent=2))
    return result
